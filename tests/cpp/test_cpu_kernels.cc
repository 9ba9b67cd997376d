// CPU reference kernels against plain double-precision loops on awkward shapes, with poisoned
// outputs so an unwritten element fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "blockinfer/tensor.h"
#include "kernels/cpu/kernels.h"
#include "kernels/philox.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/embedding.h"
#include "ops/linear.h"
#include "ops/rmsnorm.h"
#include "ops/sampling.h"
#include "test_harness.h"

using namespace blockinfer;

namespace {

// One tolerance table for the fp32 kernels against double references.
constexpr double kTolNorm = 1e-5, kTolLinear = 2e-5, kTolAttention = 2e-5;
const float kPoison = std::numeric_limits<float>::quiet_NaN();

Tensor host_i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, DType::kInt32);
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

using bitest::randn;

}  // namespace

TEST(philox_matches_the_random123_known_answers) {
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 want;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const auto& k : kats) {
    Philox4 got = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.want.v[i]);
  }
  EXPECT_TRUE(philox_uniform(0) > 0.0 && philox_uniform(0xffffffffu) < 1.0);
}

// The float evaluation of the Gumbel noise (16-bit models' sampling pass) against the double one,
// over every 24-bit uniform k at a stride and the ends of both branches (k = 0, 2^23 - 1, 2^23,
// 2^24 - 1: the smallest and largest noise, where a naive float 1 - u or log(u) loses it).
TEST(float_gumbel_noise_is_the_double_noise_to_1e6) {
  double worst = 0;
  auto check = [&](uint32_t k) {
    const uint32_t word = k << 8 | 0x5au;
    const double want = -std::log(-std::log(philox_uniform(word)));
    worst = std::max(worst, std::fabs(static_cast<double>(gumbel_of_word_f32(word)) - want));
  };
  for (uint32_t k = 0; k < (1u << 24); k += 7) check(k);
  for (uint32_t k : {0u, 1u, (1u << 23) - 1, 1u << 23, (1u << 24) - 2, (1u << 24) - 1}) check(k);
  EXPECT_TRUE(worst < 2e-6);  // 8.8e-7 with glibc
  // The largest noise (u nearest 1) must not collapse: the double value is about 17.3.
  EXPECT_TRUE(gumbel_of_word_f32(0xffffffffu) > 17.f);
}

// Which rows the fused LM head and greedy sampling may take (ops::lm_head_greedy computes x0 = argmax
// and the confidence p[x0]): greedy rows, whatever their top-k/top-p (sample_rows ignores them at
// T = 0 outside Dream's rules), confidence p[x0]; never a sampled row, Dream's rules, or a random or
// Dream confidence. And nothing on the CPU serves it.
TEST(greedy_rows_the_fused_lm_head_may_take) {
  using K = ops::ConfidenceKind;
  auto row = [](float t, K kind, uint8_t dream = 0, int32_t topk = 0, float topp = 1.f) {
    return ops::SampleRowParams{t, topk, topp, 1, 0, 0, kind, dream};
  };
  EXPECT_TRUE(ops::greedy_row_fuses(row(0.f, K::kTempered)));
  EXPECT_TRUE(ops::greedy_row_fuses(row(0.f, K::kUntempered)));
  EXPECT_TRUE(ops::greedy_row_fuses(row(0.f, K::kTempered, 0, 5, 0.9f)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(0.7f, K::kTempered)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(1.f, K::kUntempered)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(0.f, K::kRandom)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(0.f, K::kTempered, 1)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(0.f, K::kMargin, 1)));
  EXPECT_TRUE(!ops::greedy_row_fuses(row(0.f, K::kNegEntropy, 1)));
  EXPECT_TRUE(!ops::lm_head_greedy_serves(DType::kBFloat16, Device::cpu(), 256, 64));
  Tensor w = Tensor::empty({256, 64}, DType::kBFloat16);
  EXPECT_TRUE(!ops::lm_head_greedy_serves(w));
  EXPECT_TRUE(!ops::lm_head_greedy_serves(Tensor::empty({4, 64}, DType::kBFloat16), w));
}

