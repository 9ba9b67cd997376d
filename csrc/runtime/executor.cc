#include "runtime/executor.h"

#include <algorithm>
#include <utility>

#include "core/env_switch.h"
#include "core/pow2.h"
#include "core/profiler.h"
#include "ops/attention.h"

namespace blockinfer {

Executor::Executor(const Model& model, const KVCacheConfig& kv, const GraphConfig& graph_config)
    : model_(model), graph_config_(graph_config) {
  const ModelConfig& c = model.config();
  const Device dev = model.device();
  BI_CHECK_ARG(kv.page_size > 0, "kv_page_size must be positive, got ", kv.page_size);
  page_size_ = kv.page_size;
  bytes_per_page_ = int64_t{2} * c.num_layers * page_size_ * c.num_kv_heads * c.head_dim *
                    static_cast<int64_t>(dtype_size(model.dtype()));
  int64_t budget = kv.memory_bytes;
  if (dev.is_cuda() && kv.num_pages <= 0) {
    const double free_bytes = static_cast<double>(cuda_free_memory(dev.index));
    budget = static_cast<int64_t>(free_bytes * kv.gpu_memory_utilization) - kv.activation_reserve_bytes;
  }
  num_pages_ = kv.num_pages > 0 ? kv.num_pages : budget / bytes_per_page_;
  BI_CHECK_ARG(num_pages_ > 0, "the KV cache budget of ", budget, " bytes holds no page of ",
               bytes_per_page_, " bytes");
  // The plan sizes the attention's key runs by the waves of CTAs the GPU runs at once, and takes the
  // wgmma form for long prefills where it serves.
  if (dev.is_cuda()) {
    cta_slots_ = ops::attention_cta_slots(dev, model.dtype(), {c.num_heads, c.num_kv_heads, c.head_dim}, page_size_);
    wgmma_ = ops::attention_wgmma(dev, model.dtype(), {c.num_heads, c.num_kv_heads, c.head_dim}, page_size_);
  }
  // BLOCKINFER_ATTENTION_WIDE_TILES=0 or 1 overrides the plan's choice of wide tiles (for A/B runs).
  if (const int v = env_switch("BLOCKINFER_ATTENTION_WIDE_TILES"); v >= 0) wide_tiles_ = v;
  cache_.resize(static_cast<size_t>(c.num_layers));
  for (auto& layer : cache_) {
    layer.k = Tensor::empty({num_pages_, page_size_, c.num_kv_heads, c.head_dim}, model.dtype(), dev);
    layer.v = Tensor::empty({num_pages_, page_size_, c.num_kv_heads, c.head_dim}, model.dtype(), dev);
  }
}

namespace {

constexpr int32_t kOneSplitKeys = int32_t{1} << 30;  // a single split's key run in a padded forward

// Logit rows of a captured forward: a power of two up to 64, then a multiple of 64, so that a few
// graphs serve a decode (the count falls step by step within a block) while the last layer's
// O-proj and MLP and the final norm compute at most 63 padding rows.
int64_t padded_logit_rows(int64_t rows) { return rows <= 64 ? pow2_at_least(rows, 1) : (rows + 63) / 64 * 64; }

}  // namespace

Tensor Executor::run(const std::vector<SeqChunk>& chunks, const Patch& patch_inputs) {
  const int64_t num_seqs = static_cast<int64_t>(chunks.size());
  int64_t num_tokens = 0, num_logits = 0, need_pages = 1;
  bool any_offset = false;
  std::vector<int32_t> q_start(static_cast<size_t>(num_seqs + 1)), kv_len(static_cast<size_t>(num_seqs));
  for (int64_t s = 0; s < num_seqs; ++s) {
    const SeqChunk& ch = chunks[s];
    BI_CHECK(ch.end > ch.start && ch.pages != nullptr);
    q_start[s] = static_cast<int32_t>(num_tokens);
    kv_len[s] = std::max(ch.end, ch.kv_end);
    num_tokens += ch.end - ch.start;
    num_logits += static_cast<int64_t>(ch.logit_positions.size());
    const int64_t need = (kv_len[s] + page_size_ - 1) / page_size_;
    BI_CHECK(static_cast<int64_t>(ch.pages->size()) >= need, "chunk needs ", need, " pages, has ",
             ch.pages->size());
    need_pages = std::max(need_pages, need);
    any_offset = any_offset || ch.block_offset != 0;
  }
  q_start[num_seqs] = static_cast<int32_t>(num_tokens);

  const Device dev = model_.device();
  const bool cuda = dev.is_cuda();
  const ModelConfig& c = model_.config();
  const ops::AttentionDims dims{c.num_heads, c.num_kv_heads, c.head_dim};
  // A forward that may be captured: sizes that shape kernels are rounded up (page-table width,
  // logit rows, key splits) so that a few graphs serve a whole decode. The rounding does not
  // depend on enforce_eager, so eager launches compute exactly what a graph replay computes.
  const bool padded = cuda && num_tokens <= graph_config_.max_tokens && num_logits > 0;
  const bool graphable = padded && !graph_config_.enforce_eager && !profiling_ops();
  // The page-table width (a graph key): at least 64 pages (1,024 tokens of 16), so that a decode
  // whose contexts grow past 256 or 512 tokens keeps its graphs (a batch-128 SDAR-4B run captured
  // every phase's shape again mid-run there); wider tables round up to powers of two.
  const int64_t max_pages = padded ? pow2_at_least(need_pages, 64) : need_pages;
  const int64_t logit_rows = padded ? std::min(padded_logit_rows(num_logits), num_tokens) : num_logits;
  ops::AttentionPlan plan;
  if (cuda) {
    plan = ops::plan_attention(Tensor::from_blob(q_start.data(), {num_seqs + 1}, DType::kInt32, Device::cpu()),
                               Tensor::from_blob(kv_len.data(), {num_seqs}, DType::kInt32, Device::cpu()), dims,
                               model_.dtype(), {.pow2_splits = padded, .cta_slots = cta_slots_, .wide_tiles = wide_tiles_, .wgmma = wgmma_});
  }
  const int64_t num_tiles = cuda ? plan.tiles.size(0) : 0;
  // One split covers every tile's keys whatever its run, so a captured forward's run need not
  // follow the plan's (which moves as contexts grow, e.g. from 512 to 1,024 keys at 512): a
  // canonical run keeps the graph key, and the kernels' results, the same.
  if (padded && plan.splits == 1) plan.keys_per_split = kOneSplitKeys;

  // Every index array of the forward, packed into one int32 buffer: one host-to-device copy.
  int64_t size = 0;
  auto take = [&](int64_t n) {
    const int64_t at = size;
    size += n;
    return at;
  };
  const int64_t o_ids = take(num_tokens), o_pos = take(num_tokens), o_slot = take(num_tokens),
                o_qs = take(num_seqs + 1), o_kv = take(num_seqs), o_bl = take(num_seqs), o_off = take(num_seqs),
                o_rows = take(logit_rows), o_tiles = take(3 * num_tiles), o_pt = take(num_seqs * max_pages);
  Tensor host = Tensor::empty({size}, DType::kInt32);
  int32_t* h = host.data<int32_t>();
  std::fill(h + o_rows, h + o_rows + logit_rows, 0);  // padding rows recompute row 0
  std::fill(h + o_pt, h + size, 0);
  std::copy(q_start.begin(), q_start.end(), h + o_qs);
  std::copy(kv_len.begin(), kv_len.end(), h + o_kv);
  if (num_tiles > 0) std::copy(plan.tiles.data<int32_t>(), plan.tiles.data<int32_t>() + 3 * num_tiles, h + o_tiles);
  int32_t row = 0, logit = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const SeqChunk& ch = chunks[s];
    const std::vector<int32_t>& pages = *ch.pages;
    h[o_bl + s] = ch.block_len;
    h[o_off + s] = ch.block_offset;
    const int64_t need = (kv_len[s] + page_size_ - 1) / page_size_;
    std::copy(pages.begin(), pages.begin() + need, h + o_pt + s * max_pages);
    for (int32_t p = ch.start; p < ch.end; ++p, ++row) {
      h[o_ids + row] = ch.tokens[p - ch.start];
      h[o_pos + row] = p;
      h[o_slot + row] = pages[p / page_size_] * page_size_ + p % page_size_;
    }
    for (int32_t lp : ch.logit_positions) {
      BI_CHECK(lp >= ch.start && lp < ch.end, "logit position ", lp, " outside its chunk");
      h[o_rows + logit++] = q_start[s] + (lp - ch.start);
    }
  }

