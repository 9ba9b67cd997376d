#include "ops/sampling.h"

#include "ops/common.h"

namespace blockinfer::ops {

SampleOutputs SampleOutputs::empty(int64_t num_rows) {
  return {Tensor::empty({num_rows}, DType::kInt32), Tensor::empty({num_rows}, DType::kFloat32),
          Tensor::empty({num_rows}, DType::kFloat32), Tensor::empty({num_rows}, DType::kFloat32)};
}

void sample_rows(const Tensor& logits, const std::vector<SampleRowParams>& params, SampleOutputs& out) {
  check_dim(logits, 2, "sample_rows: logits");
  check_cpu_f32(logits, "sample_rows: logits");
  check_contiguous(logits, "sample_rows: logits");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  BI_CHECK_ARG(static_cast<int64_t>(params.size()) == rows, "sample_rows: ", params.size(),
               " params for ", rows, " rows");
  BI_CHECK_ARG(vocab > 0, "sample_rows: empty vocabulary");
  check_dtype(out.x0, DType::kInt32, "sample_rows: x0");
  check_cpu_f32(out.confidence, "sample_rows: confidence");
  check_cpu_f32(out.logprob, "sample_rows: logprob");
  check_cpu_f32(out.entropy, "sample_rows: entropy");
  for (const Tensor* t : {&out.x0, &out.confidence, &out.logprob, &out.entropy})
    BI_CHECK_ARG(t->dim() == 1 && t->size(0) == rows, "sample_rows: outputs must be [", rows, "]");
  for (const auto& p : params) {
    BI_CHECK_ARG(p.temperature >= 0.f, "sample_rows: temperature must be >= 0, got ", p.temperature);
    BI_CHECK_ARG(p.topk >= 0, "sample_rows: topk must be >= 0, got ", p.topk);
    BI_CHECK_ARG(p.topp > 0.f && p.topp <= 1.f, "sample_rows: topp must be in (0, 1], got ", p.topp);
  }
  cpu::sample_rows(logits.data<float>(), params.data(), out.x0.data<int32_t>(),
                   out.confidence.data<float>(), out.logprob.data<float>(), out.entropy.data<float>(),
                   rows, vocab);
}

}  // namespace blockinfer::ops
