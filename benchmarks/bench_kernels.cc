// Kernel micro-benchmarks on the GPU: the denoise-step paged attention (the acceptance shape of
// issue 4: 64 sequences x 2,048 cached tokens, 4 query rows each, SDAR-8B heads), the
// QK-norm/RoPE/KV-write and RMSNorm kernels at decode row counts (with --attention-only too), the
// fused sampling pass and the model shapes' GEMMs (cuBLASLt's heuristic choice against the fastest of
// its first 8 candidates). Prints achieved GB/s (bytes that must be read at least once / time),
// the ratio to the copy bandwidth, and TFLOP/s.
//   bench_kernels [--copy-gbps 3000] [--attention-only 1] [--prefill-only 1] [--sampling-only 1]
//                [--gemm-candidates ROWS]
//                [--split-sweep 1|2|3] [--sustained SECONDS [--sustained-only 0..5]]
//                [--sustained-gemms ROWS [--sustained-count N] [--sustained-seconds S]]
//                [--gemm-sm90 ROWS [--sustained-seconds S] [--one-layer 1]] [--gemm-sm90-sweep 1]
//                [--gemm-sm90-profile ROWS] [--gemm-sm90-k ROWS]
//                [--silu-mul-sweep ROWS,ROWS,... [--sustained-seconds S] [--with-down 1]]
//                [--lm-head-sweep ROWS,ROWS,... [--sustained-seconds S]]
#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "blockinfer/status.h"
#include "blockinfer/tensor.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/launchers.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "ops/rmsnorm.h"
#include "ops/sampling.h"

using namespace blockinfer;

namespace {

// "640,1024" -> {640, 1024}; anything but positive integers is an InvalidArgument.
std::vector<int64_t> parse_rows(const std::string& s) {
  std::vector<int64_t> out;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t comma = std::min(s.find(',', at), s.size());
    const std::string item = s.substr(at, comma - at);
    BI_CHECK_ARG(!item.empty() && item.find_first_not_of("0123456789") == std::string::npos && std::stoll(item) > 0,
                 "'", s, "' is not a list of positive row counts");
    out.push_back(std::stoll(item));
    at = comma + 1;
  }
  return out;
}

