#include "ops/sampling.h"

#include <algorithm>
#include <utility>

#include "kernels/cuda/launchers.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {

namespace {
constexpr int64_t kWords = 5;  // 4-byte words per row: x0, confidence, logprob, entropy, chosen

SampleOutputs views_of(const Tensor& packed) {
  const int64_t n = packed.size(0) / kWords;
  auto part = [&](int64_t i, DType dt) {
    return Tensor::from_blob(static_cast<int32_t*>(packed.raw_data()) + i * n, {n}, dt, packed.device(), {},
                             packed.holder());
  };
  return {part(0, DType::kInt32), part(1, DType::kFloat32), part(2, DType::kFloat32), part(3, DType::kFloat32),
          part(4, DType::kInt32), packed};
}

// A copy of `items` (plain structs) in a byte tensor on `device`, for a kernel to read.
template <typename T>
Tensor upload(const std::vector<T>& items, Device device) {
  const int64_t bytes = static_cast<int64_t>(items.size() * sizeof(T));
  Tensor t = Tensor::empty({bytes}, DType::kUInt8, device);
  device_copy(t.raw_data(), device, items.data(), Device::cpu(), static_cast<size_t>(bytes));
  return t;
}

// Logits as every sampling op reads them: [rows, vocab] float32, contiguous.
void check_logits(const Tensor& logits, const char* what) {
  check_dim(logits, 2, what);
  check_dtype(logits, DType::kFloat32, what);
  check_contiguous(logits, what);
}

// The four sampled outputs (x0 int32, the rest float32), each [rows] on `device`; `op` names the
// caller in the messages.
// (check_dtype's messages, without building a name on every call.)
void check_sample_outputs(const SampleOutputs& out, int64_t rows, Device device, const char* op) {
  BI_CHECK_ARG(out.x0.dtype() == DType::kInt32, op, ": x0 must be ", dtype_name(DType::kInt32), ", got ",
               dtype_name(out.x0.dtype()));
  for (const Tensor* t : {&out.confidence, &out.logprob, &out.entropy})
    BI_CHECK_ARG(t->dtype() == DType::kFloat32, op, ": outputs must be ", dtype_name(DType::kFloat32), ", got ",
                 dtype_name(t->dtype()));
  for (const Tensor* t : {&out.x0, &out.confidence, &out.logprob, &out.entropy}) {
    BI_CHECK_ARG(t->dim() == 1 && t->size(0) == rows, op, ": outputs must be [", rows, "]");
    BI_CHECK_ARG(t->device() == device, op, ": outputs must be on ", device.str());
  }
}

}  // namespace

SampleOutputs SampleOutputs::empty(int64_t num_rows, Device device) {
  return views_of(Tensor::empty({kWords * num_rows}, DType::kInt32, device));
}

SampleOutputs SampleOutputs::of(const Tensor& packed) {
  BI_CHECK_ARG(packed.dim() == 1 && packed.dtype() == DType::kInt32 && packed.size(0) % kWords == 0,
               "SampleOutputs::of: expected int32 [5 * rows], got ", packed.shape_str());
  return views_of(packed);
}

SampleOutputs SampleOutputs::to(Device device) const {
  BI_CHECK(packed.defined(), "SampleOutputs::to: outputs not made by SampleOutputs::empty");
  return views_of(packed.to(device));
}

SampleOutputs SampleOutputs::rows(int64_t begin, int64_t n) const {
  auto part = [&](const Tensor& t) { return t.slice(0, begin, begin + n); };
  return {part(x0), part(confidence), part(logprob), part(entropy), part(chosen), Tensor()};
}

