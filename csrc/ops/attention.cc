#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/pow2.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/launchers.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {
namespace {

void check_qkv(const Tensor& qkv, const AttentionDims& d) {
  check_dim(qkv, 2, "attention: qkv");
  check_compute(qkv, qkv.device(), "attention: qkv");
  check_contiguous(qkv, "attention: qkv");
  BI_CHECK_ARG(d.num_heads > 0 && d.num_kv_heads > 0 && d.num_heads % d.num_kv_heads == 0,
               "attention: num_heads ", d.num_heads, " must be a positive multiple of num_kv_heads ",
               d.num_kv_heads);
  BI_CHECK_ARG(d.head_dim > 0 && d.head_dim % 2 == 0 && d.head_dim <= 1024,
               "attention: head_dim must be even and in [2, 1024], got ", d.head_dim);
  BI_CHECK_ARG(qkv.size(1) == (d.num_heads + 2 * d.num_kv_heads) * d.head_dim, "attention: qkv width ",
               qkv.size(1), " != (", d.num_heads, " + 2 * ", d.num_kv_heads, ") * ", d.head_dim);
}

void check_cache(const Tensor& cache, const Tensor& qkv, const AttentionMetadata& m,
                 const AttentionDims& d, const char* name) {
  check_dim(cache, 4, name);
  check_compute(cache, qkv.device(), name);
  BI_CHECK_ARG(cache.dtype() == qkv.dtype(), name, " dtype ", dtype_name(cache.dtype()), " != qkv dtype ",
               dtype_name(qkv.dtype()));
  check_contiguous(cache, name);
  BI_CHECK_ARG(cache.size(1) == m.page_size && cache.size(2) == d.num_kv_heads &&
                   cache.size(3) == d.head_dim,
               name, " shape ", cache.shape_str(), " != [num_pages, ", m.page_size, ", ",
               d.num_kv_heads, ", ", d.head_dim, "]");
}

void check_i32(const Tensor& t, int64_t n, const char* name) {
  check_dim(t, 1, name);
  check_dtype(t, DType::kInt32, name);
  check_contiguous(t, name);
  BI_CHECK_ARG(t.size(0) == n, name, " has ", t.size(0), " entries, expected ", n);
}

}  // namespace

namespace {

void check_qk_norm_rope(const Tensor& qkv, const Tensor& positions, const Tensor& q_norm_w, const Tensor& k_norm_w,
                        const Tensor& inv_freq, const AttentionDims& dims) {
  check_qkv(qkv, dims);
  check_i32(positions, qkv.size(0), "qk_norm_rope: positions");
  BI_CHECK_ARG(q_norm_w.defined() == k_norm_w.defined(),
               "qk_norm_rope: q_norm and k_norm weights must both be given or both omitted");
  for (const Tensor* w : {&q_norm_w, &k_norm_w}) {
    if (!w->defined()) continue;
    check_compute(*w, qkv.device(), "qk_norm_rope: norm weight");
    BI_CHECK_ARG(w->dtype() == qkv.dtype(), "qk_norm_rope: norm weight dtype must match qkv's");
    BI_CHECK_ARG(w->dim() == 1 && w->size(0) == dims.head_dim, "qk_norm_rope: norm weight shape ",
                 w->shape_str(), " != [", dims.head_dim, "]");
  }
  BI_CHECK_ARG(inv_freq.device() == qkv.device(), "qk_norm_rope: inv_freq must be on ", qkv.device().str());
  check_dtype(inv_freq, DType::kFloat32, "qk_norm_rope: inv_freq");
  BI_CHECK_ARG(inv_freq.numel() == dims.head_dim / 2, "qk_norm_rope: inv_freq has ",
               inv_freq.numel(), " entries, expected ", dims.head_dim / 2);
}

void check_kv_write(const Tensor& qkv, const AttentionMetadata& meta, const Tensor& k_cache, const Tensor& v_cache,
                    const AttentionDims& dims) {
  check_qkv(qkv, dims);
  check_cache(k_cache, qkv, meta, dims, "kv_write: k_cache");
  check_cache(v_cache, qkv, meta, dims, "kv_write: v_cache");
  check_i32(meta.slot_mapping, qkv.size(0), "kv_write: slot_mapping");
  if (qkv.device().is_cuda()) return;  // device slots are built by the Executor from allocated pages
  const int64_t num_slots = k_cache.size(0) * meta.page_size;
  const int32_t* slots = meta.slot_mapping.data<int32_t>();
  for (int64_t t = 0; t < qkv.size(0); ++t)
    BI_CHECK_ARG(slots[t] >= 0 && slots[t] < num_slots, "kv_write: slot ", slots[t], " of token ",
                 t, " outside the cache's ", num_slots, " slots");
}

// The CUDA launch of qk_norm_rope, with the KV write fused in when `meta` is given.
void launch_qk_norm_rope(Tensor& qkv, const Tensor& positions, const Tensor& q_norm_w, const Tensor& k_norm_w,
                         const Tensor& inv_freq, const AttentionDims& dims, float eps,
                         const AttentionMetadata* meta, Tensor* k_cache, Tensor* v_cache) {
  cuda::launch_qk_norm_rope(qkv.raw_data(), positions.data<int32_t>(),
                            q_norm_w.defined() ? q_norm_w.raw_data() : nullptr,
                            k_norm_w.defined() ? k_norm_w.raw_data() : nullptr, inv_freq.data<float>(), qkv.size(0),
                            dims.num_heads, dims.num_kv_heads, dims.head_dim, eps, qkv.dtype(), qkv.device().index,
                            meta ? meta->slot_mapping.data<int32_t>() : nullptr,
                            k_cache ? k_cache->raw_data() : nullptr, v_cache ? v_cache->raw_data() : nullptr);
}

}  // namespace