  // Int32 views of `buf` (the host buffer or its device copy) at offset `at`.
  auto view = [](const Tensor& buf, int64_t at, std::vector<int64_t> shape) {
    return Tensor::from_blob(static_cast<int32_t*>(buf.raw_data()) + at, std::move(shape), DType::kInt32, buf.device(),
                             {}, buf.holder());
  };
  // The forward's inputs as views of `buf`.
  auto inputs = [&](const Tensor& buf, const Tensor& partials) {
    auto v = [&](int64_t at, std::vector<int64_t> shape) { return view(buf, at, std::move(shape)); };
    ForwardInput in;
    in.token_ids = v(o_ids, {num_tokens});
    in.logit_rows = v(o_rows, {logit_rows});
    ops::AttentionMetadata& m = in.attn;
    m.positions = v(o_pos, {num_tokens});
    m.slot_mapping = v(o_slot, {num_tokens});
    m.page_table = v(o_pt, {num_seqs, max_pages});
    m.q_start = v(o_qs, {num_seqs + 1});
    m.kv_len = v(o_kv, {num_seqs});
    m.block_len = v(o_bl, {num_seqs});
    if (cuda || any_offset) m.block_offset = v(o_off, {num_seqs});
    m.page_size = page_size_;
    if (cuda) {
      m.attn_tiles = v(o_tiles, {num_tiles, 3});
      ops::set_plan_scalars(m, plan);
      m.attn_partials = partials;
    }
    return in;
  };
  auto rows_of = [&](const Tensor& hidden) { return logit_rows == num_logits ? hidden : hidden.slice(0, 0, num_logits); };
  const int64_t hidden_size = c.hidden_size;