void sample_rows(const Tensor& logits, const std::vector<SampleRowParams>& params, SampleOutputs& out,
                 SampleMath math) {
  OpTimer timer("sample_rows", logits.device());
  check_logits(logits, "sample_rows: logits");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  BI_CHECK_ARG(static_cast<int64_t>(params.size()) == rows, "sample_rows: ", params.size(),
               " params for ", rows, " rows");
  BI_CHECK_ARG(vocab > 0, "sample_rows: empty vocabulary");
  check_sample_outputs(out, rows, logits.device(), "sample_rows");
  for (const auto& p : params) {
    BI_CHECK_ARG(p.temperature >= 0.f, "sample_rows: temperature must be >= 0, got ", p.temperature);
    BI_CHECK_ARG(p.topk >= 0, "sample_rows: topk must be >= 0, got ", p.topk);
    BI_CHECK_ARG(p.topp > 0.f && p.topp <= 1.f, "sample_rows: topp must be in (0, 1], got ", p.topp);
    BI_CHECK_ARG(p.dream || (p.confidence_kind != ConfidenceKind::kMargin &&
                             p.confidence_kind != ConfidenceKind::kNegEntropy),
                 "sample_rows: the margin and negative-entropy confidences are Dream's (set `dream`)");
  }
  if (logits.device().is_cuda()) {
    bool filtered = false, negentropy = false;
    for (const auto& p : params) {
      filtered = filtered || cpu::uses_topk(p, vocab) || cpu::uses_topp(p);
      negentropy = negentropy || p.confidence_kind == ConfidenceKind::kNegEntropy;
    }
    BI_CHECK_ARG(!filtered || vocab <= (int64_t{1} << 21), "sample_rows: top-k/top-p on a GPU supports vocabularies "
                 "up to 2^21 tokens, got ", vocab);
    const Tensor d_params = upload(params, logits.device());
    Tensor workspace = Tensor::empty({static_cast<int64_t>(cuda::sample_rows_workspace_bytes(rows, vocab))},
                                     DType::kUInt8, logits.device());
    cuda::launch_sample_rows(logits.data<float>(), static_cast<const SampleRowParams*>(d_params.raw_data()),
                             out.x0.data<int32_t>(), out.confidence.data<float>(), out.logprob.data<float>(),
                             out.entropy.data<float>(), rows, vocab, filtered, negentropy,
                             math == SampleMath::kFast, workspace.raw_data(), logits.device().index);
    return;
  }
  cpu::sample_rows(logits.data<float>(), params.data(), out.x0.data<int32_t>(),
                   out.confidence.data<float>(), out.logprob.data<float>(), out.entropy.data<float>(),
                   rows, vocab);
}

bool greedy_row_fuses(const SampleRowParams& p) {
  return p.temperature == 0.f && !p.dream &&
         (p.confidence_kind == ConfidenceKind::kTempered || p.confidence_kind == ConfidenceKind::kUntempered);
}

bool lm_head_greedy_serves(DType dtype, Device device, int64_t vocab, int64_t k) {
  return device.is_cuda() && cuda::gemm_cutlass_lm_head_greedy_serves(dtype, vocab, k, device.index);
}

bool lm_head_greedy_serves(const Tensor& weight) {
  return weight.defined() && weight.dim() == 2 && weight.is_contiguous() &&
         reinterpret_cast<uintptr_t>(weight.raw_data()) % 16 == 0 &&
         lm_head_greedy_serves(weight.dtype(), weight.device(), weight.size(0), weight.size(1));
}

bool lm_head_greedy_serves(const Tensor& hidden, const Tensor& weight) {
  return lm_head_greedy_serves(weight) && hidden.defined() && hidden.dim() == 2 &&
         hidden.device() == weight.device() && hidden.dtype() == weight.dtype() && hidden.is_contiguous() &&
         hidden.size(1) == weight.size(1) && reinterpret_cast<uintptr_t>(hidden.raw_data()) % 16 == 0;
}

void lm_head_greedy(const Tensor& hidden, const Tensor& weight, SampleOutputs& out) {
  OpTimer timer("lm_head_greedy", hidden.device());
  BI_CHECK_ARG(lm_head_greedy_serves(hidden, weight), "lm_head_greedy: does not serve hidden ", hidden.shape_str(),
               " ", dtype_name(hidden.dtype()), " on ", hidden.device().str(), " with weight ", weight.shape_str(),
               " ", dtype_name(weight.dtype()));
  const int64_t rows = hidden.size(0), vocab = weight.size(0);
  check_sample_outputs(out, rows, hidden.device(), "lm_head_greedy");
  if (rows == 0) return;
  Tensor partials = Tensor::empty({cuda::lm_head_greedy_partial_floats(rows, vocab)}, DType::kFloat32, hidden.device());
  cuda::launch_lm_head_greedy(hidden.raw_data(), weight.raw_data(), partials.data<float>(), out.x0.data<int32_t>(),
                              out.confidence.data<float>(), out.logprob.data<float>(), out.entropy.data<float>(),
                              rows, vocab, hidden.size(1), hidden.dtype(), hidden.device().index);
}

