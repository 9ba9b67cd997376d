#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "core/pow2.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda {
namespace {

// A caching allocator: freed blocks up to kMaxCachedBytes are kept per (device, block size, stream
// lane) and reused, so the per-forward temporaries of a step do not call cudaMalloc/cudaFree (which
// also synchronise). Requests are rounded up to block sizes (block_size), so that temporaries whose
// row counts differ a little (a batch's first forwards, its ramp-down) share blocks: exact sizes
// made a batch-128 run's first pass call cudaMalloc 215 times. A block goes back to the lane that
// freed it and is reused only there, where the stream's order makes its earlier uses finish first.
// The cache is flushed before measuring free memory, when cudaMalloc fails, and after the engine's
// warm-up (release_cached_blocks).
constexpr size_t kMaxCachedBytes = size_t{1} << 30;

thread_local int t_lane = 0;  // this thread's stream lane
using BlockKey = std::tuple<int, size_t, int>;  // (device, bytes, lane)

struct BlockCache {
  std::mutex mu;
  std::map<BlockKey, std::vector<void*>> free_blocks;
  // CUDA-graph pool: while a graph is captured, allocations come from (and frees return to) this
  // list, whose blocks are never handed to eager work: a captured graph replays into them. Graphs
  // share the pool because they replay one at a time on one stream and every temporary of a
  // forward is dead when it ends.
  // Its blocks come in block sizes, and a request takes the smallest free block that holds it (up
  // to 4x its size), so graphs of different batch sizes share them: a batch-256 decode's logits
  // (311 to 622 MB as the masked rows fall) live in one block, where exact power-of-two blocks
  // needed a 512 MiB and a 1 GiB one and filled the pool.
  bool capturing = false;
  std::map<BlockKey, std::vector<void*>> graph_free;
  std::map<void*, size_t> graph_owned;  // block -> its size
  size_t graph_bytes = 0;
  // Instantiated graphs alive in the process: when the last one goes (its executor is destroyed),
  // no graph can replay into the pool any more and its blocks go back to the driver.
  int64_t live_graphs = 0;
};

// Power-of-two sizes up to 2 MiB (at least 256 bytes), multiples of 2 MiB above (the granule in
// which cudaMalloc hands out large allocations).
size_t block_size(size_t nbytes) {
  constexpr size_t kGranule = size_t{2} << 20;
  if (nbytes <= kGranule) return static_cast<size_t>(pow2_at_least(static_cast<int64_t>(nbytes), 256));
  return (nbytes + kGranule - 1) / kGranule * kGranule;
}

// The smallest free graph-pool block of this device and lane that holds `nbytes` (a block size)
// without wasting more than 3/4 of it; null if none.
void* take_graph_block(BlockCache& c, int device_index, size_t nbytes) {
  for (auto it = c.graph_free.lower_bound({device_index, nbytes, 0});
       it != c.graph_free.end() && std::get<0>(it->first) == device_index && std::get<1>(it->first) <= 4 * nbytes;
       ++it) {
    if (std::get<2>(it->first) != t_lane || it->second.empty()) continue;
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  return nullptr;
}

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;  // never destroyed: deleters may run at exit
  return *cache;
}

void flush_cache(int device_index) {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto it = c.free_blocks.begin(); it != c.free_blocks.end();) {
    if (std::get<0>(it->first) == device_index) {
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
  bool for_graph = false;
  {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    for_graph = c.capturing;
    nbytes = block_size(nbytes);
    if (for_graph) {
      if (void* p = take_graph_block(c, device_index, nbytes)) return p;
    } else if (auto it = c.free_blocks.find({device_index, nbytes, t_lane});
               it != c.free_blocks.end() && !it->second.empty()) {
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
  if (for_graph) {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    c.graph_owned.emplace(p, nbytes);
    c.graph_bytes += nbytes;
  }
  return p;
}

void free_device(void* ptr, size_t nbytes, int device_index) {
  // Never throw from a deleter: a failed free at shutdown is not actionable.
  if (nbytes == 0) nbytes = 1;
  {
    BlockCache& c = block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (auto owned = c.graph_owned.find(ptr); owned != c.graph_owned.end()) {  // back to the graph pool
      c.graph_free[{device_index, owned->second, t_lane}].push_back(ptr);
      return;
    }
    nbytes = block_size(nbytes);  // what malloc_device allocated
    if (nbytes <= kMaxCachedBytes) {
      c.free_blocks[{device_index, nbytes, t_lane}].push_back(ptr);
      return;
    }
  }
  cudaSetDevice(device_index);
  cudaFree(ptr);
}

void* event_record() {
  cudaEvent_t e = nullptr;
  BI_CUDA_CHECK(cudaEventCreate(&e));
  BI_CUDA_CHECK(cudaEventRecord(e, current_stream()));
  return e;
}

float event_elapsed_ms(void* start, void* end) {
  BI_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(end)));
  float ms = 0.f;
  BI_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void event_destroy(void* event) { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }

void event_synchronize(void* event) { BI_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event))); }

