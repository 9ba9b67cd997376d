#include "python/dlpack_bridge.h"

#include <cstring>

namespace py = pybind11;

namespace blockinfer::python {
namespace {

// The DLPack ABI (github.com/dmlc/dlpack, v0.8 layout), declared here rather than vendored.
enum DLDeviceType : int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3 };
enum DLDataTypeCode : uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4 };
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct ExportCtx {
  Tensor tensor;  // keeps the memory alive
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  DLManagedTensor managed;
};

DLDataType to_dl_dtype(DType d) {
  switch (d) {
    case DType::kFloat32: return {kDLFloat, 32, 1};
    case DType::kFloat16: return {kDLFloat, 16, 1};
    case DType::kBFloat16: return {kDLBfloat, 16, 1};
    case DType::kInt32: return {kDLInt, 32, 1};
    case DType::kInt64: return {kDLInt, 64, 1};
    case DType::kUInt8: return {kDLUInt, 8, 1};
  }
  throw InvalidArgument("to_dlpack: unsupported dtype");
}

DType from_dl_dtype(DLDataType t) {
  BI_CHECK_ARG(t.lanes == 1, "from_dlpack: vector dtypes (lanes=", t.lanes, ") are not supported");
  if (t.code == kDLFloat && t.bits == 32) return DType::kFloat32;
  if (t.code == kDLFloat && t.bits == 16) return DType::kFloat16;
  if (t.code == kDLBfloat && t.bits == 16) return DType::kBFloat16;
  if (t.code == kDLInt && t.bits == 32) return DType::kInt32;
  if (t.code == kDLInt && t.bits == 64) return DType::kInt64;
  if (t.code == kDLUInt && t.bits == 8) return DType::kUInt8;
  throw InvalidArgument(str_cat("from_dlpack: unsupported dtype (code ", int(t.code), ", bits ",
                                int(t.bits), ")"));
}

void capsule_destructor(PyObject* capsule) {
  // Called when the capsule dies; only an unconsumed capsule still owns its tensor.
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (m && m->deleter) m->deleter(m);
  }
}

}  // namespace

std::pair<int, int> dlpack_device(const Tensor& t) {
  return {t.device().is_cpu() ? kDLCPU : kDLCUDA, t.device().index};
}

py::capsule to_dlpack(const Tensor& t) {
  auto* ctx = new ExportCtx;
  ctx->tensor = t;
  ctx->shape = t.shape();
  ctx->strides = t.strides();
  DLTensor& d = ctx->managed.dl_tensor;
  d.data = t.raw_data();
  d.device = {t.device().is_cpu() ? kDLCPU : kDLCUDA, t.device().index};
  d.ndim = static_cast<int32_t>(t.dim());
  d.dtype = to_dl_dtype(t.dtype());
  d.shape = ctx->shape.data();
  d.strides = ctx->strides.data();
  d.byte_offset = 0;
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = [](DLManagedTensor* self) { delete static_cast<ExportCtx*>(self->manager_ctx); };
  PyObject* cap = PyCapsule_New(&ctx->managed, "dltensor", capsule_destructor);
  if (!cap) {
    delete ctx;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(cap);
}

Tensor from_dlpack(const py::object& obj) {
  py::object cap_obj = obj;
  if (!PyCapsule_CheckExact(obj.ptr())) {
    BI_CHECK_ARG(py::hasattr(obj, "__dlpack__"), "from_dlpack: object of type ",
                 std::string(py::str(py::type::of(obj).attr("__name__"))), " does not support DLPack");
    cap_obj = obj.attr("__dlpack__")();
  }
  PyObject* cap = cap_obj.ptr();
  BI_CHECK_ARG(PyCapsule_IsValid(cap, "dltensor"),
               "from_dlpack: expected an unconsumed 'dltensor' capsule");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
  // Take ownership: the capsule no longer deletes it, our holder does.
  PyCapsule_SetName(cap, "used_dltensor");
  PyCapsule_SetDestructor(cap, nullptr);
  std::shared_ptr<void> holder(m, [](void* p) {
    auto* mt = static_cast<DLManagedTensor*>(p);
    if (mt->deleter) {
      py::gil_scoped_acquire gil;  // producers may touch Python objects
      mt->deleter(mt);
    }
  });
  const DLTensor& d = m->dl_tensor;
  Device dev;
  if (d.device.device_type == kDLCPU || d.device.device_type == kDLCUDAHost) {
    dev = Device::cpu();
  } else if (d.device.device_type == kDLCUDA) {
    dev = Device::cuda(d.device.device_id);
  } else {
    throw InvalidArgument(str_cat("from_dlpack: unsupported device type ", d.device.device_type));
  }
  std::vector<int64_t> shape(d.shape, d.shape + d.ndim);
  std::vector<int64_t> strides;
  if (d.strides) strides.assign(d.strides, d.strides + d.ndim);
  char* data = static_cast<char*>(d.data) + d.byte_offset;
  return Tensor::from_blob(data, shape, from_dl_dtype(d.dtype), dev, strides, holder);
}

}  // namespace blockinfer::python
