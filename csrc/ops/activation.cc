#include "ops/activation.h"

#include <algorithm>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/launchers.h"
#include "core/profiler.h"
#include "ops/common.h"

namespace blockinfer::ops {

void gather_rows(const Tensor& src, const Tensor& rows, Tensor& out) {
  OpTimer timer("gather_rows", src.device());
  check_dim(src, 2, "gather_rows: src");
  check_dim(rows, 1, "gather_rows: rows");
  check_dim(out, 2, "gather_rows: out");
  check_dtype(rows, DType::kInt32, "gather_rows: rows");
  check_compute(src, rows.device(), "gather_rows: src");
  check_compute(out, rows.device(), "gather_rows: out");
  check_contiguous(src, "gather_rows: src");
  check_contiguous(out, "gather_rows: out");
  BI_CHECK_ARG(out.dtype() == src.dtype() && out.size(0) == rows.size(0) && out.size(1) == src.size(1),
               "gather_rows: out ", out.shape_str(), " does not match [", rows.size(0), ", ", src.size(1), "]");
  if (src.device().is_cuda()) {
    cuda::launch_gather_rows(src.raw_data(), rows.data<int32_t>(), out.raw_data(), rows.size(0),
                             src.size(1), src.dtype(), src.device().index);
    return;
  }
  const int32_t* r = rows.data<int32_t>();
  const int64_t w = src.size(1);
  for (int64_t i = 0; i < rows.size(0); ++i) {
    BI_CHECK_ARG(r[i] >= 0 && r[i] < src.size(0), "gather_rows: row ", r[i], " outside [0, ", src.size(0), ")");
    std::copy(src.data<float>() + r[i] * w, src.data<float>() + (r[i] + 1) * w, out.data<float>() + i * w);
  }
}

void silu_mul(const Tensor& gate_up, Tensor& out, int64_t block) {
  OpTimer timer("silu_mul", gate_up.device());
  check_dim(gate_up, 2, "silu_mul: gate_up");
  check_dim(out, 2, "silu_mul: out");
  check_compute(gate_up, gate_up.device(), "silu_mul: gate_up");
  check_compute(out, gate_up.device(), "silu_mul: out");
  BI_CHECK_ARG(out.dtype() == gate_up.dtype(), "silu_mul: out dtype must match gate_up's");
  check_contiguous(gate_up, "silu_mul: gate_up");
  check_contiguous(out, "silu_mul: out");
  BI_CHECK_ARG(gate_up.size(1) % 2 == 0 && out.size(0) == gate_up.size(0) &&
                   out.size(1) * 2 == gate_up.size(1),
               "silu_mul: gate_up ", gate_up.shape_str(), " and out ", out.shape_str(),
               " do not match ([n, 2*I] and [n, I])");
  BI_CHECK_ARG(block == 0 || (block > 0 && out.size(1) % block == 0), "silu_mul: block ", block,
               " does not divide the ", out.size(1), " outputs");
  if (gate_up.device().is_cuda()) {
    cuda::launch_silu_mul(gate_up.raw_data(), out.raw_data(), gate_up.size(0), out.size(1), out.dtype(),
                          out.device().index, block);
    return;
  }
  cpu::silu_mul(gate_up.data<float>(), out.data<float>(), gate_up.size(0), out.size(1), block);
}

}  // namespace blockinfer::ops