TEST(rmsnorm_matches_double_reference_with_and_without_residual) {
  for (int64_t rows : {1, 7, 19}) {
    for (int64_t hidden : {1, 7, 83, 769}) {
      const int64_t stride = hidden + 3;  // strided rows
      auto x = randn(rows * stride, 1, 2.f), w = randn(hidden, 2), res = randn(rows * hidden, 3);
      Tensor xt = Tensor::from_blob(x.data(), {rows, hidden}, DType::kFloat32, Device::cpu(), {stride, 1});
      Tensor wt = Tensor::from_blob(w.data(), {hidden}, DType::kFloat32, Device::cpu());
      for (bool with_res : {false, true}) {
        std::vector<float> r = res, out(rows * hidden, kPoison);
        Tensor rt = Tensor::from_blob(r.data(), {rows, hidden}, DType::kFloat32, Device::cpu());
        Tensor ot = Tensor::from_blob(out.data(), {rows, hidden}, DType::kFloat32, Device::cpu());
        ops::rmsnorm(xt, wt, 1e-6f, ot, with_res ? &rt : nullptr);
        for (int64_t i = 0; i < rows; ++i) {
          double ss = 0;
          std::vector<double> v(hidden);
          for (int64_t j = 0; j < hidden; ++j) {
            v[j] = x[i * stride + j] + (with_res ? res[i * hidden + j] : 0.0);
            ss += v[j] * v[j];
          }
          const double inv = 1.0 / std::sqrt(ss / hidden + 1e-6);
          for (int64_t j = 0; j < hidden; ++j) {
            EXPECT_NEAR(out[i * hidden + j], v[j] * inv * w[j], kTolNorm * (1 + std::fabs(v[j] * inv * w[j])));
            if (with_res) EXPECT_NEAR(r[i * hidden + j], v[j], 1e-6);
          }
        }
      }
    }
  }
}

TEST(rmsnorm_rejects_mismatched_shapes) {
  Tensor x = Tensor::zeros({3, 8}, DType::kFloat32), w = Tensor::zeros({7}, DType::kFloat32);
  Tensor out = Tensor::zeros({3, 8}, DType::kFloat32);
  EXPECT_THROWS(ops::rmsnorm(x, w, 1e-6f, out), InvalidArgument);
}

TEST(linear_matches_double_reference_on_awkward_shapes) {
  for (int64_t m : {1, 7, 19}) {
    for (int64_t n : {1, 7, 83}) {
      for (int64_t k : {1, 7, 19, 83, 769}) {
        auto x = randn(m * k, 4), w = randn(n * k, 5);
        std::vector<float> out(m * n, kPoison);
        Tensor ot = Tensor::from_blob(out.data(), {m, n}, DType::kFloat32, Device::cpu());
        ops::linear(Tensor::from_blob(x.data(), {m, k}, DType::kFloat32, Device::cpu()),
                    Tensor::from_blob(w.data(), {n, k}, DType::kFloat32, Device::cpu()), ot);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double want = 0;
            for (int64_t l = 0; l < k; ++l) want += double(x[i * k + l]) * w[j * k + l];
            EXPECT_NEAR(out[i * n + j], want, kTolLinear * std::sqrt(double(k)) * 4);
          }
      }
    }
  }
}

// With accumulate, linear adds its product to out: the same bits as the product, then the add.
TEST(linear_accumulates_into_out) {
  const int64_t m = 7, n = 83, k = 769;
  auto x = randn(m * k, 6), w = randn(n * k, 7), base = randn(m * n, 8);
  auto tensor = [](std::vector<float>& v, int64_t r, int64_t c) {
    return Tensor::from_blob(v.data(), {r, c}, DType::kFloat32, Device::cpu());
  };
  std::vector<float> prod(m * n, kPoison), acc = base;
  Tensor pt = tensor(prod, m, n), at = tensor(acc, m, n);
  ops::linear(tensor(x, m, k), tensor(w, n, k), pt);
  ops::linear(tensor(x, m, k), tensor(w, n, k), at, true);
  for (int64_t i = 0; i < m * n; ++i) EXPECT_TRUE(acc[i] == base[i] + prod[i]);
}

