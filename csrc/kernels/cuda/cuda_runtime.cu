#include <map>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda {
namespace {

// A caching allocator: freed blocks up to kMaxCachedBytes are kept per (device, exact size) and
// reused, so the per-forward temporaries of a step do not call cudaMalloc/cudaFree (which also
// synchronise). The cache is flushed before measuring free memory and when cudaMalloc fails.
constexpr size_t kMaxCachedBytes = size_t{1} << 30;

struct BlockCache {
  std::mutex mu;
  std::map<std::pair<int, size_t>, std::vector<void*>> free_blocks;
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;  // never destroyed: deleters may run at exit
  return *cache;
}

void flush_cache(int device_index) {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto it = c.free_blocks.begin(); it != c.free_blocks.end();) {
    if (it->first.first == device_index) {
      for (void* p : it->second) cudaFree(p);
      it = c.free_blocks.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace

bool built_with_cuda() { return true; }

int device_count() {
  int n = 0;
  // cudaErrorNoDevice / cudaErrorInsufficientDriver (35) mean "no GPU here", not a failure.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls are not confused
    return 0;
  }
  return n;
}

void* malloc_device(size_t nbytes, int device_index) {
  BI_CHECK_ARG(device_index >= 0 && device_index < device_count(), "cuda:", device_index,
               " is not a visible device (", device_count(), " visible)");
  BI_CUDA_CHECK(cudaSetDevice(device_index));
  if (nbytes == 0) nbytes = 1;
  {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find({device_index, nbytes});
    if (it != c.free_blocks.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      return p;
    }
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, nbytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    flush_cache(device_index);
    err = cudaMalloc(&p, nbytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw OutOfMemory(str_cat("cudaMalloc of ", nbytes, " bytes on cuda:", device_index, " failed"));
    }
  }
  BI_CUDA_CHECK(err);
  return p;
}

void free_device(void* ptr, size_t nbytes, int device_index) {
  // Never throw from a deleter: a failed free at shutdown is not actionable.
  if (nbytes == 0) nbytes = 1;
  if (nbytes <= kMaxCachedBytes) {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.free_blocks[{device_index, nbytes}].push_back(ptr);
    return;
  }
  cudaSetDevice(device_index);
  cudaFree(ptr);
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  BI_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, kind));
}

void synchronize() { BI_CUDA_CHECK(cudaDeviceSynchronize()); }

size_t free_memory(int device_index) {
  flush_cache(device_index);
  BI_CUDA_CHECK(cudaSetDevice(device_index));
  size_t free_b = 0, total_b = 0;
  BI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

}  // namespace blockinfer::cuda