template <typename F>
double time_ms(F&& f, int iters = 20) {
  f();
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

// Calls f, waiting for the device after each call, until `seconds` have passed (at least once):
// ms per call, and the calls.
struct KeptRunning {
  double ms;
  int calls;
};
template <typename F>
KeptRunning keep_running(double seconds, F&& f) {
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  int n = 0;
  double elapsed = 0;
  do {
    f();
    cuda::synchronize();
    ++n;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < seconds);
  return {elapsed * 1e3 / n, n};
}

Tensor device_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kInt32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

// A host float32 [rows, cols] of an LCG's values, uniform in [-half_range, half_range).
Tensor uniform_host(int64_t rows, int64_t cols, uint32_t seed, float half_range) {
  Tensor t = Tensor::empty({rows, cols}, DType::kFloat32);
  float* p = t.data<float>();
  uint32_t state = seed;
  for (int64_t i = 0; i < rows * cols; ++i) {
    state = state * 1664525u + 1013904223u;
    p[i] = static_cast<float>(state >> 8) / 16777216.f * (2.f * half_range) - half_range;
  }
  return t;
}

// The GEMMs of a forward for three shapes: x [m, k] @ w[n, k]^T in bf16 (the LM head writes
// float32 logits). "heuristic" is what the engine runs; "best of 8" the fastest candidate.
void gemms(Device gpu, double copy_gbps) {
  struct Shape {
    const char* model;
    const char* name;
    int64_t m, n, k, layers;
    bool fp32_out;
  };
  const std::vector<Shape> shapes = {
      {"SDAR-4B b128 (512 rows)", "qkv", 512, 6144, 2560, 36, false},
      {"SDAR-4B b128 (512 rows)", "o_proj", 512, 2560, 4096, 36, false},
      {"SDAR-4B b128 (512 rows)", "gate_up", 512, 19456, 2560, 36, false},
      {"SDAR-4B b128 (512 rows)", "down", 512, 2560, 9728, 36, false},
      {"SDAR-4B b128 (512 rows)", "lm_head", 384, 151936, 2560, 1, true},
      {"SDAR-4B b128 (1024 rows)", "qkv", 1024, 6144, 2560, 36, false},
      {"SDAR-4B b128 (1024 rows)", "o_proj", 1024, 2560, 4096, 36, false},
      {"SDAR-4B b128 (1024 rows)", "gate_up", 1024, 19456, 2560, 36, false},
      {"SDAR-4B b128 (1024 rows)", "down", 1024, 2560, 9728, 36, false},
      {"SDAR-8B b1 (4 rows)", "qkv", 4, 6144, 4096, 36, false},
      {"SDAR-8B b1 (4 rows)", "o_proj", 4, 4096, 4096, 36, false},
      {"SDAR-8B b1 (4 rows)", "gate_up", 4, 24576, 4096, 36, false},
      {"SDAR-8B b1 (4 rows)", "down", 4, 4096, 12288, 36, false},
      {"SDAR-8B b1 (4 rows)", "lm_head", 4, 151936, 4096, 1, true},
      {"LLaDA-8B dual (32 rows)", "qkv", 32, 12288, 4096, 32, false},
      {"LLaDA-8B dual (32 rows)", "o_proj", 32, 4096, 4096, 32, false},
      {"LLaDA-8B dual (32 rows)", "gate_up", 32, 24576, 4096, 32, false},
      {"LLaDA-8B dual (32 rows)", "down", 32, 4096, 12288, 32, false},
      {"LLaDA-8B dual (32 rows)", "lm_head", 32, 126464, 4096, 1, true},
  };
  std::printf("\n| gemm | model, rows | n x k | heuristic ms | best of 8 ms (rank, its split-K, its bits against the "
              "heuristic's) | best with the heuristic's bits (rank) | TFLOP/s | weight GB/s | ratio to copy bandwidth | "
              "x layers: heuristic / best ms |\n|---|---|---|---|---|---|---|---|---|---|\n");
  std::string model;
  double total = 0, total_best = 0;
  auto flush = [&] {
    if (!model.empty())
      std::printf("| all | %s | | | | | | | | %.3f / %.3f |\n", model.c_str(), total, total_best);
    total = total_best = 0;
  };
  for (const Shape& s : shapes) {
    if (model != s.model) {
      flush();
      model = s.model;
    }
    // Values in [-1, 1) (zeros would let the tensor cores run cooler and faster than real weights).
    auto filled = [&](int64_t rows, int64_t cols) {
      return uniform_host(rows, cols, 12345u + static_cast<uint32_t>(rows * 7 + cols), 1.f)
          .to_dtype(DType::kBFloat16)
          .to(gpu);
    };
    Tensor x = filled(s.m, s.k);
    Tensor w = filled(s.n, s.k);
    Tensor out = Tensor::empty({s.m, s.n}, s.fp32_out ? DType::kFloat32 : DType::kBFloat16, gpu);
    const std::vector<cuda::GemmCandidate> c = cuda::time_gemm_candidates(
        x.raw_data(), w.raw_data(), out.raw_data(), s.m, s.n, s.k, DType::kBFloat16, out.dtype(), gpu.index, 8, 20);
    size_t best = 0, best_same = 0;  // fastest of all, fastest with the heuristic's bits
    for (size_t i = 1; i < c.size(); ++i) {
      if (c[i].ms < c[best].ms) best = i;
      if (c[i].same_bits && c[i].ms < c[best_same].ms) best_same = i;
    }
    const double ms = c[0].ms, wbytes = 2.0 * s.n * s.k;
    std::printf("| %s | %s | %lld x %lld | %.4f | %.4f (%zu of %zu, split-K %d, %s bits) | %.4f (%zu) | %.0f | %.0f | "
                "%.2f | %.3f / %.3f |\n",
                s.name, s.model, static_cast<long long>(s.n), static_cast<long long>(s.k), ms, c[best].ms, best,
                c.size(), c[best].split_k, c[best].same_bits ? "same" : "other", c[best_same].ms, best_same,
                2.0 * s.m * s.n * s.k / ms / 1e9, wbytes / ms / 1e6, wbytes / ms / 1e6 / copy_gbps, ms * s.layers,
                c[best].ms * s.layers);
    total += ms * s.layers;
    total_best += c[best].ms * s.layers;
  }
  flush();
}

// SDAR-4B's four layer GEMMs, out = x [m, k] @ w [n, k]^T (32/8 heads of 128, hidden 2,560,
// intermediate 9,728).
struct LayerGemm {
  const char* name;
  int64_t n, k;
};
constexpr LayerGemm kSdar4bGemms[] = {
    {"qkv", 6144, 2560}, {"o_proj", 2560, 4096}, {"gate_up", 19456, 2560}, {"down", 2560, 9728}};

// Every one of cuBLASLt's first 16 candidates for SDAR-4B's four layer GEMMs at `m` rows: time,
// split-K, tile (cublasLtMatmulTile_t), the heuristic's wave estimate, bits against the first.
void gemm_candidates(Device gpu, int64_t m) {
  std::printf("\n| gemm, %lld rows | rank | ms | TFLOP/s | split-K | tile id | stages id | cluster id | algo id | waves | "
              "bits |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
              static_cast<long long>(m));
  for (const LayerGemm& s : kSdar4bGemms) {
    Tensor x = uniform_host(m, s.k, 7u, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    Tensor w = uniform_host(s.n, s.k, 8u, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    Tensor out = Tensor::empty({m, s.n}, DType::kBFloat16, gpu);
    const std::vector<cuda::GemmCandidate> c = cuda::time_gemm_candidates(
        x.raw_data(), w.raw_data(), out.raw_data(), m, s.n, s.k, DType::kBFloat16, DType::kBFloat16, gpu.index, 16, 50);
    for (size_t i = 0; i < c.size(); ++i)
      std::printf("| %s | %zu | %.4f | %.0f | %d | %d | %d | %d | %d | %.2f | %s |\n", s.name, i, c[i].ms,
                  2.0 * m * s.n * s.k / c[i].ms / 1e9, c[i].split_k, c[i].tile, c[i].stages, c[i].cluster,
                  c[i].algo_id, c[i].waves, c[i].same_bits ? "same" : "other");
  }
}

// The metadata of a batch of `seqs` sequences with `ctx` keys each in their own pages, whose last
// `q` positions are the query rows (`q_first_of_4` rows for every fourth sequence when > 0, as a
// block's first step carries the finished block's commit rows), block length `block`. No plan.
ops::AttentionMetadata batch_metadata(Device gpu, int64_t seqs, int64_t ctx, int64_t q, int64_t block, int64_t page,
                                      int64_t q_first_of_4 = 0) {
  const int64_t pages_per_seq = ctx / page;
  std::vector<int32_t> q_start = {0}, positions, slots, kv_len, block_len, table;
  for (int64_t s = 0; s < seqs; ++s) {
    for (int64_t p = 0; p < pages_per_seq; ++p) table.push_back(static_cast<int32_t>(s * pages_per_seq + p));
    const int64_t qs = s % 4 == 0 && q_first_of_4 > 0 ? q_first_of_4 : q;
    for (int64_t i = 0; i < qs; ++i) {
      positions.push_back(static_cast<int32_t>(ctx - qs + i));
      slots.push_back(static_cast<int32_t>(s * pages_per_seq * page + ctx - qs + i));
    }
    q_start.push_back(static_cast<int32_t>(positions.size()));
    kv_len.push_back(static_cast<int32_t>(ctx));
    block_len.push_back(static_cast<int32_t>(block));
  }
  ops::AttentionMetadata m;
  m.positions = device_i32(positions).to(gpu);
  m.slot_mapping = device_i32(slots).to(gpu);
  m.page_table = device_i32(table).view({seqs, pages_per_seq}).to(gpu);
  m.q_start = device_i32(q_start).to(gpu);
  m.kv_len = device_i32(kv_len).to(gpu);
  m.block_len = device_i32(block_len).to(gpu);
  m.host_q_start = device_i32(q_start);
  m.host_kv_len = device_i32(kv_len);
  m.page_size = page;
  return m;
}

// SDAR-4B's four GEMM weights (kSdar4bGemms' order and shapes) for each of its 36 layers, bf16 in
// [-1, 1), every layer its own copy so that a forward reads each from memory.
std::vector<std::vector<Tensor>> sdar4b_weights(Device gpu, uint32_t seed) {
  std::vector<std::vector<Tensor>> layers(36);
  uint32_t w = 0;
  for (const LayerGemm& g : kSdar4bGemms) {
    const Tensor first = uniform_host(g.n, g.k, seed + w++, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    for (auto& layer : layers) {
      Tensor t = Tensor::empty({g.n, g.k}, DType::kBFloat16, gpu);
      device_copy(t.raw_data(), gpu, first.raw_data(), gpu, first.nbytes());
      layer.push_back(t);
    }
  }
  return layers;
}

// Each of cuBLASLt's first `count` candidates for SDAR-4B's four layer GEMMs at `m` rows, kept
// running over the 36 layers' weights: under sustained load the card's power cap sets the clock,
// so what a candidate costs there is its joules per FLOP, which one-at-a-time timing does not
// rank. Every candidate is measured twice, in rank order and then in reverse (the card warms over
// the run), `seconds` each after a quarter of that to settle; the burst column is the 36 launches'
// time in short runs.
void sustained_gemms(Device gpu, int64_t m, int count, double seconds) {
  const DType bf16 = DType::kBFloat16;
  const std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 905u);
  int64_t max_n = 0, max_k = 0;  // x and out serve every shape
  for (const LayerGemm& g : kSdar4bGemms) max_n = std::max(max_n, g.n), max_k = std::max(max_k, g.k);
  const Tensor x = uniform_host(m, max_k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor out = Tensor::empty({m, max_n}, bf16, gpu);
  std::printf("\n| gemm, %lld rows, x 36 layers | rank | tile id | stages id | cluster id | algo id | split-K | burst ms "
              "| sustained ms, rank order | reverse order | TFLOP/s sustained |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
              static_cast<long long>(m));
  for (size_t g = 0; g < std::size(kSdar4bGemms); ++g) {
    const LayerGemm& s = kSdar4bGemms[g];
    auto loop = [&] {
      for (const auto& layer : weights)
        cuda::launch_gemm(x.raw_data(), layer[g].raw_data(), out.raw_data(), m, s.n, s.k, bf16, bf16, gpu.index);
    };
    int found = 0;
    cuda::pin_gemm_candidate(m, s.n, s.k, bf16, bf16, gpu.index, 0, &found);
    const int n_cands = std::min(count, found);
    std::vector<cuda::GemmCandidate> info(static_cast<size_t>(n_cands));
    std::vector<double> burst(info.size()), forward(info.size()), reverse(info.size());
    for (int i = 0; i < n_cands; ++i) {
      info[static_cast<size_t>(i)] = cuda::pin_gemm_candidate(m, s.n, s.k, bf16, bf16, gpu.index, i, nullptr);
      burst[static_cast<size_t>(i)] = time_ms(loop, 3);
    }
    for (int pass = 0; pass < 2; ++pass) {
      for (int j = 0; j < n_cands; ++j) {
        const int i = pass == 0 ? j : n_cands - 1 - j;
        cuda::pin_gemm_candidate(m, s.n, s.k, bf16, bf16, gpu.index, i, nullptr);
        keep_running(seconds / 4, loop);
        (pass == 0 ? forward : reverse)[static_cast<size_t>(i)] = keep_running(seconds, loop).ms;
      }
    }
    for (size_t i = 0; i < info.size(); ++i) {
      const cuda::GemmCandidate& c = info[i];
      std::printf("| %s | %zu | %d | %d | %d | %d | %d | %.3f | %.3f | %.3f | %.0f |\n", s.name, i, c.tile, c.stages,
                  c.cluster, c.algo_id, c.split_k, burst[i], forward[i], reverse[i],
                  2.0 * m * s.n * s.k * 36 / ((forward[i] + reverse[i]) / 2) / 1e9);
    }
    std::fflush(stdout);
    cuda::pin_gemm_candidate(m, s.n, s.k, bf16, bf16, gpu.index, 0, nullptr);
  }
}

// Whether the Hopper GEMM serves this device and build; says so where it does not.
bool gemm_sm90_here(Device gpu) {
  const bool serves = cuda::gemm_sm90_serves(DType::kBFloat16, 256, 64, gpu.index, true);
  if (!serves) std::printf("gemm_sm90 does not serve on this device or build\n");
  return serves;
}

// SDAR-4B's gate_up and SiLU·mul over the layers of `weights` at m rows of x: cuBLASLt then the
// SiLU·mul kernel (through `gate_up`, reading the layout of `block`: 0 [gate | up], 128 the fused
// kernels' runs), the Hopper GEMM with SiLU·mul in its epilogue (`cluster` CTAs a weight tile), or
// CUTLASS's with it. The random weights need no reordering for either layout: only the time, and
// whether two forms agree on the same weights, matter here.
struct GateUpRuns {
  const std::vector<std::vector<Tensor>>& weights;
  const Tensor& x;
  Tensor& gate_up;
  Tensor& act;
  int device;
  int64_t block = 0;
  Tensor* down_out = nullptr;  // set: each layer's down projection follows, reading act (as in the MLP)
  void down_of(const std::vector<Tensor>& layer, int64_t m) const {
    if (down_out == nullptr) return;
    const LayerGemm& d = kSdar4bGemms[3];
    cuda::launch_gemm(act.raw_data(), layer[3].raw_data(), down_out->raw_data(), m, d.n, d.k, DType::kBFloat16,
                      DType::kBFloat16, device);
  }
  std::function<void()> pair(int64_t m) const {
    return [this, m] {
      const LayerGemm& g = kSdar4bGemms[2];
      for (const auto& layer : weights) {
        cuda::launch_gemm(x.raw_data(), layer[2].raw_data(), gate_up.raw_data(), m, g.n, g.k, DType::kBFloat16,
                          DType::kBFloat16, device);
        cuda::launch_silu_mul(gate_up.raw_data(), act.raw_data(), m, g.n / 2, DType::kBFloat16, device, block);
        down_of(layer, m);
      }
    };
  }
  std::function<void()> fused(int64_t m, int cluster, bool persistent = false) const {
    return [this, m, cluster, persistent] {
      const LayerGemm& g = kSdar4bGemms[2];
      for (const auto& layer : weights)
        cuda::launch_gemm_sm90(x.raw_data(), layer[2].raw_data(), act.raw_data(), m, g.n, g.k, DType::kBFloat16, device,
                               true, 0, cluster, persistent);
    };
  }
  std::function<void()> cutlass(int64_t m) const {
    return [this, m] {
      const LayerGemm& g = kSdar4bGemms[2];
      for (const auto& layer : weights) {
        cuda::launch_gemm_cutlass_silu_mul(x.raw_data(), layer[2].raw_data(), act.raw_data(), m, g.n / 2, g.k,
                                           DType::kBFloat16, device);
        down_of(layer, m);
      }
    };
  }
};

// The Hopper GEMM written here (gemm_sm90.cu) against cuBLASLt on SDAR-4B's four layer GEMMs at
// `m` rows over the 36 layers' weights: each output's largest difference from cuBLASLt's (relative
// to its largest value), the 36 launches' burst time (ours at the launcher's tile and at both
// widths), then both kept running `seconds` each after a quarter of that to settle, in one order
// and then the other (under the power cap a GEMM's time is its joules). Last, gate_up with SiLU·mul
// in the epilogue against cuBLASLt's gate_up followed by the SiLU·mul kernel. With `one_layer`
// every launch reads the first layer's weights, which the L2 then holds where they fit (qkv's 31
// MB, o_proj's 21 MB): what each GEMM does without its weights' first reads from DRAM.
void gemm_sm90_bench(Device gpu, int64_t m, double seconds, bool one_layer) {
  const DType bf16 = DType::kBFloat16;
  if (!gemm_sm90_here(gpu)) return;
  std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 905u);
  if (one_layer) std::fill(weights.begin() + 1, weights.end(), weights[0]);
  int64_t max_n = 0, max_k = 0;
  for (const LayerGemm& g : kSdar4bGemms) max_n = std::max(max_n, g.n), max_k = std::max(max_k, g.k);
  const Tensor x = uniform_host(m, max_k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor out = Tensor::empty({m, max_n}, bf16, gpu), ref = Tensor::empty({m, max_n}, bf16, gpu);
  std::printf("\n| gemm, %lld rows, x 36 %s | rel diff (persistent, clusters of 2) | cuBLASLt burst ms | ours burst "
              "(256 / 128 wide / clusters of 2 / persistent / persistent, clusters of 2) | sustained ms (1st / 2nd): "
              "cuBLASLt | ours | persistent | persistent, clusters of 2 | TFLOP/s sustained, the same four |\n"
              "|---|---|---|---|---|---|---|---|---|\n", static_cast<long long>(m),
              one_layer ? "launches on one layer's weights" : "layers");
  // Each kept running, in order and then in reverse: the two runs of each.
  auto sustained_runs = [&](const std::vector<std::function<void()>>& fs, std::vector<std::array<double, 2>>& t) {
    t.assign(fs.size(), {0.0, 0.0});
    for (int pass = 0; pass < 2; ++pass)
      for (size_t j = 0; j < fs.size(); ++j) {
        const size_t i = pass == 0 ? j : fs.size() - 1 - j;
        keep_running(seconds / 4, fs[i]);
        t[i][static_cast<size_t>(pass)] = keep_running(seconds, fs[i]).ms;
      }
  };
  for (size_t g = 0; g < std::size(kSdar4bGemms); ++g) {
    const LayerGemm& s = kSdar4bGemms[g];
    auto lt = [&] {
      for (const auto& layer : weights)
        cuda::launch_gemm(x.raw_data(), layer[g].raw_data(), out.raw_data(), m, s.n, s.k, bf16, bf16, gpu.index);
    };
    auto ours = [&](int bn, int cluster = 1, bool persistent = false) {
      return [&, bn, cluster, persistent] {
        for (const auto& layer : weights)
          cuda::launch_gemm_sm90(x.raw_data(), layer[g].raw_data(), out.raw_data(), m, s.n, s.k, bf16, gpu.index,
                                 false, bn, cluster, persistent);
      };
    };
    // Largest difference from cuBLASLt's output, relative to its largest value.
    auto rel_diff = [&](int cluster, bool persistent) {
      cuda::launch_gemm(x.raw_data(), weights[0][g].raw_data(), ref.raw_data(), m, s.n, s.k, bf16, bf16, gpu.index);
      cuda::launch_gemm_sm90(x.raw_data(), weights[0][g].raw_data(), out.raw_data(), m, s.n, s.k, bf16, gpu.index,
                             false, 0, cluster, persistent);
      const Tensor a = out.to(Device::cpu()).to_dtype(DType::kFloat32), b = ref.to(Device::cpu()).to_dtype(DType::kFloat32);
      double worst = 0, scale = 1e-30;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < s.n; ++c) {
          const double want = b.data<float>()[r * s.n + c];  // both [m, n] contiguous
          scale = std::max(scale, std::fabs(want));
          worst = std::max(worst, std::fabs(a.data<float>()[r * s.n + c] - want));
        }
      return worst / scale;
    };
    const double d1 = rel_diff(1, false), d2 = rel_diff(2, true);
    const double b_lt = time_ms(lt, 3), b_256 = time_ms(ours(256), 3), b_128 = time_ms(ours(128), 3),
                 b_c2 = time_ms(ours(0, 2), 3), b_p1 = time_ms(ours(0, 1, true), 3), b_p2 = time_ms(ours(0, 2, true), 3);
    std::vector<std::array<double, 2>> t;
    sustained_runs({lt, ours(0), ours(0, 1, true), ours(0, 2, true)}, t);
    const double flop = 2.0 * m * s.n * s.k * 36;
    auto rate = [&](const std::array<double, 2>& v) { return flop / ((v[0] + v[1]) / 2) / 1e9; };
    std::printf("| %s | %.1e (%.1e) | %.3f | %.3f / %.3f / %.3f / %.3f / %.3f | %.3f / %.3f | %.3f / %.3f | %.3f / %.3f | "
                "%.3f / %.3f | %.0f / %.0f / %.0f / %.0f |\n", s.name, d1, d2, b_lt, b_256, b_128, b_c2, b_p1, b_p2, t[0][0],
                t[0][1], t[1][0], t[1][1], t[2][0], t[2][1], t[3][0], t[3][1], rate(t[0]), rate(t[1]), rate(t[2]),
                rate(t[3]));
    std::fflush(stdout);
  }
  Tensor act = Tensor::empty({m, kSdar4bGemms[2].n / 2}, bf16, gpu);
  const GateUpRuns runs{weights, x, out, act, gpu.index};
  const std::vector<std::function<void()>> forms = {runs.pair(m), runs.fused(m, 1), runs.fused(m, 1, true),
                                                     runs.fused(m, 2, true)};
  const char* names[] = {"cuBLASLt, then the SiLU·mul kernel", "ours, SiLU·mul in the epilogue", "ours, persistent",
                         "ours, persistent, clusters of 2"};
  std::vector<double> burst;
  for (const auto& f : forms) burst.push_back(time_ms(f, 3));
  std::vector<std::array<double, 2>> t;
  sustained_runs(forms, t);
  std::printf("\n| gate_up and SiLU·mul, %lld rows, x 36 layers | burst ms | sustained ms (1st / 2nd) |\n|---|---|---|\n",
              static_cast<long long>(m));
  for (size_t i = 0; i < forms.size(); ++i)
    std::printf("| %s | %.3f | %.3f / %.3f |\n", names[i], burst[i], t[i][0], t[i][1]);
  std::fflush(stdout);
}

// For profilers (Nsight Compute): SDAR-4B's gate_up at m rows on one layer's weights, each of
// cuBLASLt's GEMM, the SiLU·mul kernel, the Hopper GEMM, the Hopper GEMM with SiLU·mul, and the
// Hopper GEMM in clusters of two, then persistent in clusters of two, launched twice in that
// order (the first round warms up, the second is the one to profile: launches 7 to 12).
void gemm_sm90_profile(Device gpu, int64_t m) {
  const DType bf16 = DType::kBFloat16;
  if (!gemm_sm90_here(gpu)) return;
  const LayerGemm& gu = kSdar4bGemms[2];
  const Tensor w = uniform_host(gu.n, gu.k, 905u, 1.f).to_dtype(bf16).to(gpu);
  const Tensor x = uniform_host(m, gu.k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor out = Tensor::empty({m, gu.n}, bf16, gpu), act = Tensor::empty({m, gu.n / 2}, bf16, gpu);
  for (int round = 0; round < 2; ++round) {
    cuda::launch_gemm(x.raw_data(), w.raw_data(), out.raw_data(), m, gu.n, gu.k, bf16, bf16, gpu.index);
    cuda::launch_silu_mul(out.raw_data(), act.raw_data(), m, gu.n / 2, bf16, gpu.index);
    cuda::launch_gemm_sm90(x.raw_data(), w.raw_data(), out.raw_data(), m, gu.n, gu.k, bf16, gpu.index, false);
    cuda::launch_gemm_sm90(x.raw_data(), w.raw_data(), act.raw_data(), m, gu.n, gu.k, bf16, gpu.index, true);
    cuda::launch_gemm_sm90(x.raw_data(), w.raw_data(), out.raw_data(), m, gu.n, gu.k, bf16, gpu.index, false, 0, 2);
    cuda::launch_gemm_sm90(x.raw_data(), w.raw_data(), out.raw_data(), m, gu.n, gu.k, bf16, gpu.index, false, 0, 2,
                           true);
  }
  cuda::synchronize();
}

// Where the fused gate_up + SiLU·mul of gemm_sm90 starts to pay: SDAR-4B's gate_up over 36 layers,
// burst ms by rows, cuBLASLt then the SiLU·mul kernel against ours.
void gemm_sm90_sweep(Device gpu) {
  const DType bf16 = DType::kBFloat16;
  if (!gemm_sm90_here(gpu)) return;
  const std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 905u);
  const LayerGemm& gu = kSdar4bGemms[2];
  const int64_t inter = gu.n / 2, max_m = 1024;
  const Tensor x = uniform_host(max_m, gu.k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor out = Tensor::empty({max_m, gu.n}, bf16, gpu), act = Tensor::empty({max_m, inter}, bf16, gpu);
  std::printf("\n| gate_up + SiLU·mul, x 36 layers, rows | cuBLASLt + kernel ms | ours fused ms | ratio | persistent, "
              "clusters of 2 ms | ratio |\n|---|---|---|---|---|---|\n");
  const GateUpRuns runs{weights, x, out, act, gpu.index};
  for (int64_t m : {4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 640, 1024}) {
    const double a = time_ms(runs.pair(m), 5), b = time_ms(runs.fused(m, 1), 5), c = time_ms(runs.fused(m, 2, true), 5);
    std::printf("| %lld | %.3f | %.3f | %.2f | %.3f | %.2f |\n", static_cast<long long>(m), a, b, b / a, c, c / a);
  }
  std::fflush(stdout);
}

// The MLP's gate_up with SiLU·mul as the engine runs it by default on Hopper, the CUTLASS kernel
// with the epilogue written here (gemm_cutlass.cu), against cuBLASLt's gate_up followed by the
// SiLU·mul kernel (both on the 128-row interleaved layout): SDAR-4B's gate_up over 36 layers by
// rows, burst ms, then each kept running `seconds` after a quarter of that to settle, the pair, the
// fused kernel, the pair again (under the power cap a kernel's time is its joules); and how many of
// the outputs differ between the two (layer 0). Where fused_silu_mul_takes it is the rows the
// engine sends to the fused kernel (ops/linear.cc), in launches of fused_silu_mul_launch_rows (here
// always one launch). With `with_down`, each layer's down projection (cuBLASLt) follows in both
// forms, reading the SiLU·mul's output as the MLP does: whether the fused kernel's output, written
// while the gate_up weights stream through the L2, costs the down projection more than the SiLU·mul
// kernel's, written just before it.
void silu_mul_sweep(Device gpu, const std::vector<int64_t>& rows, double seconds, bool with_down) {
  const DType bf16 = DType::kBFloat16;
  const LayerGemm& gu = kSdar4bGemms[2];
  const int64_t inter = gu.n / 2;
  if (!cuda::gemm_cutlass_silu_mul_serves(bf16, inter, gu.k, gpu.index)) {
    std::printf("the CUTLASS gate_up + SiLU·mul does not serve here (no CUTLASS headers in the build, no sm_90a, or "
                "not compute capability 9.0): nothing measured\n");
    return;
  }
  const std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 905u);
  const int64_t max_m = *std::max_element(rows.begin(), rows.end());
  const Tensor x = uniform_host(max_m, gu.k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor gate_up = Tensor::empty({max_m, gu.n}, bf16, gpu), act = Tensor::empty({max_m, inter}, bf16, gpu);
  Tensor fused_act = Tensor::empty({max_m, inter}, bf16, gpu);
  Tensor down = Tensor::empty({max_m, kSdar4bGemms[3].n}, bf16, gpu);
  std::printf("\n| gate_up + SiLU·mul%s, x 36 layers, rows | engine takes fused | cuBLASLt + kernel burst ms | CUTLASS fused "
              "burst ms | pair sustained ms | fused sustained ms | pair again | fused / pair (sustained) | outputs "
              "differing |\n|---|---|---|---|---|---|---|---|---|\n", with_down ? " then down" : "");
  const GateUpRuns runs{weights, x, gate_up, act, gpu.index, 128, with_down ? &down : nullptr};
  // Layer 0 alone, each form into its own output.
  const std::vector<std::vector<Tensor>> first(weights.begin(), weights.begin() + 1);
  const GateUpRuns first_pair{first, x, gate_up, act, gpu.index, 128};
  const GateUpRuns first_fused{first, x, gate_up, fused_act, gpu.index, 128};
  for (int64_t m : rows) {
    const std::function<void()> pair = runs.pair(m), fused = runs.cutlass(m);
    const double pb = time_ms(pair, 5), fb = time_ms(fused, 5);
    auto kept = [&](const std::function<void()>& f) {
      keep_running(seconds / 4, f);
      return keep_running(seconds, f).ms;
    };
    const double p1 = kept(pair), f1 = kept(fused), p2 = kept(pair);
    first_pair.pair(m)();
    first_fused.cutlass(m)();
    const Tensor a = act.slice(0, 0, m).to(Device::cpu()), b = fused_act.slice(0, 0, m).to(Device::cpu());
    const auto* pa = static_cast<const uint16_t*>(a.raw_data());
    const auto* pb16 = static_cast<const uint16_t*>(b.raw_data());
    int64_t differ = 0;
    for (int64_t i = 0; i < m * inter; ++i) differ += pa[i] != pb16[i];
    const std::string takes = !ops::fused_silu_mul_takes(m) ? "no"
                              : ops::fused_silu_mul_launch_rows(m) < m
                                  ? str_cat("in launches of ", ops::fused_silu_mul_launch_rows(m), " rows")
                                  : "yes";
    std::printf("| %lld | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %lld of %lld |\n", static_cast<long long>(m),
                takes.c_str(), pb, fb, p1, f1, p2, f1 / ((p1 + p2) / 2),
                static_cast<long long>(differ), static_cast<long long>(m * inter));
    std::fflush(stdout);
  }
}

// The LM head and greedy sampling: cuBLASLt's float32 logits then the sampling pass (the fast sums
// of 16-bit models), against the fused kernel (ops::lm_head_greedy: the logits reduced in the
// GEMM's epilogue, never stored), at SDAR-4B's and SDAR-8B's hidden sizes and the vocabulary of
// both, by rows: burst ms (20 launches), then each kept running `seconds` after a quarter of that
// to settle (pair, fused, pair again); and how the outputs compare (x0 equal, the largest
// difference of log p, entropy and confidence).
void lm_head_sweep(Device gpu, const std::vector<int64_t>& rows, double seconds) {
  const DType bf16 = DType::kBFloat16;
  const int64_t vocab = 151936;
  std::printf("\n| LM head + greedy sampling: hidden | rows | cuBLASLt + pass burst ms | fused burst ms | pair sustained ms "
              "| fused sustained ms | pair again | fused / pair (sustained) | x0 equal | max diff |\n"
              "|---|---|---|---|---|---|---|---|---|---|\n");
  for (int64_t k : {2560, 4096}) {
    const Tensor w = uniform_host(vocab, k, 905u, 0.05f).to_dtype(bf16).to(gpu);
    if (!ops::lm_head_greedy_serves(w)) {
      std::printf("the fused LM head does not serve here (no CUTLASS headers in the build, no sm_90a, or not compute "
                  "capability 9.0): nothing measured\n");
      return;
    }
    const int64_t max_m = *std::max_element(rows.begin(), rows.end());
    const Tensor x = uniform_host(max_m, k, 11u, 1.f).to_dtype(bf16).to(gpu);
    Tensor logits = Tensor::empty({max_m, vocab}, DType::kFloat32, gpu);
    for (int64_t m : rows) {
      const Tensor xm = x.slice(0, 0, m);
      Tensor lm = logits.slice(0, 0, m);
      const std::vector<ops::SampleRowParams> params(static_cast<size_t>(m), ops::SampleRowParams{0.f, 0, 1.f, 7, 0, 0});
      ops::SampleOutputs a = ops::SampleOutputs::empty(m, gpu), b = ops::SampleOutputs::empty(m, gpu);
      const std::function<void()> pair = [&] {
        ops::linear(xm, w, lm);
        ops::sample_rows(lm, params, a, ops::SampleMath::kFast);
      };
      const std::function<void()> fused = [&] { ops::lm_head_greedy(xm, w, b); };
      const double pb = time_ms(pair), fb = time_ms(fused);
      auto kept = [&](const std::function<void()>& f) {
        keep_running(seconds / 4, f);
        return keep_running(seconds, f).ms;
      };
      const double p1 = kept(pair), f1 = kept(fused), p2 = kept(pair);
      const ops::SampleOutputs ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
      int64_t equal = 0;
      double diff = 0;
      for (int64_t r = 0; r < m; ++r) {
        equal += ha.x0.data<int32_t>()[r] == hb.x0.data<int32_t>()[r];
        for (Tensor ops::SampleOutputs::*field : {&ops::SampleOutputs::logprob, &ops::SampleOutputs::entropy,
                                                   &ops::SampleOutputs::confidence})
          diff = std::max(diff, std::fabs(double((ha.*field).data<float>()[r]) - (hb.*field).data<float>()[r]));
      }
      std::printf("| %lld | %lld | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %lld of %lld | %.2g |\n",
                  static_cast<long long>(k), static_cast<long long>(m), pb, fb, p1, f1, p2, f1 / ((p1 + p2) / 2),
                  static_cast<long long>(equal), static_cast<long long>(m), diff);
      std::fflush(stdout);
    }
  }
}

// A GEMM's fixed cost (launch, the ring's first fill, the epilogue) against its mainloop's: qkv's
// shape (n = 6,144) at `m` rows over k = 640 to 5,120, one weight (the L2 holds it up to k =
// 3,840), 36 launches in bursts, µs a launch for cuBLASLt and for ours (256 wide: plain, then
// persistent in clusters of 2 and of 4). A line through the times by k gives each kernel's µs per
// 64 columns of k (its mainloop) and at k = 0 (the rest).
void gemm_sm90_k_sweep(Device gpu, int64_t m) {
  const DType bf16 = DType::kBFloat16;
  if (!gemm_sm90_here(gpu)) return;
  const int64_t n = kSdar4bGemms[0].n, max_k = 5120;
  const Tensor w = uniform_host(n, max_k, 905u, 1.f).to_dtype(bf16).to(gpu);
  const Tensor x = uniform_host(m, max_k, 11u, 1.f).to_dtype(bf16).to(gpu);
  Tensor out = Tensor::empty({m, n}, bf16, gpu);
  std::printf("\n| n = %lld, %lld rows: k | cuBLASLt us a launch | ours | ours, persistent pairs | ours, persistent "
              "clusters of 4 |\n|---|---|---|---|---|\n",
              static_cast<long long>(n), static_cast<long long>(m));
  for (int64_t k : {640, 1280, 2560, 3840, 5120}) {
    auto lt = [&] {
      for (int i = 0; i < 36; ++i)
        cuda::launch_gemm(x.raw_data(), w.raw_data(), out.raw_data(), m, n, k, bf16, bf16, gpu.index);
    };
    auto ours = [&](int cluster, bool persistent) {
      return [&, cluster, persistent] {
        for (int i = 0; i < 36; ++i)
          cuda::launch_gemm_sm90(x.raw_data(), w.raw_data(), out.raw_data(), m, n, k, bf16, gpu.index, false, 256,
                                 cluster, persistent);
      };
    };
    // (The buffers, made for k = 5,120, are read as contiguous [m, k] and [n, k]: enough to time.)
    std::printf("| %lld | %.2f | %.2f | %.2f | %.2f |\n", static_cast<long long>(k), time_ms(lt, 5) * 1000 / 36,
                time_ms(ours(1, false), 5) * 1000 / 36, time_ms(ours(2, true), 5) * 1000 / 36,
                time_ms(ours(4, true), 5) * 1000 / 36);
  }
  std::fflush(stdout);
}

// Whether two half-batches on two stream lanes overlap one's memory-bound attention with the
// other's compute-bound GEMMs: SDAR-4B's GEMMs (qkv, o, gate_up, down; distinct weights per layer)
// and denoise attention (4 rows per sequence over `ctx` cached tokens, a cache per layer) over 36
// layers, for the whole batch on one lane, its two halves one after the other on one lane, and the
// halves on two lanes at once.
void overlap(Device gpu, int64_t batch, int64_t ctx) {
  const int64_t H = 32, KV = 8, D = 128, hidden = 2560, inter = 9728, layers = 36, q = 4, page = 16;
  const DType bf16 = DType::kBFloat16;
  const std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 777u);
  const int64_t qkv_n = kSdar4bGemms[0].n;
  struct Part {
    int64_t rows = 0;
    ops::AttentionMetadata m;
    Tensor x, qkv, attn, gate_up, act;
    std::vector<Tensor> kc, vc;
  };
  auto make = [&](int64_t seqs) {
    Part p;
    p.rows = seqs * q;
    const int64_t pages_per_seq = ctx / page;
    p.m = batch_metadata(gpu, seqs, ctx, q, q, page);
    ops::attach_attention_plan(p.m, {H, KV, D}, bf16, gpu,
                               {.pow2_splits = true, .cta_slots = ops::attention_cta_slots(gpu, bf16, {H, KV, D}, page)});
    p.x = uniform_host(p.rows, std::max(hidden, inter), 5u, 1.f).to_dtype(bf16).to(gpu);
    p.qkv = Tensor::zeros({p.rows, (H + 2 * KV) * D}, bf16, gpu);
    p.attn = Tensor::empty({p.rows, H * D}, bf16, gpu);
    p.gate_up = Tensor::empty({p.rows, 2 * inter}, bf16, gpu);
    for (int64_t l = 0; l < layers; ++l) {
      p.kc.push_back(Tensor::zeros({seqs * pages_per_seq, page, KV, D}, bf16, gpu));
      p.vc.push_back(Tensor::zeros({seqs * pages_per_seq, page, KV, D}, bf16, gpu));
    }
    return p;
  };
  auto forward = [&](Part& p) {
    for (int64_t l = 0; l < layers; ++l) {
      const auto& w = weights[static_cast<size_t>(l)];
      cuda::launch_gemm(p.x.raw_data(), w[0].raw_data(), p.qkv.raw_data(), p.rows, qkv_n, hidden, bf16, bf16,
                        gpu.index);
      ops::paged_attention(p.qkv, p.kc[static_cast<size_t>(l)], p.vc[static_cast<size_t>(l)], p.m, {H, KV, D}, p.attn);
      cuda::launch_gemm(p.attn.raw_data(), w[1].raw_data(), p.x.raw_data(), p.rows, hidden, H * D, bf16, bf16, gpu.index);
      cuda::launch_gemm(p.x.raw_data(), w[2].raw_data(), p.gate_up.raw_data(), p.rows, 2 * inter, hidden, bf16, bf16,
                        gpu.index);
      cuda::launch_gemm(p.gate_up.raw_data(), w[3].raw_data(), p.x.raw_data(), p.rows, hidden, inter, bf16, bf16,
                        gpu.index);
    }
  };
  Part whole = make(batch), a = make(batch / 2), b = make(batch - batch / 2);
  const double t_whole = time_ms([&] { forward(whole); }, 10);
  const double t_halves = time_ms([&] { forward(a); forward(b); }, 10);
  const double t_lanes = time_ms(
      [&] {
        cuda::fork_lanes();
        forward(a);
        {
          cuda::StreamLaneScope lane(1);
          forward(b);
        }
        cuda::join_lanes();
      },
      10);
  const double t_gemm_only = time_ms(
      [&] {
        for (int64_t l = 0; l < layers; ++l) {
          const auto& w = weights[static_cast<size_t>(l)];
          Part& p = whole;
          cuda::launch_gemm(p.x.raw_data(), w[0].raw_data(), p.qkv.raw_data(), p.rows, qkv_n, hidden, bf16,
                            bf16, gpu.index);
          cuda::launch_gemm(p.attn.raw_data(), w[1].raw_data(), p.x.raw_data(), p.rows, hidden, H * D, bf16, bf16,
                            gpu.index);
          cuda::launch_gemm(p.x.raw_data(), w[2].raw_data(), p.gate_up.raw_data(), p.rows, 2 * inter, hidden, bf16,
                            bf16, gpu.index);
          cuda::launch_gemm(p.gate_up.raw_data(), w[3].raw_data(), p.x.raw_data(), p.rows, hidden, inter, bf16, bf16,
                            gpu.index);
        }
      },
      10);
  std::printf("| SDAR-4B, 36 x (qkv, attention, o, gate_up, down) | batch %lld, ctx %lld, q = 4 | %.3f | %.3f | %.3f | "
              "%.3f |\n",
              static_cast<long long>(batch), static_cast<long long>(ctx), t_gemm_only, t_whole, t_halves, t_lanes);
}

// The SDAR-4B batch-128 block-4 decode forward's GEMMs and attention kept running for `seconds`,
// to see what they take once the card has settled under sustained load (its power cap, not the
// short bursts of the tables above, sets the clock then): 640 rows (a quarter of the sequences
// carry a finished block's 4 commit rows), 36 layers with their own weights and caches, 128
// sequences x 512 cached tokens, and the LM head over 320 rows (float32 logits). Prints ms per
// forward over the first 10 forwards and over the last half of the time, for the GEMMs alone,
// the attention alone, the two in the forward's order, a copy of the attention's DRAM traffic
// alone and with the GEMMs (`only` >= 0: that one of the five). `only` = 5: the attention alone
// over the same bytes and CTAs with one KV head (1,024 sequences, 4/1 heads), where each CTA's keys
// lie in whole contiguous pages instead of 256-byte rows interleaved with the other heads': what
// the page layout costs in joules. `only` = 6 to 9: what running work at once on two stream lanes
// does to the joules: the GEMMs and the attention of the whole batch with no dependency between
// them (the most overlap could give), the batch's two halves one after the other and then on two
// lanes (each half in the forward's order, so one's attention can run under the other's GEMMs),
// and the GEMMs beside the copy; 10 and 11: the two halves' GEMMs alone and attention alone.
void sustained(Device gpu, double seconds, int only) {
  const bool one_head = only == 5;
  const int64_t KV = one_head ? 1 : 8, H = 4 * KV, seqs = one_head ? 1024 : 128;
  const int64_t D = 128, hidden = 2560, inter = 9728, layers = 36, page = 16, ctx = 512;
  const int64_t vocab = 151936, logit_rows = 320;
  const DType bf16 = DType::kBFloat16;
  const std::vector<std::vector<Tensor>> weights = sdar4b_weights(gpu, 901u);
  const Tensor lm_head = uniform_host(vocab, hidden, 903u, 0.05f).to_dtype(bf16).to(gpu);
  ops::AttentionMetadata m = batch_metadata(gpu, seqs, ctx, 4, 4, page, 8);
  ops::attach_attention_plan(m, {H, KV, D}, bf16, gpu,
                             {.pow2_splits = true, .cta_slots = ops::attention_cta_slots(gpu, bf16, {H, KV, D}, page)});
  const int64_t rows = m.host_q_start.data<int32_t>()[seqs];
  const Tensor x = uniform_host(rows, inter, 5u, 1.f).to_dtype(bf16).to(gpu);
  Tensor qkv = uniform_host(rows, (H + 2 * KV) * D, 6u, 1.f).to_dtype(bf16).to(gpu);
  Tensor attn = Tensor::empty({rows, H * D}, bf16, gpu), gate_up = Tensor::empty({rows, 2 * inter}, bf16, gpu);
  Tensor y = Tensor::empty({rows, hidden}, bf16, gpu), logits = Tensor::empty({logit_rows, vocab}, DType::kFloat32, gpu);
  const Tensor cache = uniform_host(seqs * ctx, KV * D, 10u, 1.f).to_dtype(bf16).to(gpu);
  std::vector<Tensor> kc, vc;
  for (int64_t l = 0; l < 2 * layers; ++l) {
    Tensor t = Tensor::empty({seqs * (ctx / page), page, KV, D}, bf16, gpu);
    device_copy(t.raw_data(), gpu, cache.raw_data(), gpu, cache.nbytes());
    (l % 2 ? vc : kc).push_back(t);
  }
  auto gemm = [&](const Tensor& in, const Tensor& w, Tensor& out, int64_t r) {
    cuda::launch_gemm(in.raw_data(), w.raw_data(), out.raw_data(), r, w.shape()[0], w.shape()[1], bf16,
                      out.dtype(), gpu.index);
  };
  // The copy variants move the attention's DRAM traffic without its work: each layer's K cache
  // (half the KV bytes) copied into one scratch buffer reads and writes 9.7 GB a forward, which
  // bounds the joules any kernel that reads the KV once could spend on it.
  const Tensor scratch = Tensor::empty(kc[0].shape(), bf16, gpu);
  auto forward = [&](bool with_gemms, bool with_attention, bool with_copy) {
    for (int64_t l = 0; l < layers; ++l) {
      const auto& w = weights[static_cast<size_t>(l)];
      if (with_gemms) gemm(x, w[0], qkv, rows);
      if (with_attention) ops::paged_attention(qkv, kc[static_cast<size_t>(l)], vc[static_cast<size_t>(l)], m, {H, KV, D}, attn);
      if (with_copy) device_copy(scratch.raw_data(), gpu, kc[static_cast<size_t>(l)].raw_data(), gpu, scratch.nbytes());
      if (with_gemms) {
        gemm(attn, w[1], y, rows);
        gemm(x, w[2], gate_up, rows);
        gemm(gate_up, w[3], y, rows);
      }
    }
    if (with_gemms) gemm(x, lm_head, logits, logit_rows);
  };
  // Two half-batches (64 sequences, 320 rows, 160 logit rows each) with caches of their own, for
  // the variants that overlap one half's attention with the other's GEMMs on two stream lanes.
  struct Half {
    ops::AttentionMetadata m;
    int64_t rows = 0;
    Tensor qkv, attn, gate_up, y, logits;
    std::vector<Tensor> kc, vc;
  };
  std::vector<Half> halves;
  if (only >= 6) {
    for (int h = 0; h < 2; ++h) {
      Half half;
      half.m = batch_metadata(gpu, seqs / 2, ctx, 4, 4, page, 8);
      ops::attach_attention_plan(half.m, {H, KV, D}, bf16, gpu,
                                 {.pow2_splits = true, .cta_slots = ops::attention_cta_slots(gpu, bf16, {H, KV, D}, page)});
      half.rows = half.m.host_q_start.data<int32_t>()[seqs / 2];
      half.qkv = uniform_host(half.rows, (H + 2 * KV) * D, 6u + h, 1.f).to_dtype(bf16).to(gpu);
      half.attn = Tensor::empty({half.rows, H * D}, bf16, gpu);
      half.gate_up = Tensor::empty({half.rows, 2 * inter}, bf16, gpu);
      half.y = Tensor::empty({half.rows, hidden}, bf16, gpu);
      half.logits = Tensor::empty({logit_rows / 2, vocab}, DType::kFloat32, gpu);
      for (int64_t l = 0; l < 2 * layers; ++l) {
        Tensor t = Tensor::empty({seqs / 2 * (ctx / page), page, KV, D}, bf16, gpu);
        device_copy(t.raw_data(), gpu, cache.raw_data(), gpu, t.nbytes());
        (l % 2 ? half.vc : half.kc).push_back(t);
      }
      halves.push_back(std::move(half));
    }
  }
  auto half_forward = [&](Half& h, bool gemms = true, bool attention = true) {
    for (int64_t l = 0; l < layers; ++l) {
      const auto& w = weights[static_cast<size_t>(l)];
      if (gemms) gemm(x, w[0], h.qkv, h.rows);
      if (attention)
        ops::paged_attention(h.qkv, h.kc[static_cast<size_t>(l)], h.vc[static_cast<size_t>(l)], h.m, {H, KV, D}, h.attn);
      if (gemms) {
        gemm(h.attn, w[1], h.y, h.rows);
        gemm(x, w[2], h.gate_up, h.rows);
        gemm(h.gate_up, w[3], h.y, h.rows);
      }
    }
    if (gemms) gemm(x, lm_head, h.logits, logit_rows / 2);
  };
  // `first` on lane 0 and `second` on lane 1 at once; returns when both are done.
  auto on_two_lanes = [](const std::function<void()>& first, const std::function<void()>& second) {
    cuda::fork_lanes();
    {
      cuda::StreamLaneScope lane(1);
      second();
    }
    first();
    cuda::join_lanes();
  };
  // The forward's parts named (GEMMs, attention, copy) run in its order on the current lane.
  auto parts = [&](bool gemms, bool attention, bool copy) {
    return [&, gemms, attention, copy] { forward(gemms, attention, copy); };
  };
  auto both_halves = [&](bool gemms, bool attention) {
    return [&, gemms, attention] {
      half_forward(halves[0], gemms, attention);
      half_forward(halves[1], gemms, attention);
    };
  };
  struct Variant {
    const char* name;
    std::function<void()> run;
  };
  const std::vector<Variant> variants = {
      {"GEMMs (36 x 4 at 640 rows, LM head at 320)", parts(true, false, false)},
      {"attention (36 x 128 seqs x 512 keys)", parts(false, true, false)},
      {"GEMMs and attention, in the forward's order", parts(true, true, false)},
      {"copy of the attention's DRAM traffic (36 x 134 MB read and written)", parts(false, false, true)},
      {"GEMMs and that copy, in the forward's order", parts(true, false, true)},
      {"attention, one KV head (36 x 1,024 seqs x 512 keys, 4/1 heads: the same bytes)", parts(false, true, false)},
      {"GEMMs and attention at once on two lanes (no dependency between them)",
       [&] { on_two_lanes(parts(true, false, false), parts(false, true, false)); }},
      {"two half-batches (320 rows each), one after the other on one lane", both_halves(true, true)},
      {"two half-batches on two lanes at once, each in the forward's order",
       [&] { on_two_lanes([&] { half_forward(halves[0]); }, [&] { half_forward(halves[1]); }); }},
      {"GEMMs and the copy at once on two lanes", [&] { on_two_lanes(parts(true, false, false), parts(false, false, true)); }},
      {"two half-batches' GEMMs only, one after the other", both_halves(true, false)},
      {"two half-batches' attention only, one after the other", both_halves(false, true)}};
  for (size_t i = 0; i < variants.size(); ++i) {
    if ((only >= 0 && static_cast<size_t>(only) != i) || (i == 5 && !one_head) || (i >= 6 && only < 6)) continue;
    const Variant& v = variants[i];
    const std::function<void()>& run = v.run;
    cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int f = 0; f < 10; ++f) run();
    cuda::synchronize();
    const double first_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (first_s < seconds / 2) keep_running(seconds / 2 - first_s, run);
    const KeptRunning last_half = keep_running(seconds / 2, run);
    std::printf("| %s | %.3f | %.3f | %d |\n", v.name, first_s * 100, last_half.ms, last_half.calls);
  }
}

// The fused sampling pass over SDAR's vocabulary: 4, 320 and 512 rows of every row kind, in the
// float32 mode's double arithmetic and the 16-bit models' float arithmetic.
void sampling(Device gpu, double copy_gbps) {
  std::printf("| kernel | shape | ms | GB/s | ratio to copy bandwidth | |\n|---|---|---|---|---|---|\n");
  for (int64_t rows : {int64_t{4}, int64_t{320}, int64_t{512}}) {
    const int64_t vocab = 151936;
    // Random logits in [-8, 8) (ties everywhere with zeros would be a degenerate top-p).
    const Tensor logits = uniform_host(rows, vocab, 99u, 8.f).to(gpu);
    struct Kind {
      const char* name;
      float temperature;
      int32_t topk;
      float topp;
    };
    for (const Kind& k : {Kind{"greedy", 0.f, 0, 1.f}, Kind{"T=1, Gumbel", 1.f, 0, 1.f},
                          Kind{"T=1, top-k 50", 1.f, 50, 1.f}, Kind{"T=1, top-p 0.9", 1.f, 0, 0.9f},
                          Kind{"T=1, top-k 50 + top-p 0.9", 1.f, 50, 0.9f}}) {
      std::vector<ops::SampleRowParams> params(rows, ops::SampleRowParams{k.temperature, k.topk, k.topp, 7, 0, 0});
      ops::SampleOutputs o = ops::SampleOutputs::empty(rows, gpu);
      for (const ops::SampleMath math : {ops::SampleMath::kExact, ops::SampleMath::kFast}) {
        const double ms = time_ms([&] { ops::sample_rows(logits, params, o, math); });
        const double bytes = 4.0 * rows * vocab;
        std::printf("| sample_rows (%s, %s sums) | %lld rows x 151936 vocab, fp32 logits | %.3f | %.0f | %.2f | |\n",
                    k.name, math == ops::SampleMath::kFast ? "float" : "double", static_cast<long long>(rows), ms,
                    bytes / ms / 1e6, bytes / ms / 1e6 / copy_gbps);
      }
    }
  }
}

}  // namespace

int run(int argc, char** argv) {
  double copy_gbps = 3000;
  bool attention_only = false, sampling_only = false;
  bool prefill_only = false;    // only the prefill attention rows (8 x 2,048 and 1 x 16,384 prompt tokens)
  int64_t candidates_rows = 0;  // > 0: only the GEMM candidates at that many rows and the wave probe
  int split_sweep = 0;          // 1, 2: only the denoise attention over batch sizes and key runs
  double sustained_s = 0;       // > 0: only the decode forward's GEMMs and attention kept running
  int sustained_only = -1;      // with --sustained: 0 GEMMs, 1 attention, 2 both, 3 copy, 4 GEMMs + copy,
                                // 5 attention with one KV head, 6 GEMMs and attention on two lanes,
                                // 7 two half-batches on one lane, 8 on two lanes, 9 GEMMs and copy on
                                // two lanes, 10 / 11 the halves' GEMMs / attention alone; -1 all of 0-4
  int64_t sustained_gemm_rows = 0;  // > 0: only each GEMM candidate kept running at that many rows
  int64_t sm90_rows = 0;            // > 0: only the Hopper GEMM against cuBLASLt at that many rows
  bool sm90_sweep = false;          // only the fused gate_up + SiLU·mul against cuBLASLt's by rows
  int64_t sm90_profile_rows = 0;    // > 0: only gate_up's six kernel forms twice, for a profiler
  int sustained_gemm_count = 12;    // with --sustained-gemms: how many of the heuristic's candidates
  double sustained_gemm_s = 1.0;    // with --sustained-gemms: seconds each candidate is timed, per pass
  bool one_layer = false;           // with --gemm-sm90: every launch on the first layer's weights
  int64_t sm90_k_rows = 0;          // > 0: only qkv's shape by k, cuBLASLt against ours
  std::vector<int64_t> silu_rows;   // only the CUTLASS fused gate_up + SiLU·mul against cuBLASLt's, by rows
  bool silu_with_down = false;      // with --silu-mul-sweep: each layer's down projection too
  std::vector<int64_t> lm_head_rows;  // only the fused LM head and greedy sampling against the pair, by rows
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--copy-gbps") copy_gbps = std::stod(argv[i + 1]);
    if (std::string(argv[i]) == "--attention-only") attention_only = std::stoi(argv[i + 1]) != 0;
    if (std::string(argv[i]) == "--prefill-only") prefill_only = std::stoi(argv[i + 1]) != 0;
    if (std::string(argv[i]) == "--sampling-only") sampling_only = std::stoi(argv[i + 1]) != 0;
    if (std::string(argv[i]) == "--gemm-candidates") candidates_rows = std::stoll(argv[i + 1]);
    if (std::string(argv[i]) == "--split-sweep") split_sweep = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--sustained") sustained_s = std::stod(argv[i + 1]);
    if (std::string(argv[i]) == "--sustained-only") sustained_only = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--sustained-gemms") sustained_gemm_rows = std::stoll(argv[i + 1]);
    if (std::string(argv[i]) == "--gemm-sm90") sm90_rows = std::stoll(argv[i + 1]);
    if (std::string(argv[i]) == "--gemm-sm90-sweep") sm90_sweep = std::string(argv[i + 1]) == "1";
    if (std::string(argv[i]) == "--gemm-sm90-profile") sm90_profile_rows = std::stoll(argv[i + 1]);
    if (std::string(argv[i]) == "--sustained-count") sustained_gemm_count = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--sustained-seconds") sustained_gemm_s = std::stod(argv[i + 1]);
    if (std::string(argv[i]) == "--one-layer") one_layer = std::stoi(argv[i + 1]) != 0;
    if (std::string(argv[i]) == "--gemm-sm90-k") sm90_k_rows = std::stoll(argv[i + 1]);
    if (std::string(argv[i]) == "--silu-mul-sweep") silu_rows = parse_rows(argv[i + 1]);
    if (std::string(argv[i]) == "--with-down") silu_with_down = std::stoi(argv[i + 1]) != 0;
    if (std::string(argv[i]) == "--lm-head-sweep") lm_head_rows = parse_rows(argv[i + 1]);
  }
  if (cuda_device_count() == 0) {
    std::printf("no CUDA GPU visible: nothing measured\n");
    return 0;
  }
  const Device gpu = Device::cuda(0);
  if (sampling_only) {
    sampling(gpu, copy_gbps);
    return 0;
  }
  if (!silu_rows.empty()) {
    silu_mul_sweep(gpu, silu_rows, sustained_gemm_s, silu_with_down);
    return 0;
  }
  if (!lm_head_rows.empty()) {
    lm_head_sweep(gpu, lm_head_rows, sustained_gemm_s);
    return 0;
  }
  if (sm90_profile_rows > 0) {
    gemm_sm90_profile(gpu, sm90_profile_rows);
    return 0;
  }
  if (sm90_sweep) {
    gemm_sm90_sweep(gpu);
    return 0;
  }
  if (sm90_k_rows > 0) {
    gemm_sm90_k_sweep(gpu, sm90_k_rows);
    return 0;
  }
  if (sm90_rows > 0) {
    gemm_sm90_bench(gpu, sm90_rows, sustained_gemm_s, one_layer);
    return 0;
  }
  if (sustained_gemm_rows > 0) {
    sustained_gemms(gpu, sustained_gemm_rows, sustained_gemm_count, sustained_gemm_s);
    return 0;
  }
  if (sustained_s > 0) {
    std::printf("| SDAR-4B batch 128 block 4 decode forward, kept running %.0f s | first 10 forwards, ms each | "
                "last half, ms each | forwards in the last half |\n|---|---|---|---|\n", sustained_s);
    sustained(gpu, sustained_s, sustained_only);
    return 0;
  }
  // The plans' CTA slots, read once: occupancy depends on the dtype, head size and page size, the
  // same for every attention row below.
  const std::array<int64_t, 4> slots = ops::attention_cta_slots(gpu, DType::kBFloat16, {32, 8, 128}, 16);
  std::printf("tensor-core attention CTAs at once (32/8 heads, d = 128, bf16, pages of 16), key split 1 / 2 / 4, "
              "wide tiles: %lld / %lld / %lld / %lld\n\n", static_cast<long long>(slots[0]),
              static_cast<long long>(slots[1]), static_cast<long long>(slots[2]), static_cast<long long>(slots[3]));
  const bool wgmma = ops::attention_wgmma(gpu, DType::kBFloat16, {32, 8, 128}, 16);
  std::printf("wgmma form: %s\n\n", wgmma ? "serves (wide plans take it)" : "does not serve");
  std::printf("| kernel | shape | ms | GB/s | ratio to copy bandwidth | TFLOP/s |\n|---|---|---|---|---|---|\n");
  // Denoise steps (q = block length query rows per sequence over a long cached context) and a
  // prefill (every row of the prompt, block-causal), 32/8 heads, d = 128, bf16. `q_first_of_4`
  // rows for every fourth sequence (2 q: a block's first step with the finished block's commit
  // rows, as in SDAR batch decoding) make the engine's mix of tiles.
  auto attention = [&](const char* what, int64_t seqs, int64_t ctx, int64_t q, int64_t block,
                       int32_t forced_run = 0, int64_t q_first_of_4 = 0,
                       int64_t KV = 8, int32_t wide = -1, bool allow_wgmma = true) {
    const int64_t H = 4 * KV, D = 128, page = 16;
    const int64_t num_pages = seqs * (ctx / page);
    ops::AttentionMetadata m = batch_metadata(gpu, seqs, ctx, q, block, page, q_first_of_4);
    // Once, as the executor does (which also rounds the splits to a power of two).
    ops::attach_attention_plan(m, {H, KV, D}, DType::kBFloat16, gpu,
                               {.pow2_splits = true,
                                .cta_slots = slots,
                                .keys_per_split = forced_run,
                                .wide_tiles = wide,
                                .wgmma = wgmma && allow_wgmma});
    const int64_t rows = m.positions.size(0);
    Tensor qkv = Tensor::zeros({rows, (H + 2 * KV) * D}, DType::kBFloat16, gpu);
    Tensor kc = Tensor::zeros({num_pages, page, KV, D}, DType::kBFloat16, gpu);
    Tensor vc = Tensor::zeros({num_pages, page, KV, D}, DType::kBFloat16, gpu);
    Tensor out = Tensor::empty({rows, H * D}, DType::kBFloat16, gpu);
    const double ms = time_ms([&] { ops::paged_attention(qkv, kc, vc, m, {H, KV, D}, out); });
    const double bytes = 2.0 * seqs * ctx * KV * D * 2;  // K and V, bf16, read once
    // Useful FLOPs: QK^T and PV over the keys each row sees (about half the prompt for a prefill).
    const double keys = q == ctx ? ctx / 2.0 : ctx;
    const double tflops = 4.0 * rows * keys * H * D / ms / 1e9;
    std::printf("| paged_attention (%s) | %lld seqs x %lld ctx, q=%lld%s, block %lld, %lld/%lld heads, d=128, bf16, "
                "%d splits of %d keys (%s)%s | %.3f | %.0f | %.2f | %.1f |\n",
                what, static_cast<long long>(seqs), static_cast<long long>(ctx), static_cast<long long>(q),
                q_first_of_4 > 0 ? " (8 for every 4th)" : "", static_cast<long long>(block), static_cast<long long>(H),
                static_cast<long long>(KV), m.attn_splits,
                m.attn_keys_per_split, forced_run > 0 ? "forced" : "planned",
                m.attn_wgmma ? (wide == 1 ? ", wgmma (forced)" : ", wgmma")
                : m.attn_wide ? (wide == 1 ? ", wide tiles (forced)" : ", wide tiles")
                              : (wide == 0 ? ", 64-item tiles (forced)" : ""),
                ms, bytes / ms / 1e6,
                bytes / ms / 1e6 / copy_gbps, tflops);
  };
  // The plan's choice, then every run of 64 keys up to the whole context (q query rows, block q).
  auto sweep = [&](int64_t seqs, int64_t ctx, int64_t q) {
    for (int32_t run = 0; run <= ctx; run = run == 0 ? 64 : 2 * run) attention("denoise", seqs, ctx, q, q, run);
  };
  if (split_sweep == 1) {
    // How many key splits pay: SDAR-4B heads at 1 to 256 sequences.
    for (int64_t ctx : {int64_t{512}, int64_t{2048}})
      for (int64_t seqs : {int64_t{1}, int64_t{8}, int64_t{32}, int64_t{64}, int64_t{99}, int64_t{128}, int64_t{256}})
        sweep(seqs, ctx, 4);
    return 0;
  }
  if (split_sweep == 2) {
    // Few sequences over long contexts, where the plan's runs of 64 keys were slower than runs of
    // 128 at 1 x 2,048 (eighth session): 1, 2 and 4 sequences of 4 query rows, and 16 of 8.
    for (int64_t seqs : {int64_t{1}, int64_t{2}, int64_t{4}})
      for (int64_t ctx : {int64_t{768}, int64_t{1024}, int64_t{1536}, int64_t{3072}, int64_t{4096}}) sweep(seqs, ctx, 4);
    sweep(16, 4096, 8);
    return 0;
  }
  if (split_sweep == 3) {
    // Block 16 (16 rows of 4 query heads: tiles of 64 items, the 1-way kernel, which holds fewer
    // CTAs an SM than the 2- and 4-way ones).
    for (int64_t ctx : {int64_t{512}, int64_t{2048}})
      for (int64_t seqs : {int64_t{1}, int64_t{2}, int64_t{8}, int64_t{32}, int64_t{64}, int64_t{128}})
        sweep(seqs, ctx, 16);
    return 0;
  }
  if (prefill_only) {
    // The plan's form (wgmma where it serves), then the wide tiles' and the 64-item tiles' mma.sync.
    for (int64_t seqs : {int64_t{8}, int64_t{1}}) {
      const int64_t n = seqs == 8 ? 2048 : 16384;
      attention("prefill", seqs, n, n, 4);
      attention("prefill", seqs, n, n, 4, 0, 0, 8, 1, false);
      attention("prefill", seqs, n, n, 4, 0, 0, 8, 0);
    }
    return 0;
  }
  if (candidates_rows > 0) {
    // Whole waves or not: 99 sequences make 792 CTAs (two waves of three CTAs on 132 SMs).
    for (int64_t seqs : {int64_t{66}, int64_t{99}, int64_t{112}, int64_t{128}, int64_t{132}, int64_t{198}})
      attention("denoise", seqs, 512, 4, 4);
    gemm_candidates(gpu, candidates_rows);
    return 0;
  }
  attention("denoise", 64, 2048, 4, 4);
  attention("denoise", 64, 2048, 16, 16);
  attention("denoise", 1, 2048, 4, 4);
  attention("denoise", 128, 384, 4, 4);
  // SDAR-4B batch 128's contexts (256 to 768 over a 512-token generation), and other grid sizes.
  for (int64_t ctx : {int64_t{512}, int64_t{768}})
    for (int32_t run : {0, 256, 128}) attention("denoise", 128, ctx, 4, 4, run);
  for (int64_t ctx : {int64_t{512}, int64_t{768}}) attention("denoise", 128, ctx, 4, 4, 0, 8);
  // The same bytes and CTAs with one KV head (each CTA's keys then lie in whole contiguous pages):
  // what a head-major page layout could give.
  attention("denoise", 1024, 512, 4, 4, 0, 0, 1);
  // Prefills: the plan's tiles (the wgmma form where it serves, else wide tiles of 128 items), then
  // the 64-item mma.sync tiles forced; one long prompt.
  attention("prefill", 8, 2048, 2048, 4);
  attention("prefill", 8, 2048, 2048, 4, 0, 0, 8, 0);
  attention("prefill", 1, 16384, 16384, 4);
  attention("prefill", 1, 16384, 16384, 4, 0, 0, 8, 0);
  // QK-norm + RoPE + KV write (one kernel): SDAR-4B heads, the rows of a batch-128 block-4 decode
  // forward (640 with the commit rows). Bytes: q, k, v read, q and k written, k and v to the cache.
  for (int64_t rows : {int64_t{640}, int64_t{4}}) {
    const int64_t H = 32, KV = 8, D = 128, page = 16, pages = (rows + page - 1) / page;
    std::vector<int32_t> pos, slot;
    for (int64_t i = 0; i < rows; ++i) {
      pos.push_back(static_cast<int32_t>(256 + (i / 5) * 4 + i % 5));
      slot.push_back(static_cast<int32_t>(i));
    }
    ops::AttentionMetadata m;
    m.positions = device_i32(pos).to(gpu);
    m.slot_mapping = device_i32(slot).to(gpu);
    m.page_size = page;
    Tensor qkv = uniform_host(rows, (H + 2 * KV) * D, 3u, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    Tensor qn = uniform_host(1, D, 4u, 1.f).view({D}).to_dtype(DType::kBFloat16).to(gpu);
    Tensor kn = uniform_host(1, D, 5u, 1.f).view({D}).to_dtype(DType::kBFloat16).to(gpu);
    Tensor inv_freq = Tensor::empty({D / 2}, DType::kFloat32);
    for (int64_t i = 0; i < D / 2; ++i) inv_freq.data<float>()[i] = 1.f / std::pow(1e6f, 2.f * i / D);
    Tensor freq = inv_freq.to(gpu);
    Tensor kc = Tensor::zeros({pages, page, KV, D}, DType::kBFloat16, gpu);
    Tensor vc = Tensor::zeros({pages, page, KV, D}, DType::kBFloat16, gpu);
    const double ms = time_ms(
        [&] { ops::qk_norm_rope_kv_write(qkv, m, qn, kn, freq, {H, KV, D}, 1e-6f, kc, vc); }, 50);
    const double bytes = 2.0 * rows * ((H + 2 * KV) * D + (H + KV) * D + 2 * KV * D);
    std::printf("| qk_norm_rope_kv_write | %lld rows, 32/8 heads, d=128, bf16 | %.4f | %.0f | %.2f | |\n",
                static_cast<long long>(rows), ms, bytes / ms / 1e6, bytes / ms / 1e6 / copy_gbps);
  }
  // RMSNorm with the residual add (a layer's second norm): SDAR-4B's 640 decode rows and SDAR-8B's 4.
  // Bytes: x and the residual read, the residual and the output written.
  for (auto [rows, hidden] : {std::pair<int64_t, int64_t>{640, 2560}, {4, 4096}}) {
    const Tensor x = uniform_host(rows, hidden, 6u, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    const Tensor w = uniform_host(1, hidden, 7u, 1.f).view({hidden}).to_dtype(DType::kBFloat16).to(gpu);
    Tensor residual = uniform_host(rows, hidden, 8u, 1.f).to_dtype(DType::kBFloat16).to(gpu);
    Tensor out = Tensor::empty({rows, hidden}, DType::kBFloat16, gpu);
    const double ms = time_ms([&] { ops::rmsnorm(x, w, 1e-6f, out, &residual); }, 50);
    const double bytes = 2.0 * rows * hidden * 4;
    std::printf("| rmsnorm (residual add) | %lld rows x %lld, bf16 | %.4f | %.0f | %.2f | |\n",
                static_cast<long long>(rows), static_cast<long long>(hidden), ms, bytes / ms / 1e6,
                bytes / ms / 1e6 / copy_gbps);
  }
  if (attention_only) return 0;
  sampling(gpu, copy_gbps);
  gemms(gpu, copy_gbps);
  std::printf("\n| forward part | shape | GEMMs alone ms | whole batch, one lane ms | two halves, one lane ms | two "
              "halves, two lanes ms |\n|---|---|---|---|---|---|\n");
  for (int64_t ctx : {int64_t{512}, int64_t{768}}) overlap(gpu, 128, ctx);
  return 0;
}

// The library's errors (a bad option value, no GPU) as one line, not an abort.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
}