// The fused gate/up kernel's layout: interleave_gate_up moves row i of gate to run i / b, and
// silu_mul with the block reads it back as silu_mul without it reads [gate | up] (same values).
TEST(interleaved_gate_up_gives_the_same_silu_mul) {
  const int64_t inter = 12, k = 3, n = 5;
  for (int64_t block : {1, 4, 12}) {
    auto w = randn(2 * inter * k, 6);
    Tensor wt = Tensor::from_blob(w.data(), {2 * inter, k}, DType::kFloat32, Device::cpu());
    Tensor il = ops::interleave_gate_up(wt, block);
    for (int64_t r = 0; r < 2 * inter; ++r) {
      const int64_t run = r / (2 * block), j = r % (2 * block);
      const int64_t src = j < block ? run * block + j : inter + run * block + j - block;
      for (int64_t c = 0; c < k; ++c) EXPECT_EQ(il.data<float>()[r * k + c], w[src * k + c]);
    }
    auto x = randn(n * k, 7);
    Tensor xt = Tensor::from_blob(x.data(), {n, k}, DType::kFloat32, Device::cpu());
    Tensor plain = Tensor::empty({n, 2 * inter}, DType::kFloat32), mixed = Tensor::empty({n, 2 * inter}, DType::kFloat32);
    ops::linear(xt, wt, plain);
    ops::linear(xt, il, mixed);
    Tensor want = Tensor::empty({n, inter}, DType::kFloat32), got = Tensor::empty({n, inter}, DType::kFloat32);
    ops::silu_mul(plain, want);
    ops::silu_mul(mixed, got, block);
    for (int64_t i = 0; i < n * inter; ++i) EXPECT_EQ(got.data<float>()[i], want.data<float>()[i]);
  }
  Tensor gu = Tensor::zeros({2, 24}, DType::kFloat32), out = Tensor::zeros({2, 12}, DType::kFloat32);
  EXPECT_THROWS(ops::silu_mul(gu, out, 5), InvalidArgument);  // 5 does not divide 12
  EXPECT_THROWS(ops::interleave_gate_up(gu, 5), InvalidArgument);
  EXPECT_EQ(ops::fused_silu_mul_block(DType::kFloat32, Device::cpu(), 128, 64), int64_t{0});
}

TEST(embedding_rejects_ids_outside_the_vocabulary) {
  Tensor table = Tensor::zeros({5, 3}, DType::kFloat32), out = Tensor::zeros({1, 3}, DType::kFloat32);
  int32_t bad = 5;
  EXPECT_THROWS(ops::embedding(Tensor::from_blob(&bad, {1}, DType::kInt32, Device::cpu()), table, out),
                InvalidArgument);
}