void combine_guidance(const Tensor& logits, const std::vector<GuidanceRow>& rows, Tensor& out) {
  OpTimer timer("combine_guidance", logits.device());
  check_logits(logits, "combine_guidance: logits");
  const int64_t n = logits.size(0), vocab = logits.size(1);
  for (const GuidanceRow& g : rows)
    BI_CHECK_ARG(g.cond >= 0 && g.cond < n && g.uncond < n, "combine_guidance: row (", g.cond, ", ", g.uncond,
                 ") outside the ", n, " logit rows");
  const Device dev = logits.device();
  const int64_t rows_out = static_cast<int64_t>(rows.size());
  check_logits(out, "combine_guidance: out");
  BI_CHECK_ARG(out.size(0) == rows_out && out.size(1) == vocab && out.device() == dev,
               "combine_guidance: out must be [", rows_out, ", ", vocab, "] on ", dev.str(), ", got ",
               out.shape_str(), " on ", out.device().str());
  if (!dev.is_cuda()) {
    cpu::combine_guidance(logits.data<float>(), rows.data(), rows_out, vocab, out.data<float>());
    return;
  }
  if (rows.empty()) return;
  const Tensor d_rows = upload(rows, dev);
  cuda::launch_combine_guidance(logits.data<float>(), static_cast<const GuidanceRow*>(d_rows.raw_data()), rows_out,
                                vocab, out.data<float>(), dev.index);
}

void select_unmask_rows(const std::vector<RemaskSegment>& segments, SampleOutputs& out) {
  OpTimer timer("select_unmask_rows", out.chosen.device());
  BI_CHECK_ARG(out.packed.defined(), "select_unmask_rows: outputs not made by SampleOutputs::empty");
  const int64_t rows = out.chosen.size(0);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const RemaskSegment& s : segments) {
    BI_CHECK_ARG(s.row_begin >= 0 && s.rows >= 0 && s.row_begin + int64_t{s.rows} <= rows,
                 "select_unmask_rows: segment rows [", s.row_begin, ", ", s.row_begin + int64_t{s.rows},
                 ") outside [0, ", rows, ")");
    BI_CHECK_ARG(s.skip || s.first_only || is_block_strategy(s.strategy), "select_unmask_rows: '",
                 remasking_strategy_name(s.strategy), "' is not a block strategy");
    ranges.push_back({s.row_begin, s.row_begin + int64_t{s.rows}});
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    BI_CHECK_ARG(ranges[i].first >= ranges[i - 1].second, "select_unmask_rows: segments overlap at row ",
                 ranges[i].first);
  const Device dev = out.chosen.device();
  if (!dev.is_cuda()) {
    cpu::select_unmask_rows(out.confidence.data<float>(), out.entropy.data<float>(), segments.data(),
                            static_cast<int64_t>(segments.size()), out.chosen.data<int32_t>());
    return;
  }
  if (segments.empty()) return;
  const Tensor d_segments = upload(segments, dev);
  Tensor workspace = Tensor::empty({2 * rows}, DType::kInt32, dev);
  cuda::launch_select_unmask(out.confidence.data<float>(), out.entropy.data<float>(),
                             static_cast<const RemaskSegment*>(d_segments.raw_data()),
                             static_cast<int64_t>(segments.size()), out.chosen.data<int32_t>(),
                             workspace.data<int32_t>(), rows, dev.index);
}

