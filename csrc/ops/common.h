// Shared argument checks of the op entry points.
#pragma once

#include <string>

#include "blockinfer/tensor.h"

namespace blockinfer::ops {

inline void check_dim(const Tensor& t, int64_t dim, const char* name) {
  BI_CHECK_ARG(t.defined(), name, " is undefined");
  BI_CHECK_ARG(t.dim() == dim, name, " must have ", dim, " dims, got shape ", t.shape_str());
}

inline void check_dtype(const Tensor& t, DType dtype, const char* name) {
  BI_CHECK_ARG(t.dtype() == dtype, name, " must be ", dtype_name(dtype), ", got ",
               dtype_name(t.dtype()));
}

inline void check_contiguous(const Tensor& t, const char* name) {
  BI_CHECK_ARG(t.is_contiguous(), name, " must be contiguous (shape ", t.shape_str(), ")");
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* na, const char* nb) {
  BI_CHECK_ARG(a.device() == b.device(), na, " is on ", a.device().str(), " but ", nb, " is on ",
               b.device().str());
}

// The CPU backend computes in float32 only.
inline void check_cpu_f32(const Tensor& t, const char* name) {
  BI_CHECK_ARG(t.device().is_cpu(), name, ": only the CPU backend implements this op so far, got ",
               t.device().str());
  check_dtype(t, DType::kFloat32, name);
}

inline bool is_float(DType d) {
  return d == DType::kFloat32 || d == DType::kBFloat16 || d == DType::kFloat16;
}

// A compute tensor: float32 on the CPU; float32, bfloat16 or float16 on a GPU; on `device`.
inline void check_compute(const Tensor& t, Device device, const char* name) {
  BI_CHECK_ARG(t.defined(), name, " is undefined");
  BI_CHECK_ARG(t.device() == device, name, " is on ", t.device().str(), ", expected ", device.str());
  if (device.is_cpu()) {
    check_dtype(t, DType::kFloat32, name);
  } else {
    BI_CHECK_ARG(is_float(t.dtype()), name, " must be float32, bfloat16 or float16, got ",
                 dtype_name(t.dtype()));
  }
}

}  // namespace blockinfer::ops