TEST(paged_attention_matches_a_dense_block_causal_reference) {
  // Two sequences with shuffled pages, GQA 4:2, head_dim 6, page size 3; sequence 0 forwards a
  // whole prefix, sequence 1 forwards only its last block against cached keys.
  const int64_t H = 4, KV = 2, D = 6, P = 3, B = 4, W = (H + 2 * KV) * D;
  const int64_t num_pages = 12;
  struct S {
    int32_t start, end;
    std::vector<int32_t> pages;
  };
  std::vector<S> seqs = {{0, 10, {7, 2, 9, 0}}, {8, 12, {5, 11, 1, 3}}};
  const int64_t T = 10 + 4;
  // A full qkv row for every absolute position of each sequence (the cache holds positions < start).
  std::vector<std::vector<float>> full;
  for (size_t s = 0; s < seqs.size(); ++s) full.push_back(randn(seqs[s].end * W, 10 + s));
  std::vector<float> kc(num_pages * P * KV * D, kPoison), vc(num_pages * P * KV * D, kPoison);
  // Pre-fill the cache with the keys before each sequence's forwarded range.
  for (size_t s = 0; s < seqs.size(); ++s)
    for (int32_t p = 0; p < seqs[s].start; ++p) {
      const int64_t slot = seqs[s].pages[p / P] * P + p % P;
      for (int64_t i = 0; i < KV * D; ++i) {
        kc[slot * KV * D + i] = full[s][p * W + H * D + i];
        vc[slot * KV * D + i] = full[s][p * W + (H + KV) * D + i];
      }
    }
  std::vector<float> qkv;
  std::vector<int32_t> positions, slots, page_table(2 * 4), q_start = {0}, kv_len, block_len;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int32_t p = seqs[s].start; p < seqs[s].end; ++p) {
      qkv.insert(qkv.end(), full[s].begin() + p * W, full[s].begin() + (p + 1) * W);
      positions.push_back(p);
      slots.push_back(seqs[s].pages[p / P] * P + p % P);
    }
    std::copy(seqs[s].pages.begin(), seqs[s].pages.end(), page_table.begin() + s * 4);
    q_start.push_back(static_cast<int32_t>(positions.size()));
    kv_len.push_back(seqs[s].end);
    block_len.push_back(B);
  }
  auto i32 = [](std::vector<int32_t>& v, std::vector<int64_t> shape) {
    return Tensor::from_blob(v.data(), shape, DType::kInt32, Device::cpu());
  };
  ops::AttentionMetadata meta{i32(positions, {T}), i32(slots, {T}), i32(page_table, {2, 4}),
                              i32(q_start, {3}), i32(kv_len, {2}), i32(block_len, {2}), P};
  ops::AttentionDims dims{H, KV, D};
  Tensor qkv_t = Tensor::from_blob(qkv.data(), {T, W}, DType::kFloat32, Device::cpu());
  Tensor kct = Tensor::from_blob(kc.data(), {num_pages, P, KV, D}, DType::kFloat32, Device::cpu());
  Tensor vct = Tensor::from_blob(vc.data(), {num_pages, P, KV, D}, DType::kFloat32, Device::cpu());
  ops::kv_write(qkv_t, meta, kct, vct, dims);
  std::vector<float> out(T * H * D, kPoison);
  Tensor out_t = Tensor::from_blob(out.data(), {T, H * D}, DType::kFloat32, Device::cpu());
  ops::paged_attention(qkv_t, kct, vct, meta, dims, out_t);

  int64_t row = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const auto& f = full[s];
    for (int32_t i = seqs[s].start; i < seqs[s].end; ++i, ++row) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / (H / KV);
        std::vector<double> sc;
        double m = -INFINITY;
        for (int32_t j = 0; j < seqs[s].end; ++j) {
          if (j / B > i / B) break;  // the staircase: only blocks up to the query's own
          double d = 0;
          for (int64_t e = 0; e < D; ++e) d += double(f[i * W + h * D + e]) * f[j * W + H * D + kvh * D + e];
          sc.push_back(d / std::sqrt(double(D)));
          m = std::max(m, sc.back());
        }
        double den = 0;
        for (double& x : sc) den += (x = std::exp(x - m));
        for (int64_t e = 0; e < D; ++e) {
          double want = 0;
          for (size_t j = 0; j < sc.size(); ++j) want += sc[j] * f[j * W + (H + KV) * D + kvh * D + e];
          EXPECT_NEAR(out[row * H * D + h * D + e], want / den, kTolAttention);
        }
      }
    }
  }
}

