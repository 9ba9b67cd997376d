// Stubs for the CUDA entry points when the library is built without the CUDA backend.
#ifndef BLOCKINFER_WITH_CUDA
#include "blockinfer/status.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/rmsnorm.h"

namespace blockinfer::cuda {
namespace {
[[noreturn]] void no_cuda() {
  throw NotImplementedYet("this build of BlockInfer has no CUDA backend (nvcc was not found at build time)");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count() { return 0; }
void* malloc_device(size_t, int) { no_cuda(); }
void free_device(void*, int) {}
void copy(void*, bool, const void*, bool, size_t) { no_cuda(); }
void synchronize() {}
void launch_rmsnorm(const RmsNormArgs&) { no_cuda(); }

}  // namespace blockinfer::cuda
#endif