void qk_norm_rope(Tensor& qkv, const Tensor& positions, const Tensor& q_norm_w,
                  const Tensor& k_norm_w, const Tensor& inv_freq, const AttentionDims& dims,
                  float eps) {
  OpTimer timer("qk_norm_rope", qkv.device());
  check_qk_norm_rope(qkv, positions, q_norm_w, k_norm_w, inv_freq, dims);
  if (qkv.device().is_cuda()) {
    launch_qk_norm_rope(qkv, positions, q_norm_w, k_norm_w, inv_freq, dims, eps, nullptr, nullptr, nullptr);
    return;
  }
  cpu::qk_norm_rope(qkv.data<float>(), positions.data<int32_t>(),
                    q_norm_w.defined() ? q_norm_w.data<float>() : nullptr,
                    k_norm_w.defined() ? k_norm_w.data<float>() : nullptr, inv_freq.data<float>(),
                    qkv.size(0), dims.num_heads, dims.num_kv_heads, dims.head_dim, eps);
}

void kv_write(const Tensor& qkv, const AttentionMetadata& meta, Tensor& k_cache, Tensor& v_cache,
              const AttentionDims& dims) {
  OpTimer timer("kv_write", qkv.device());
  check_kv_write(qkv, meta, k_cache, v_cache, dims);
  if (qkv.device().is_cuda()) {
    cuda::launch_kv_write(qkv.raw_data(), meta.slot_mapping.data<int32_t>(), k_cache.raw_data(), v_cache.raw_data(),
                          qkv.size(0), dims.num_heads, dims.num_kv_heads, dims.head_dim, qkv.dtype(),
                          qkv.device().index);
    return;
  }
  cpu::kv_write(qkv.data<float>(), meta.slot_mapping.data<int32_t>(), k_cache.data<float>(), v_cache.data<float>(),
                qkv.size(0), dims.num_heads, dims.num_kv_heads, dims.head_dim);
}

void qk_norm_rope_kv_write(Tensor& qkv, const AttentionMetadata& meta, const Tensor& q_norm_w,
                           const Tensor& k_norm_w, const Tensor& inv_freq, const AttentionDims& dims, float eps,
                           Tensor& k_cache, Tensor& v_cache) {
  if (!qkv.device().is_cuda()) {
    qk_norm_rope(qkv, meta.positions, q_norm_w, k_norm_w, inv_freq, dims, eps);
    kv_write(qkv, meta, k_cache, v_cache, dims);
    return;
  }
  OpTimer timer("qk_norm_rope_kv_write", qkv.device());
  check_qk_norm_rope(qkv, meta.positions, q_norm_w, k_norm_w, inv_freq, dims);
  check_kv_write(qkv, meta, k_cache, v_cache, dims);
  launch_qk_norm_rope(qkv, meta.positions, q_norm_w, k_norm_w, inv_freq, dims, eps, &meta, &k_cache, &v_cache);
}