// The CUDA attention plan is host code: every query row in exactly one tile of one sequence, at
// most the kernel's query items per tile, and key splits that cover the longest context.
TEST(attention_plan_covers_every_row_and_key_once) {
  // Ragged rows (1, 4, 33, 0 and 200) over contexts up to 3000 keys.
  const std::vector<int32_t> q_start = {0, 1, 5, 38, 38, 238}, kv_len = {1, 300, 3000, 17, 230};
  struct Case {
    DType dtype;
    ops::AttentionDims dims;
    int items_per_tile;
  };
  for (const Case& c : {Case{DType::kFloat32, {32, 8, 128}, 32}, Case{DType::kBFloat16, {32, 8, 128}, 64},
                        Case{DType::kFloat16, {28, 4, 64}, 64}, Case{DType::kBFloat16, {8, 8, 96}, 32}}) {
    for (bool pow2 : {false, true}) {
      const ops::AttentionPlan plan = ops::plan_attention(host_i32(q_start), host_i32(kv_len), c.dims, c.dtype,
                                                          {.pow2_splits = pow2});
      const int64_t group = c.dims.num_heads / c.dims.num_kv_heads;
      std::vector<int> seen(static_cast<size_t>(q_start.back()), 0);
      for (int64_t t = 0; t < plan.tiles.size(0); ++t) {
        const int32_t* tile = plan.tiles.data<int32_t>() + 3 * t;
        EXPECT_TRUE(tile[0] >= 0 && tile[0] < 5 && tile[1] >= q_start[tile[0]] && tile[2] <= q_start[tile[0] + 1] &&
                    tile[1] < tile[2]);
        EXPECT_TRUE((tile[2] - tile[1]) * group <= std::max<int64_t>(c.items_per_tile, group));
        for (int32_t r = tile[1]; r < tile[2]; ++r) ++seen[r];
      }
      for (int v : seen) EXPECT_EQ(v, 1);
      // Longest first: the keys a tile's last row sees never grow along the grid.
      for (int64_t t = 1; t < plan.tiles.size(0); ++t) {
        auto keys = [&](int64_t i) {
          const int32_t* tile = plan.tiles.data<int32_t>() + 3 * i;
          return kv_len[tile[0]] - (q_start[tile[0] + 1] - tile[2]);
        };
        EXPECT_TRUE(keys(t) <= keys(t - 1));
      }
      // Ragged rows of up to 200: the tensor-core tiles hold up to 64 items, one warp per 16.
      EXPECT_EQ(plan.key_split, 1);
      EXPECT_TRUE(plan.keys_per_split >= 64 && plan.keys_per_split % 64 == 0);
      EXPECT_TRUE(int64_t{plan.splits} * plan.keys_per_split >= 3000);  // the longest context is covered
      if (pow2) EXPECT_EQ(plan.splits & (plan.splits - 1), 0);
      if (c.dtype == DType::kFloat32) EXPECT_EQ(plan.keys_per_split, 256);  // the exact mode: fixed runs
      const int64_t per_split = int64_t{q_start.back()} * c.dims.num_heads * (c.dims.head_dim + 1);
      EXPECT_EQ(plan.partial_floats, plan.splits > 1 ? plan.splits * per_split : 0);
    }
  }
}

// Denoise batches of small tiles let 2 or 4 warps share each 16 query items of the tensor-core
// kernel (the float32 kernel has no key split).
TEST(attention_plan_splits_keys_between_warps_for_small_tiles) {
  struct Case {
    std::vector<int32_t> q_start;
    ops::AttentionDims dims;
    DType dtype;
    int32_t key_split;
  };
  for (const Case& c : {Case{{0, 4, 8, 12}, {32, 8, 128}, DType::kBFloat16, 4},   // 16 items per tile
                        Case{{0, 8, 12, 16}, {32, 8, 128}, DType::kBFloat16, 2},  // 32
                        Case{{0, 9, 12}, {32, 8, 128}, DType::kFloat16, 1},       // 36
                        Case{{0, 32, 64}, {32, 32, 128}, DType::kBFloat16, 2},    // LLaDA, block 32
                        Case{{0, 16}, {32, 32, 64}, DType::kBFloat16, 4},
                        Case{{0, 4, 8}, {32, 8, 128}, DType::kFloat32, 1}}) {
    const std::vector<int32_t> kv_len(c.q_start.size() - 1, 700);
    const ops::AttentionPlan plan = ops::plan_attention(host_i32(c.q_start), host_i32(kv_len), c.dims, c.dtype);
    EXPECT_EQ(plan.key_split, c.key_split);
  }
}

