// Kernel micro-benchmarks on the GPU: the denoise-step paged attention (the acceptance shape of
// issue 4: 64 sequences x 2,048 cached tokens, 4 query rows each, SDAR-8B heads) and the fused
// sampling pass. Prints achieved GB/s (bytes that must be read at least once / time) and the
// ratio to the copy bandwidth.
//   bench_kernels [--copy-gbps 3000]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "blockinfer/tensor.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "ops/attention.h"
#include "ops/sampling.h"

using namespace blockinfer;

namespace {

template <typename F>
double time_ms(F&& f, int iters = 20) {
  f();
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) f();
  cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
}

Tensor device_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kInt32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  double copy_gbps = 3000;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--copy-gbps") copy_gbps = std::stod(argv[i + 1]);
  if (cuda_device_count() == 0) {
    std::printf("no CUDA GPU visible: nothing measured\n");
    return 0;
  }
  const Device gpu = Device::cuda(0);
  std::printf("| kernel | shape | ms | GB/s | ratio to copy bandwidth | TFLOP/s |\n|---|---|---|---|---|---|\n");
  // Denoise steps (q = block length query rows per sequence over a long cached context) and a
  // prefill (every row of the prompt, block-causal), 32/8 heads, d = 128, bf16.
  auto attention = [&](const char* what, int64_t seqs, int64_t ctx, int64_t q, int64_t block) {
    const int64_t H = 32, KV = 8, D = 128, page = 16;
    const int64_t pages_per_seq = ctx / page, num_pages = seqs * pages_per_seq;
    std::vector<int32_t> q_start = {0}, positions, slots, kv_len, block_len, table;
    for (int64_t s = 0; s < seqs; ++s) {
      for (int64_t p = 0; p < pages_per_seq; ++p) table.push_back(static_cast<int32_t>(s * pages_per_seq + p));
      for (int64_t i = 0; i < q; ++i) {
        positions.push_back(static_cast<int32_t>(ctx - q + i));
        slots.push_back(static_cast<int32_t>((s * pages_per_seq) * page + ctx - q + i));
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
    ops::attach_attention_plan(m, {H, KV, D}, DType::kBFloat16, gpu);  // once, as the executor does
    Tensor qkv = Tensor::zeros({seqs * q, (H + 2 * KV) * D}, DType::kBFloat16, gpu);
    Tensor kc = Tensor::zeros({num_pages, page, KV, D}, DType::kBFloat16, gpu);
    Tensor vc = Tensor::zeros({num_pages, page, KV, D}, DType::kBFloat16, gpu);
    Tensor out = Tensor::empty({seqs * q, H * D}, DType::kBFloat16, gpu);
    const double ms = time_ms([&] { ops::paged_attention(qkv, kc, vc, m, {H, KV, D}, out); });
    const double bytes = 2.0 * seqs * ctx * KV * D * 2;  // K and V, bf16, read once
    // Useful FLOPs: QK^T and PV over the keys each row sees (about half the prompt for a prefill).
    const double keys = q == ctx ? ctx / 2.0 : ctx;
    const double tflops = 4.0 * seqs * q * keys * H * D / ms / 1e9;
    std::printf("| paged_attention (%s) | %lld seqs x %lld ctx, q=%lld, block %lld, 32/8 heads, d=128, bf16 | %.3f | %.0f | "
                "%.2f | %.1f |\n",
                what, static_cast<long long>(seqs), static_cast<long long>(ctx), static_cast<long long>(q),
                static_cast<long long>(block), ms, bytes / ms / 1e6, bytes / ms / 1e6 / copy_gbps, tflops);
  };
  attention("denoise", 64, 2048, 4, 4);
  attention("denoise", 64, 2048, 16, 16);
  attention("denoise", 1, 2048, 4, 4);
  attention("denoise", 128, 384, 4, 4);
  attention("prefill", 8, 2048, 2048, 4);
  for (int64_t rows : {int64_t{4}, int64_t{512}}) {
    const int64_t vocab = 151936;
    Tensor logits = Tensor::zeros({rows, vocab}, DType::kFloat32, gpu);
    for (float temperature : {0.f, 1.f}) {
      std::vector<ops::SampleRowParams> params(rows, ops::SampleRowParams{temperature, 0, 1.f, 7, 0, 0});
      ops::SampleOutputs o = ops::SampleOutputs::empty(rows, gpu);
      const double ms = time_ms([&] { ops::sample_rows(logits, params, o); });
      const double bytes = 4.0 * rows * vocab;
      std::printf("| sample_rows (%s) | %lld rows x 151936 vocab, fp32 logits | %.3f | %.0f | %.2f | |\n",
                  temperature == 0.f ? "greedy" : "T=1, Gumbel", static_cast<long long>(rows), ms, bytes / ms / 1e6,
                  bytes / ms / 1e6 / copy_gbps);
    }
  }
  return 0;
}
