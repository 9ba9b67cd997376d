// Host-callable wrappers over the CUDA runtime, safe to include from plain C++ files. Implemented
// in cuda_runtime.cu when the CUDA backend is built, and by stubs in kernels/cpu/no_cuda.cc
// (which throw NotImplementedYet) when it is not.
#pragma once

#include <cstddef>

namespace blockinfer::cuda {

bool built_with_cuda();
// Number of visible GPUs; 0 when no driver or no device is present (e.g. CI).
int device_count();
void* malloc_device(size_t nbytes, int device_index);
void free_device(void* ptr, size_t nbytes, int device_index);
// Synchronous copy between host and device memory (either direction, or device to device).
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes);
void synchronize();
// Free bytes on the device (cudaMemGetInfo).
size_t free_memory(int device_index);

}  // namespace blockinfer::cuda