void paged_attention(const Tensor& qkv, const Tensor& k_cache, const Tensor& v_cache,
                     const AttentionMetadata& meta, const AttentionDims& dims, Tensor& out) {
  OpTimer timer("paged_attention", qkv.device());
  check_qkv(qkv, dims);
  check_cache(k_cache, qkv, meta, dims, "paged_attention: k_cache");
  check_cache(v_cache, qkv, meta, dims, "paged_attention: v_cache");
  const int64_t num_tokens = qkv.size(0);
  check_dim(meta.page_table, 2, "paged_attention: page_table");
  check_dtype(meta.page_table, DType::kInt32, "paged_attention: page_table");
  const int64_t num_seqs = meta.page_table.size(0), max_pages = meta.page_table.size(1);
  check_i32(meta.q_start, num_seqs + 1, "paged_attention: q_start");
  check_i32(meta.kv_len, num_seqs, "paged_attention: kv_len");
  check_i32(meta.block_len, num_seqs, "paged_attention: block_len");
  check_i32(meta.positions, num_tokens, "paged_attention: positions");
  check_compute(out, qkv.device(), "paged_attention: out");
  BI_CHECK_ARG(out.dtype() == qkv.dtype(), "paged_attention: out dtype must match qkv's");
  BI_CHECK_ARG(out.dim() == 2 && out.size(0) == num_tokens &&
                   out.size(1) == dims.num_heads * dims.head_dim,
               "paged_attention: out shape ", out.shape_str(), " != [", num_tokens, ", ",
               dims.num_heads * dims.head_dim, "]");
  const float scale = 1.f / std::sqrt(static_cast<float>(dims.head_dim));
  if (meta.block_offset.defined()) check_i32(meta.block_offset, num_seqs, "paged_attention: block_offset");
  if (qkv.device().is_cuda()) {
    AttentionMetadata planned;
    const AttentionMetadata* m = &meta;
    if (!meta.attn_tiles.defined()) {  // tests and one-off calls: plan here
      planned = meta;
      attach_attention_plan(planned, dims, qkv.dtype(), qkv.device());
      m = &planned;
    }
    BI_CHECK_ARG(m->attn_tiles.device() == qkv.device() && m->attn_tiles.dtype() == DType::kInt32 &&
                     m->attn_tiles.dim() == 2 && m->attn_tiles.size(1) == 3,
                 "paged_attention: attn_tiles must be int32 [num_tiles, 3] on ", qkv.device().str());
    BI_CHECK_ARG(m->attn_splits >= 1 && m->attn_keys_per_split > 0, "paged_attention: bad split plan");
    const int64_t need = m->attn_splits > 1 ? int64_t{m->attn_splits} * num_tokens * dims.num_heads * (dims.head_dim + 1) : 0;
    BI_CHECK_ARG(need == 0 || (m->attn_partials.defined() && m->attn_partials.numel() >= need &&
                               m->attn_partials.dtype() == DType::kFloat32),
                 "paged_attention: the split plan needs a float32 workspace of ", need, " elements");
    cuda::PagedAttentionArgs a{qkv.raw_data(), k_cache.raw_data(), v_cache.raw_data(),
                               meta.page_table.data<int32_t>(), meta.positions.data<int32_t>(),
                               meta.kv_len.data<int32_t>(), meta.block_len.data<int32_t>(),
                               meta.block_offset.defined() ? meta.block_offset.data<int32_t>() : nullptr,
                               out.raw_data(), m->attn_tiles.data<int32_t>(), m->attn_tiles.size(0),
                               m->attn_splits, m->attn_keys_per_split, m->attn_key_split, m->attn_wide, m->attn_wgmma,
                               need > 0 ? m->attn_partials.data<float>() : nullptr, num_seqs, num_tokens,
                               max_pages, meta.page_size, dims.num_heads, dims.num_kv_heads, dims.head_dim,
                               scale, qkv.dtype(), qkv.device().index, k_cache.size(0), m->attn_keys_read_once};
    cuda::launch_paged_attention(a);
    return;
  }
  const int32_t* qs = meta.q_start.data<int32_t>();
  const int32_t* kv = meta.kv_len.data<int32_t>();
  const int32_t* pt = meta.page_table.data<int32_t>();
  BI_CHECK_ARG(qs[0] == 0 && qs[num_seqs] == num_tokens, "paged_attention: q_start must run from 0 to ",
               num_tokens);
  for (int64_t s = 0; s < num_seqs; ++s) {
    BI_CHECK_ARG(qs[s] <= qs[s + 1], "paged_attention: q_start is not non-decreasing at ", s);
    BI_CHECK_ARG(kv[s] >= 0 && kv[s] <= max_pages * meta.page_size, "paged_attention: kv_len ",
                 kv[s], " of sequence ", s, " exceeds its page table");
    const int64_t used = (kv[s] + meta.page_size - 1) / meta.page_size;
    for (int64_t p = 0; p < used; ++p)
      BI_CHECK_ARG(pt[s * max_pages + p] >= 0 && pt[s * max_pages + p] < k_cache.size(0),
                   "paged_attention: page ", pt[s * max_pages + p], " of sequence ", s,
                   " outside the cache");
  }
  cpu::paged_attention(qkv.data<float>(), k_cache.data<float>(), v_cache.data<float>(), pt, qs,
                       meta.positions.data<int32_t>(), kv, meta.block_len.data<int32_t>(),
                       meta.block_offset.defined() ? meta.block_offset.data<int32_t>() : nullptr,
                       out.data<float>(), num_seqs, max_pages, meta.page_size, dims.num_heads,
                       dims.num_kv_heads, dims.head_dim, scale);
}