// The tensor-core plan's key runs: on denoise batches of SDAR-4B heads (4 query rows, block 4;
// 8 rows on the 16 x 4,096 shape; 16 rows, block 16, on the last ones, whose 1-way kernel holds two
// CTAs an SM, not three) the run that was fastest on an H100 (bench_kernels --split-sweep 1, 2
// and 3, BENCHMARKS.md; at block 16 2 x 2,048 measured the same with runs of 128 and 256), or
// within 2 us of it (1 x 3,072, 4 x 1,536 and 4 x 3,072), and no split for prefills.
TEST(attention_plan_runs_are_the_measured_fastest) {
  struct Case {
    int32_t seqs, ctx, run, q = 4;
  };
  for (const Case& c :
       {Case{1, 512, 64}, Case{1, 2048, 128}, Case{8, 512, 128}, Case{32, 512, 512}, Case{64, 512, 512},
        Case{99, 512, 512}, Case{128, 512, 512}, Case{256, 512, 512}, Case{8, 2048, 512}, Case{32, 2048, 2048},
        Case{64, 2048, 1024}, Case{99, 2048, 2048}, Case{128, 2048, 2048}, Case{256, 2048, 2048},
        // Few sequences over long contexts (--split-sweep 2).
        Case{1, 768, 128}, Case{1, 1024, 128}, Case{1, 1536, 128}, Case{1, 3072, 256}, Case{1, 4096, 256},
        Case{2, 768, 128}, Case{2, 1024, 128}, Case{2, 1536, 128}, Case{2, 3072, 256}, Case{2, 4096, 256},
        Case{4, 768, 128}, Case{4, 1024, 128}, Case{4, 1536, 128}, Case{4, 3072, 256}, Case{4, 4096, 512},
        Case{16, 4096, 2048, 8},
        // Block 16 (--split-sweep 3).
        Case{1, 512, 64, 16}, Case{2, 512, 64, 16}, Case{8, 512, 128, 16}, Case{32, 512, 512, 16}, Case{64, 512, 512, 16},
        Case{128, 512, 512, 16}, Case{1, 2048, 128, 16}, Case{2, 2048, 128, 16}, Case{8, 2048, 512, 16},
        Case{32, 2048, 2048, 16}, Case{64, 2048, 2048, 16}, Case{128, 2048, 2048, 16}}) {
    std::vector<int32_t> q_start = {0}, kv_len;
    for (int32_t s = 0; s < c.seqs; ++s) {
      q_start.push_back(q_start.back() + c.q);
      kv_len.push_back(c.ctx);
    }
    const ops::AttentionPlan plan = ops::plan_attention(host_i32(q_start), host_i32(kv_len), {32, 8, 128},
                                                        DType::kBFloat16, {.pow2_splits = true});
    if (plan.keys_per_split != c.run)
      std::fprintf(stderr, "  %d seqs x %d keys: run %d, expected %d\n", c.seqs, c.ctx, plan.keys_per_split, c.run);
    EXPECT_EQ(plan.keys_per_split, c.run);
    // A forced run is taken as given where its partials fit.
    if (c.seqs * c.q <= 512)
      EXPECT_EQ(ops::plan_attention(host_i32(q_start), host_i32(kv_len), {32, 8, 128}, DType::kBFloat16,
                                    {.pow2_splits = true, .keys_per_split = 128})
                    .keys_per_split,
                128);
  }
  // Prefills (8 x 2,048, 1 x 4,096 and 1 x 1,024 tokens, GQA and MHA heads): one run over the
  // whole prompt; their partials would be rows x heads x (D + 1) floats a split.
  for (auto [seqs, prompt] : {std::pair{8, 2048}, {1, 4096}, {1, 1024}})
    for (const ops::AttentionDims& dims : {ops::AttentionDims{32, 8, 128}, ops::AttentionDims{32, 32, 128}}) {
      std::vector<int32_t> q_start = {0}, kv_len;
      for (int s = 0; s < seqs; ++s) {
        q_start.push_back(q_start.back() + prompt);
        kv_len.push_back(prompt);
      }
      const ops::AttentionPlan prefill =
          ops::plan_attention(host_i32(q_start), host_i32(kv_len), dims, DType::kBFloat16, {.pow2_splits = true});
      EXPECT_EQ(prefill.splits, 1);
    }
}

