#include "ops/activation.h"

#include "kernels/cpu/kernels.h"
#include "ops/common.h"

namespace blockinfer::ops {

void silu_mul(const Tensor& gate_up, Tensor& out) {
  check_dim(gate_up, 2, "silu_mul: gate_up");
  check_dim(out, 2, "silu_mul: out");
  check_cpu_f32(gate_up, "silu_mul: gate_up");
  check_cpu_f32(out, "silu_mul: out");
  check_contiguous(gate_up, "silu_mul: gate_up");
  check_contiguous(out, "silu_mul: out");
  BI_CHECK_ARG(gate_up.size(1) % 2 == 0 && out.size(0) == gate_up.size(0) &&
                   out.size(1) * 2 == gate_up.size(1),
               "silu_mul: gate_up ", gate_up.shape_str(), " and out ", out.shape_str(),
               " do not match ([n, 2*I] and [n, I])");
  cpu::silu_mul(gate_up.data<float>(), out.data<float>(), gate_up.size(0), out.size(1));
}

}  // namespace blockinfer::ops
