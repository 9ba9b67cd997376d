// CUDA graph capture and replay on the device's stream (declared in cuda_runtime_api.h).
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace blockinfer::cuda {

Graph::~Graph() {
  if (!exec_) return;
  cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  graph_destroyed();
}

void Graph::begin_capture(int device_index) {
  BI_CUDA_CHECK(cudaSetDevice(device_index));
  device_ = device_index;
  // Relaxed: the caching allocator may cudaMalloc a new graph-pool block while capturing.
  BI_CUDA_CHECK(cudaStreamBeginCapture(current_stream(), cudaStreamCaptureModeRelaxed));
  set_graph_pool(true);
}

void Graph::end_capture() {
  set_graph_pool(false);
  cudaGraph_t graph = nullptr;
  BI_CUDA_CHECK(cudaStreamEndCapture(current_stream(), &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  BI_CUDA_CHECK(err);
  if (exec_) {
    cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  } else {
    graph_created();
  }
  exec_ = exec;
}

void Graph::abort_capture() {
  set_graph_pool(false);
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(current_stream(), &graph);  // ends the (invalidated) capture
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

void Graph::replay() {
  BI_CHECK(exec_ != nullptr, "replay of a graph that was never captured");
  BI_CUDA_CHECK(cudaSetDevice(device_));
  BI_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), current_stream()));
}

}  // namespace blockinfer::cuda