// Wide tensor-core tiles (128 items, two 16-item groups a warp): where every sequence has more than
// 64 items, the keys take one run and the wide CTAs make two waves or more (default slots: 264 at
// once); never for float32, and forced either way by the option. Where the device has the wgmma
// form, a wide plan keeps 64-item tiles, which must make the two waves (`wg`: what it then chooses).
TEST(attention_plan_takes_wide_tiles_for_long_prefills_only) {
  struct Case {
    std::vector<int32_t> rows;  // query rows per sequence (the last positions of kv_len keys each)
    int32_t kv;
    ops::AttentionDims dims;
    DType dtype;
    bool wide, wg;
  };
  const ops::AttentionDims sdar{32, 8, 128}, llada{32, 32, 128};
  for (const Case& c :
       {Case{{2048, 2048, 2048, 2048, 2048, 2048, 2048, 2048}, 2048, sdar, DType::kBFloat16, true, true},
        Case{{4096}, 4096, sdar, DType::kBFloat16, true, true},        // 128 tiles x 8 heads
        Case{{1024}, 1024, sdar, DType::kBFloat16, false, false},      // 32 x 8 (wgmma: 64 x 8): under two waves
        Case{{2304}, 2304, llada, DType::kBFloat16, true, true},       // a LLaDA canvas: 18 x 32 = 576
        Case{{4096, 4}, 4096, sdar, DType::kBFloat16, false, false},   // denoise rows beside it
        Case{{4096, 17}, 4096, sdar, DType::kFloat16, true, true},     // 17 rows: 68 items
        Case{{4096, 16}, 4096, sdar, DType::kBFloat16, false, false},  // 16 rows: one small tile
        Case{{4096}, 4096, sdar, DType::kFloat32, false, false}}) {
    std::vector<int32_t> q_start = {0}, kv_len;
    for (int32_t r : c.rows) {
      q_start.push_back(q_start.back() + r);
      kv_len.push_back(c.kv);
    }
    const int64_t group = c.dims.num_heads / c.dims.num_kv_heads;
    for (bool wgmma : {false, true})
    for (int32_t force : {-1, 0, 1}) {
      const ops::AttentionPlan plan = ops::plan_attention(host_i32(q_start), host_i32(kv_len), c.dims, c.dtype,
                                                          {.pow2_splits = true, .wide_tiles = force, .wgmma = wgmma});
      const bool want = c.dtype != DType::kFloat32 && (force == 1 || (force == -1 && (wgmma ? c.wg : c.wide)));
      EXPECT_EQ(plan.wide, want);
      EXPECT_EQ(plan.wgmma, want && wgmma);
      if (plan.wide) EXPECT_EQ(plan.key_split, 1);
      // Every row in exactly one tile, tiles of at most 64 items, or 128 when wide.
      std::vector<int> seen(static_cast<size_t>(q_start.back()), 0);
      int64_t most = 0;
      for (int64_t t = 0; t < plan.tiles.size(0); ++t) {
        const int32_t* tile = plan.tiles.data<int32_t>() + 3 * t;
        most = std::max<int64_t>(most, (tile[2] - tile[1]) * group);
        for (int32_t r = tile[1]; r < tile[2]; ++r) ++seen[r];
      }
      for (int v : seen) EXPECT_EQ(v, 1);
      const int64_t limit = c.dtype == DType::kFloat32 ? 32 : plan.wide && !plan.wgmma ? 128 : 64;
      EXPECT_TRUE(most <= limit);
      if (plan.wide && c.rows[0] >= 1024) EXPECT_EQ(most, limit);
    }
  }
  EXPECT_THROWS(ops::plan_attention(host_i32({0, 4}), host_i32({4}), sdar, DType::kBFloat16, {.wide_tiles = 2}),
               InvalidArgument);
}