namespace {
constexpr int32_t kKeysPerSplit = 256;
// The split cost's constants, in keys of one KV head (H100, bench_kernels --split-sweep 1 and 2): a
// CTA's fixed work (its metadata, first loads and output), a split's partials and merge, and each
// (rounded) split's own share: without it one to four sequences took runs of 64 keys where runs
// of 128 or 256 were measured faster (1 x 2,048: 0.020 against 0.016 ms a layer).
constexpr double kCtaOverheadKeys = 192;
constexpr double kMergeKeys = 256;
constexpr double kKeysPerRoundedSplit = 10;
constexpr int64_t kMaxPartialFloats = int64_t{64} << 20;  // 256 MiB of split partials at most
// AttentionPlanOptions::cta_slots's entry for a key split of 1, 2 or 4, and for wide tiles.
size_t slot_index(int key_split) { return key_split == 4 ? 2 : key_split == 2 ? 1 : 0; }
constexpr size_t kWideSlots = 3;
}  // namespace

std::array<int64_t, 4> attention_cta_slots(Device device, DType dtype, const AttentionDims& dims, int64_t page_size) {
  BI_CHECK_ARG(device.is_cuda(), "attention_cta_slots: ", device.str(), " is not a CUDA device");
  std::array<int64_t, 4> slots = AttentionPlanOptions{}.cta_slots;
  const int64_t sms = cuda::multiprocessor_count(device.index);
  for (int key_split : {1, 2, 4}) {
    const int ctas = cuda::attention_ctas_per_sm(dtype, dims.head_dim, page_size, key_split, device.index);
    if (ctas > 0) slots[slot_index(key_split)] = int64_t{ctas} * sms;
  }
  const int wide = cuda::attention_ctas_per_sm(dtype, dims.head_dim, page_size, 1, device.index, /*wide=*/true);
  if (wide > 0) slots[kWideSlots] = int64_t{wide} * sms;
  return slots;
}

bool attention_wgmma(Device device, DType dtype, const AttentionDims& dims, int64_t page_size) {
  BI_CHECK_ARG(device.is_cuda(), "attention_wgmma: ", device.str(), " is not a CUDA device");
  return cuda::attention_wgmma_serves(dtype, dims.head_dim, page_size, device.index);
}

