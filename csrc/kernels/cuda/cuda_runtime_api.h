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
// Copy between host and device memory (either direction, or device to device) on the current
// stream. It has completed on return, except a copy from pageable host memory to the device, which
// has been staged (the source may be reused at once) and is ordered before the stream's later work.
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t nbytes);
void synchronize();
// Free bytes on the device (cudaMemGetInfo).
size_t free_memory(int device_index);
// Returns the caching allocator's free eager blocks of the device to the driver (after a warm-up
// that met many sizes once).
void release_cached_blocks(int device_index);
// The device's streaming multiprocessors.
int multiprocessor_count(int device_index);
// The device's compute capability as 10 x major + minor (90 for an H100 or H200).
int compute_capability(int device_index);
// While on, device allocations and frees use the CUDA-graph pool (see cuda_runtime.cu).
void set_graph_pool(bool on);
// CUDA events on the current stream, for timing: record a new event; the milliseconds between two
// (waits for `end`); release one.
void* event_record();
float event_elapsed_ms(void* start, void* end);
void event_destroy(void* event);
// Waits for the work queued before an event of event_record.
void event_synchronize(void* event);
// Page-locked host memory, for device-to-host copies the host waits on by event rather than by
// stream (copy() waits for everything queued on the stream before it).
void* malloc_host_pinned(size_t nbytes);
void free_host_pinned(void* ptr);
// Queues a device-to-host copy into pinned memory on the current stream and returns at once.
void copy_to_host_async(void* dst_pinned, const void* src_device, size_t nbytes);
// Two stream lanes per device: lane 0, the device's stream, and lane 1, a side stream for work that
// overlaps it (two half-batches of a forward). This thread's kernels, GEMMs, copies and device
// allocations go to the lane set here; freed blocks are reused only by allocations of the same lane,
// so the lanes never hand each other memory that is still in use.
constexpr int kStreamLanes = 2;
void set_stream_lane(int lane);
int stream_lane();
// Lane 1 waits for everything queued on lane 0 so far (fork); lane 0 for everything on lane 1
// (join). Both may be captured into a CUDA graph.
void fork_lanes();
void join_lanes();
class StreamLaneScope {
 public:
  explicit StreamLaneScope(int lane) : previous_(stream_lane()) { set_stream_lane(lane); }
  ~StreamLaneScope() { set_stream_lane(previous_); }
  StreamLaneScope(const StreamLaneScope&) = delete;
  StreamLaneScope& operator=(const StreamLaneScope&) = delete;

 private:
  int previous_;
};
size_t graph_pool_bytes();  // bytes the graph pool holds (released when the last graph is destroyed)
void graph_created();    // bookkeeping of cuda::Graph: instantiated graphs alive
void graph_destroyed();

// CUDA graphs of a sequence of launches on the device's stream (cuda_graph.cu).
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  // Records everything `body` launches on the current stream (nothing runs); allocations made
  // meanwhile come from the graph pool. Throws CudaError if capture fails (the stream is left
  // usable).
  template <typename F>
  void capture(int device_index, F&& body) {
    begin_capture(device_index);
    try {
      body();
    } catch (...) {
      abort_capture();
      throw;
    }
    end_capture();
  }
  void replay();  // launches the graph on the current stream
  bool ready() const { return exec_ != nullptr; }

 private:
  void begin_capture(int device_index);
  void end_capture();
  void abort_capture();
  int device_ = 0;
  void* exec_ = nullptr;  // cudaGraphExec_t
};

}  // namespace blockinfer::cuda