// keys_read_once (the K/V copies evict-first): every sequence with rows in one tile, so that no two
// CTAs of a KV head read a key (splits read disjoint runs). Denoise steps (block 4 with or without the
// commit rows, block 16, an empty sequence) have it; a prefill's many tiles, a 17-row block (68 items:
// two tiles), a batch with one such sequence, and wide tiles for long prompts do not.
TEST(attention_plan_marks_keys_read_once_for_one_tile_a_sequence) {
  struct Case {
    std::vector<int32_t> rows;
    int32_t kv;
    DType dtype;
    bool once;
  };
  for (const Case& c : {Case{{4, 4, 8, 4}, 512, DType::kBFloat16, true}, Case{{16, 16}, 2048, DType::kBFloat16, true},
                        Case{{4, 0, 5}, 300, DType::kFloat16, true}, Case{{1}, 8192, DType::kBFloat16, true},
                        Case{{256, 4}, 512, DType::kBFloat16, false}, Case{{17}, 512, DType::kBFloat16, false},
                        Case{{4, 4, 17}, 512, DType::kBFloat16, false}, Case{{2048, 2048}, 2048, DType::kBFloat16, false},
                        Case{{4, 8}, 512, DType::kFloat32, true}, Case{{33}, 512, DType::kFloat32, false}}) {
    std::vector<int32_t> q_start = {0}, kv_len;
    for (int32_t r : c.rows) {
      q_start.push_back(q_start.back() + r);
      kv_len.push_back(c.kv);
    }
    const ops::AttentionPlan plan =
        ops::plan_attention(host_i32(q_start), host_i32(kv_len), {32, 8, 128}, c.dtype, {.pow2_splits = true});
    EXPECT_EQ(plan.keys_read_once, c.once);
  }
}

TEST(greedy_sampling_takes_the_lowest_id_on_ties_and_reports_softmax_confidence) {
  std::vector<float> l = {1.f, 3.f, 0.f, 3.f, -2.f};
  cpu::SampleRowParams p{0.f, 0, 1.f, 1, 0, 0};
  int32_t x0;
  float c, lp, h;
  cpu::sample_rows(l.data(), &p, &x0, &c, &lp, &h, 1, 5);
  EXPECT_NEAR(lp, std::log(c), 1e-6);
  EXPECT_EQ(x0, 1);
  double z = 0;
  for (float v : l) z += std::exp(double(v) - 3.0);
  EXPECT_NEAR(c, 1.0 / z, 1e-6);
  double ent = 0;
  for (float v : l) {
    double q = std::exp(double(v) - 3.0) / z;
    ent -= q * std::log(q);
  }
  EXPECT_NEAR(h, ent, 1e-5);
}

TEST(topk_one_and_tiny_topp_reduce_sampling_to_greedy) {
  auto l = randn(257, 21, 3.f);
  const int32_t argmax = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
  for (uint32_t pos = 0; pos < 50; ++pos) {
    for (auto p : {cpu::SampleRowParams{1.f, 1, 1.f, 9, 0, pos}, cpu::SampleRowParams{0.7f, 0, 1e-6f, 9, 0, pos}}) {
      int32_t x0;
      float c, lp, h;
      cpu::sample_rows(l.data(), &p, &x0, &c, &lp, &h, 1, 257);
      EXPECT_EQ(x0, argmax);
    }
  }
}

TEST(sampling_follows_the_filtered_tempered_distribution) {
  // Frequencies over many (position) keys against q for T = 0.7, top-k 3 of 6 logits.
  std::vector<float> l = {2.f, 1.f, 0.5f, 1.5f, -1.f, 0.f};
  const float T = 0.7f;
  std::vector<double> p(6);
  double z = 0;
  for (int i = 0; i < 6; ++i) z += (p[i] = std::exp(l[i] / T));
  const int kept[3] = {0, 3, 1};
  double zk = p[0] + p[3] + p[1];
  std::vector<int> counts(6, 0);
  const int n = 60000;
  for (int t = 0; t < n; ++t) {
    cpu::SampleRowParams sp{T, 3, 1.f, 42, 0, static_cast<uint32_t>(t)};
    int32_t x0;
    float c, lp, h;
    cpu::sample_rows(l.data(), &sp, &x0, &c, &lp, &h, 1, 6);
    ++counts[x0];
    EXPECT_NEAR(c, p[x0] / z, 1e-6);  // the unfiltered tempered probability
    EXPECT_NEAR(lp, std::log(p[x0] / z), 1e-5);
  }
  for (int i : {2, 4, 5}) EXPECT_EQ(counts[i], 0);
  for (int i : kept) {
    const double q = p[i] / zk, sd = std::sqrt(q * (1 - q) / n);
    EXPECT_NEAR(counts[i] / double(n), q, 5 * sd);  // 5 sigma: fails on a wrong distribution only
  }
}

BITEST_MAIN()
