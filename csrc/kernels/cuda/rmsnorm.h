// RMSNorm launcher interface (plain C++: included by ops/rmsnorm.cc).
#pragma once

#include <cstdint>

#include "blockinfer/tensor.h"

namespace blockinfer::cuda {

struct RmsNormArgs {
  const void* x;         // [num_rows, hidden], row stride x_row_stride (elements)
  void* residual;        // [num_rows, hidden] or null; when set: residual += x, out = norm(residual)
  const void* weight;    // [hidden]
  void* out;             // [num_rows, hidden], contiguous
  int64_t num_rows;
  int64_t hidden;
  int64_t x_row_stride;
  float eps;
  DType dtype;           // storage dtype of x, residual, weight and out
  int device_index;
};

void launch_rmsnorm(const RmsNormArgs& args);

}  // namespace blockinfer::cuda