void* malloc_host_pinned(size_t nbytes) {
  void* p = nullptr;
  BI_CUDA_CHECK(cudaMallocHost(&p, nbytes));
  return p;
}

void free_host_pinned(void* ptr) {
  if (ptr) cudaFreeHost(ptr);
}

void copy_to_host_async(void* dst_pinned, const void* src_device, size_t nbytes) {
  BI_CUDA_CHECK(cudaMemcpyAsync(dst_pinned, src_device, nbytes, cudaMemcpyDeviceToHost, current_stream()));
}

void set_graph_pool(bool on) {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.capturing = on;
}

void graph_created() {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  ++c.live_graphs;
}

void graph_destroyed() {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  if (--c.live_graphs > 0 || c.capturing) return;
  // Every graph-pool block is free now (a forward's temporaries die with it, and captures are
  // over): release them all.
  for (auto& [key, blocks] : c.graph_free) {
    cudaSetDevice(std::get<0>(key));
    for (void* p : blocks) {
      cudaFree(p);
      c.graph_owned.erase(p);
      c.graph_bytes -= std::get<1>(key);
    }
  }
  c.graph_free.clear();
}

size_t graph_pool_bytes() {
  BlockCache& c = block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.graph_bytes;
}

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  cudaStream_t stream = current_stream();
  BI_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream));
  // From pageable host memory to the device, cudaMemcpyAsync returns once the bytes are staged, so
  // the caller may free or reuse its buffer at once, and the stream orders the copy before later
  // work: no wait. A step's small uploads (sampling parameters, remasking segments) then queue
  // behind the forward instead of stalling the host until it ends. Other directions (and pinned
  // sources, which the DMA reads later) wait for the copy.
  if (kind == cudaMemcpyHostToDevice) {
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, src) == cudaSuccess && attr.type == cudaMemoryTypeUnregistered) return;
    cudaGetLastError();
  }
  BI_CUDA_CHECK(cudaStreamSynchronize(stream));
}

cudaStream_t current_stream() {
  static cudaStream_t streams[64][kStreamLanes] = {};
  static std::mutex mu;
  int device = 0;
  BI_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  cudaStream_t& s = streams[device][t_lane];
  if (!s) BI_CUDA_CHECK(cudaStreamCreate(&s));
  return s;
}

void set_stream_lane(int lane) {
  BI_CHECK(lane >= 0 && lane < kStreamLanes, "stream lane ", lane, " out of range");
  t_lane = lane;
}

int stream_lane() { return t_lane; }

namespace {
// `to` waits for the work queued on `from` so far.
void order_lanes(int from, int to) {
  const int saved = t_lane;
  t_lane = from;
  const cudaStream_t a = current_stream();
  t_lane = to;
  const cudaStream_t b = current_stream();
  t_lane = saved;
  cudaEvent_t e = nullptr;
  BI_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const cudaError_t rec = cudaEventRecord(e, a);
  const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(b, e, 0) : rec;
  cudaEventDestroy(e);  // released once the wait is satisfied
  BI_CUDA_CHECK(wait);
}
}  // namespace

void fork_lanes() { order_lanes(0, 1); }
void join_lanes() { order_lanes(1, 0); }

void synchronize() { BI_CUDA_CHECK(cudaDeviceSynchronize()); }

void release_cached_blocks(int device_index) { flush_cache(device_index); }

size_t free_memory(int device_index) {
  flush_cache(device_index);
  BI_CUDA_CHECK(cudaSetDevice(device_index));
  size_t free_b = 0, total_b = 0;
  BI_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return free_b;
}

void allow_dynamic_smem(const void* kernel, size_t bytes, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> granted;  // (kernel, device) -> bytes
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = granted[{kernel, device}];
  if (bytes > have) {
    BI_CUDA_CHECK(cudaSetDevice(device));
    BI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    have = bytes;
  }
}

namespace {
// Launchers read device attributes on every launch: each is read once per device.
int cached_attribute(cudaDeviceAttr attr, int device_index) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> values;  // (attribute, device) -> value
  std::lock_guard<std::mutex> lock(mu);
  const auto it = values.find({static_cast<int>(attr), device_index});
  if (it != values.end()) return it->second;
  int v = 0;
  BI_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, device_index));
  values[{static_cast<int>(attr), device_index}] = v;
  return v;
}
}  // namespace

int multiprocessor_count(int device_index) {
  return cached_attribute(cudaDevAttrMultiProcessorCount, device_index);
}

int compute_capability(int device_index) {
  return 10 * cached_attribute(cudaDevAttrComputeCapabilityMajor, device_index) +
         cached_attribute(cudaDevAttrComputeCapabilityMinor, device_index);
}

}  // namespace blockinfer::cuda