void carry_decisions(const SampleOutputs& sampled, const CarriedDecisions& d, Tensor& token_ids, Tensor* logit_rows) {
  const int64_t rows = sampled.x0.size(0), n = token_ids.size(0);
  BI_CHECK_ARG(static_cast<int64_t>(d.targets.size()) == rows, "carry_decisions: ", d.targets.size(),
               " targets for ", rows, " sampled rows");
  auto check_ids = [&](const Tensor& t, const char* what) {
    check_dim(t, 1, what);
    check_dtype(t, DType::kInt32, what);
    check_contiguous(t, what);
    check_same_device(t, sampled.x0, what, "carry_decisions: the samples");
  };
  check_ids(token_ids, "carry_decisions: token ids");
  for (int32_t t : d.targets)
    BI_CHECK_ARG(t >= -1 && t < n, "carry_decisions: target ", t, " outside [-1, ", n, ")");
  const int64_t cands = static_cast<int64_t>(d.candidate_rows.size()), runs = static_cast<int64_t>(d.runs.size()) / 4;
  BI_CHECK_ARG(static_cast<int64_t>(d.candidate_sources.size()) == cands && d.runs.size() % 4 == 0,
               "carry_decisions: ", cands, " candidate rows, ", d.candidate_sources.size(), " sources, ",
               d.runs.size(), " run ints (four a run)");
  BI_CHECK_ARG(runs == 0 || logit_rows != nullptr, "carry_decisions: runs without logit rows");
  for (int64_t i = 0; i < cands; ++i) {
    const int32_t r = d.candidate_rows[static_cast<size_t>(i)], s = d.candidate_sources[static_cast<size_t>(i)];
    BI_CHECK_ARG(r >= 0 && r < n, "carry_decisions: candidate row ", r, " outside [0, ", n, ")");
    BI_CHECK_ARG(s >= -1 && s < rows, "carry_decisions: candidate source ", s, " outside [-1, ", rows, ")");
  }
  if (runs > 0) {
    check_ids(*logit_rows, "carry_decisions: logit rows");
    for (int64_t k = 0; k < runs; ++k) {
      const int32_t* run = d.runs.data() + 4 * k;
      BI_CHECK_ARG(run[0] >= 0 && run[1] >= 0 && int64_t{run[0]} + run[1] <= cands && run[2] >= 0 && run[3] >= 0 &&
                       run[3] <= run[1] && int64_t{run[2]} + run[3] <= logit_rows->size(0),
                   "carry_decisions: run ", k, " (", run[0], ", ", run[1], ", ", run[2], ", ", run[3],
                   ") outside its ", cands, " candidates or ", logit_rows->size(0), " logit rows");
    }
  }
  const Device dev = token_ids.device();
  if (!dev.is_cuda()) {
    const int32_t* x0 = sampled.x0.data<int32_t>();
    const int32_t* chosen = sampled.chosen.data<int32_t>();
    int32_t* ids = token_ids.data<int32_t>();
    for (int64_t r = 0; r < rows; ++r)
      if (chosen[r] && d.targets[static_cast<size_t>(r)] >= 0) ids[d.targets[static_cast<size_t>(r)]] = x0[r];
    for (int64_t k = 0; k < runs; ++k) {
      const int32_t* run = d.runs.data() + 4 * k;
      int32_t written = 0;
      for (int32_t i = run[0]; i < run[0] + run[1] && written < run[3]; ++i) {
        const int32_t s = d.candidate_sources[static_cast<size_t>(i)];
        if (s < 0 || !chosen[s]) logit_rows->data<int32_t>()[run[2] + written++] = d.candidate_rows[static_cast<size_t>(i)];
      }
    }
    return;
  }
  if (rows == 0 && runs == 0) return;
  // One upload: the runs first (int4-aligned), then the targets, candidate rows and sources.
  std::vector<int32_t> packed(d.runs);
  packed.insert(packed.end(), d.targets.begin(), d.targets.end());
  packed.insert(packed.end(), d.candidate_rows.begin(), d.candidate_rows.end());
  packed.insert(packed.end(), d.candidate_sources.begin(), d.candidate_sources.end());
  const Tensor buf = upload(packed, dev);
  const int32_t* p = static_cast<const int32_t*>(buf.raw_data());
  cuda::launch_carry_decisions(sampled.x0.data<int32_t>(), sampled.chosen.data<int32_t>(), p + 4 * runs,
                               token_ids.data<int32_t>(), rows, p + 4 * runs + rows, p + 4 * runs + rows + cands, p,
                               runs, runs > 0 ? logit_rows->data<int32_t>() : nullptr, dev.index);
}

}  // namespace blockinfer::ops
