#include "runtime/executor.h"

#include <algorithm>

#include "core/profiler.h"

namespace blockinfer {

Executor::Executor(const Model& model, const KVCacheConfig& kv) : model_(model) {
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
  cache_.resize(static_cast<size_t>(c.num_layers));
  for (auto& layer : cache_) {
    layer.k = Tensor::empty({num_pages_, page_size_, c.num_kv_heads, c.head_dim}, model.dtype(), dev);
    layer.v = Tensor::empty({num_pages_, page_size_, c.num_kv_heads, c.head_dim}, model.dtype(), dev);
  }
}

Tensor Executor::run(const std::vector<SeqChunk>& chunks) {
  const int64_t num_seqs = static_cast<int64_t>(chunks.size());
  int64_t num_tokens = 0, num_logits = 0, max_pages = 1;
  for (const auto& ch : chunks) {
    BI_CHECK(ch.end > ch.start && ch.pages != nullptr);
    num_tokens += ch.end - ch.start;
    num_logits += static_cast<int64_t>(ch.logit_positions.size());
    const int64_t need = (std::max(ch.end, ch.kv_end) + page_size_ - 1) / page_size_;
    BI_CHECK(static_cast<int64_t>(ch.pages->size()) >= need, "chunk needs ", need, " pages, has ",
             ch.pages->size());
    max_pages = std::max<int64_t>(max_pages, need);
  }
  ForwardInput in;
  in.token_ids = Tensor::empty({num_tokens}, DType::kInt32);
  auto& m = in.attn;
  m.positions = Tensor::empty({num_tokens}, DType::kInt32);
  m.slot_mapping = Tensor::empty({num_tokens}, DType::kInt32);
  m.page_table = Tensor::zeros({num_seqs, max_pages}, DType::kInt32);
  m.q_start = Tensor::empty({num_seqs + 1}, DType::kInt32);
  m.kv_len = Tensor::empty({num_seqs}, DType::kInt32);
  m.block_len = Tensor::empty({num_seqs}, DType::kInt32);
  m.page_size = page_size_;
  in.logit_rows = Tensor::empty({num_logits}, DType::kInt32);

  int32_t* ids = in.token_ids.data<int32_t>();
  int32_t* pos = m.positions.data<int32_t>();
  int32_t* slots = m.slot_mapping.data<int32_t>();
  int32_t* pt = m.page_table.data<int32_t>();
  int32_t* qs = m.q_start.data<int32_t>();
  int32_t* rows = in.logit_rows.data<int32_t>();
  int32_t row = 0, logit = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const SeqChunk& ch = chunks[s];
    const std::vector<int32_t>& pages = *ch.pages;
    qs[s] = row;
    const int32_t kv_end = std::max(ch.end, ch.kv_end);
    m.kv_len.data<int32_t>()[s] = kv_end;
    m.block_len.data<int32_t>()[s] = ch.block_len;
    const int64_t need = (kv_end + page_size_ - 1) / page_size_;
    std::copy(pages.begin(), pages.begin() + need, pt + s * max_pages);
    for (int32_t p = ch.start; p < ch.end; ++p, ++row) {
      ids[row] = ch.tokens[p - ch.start];
      pos[row] = p;
      slots[row] = pages[p / page_size_] * page_size_ + p % page_size_;
    }
    for (int32_t lp : ch.logit_positions) {
      BI_CHECK(lp >= ch.start && lp < ch.end, "logit position ", lp, " outside its chunk");
      rows[logit++] = qs[s] + (lp - ch.start);
    }
  }
  qs[num_seqs] = row;
  if (std::any_of(chunks.begin(), chunks.end(), [](const SeqChunk& c) { return c.block_offset != 0; })) {
    m.block_offset = Tensor::empty({num_seqs}, DType::kInt32);
    for (int64_t s = 0; s < num_seqs; ++s) m.block_offset.data<int32_t>()[s] = chunks[s].block_offset;
  }
  const Device dev = model_.device();
  if (dev.is_cuda()) {
    OpTimer timer("upload_metadata", dev);
    // One host-to-device copy per index tensor; the host copies of q_start and kv_len stay for
    // the attention kernels' grid planning.
    m.host_q_start = m.q_start;
    m.host_kv_len = m.kv_len;
    for (Tensor* t : {&in.token_ids, &m.positions, &m.slot_mapping, &m.page_table, &m.q_start,
                      &m.kv_len, &m.block_len, &in.logit_rows})
      *t = t->to(dev);
  }
  Tensor logits = Tensor::empty({num_logits, model_.config().vocab_size}, DType::kFloat32, dev);
  model_.forward(in, cache_, logits);
  return logits;
}

}  // namespace blockinfer