AttentionPlan plan_attention(const Tensor& host_q_start, const Tensor& host_kv_len, const AttentionDims& dims,
                             DType dtype, const AttentionPlanOptions& options) {
  BI_CHECK_ARG(host_q_start.device().is_cpu() && host_kv_len.device().is_cpu(),
               "plan_attention: host_q_start and host_kv_len must be CPU tensors");
  const int64_t num_seqs = host_kv_len.numel();
  check_i32(host_q_start, num_seqs + 1, "plan_attention: host_q_start");
  check_i32(host_kv_len, num_seqs, "plan_attention: host_kv_len");
  const int32_t* qs = host_q_start.data<int32_t>();
  const int32_t* kv = host_kv_len.data<int32_t>();
  const int64_t group = dims.num_heads / dims.num_kv_heads;
  const bool tensor_cores = cuda::attention_uses_tensor_cores(dtype, dims.head_dim, group);
  BI_CHECK_ARG(options.wide_tiles >= -1 && options.wide_tiles <= 1, "plan_attention: wide_tiles ",
               options.wide_tiles, " is not -1, 0 or 1");
  const int32_t rows_per_tile =
      std::max<int32_t>(1, static_cast<int32_t>(cuda::attention_items_per_tile(dtype, dims.head_dim, group) / group));
  // Tiles with the keys their last row sees (a sequence's query rows are its last positions): the
  // longest go first, so a prefill's or a ragged batch's long tiles do not start in the last wave.
  struct PlannedTile {
    int32_t seq, row_begin, row_end, keys;
  };
  int32_t max_keys = 0, max_rows = 0, min_seq_rows = INT32_MAX;
  int64_t seqs_with_rows = 0;
  auto tiles_of = [&](int32_t rows) {
    std::vector<PlannedTile> out;
    for (int64_t s = 0; s < num_seqs; ++s)
      for (int32_t r = qs[s]; r < qs[s + 1]; r += rows) {
        const int32_t end = std::min(r + rows, qs[s + 1]);
        out.push_back({static_cast<int32_t>(s), r, end, kv[s] - (qs[s + 1] - end)});
      }
    std::stable_sort(out.begin(), out.end(), [](const PlannedTile& a, const PlannedTile& b) { return a.keys > b.keys; });
    return out;
  };
  std::vector<PlannedTile> planned = tiles_of(rows_per_tile);
  for (const PlannedTile& t : planned) max_rows = std::max(max_rows, t.row_end - t.row_begin);
  for (int64_t s = 0; s < num_seqs; ++s) {
    max_keys = std::max(max_keys, kv[s]);
    if (qs[s + 1] > qs[s]) {
      min_seq_rows = std::min(min_seq_rows, qs[s + 1] - qs[s]);
      ++seqs_with_rows;
    }
  }
  // Runs of keys per CTA (flash-decoding splits), so denoise steps with few query rows still fill
  // the GPU. float32 (the exact mode) keeps runs of kKeysPerSplit, so a row's result does not depend
  // on the rest of the batch. The 16-bit tensor-core path takes the run (64 keys and up, doubling)
  // that minimises a cost calibrated on an H100 (bench_kernels --split-sweep, BENCHMARKS.md): waves
  // of the CTAs that have keys (options.cta_slots run at once) x (their mean keys +
  // kCtaOverheadKeys), plus, where keys are split, kMergeKeys, kKeysPerRoundedSplit for each split
  // and the partials' bytes (written, then read by the merge: large for a prefill's many rows)
  // counted as keys the grid reads. Long runs pay until the grid leaves most of a wave idle; on a
  // GPU a row's 16-bit result may then differ in the last bits between batches, as cuBLASLt's does.
  // Only a batch whose partials would not fit (long prefills) is held to longer runs.
  const int64_t num_tokens = qs[num_seqs];
  const int64_t per_split = num_tokens * dims.num_heads * (dims.head_dim + 1);
  auto splits_of = [&](int64_t k) { return (max_keys + k - 1) / k; };
  auto rounded = [&](int64_t splits) { return options.pow2_splits ? pow2_at_least(splits) : splits; };
  auto fits = [&](int64_t k) { return rounded(splits_of(k)) * per_split <= kMaxPartialFloats; };
  int32_t kps = kKeysPerSplit;
  if (tensor_cores && options.keys_per_split > 0) {
    kps = options.keys_per_split;
  } else if (tensor_cores) {
    int64_t total_keys = 0;
    for (const PlannedTile& t : planned) total_keys += std::max(t.keys, 1);
    const int key_split = cuda::attention_key_split(int64_t{max_rows} * group);
    const double slots = static_cast<double>(std::max<int64_t>(1, options.cta_slots[slot_index(key_split)]));
    const double ref_slots = static_cast<double>(std::max<int64_t>(1, options.cta_slots[slot_index(4)]));
    double best = INFINITY;
    for (int64_t k = 64;; k *= 2) {
      int64_t ctas = 0;  // CTAs with keys: a split past a tile's keys exits at once
      for (const PlannedTile& t : planned) ctas += (std::max(t.keys, 1) + k - 1) / k;
      const int64_t splits = splits_of(k), launched = rounded(splits);
      if (ctas > 0 && (fits(k) || splits == 1)) {
        // A split's partials (float32, written and read back by the merge) in keys' worth of the
        // whole grid's reads: one key of one KV head is its K and V row. Their bytes cost memory
        // time whatever the kernel's occupancy, so they are counted against the grid of the
        // calibrated (4-way) kernel.
        const double partial_keys = static_cast<double>(2 * launched * per_split * 4) /
                                    (ref_slots * 2.0 * static_cast<double>(dims.head_dim * dtype_size(dtype)));
        const double split_cost =
            splits > 1 ? kMergeKeys + partial_keys + kKeysPerRoundedSplit * static_cast<double>(launched) : 0.0;
        const double cost = std::ceil(static_cast<double>(ctas * dims.num_kv_heads) / slots) *
                                (static_cast<double>(total_keys) / static_cast<double>(ctas) + kCtaOverheadKeys) +
                            split_cost;
        if (cost <= best) {  // ties: the longer run
          best = cost;
          kps = static_cast<int32_t>(k);
        }
      }
      if (k >= max_keys) break;
    }
  }
  while (!fits(kps) && kps < max_keys) kps *= 2;
  AttentionPlan plan;
  plan.keys_per_split = kps;
  plan.key_split = tensor_cores ? cuda::attention_key_split(int64_t{max_rows} * group) : 1;
  plan.splits = static_cast<int32_t>(rounded(std::max<int64_t>(1, splits_of(kps))));
  plan.partial_floats = plan.splits > 1 ? plan.splits * per_split : 0;
  // Wide tiles stage each K/V chunk once for twice the items: chosen where every sequence fills
  // more than one tile (long prefills and canvases; a batch with denoise rows keeps the small tiles,
  // whose few items would leave most of a wide CTA's warps idle over long key ranges), the keys
  // take one run, and the wide CTAs still make at least two waves.
  if (tensor_cores && options.wide_tiles != 0 && !planned.empty()) {
    // The wgmma form keeps the 64-item tiles (each runs faster there), the mma.sync form takes
    // 128-item ones; either where its CTAs make two waves or more (fewer were not measured).
    std::vector<PlannedTile> wide;
    if (!options.wgmma)
      wide = tiles_of(std::max<int32_t>(1, static_cast<int32_t>(cuda::kMmaWideItemsPerTile / group)));
    const double ctas = static_cast<double>(options.wgmma ? planned.size() : wide.size()) *
                        static_cast<double>(dims.num_kv_heads);
    const bool pays = int64_t{min_seq_rows} * group > cuda::kMmaItemsPerTile && plan.splits == 1 &&
                      ctas >= 2.0 * static_cast<double>(options.cta_slots[kWideSlots]);
    if (options.wide_tiles == 1 || pays) {
      if (!options.wgmma) planned = std::move(wide);
      plan.wide = true;
      plan.wgmma = options.wgmma;
      plan.key_split = 1;
    }
  }
  plan.keys_read_once = static_cast<int64_t>(planned.size()) == seqs_with_rows;
  std::vector<int32_t> tiles;
  for (const PlannedTile& t : planned) tiles.insert(tiles.end(), {t.seq, t.row_begin, t.row_end});
  plan.tiles = Tensor::empty({static_cast<int64_t>(tiles.size() / 3), 3}, DType::kInt32);
  std::copy(tiles.begin(), tiles.end(), plan.tiles.data<int32_t>());
  return plan;
}

void set_plan_scalars(AttentionMetadata& meta, const AttentionPlan& plan) {
  meta.attn_splits = plan.splits;
  meta.attn_keys_per_split = plan.keys_per_split;
  meta.attn_key_split = plan.key_split;
  meta.attn_wide = plan.wide;
  meta.attn_wgmma = plan.wgmma;
  meta.attn_keys_read_once = plan.keys_read_once;
}

void attach_attention_plan(AttentionMetadata& meta, const AttentionDims& dims, DType dtype, Device device,
                           const AttentionPlanOptions& options) {
  AttentionPlan plan = plan_attention(meta.host_q_start, meta.host_kv_len, dims, dtype, options);
  meta.attn_tiles = plan.tiles.to(device);
  set_plan_scalars(meta, plan);
  meta.attn_partials = plan.partial_floats > 0 ? Tensor::empty({plan.partial_floats}, DType::kFloat32, device) : Tensor();
}

}  // namespace blockinfer::ops
