// DLPack in and out at the Python boundary (the DLPack 0.x ABI, "dltensor" capsules).
#pragma once

#include <pybind11/pybind11.h>

#include "blockinfer/tensor.h"

namespace blockinfer::python {

// A capsule that lends `t` to a consumer (numpy.from_dlpack, torch.from_dlpack); the consumer's
// deleter keeps the memory alive until it is done.
pybind11::capsule to_dlpack(const Tensor& t);
// Wraps any object with __dlpack__ (or a raw "dltensor" capsule) as a Tensor view; the producer's
// buffer stays alive as long as the view does.
Tensor from_dlpack(const pybind11::object& obj);
// (device_type, device_id) as DLPack numbers, for __dlpack_device__.
std::pair<int, int> dlpack_device(const Tensor& t);

}  // namespace blockinfer::python