  auto patch = [&](const Tensor& buf) {
    if (!patch_inputs) return;
    Tensor ids = view(buf, o_ids, {num_tokens}), rows = view(buf, o_rows, {logit_rows});
    patch_inputs(ids, rows);
  };
  if (!cuda) {
    patch(host);
    Tensor hidden = Tensor::empty({num_logits, hidden_size}, model_.dtype(), dev);
    model_.forward(inputs(host, Tensor()), cache_, hidden);
    return hidden;
  }
  OpTimer forward_timer("forward (upload + model)", dev, /*coarse=*/true);
  auto upload = [&](const Tensor& dst) {
    OpTimer timer("upload_metadata", dev);
    device_copy(dst.raw_data(), dev, host.raw_data(), Device::cpu(), host.nbytes());
  };
  auto workspace = [&]() {
    return plan.partial_floats > 0 ? Tensor::empty({plan.partial_floats}, DType::kFloat32, dev) : Tensor();
  };
  auto eager = [&] {
    Tensor meta = Tensor::empty({size}, DType::kInt32, dev);
    upload(meta);
    patch(meta);
    Tensor hidden = Tensor::empty({logit_rows, hidden_size}, model_.dtype(), dev);
    model_.forward(inputs(meta, workspace()), cache_, hidden);
    return rows_of(hidden);
  };
  if (!graphable) return eager();
  const GraphKey key{num_tokens, num_seqs, logit_rows, max_pages, num_tiles, plan.splits, plan.keys_per_split,
                     plan.key_split, plan.wide, plan.keys_read_once};
  ++forwards_;
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    // Shapes without a graph that have not recurred lately are forgotten when the map grows
    // large, so that a long run of changing shapes does not grow it without bound.
    const size_t max_entries = 16 * static_cast<size_t>(std::max(1, graph_config_.max_graphs));
    if (graphs_.size() >= max_entries)
      std::erase_if(graphs_, [&](const auto& kv) {
        return !kv.second.graph && !kv.second.failed && forwards_ - kv.second.last_used > graph_config_.max_graphs;
      });
    if (graphs_.size() >= max_entries) return eager();
    it = graphs_.emplace(key, GraphEntry{}).first;
  }
  GraphEntry& e = it->second;
  e.last_used = forwards_;
  if (!e.graph) {
    // A shape's first forward runs eagerly (creating its GEMM plans and kernel attributes), and
    // the shape is captured behind it for its later forwards, unless the graph pool is full or no
    // graph can give way. A capture only records (nothing runs), so the GPU runs the queued eager
    // forward while the host captures. A capture takes 3.4-6.6 ms of host time at the SDAR shapes
    // (H100 hosts); where the shape's second forward captured and then replayed, the GPU sat idle
    // that long. A failed capture leaves the shape eager for good.
    if (e.failed || static_cast<int64_t>(cuda::graph_pool_bytes()) > graph_config_.max_pool_bytes ||
        !make_room_for_graph())
      return eager();
    Tensor out = eager();
    e.meta = Tensor::empty({size}, DType::kInt32, dev);
    auto graph = std::make_unique<cuda::Graph>();
    try {
      graph->capture(dev.index, [&] {
        // The hidden rows and the split workspace come from the graph pool like every temporary
        // of the forward: the pool's blocks are never handed to eager work, so the graph may keep
        // writing its output there; another graph may reuse the block for its own temporaries,
        // which is harmless because a step reads the output before the next forward.
        Tensor hidden = Tensor::empty({logit_rows, hidden_size}, model_.dtype(), dev);
        model_.forward(inputs(e.meta, workspace()), cache_, hidden);
        e.hidden = Tensor::from_blob(hidden.raw_data(), {logit_rows, hidden_size}, model_.dtype(), dev);
      });
      e.graph = std::move(graph);
      ++captured_;
    } catch (const CudaError&) {
      e.failed = true;
      e.meta = Tensor();
      e.hidden = Tensor();
    }
    return out;
  }
  upload(e.meta);
  patch(e.meta);
  e.graph->replay();
  ++e.replays;
  ++graph_replays_;
  return rows_of(e.hidden);
}

bool Executor::make_room_for_graph() {
  if (captured_ < graph_config_.max_graphs) return true;
  // The graph used least recently among those that may give way: a graph that has replayed,
  // once it has gone unused for max_graphs forwards; one that has not replayed yet only after 4x
  // that. With shapes cycling through more than max_graphs, graphs would otherwise give way
  // before their first replay, and none would ever replay; this way the shapes captured first
  // keep their graphs and the rest run eagerly, until a captured shape stops recurring.
  const int64_t limit = graph_config_.max_graphs;
  GraphEntry* lru = nullptr;
  for (auto& [key, entry] : graphs_) {
    if (!entry.graph || forwards_ - entry.last_used <= (entry.replays > 0 ? limit : 4 * limit)) continue;
    if (!lru || entry.last_used < lru->last_used) lru = &entry;
  }
  if (!lru) return false;
  // Its pool blocks stay in the pool for the next capture; the shape may be captured again.
  lru->graph.reset();
  lru->meta = Tensor();
  lru->hidden = Tensor();
  lru->replays = 0;
  --captured_;
  ++graph_evictions_;
  return true;
}

}  // namespace blockinfer
