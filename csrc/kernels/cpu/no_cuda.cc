// Stubs for the CUDA entry points when the library is built without the CUDA backend.
#ifndef BLOCKINFER_WITH_CUDA
#include "blockinfer/status.h"
#include "kernels/cuda/cuda_runtime_api.h"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/rmsnorm.h"

namespace blockinfer::cuda {
namespace {
[[noreturn]] void no_cuda() {
  throw NotImplementedYet("this build of BlockInfer has no CUDA backend (nvcc or cublasLt.h was not found at build time)");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count() { return 0; }
void* malloc_device(size_t, int) { no_cuda(); }
void free_device(void*, size_t, int) {}
void copy(void*, bool, const void*, bool, size_t) { no_cuda(); }
void synchronize() {}
size_t free_memory(int) { no_cuda(); }
void release_cached_blocks(int) {}
int multiprocessor_count(int) { no_cuda(); }
int compute_capability(int) { no_cuda(); }
void set_graph_pool(bool) {}
void* event_record() { no_cuda(); }
float event_elapsed_ms(void*, void*) { no_cuda(); }
void event_destroy(void*) {}
void event_synchronize(void*) { no_cuda(); }
void* malloc_host_pinned(size_t) { no_cuda(); }
void free_host_pinned(void*) {}
void copy_to_host_async(void*, const void*, size_t) { no_cuda(); }
size_t graph_pool_bytes() { return 0; }
void set_stream_lane(int) {}
int stream_lane() { return 0; }
void fork_lanes() {}
void join_lanes() {}
void graph_created() {}
void graph_destroyed() {}
Graph::~Graph() {}
void Graph::begin_capture(int) { no_cuda(); }
void Graph::end_capture() { no_cuda(); }
void Graph::abort_capture() {}
void Graph::replay() { no_cuda(); }
void launch_rmsnorm(const RmsNormArgs&) { no_cuda(); }
void launch_embedding(const int32_t*, const void*, void*, int64_t, int64_t, DType, int) { no_cuda(); }
void launch_gemm(const void*, const void*, void*, int64_t, int64_t, int64_t, DType, DType, int, bool) { no_cuda(); }
bool gemm_sm90_serves(DType, int64_t, int64_t, int, bool) { return false; }
void launch_gemm_sm90(const void*, const void*, void*, int64_t, int64_t, int64_t, DType, int, bool, int, int, bool) { no_cuda(); }
bool gemm_cutlass_silu_mul_serves(DType, int64_t, int64_t, int) { return false; }
void launch_gemm_cutlass_silu_mul(const void*, const void*, void*, int64_t, int64_t, int64_t, DType, int) { no_cuda(); }
bool gemm_cutlass_lm_head_greedy_serves(DType, int64_t, int64_t, int) { return false; }
int64_t lm_head_greedy_partial_floats(int64_t m, int64_t vocab) { return m * ((vocab + 255) / 256) * 4; }
void launch_lm_head_greedy(const void*, const void*, float*, int32_t*, float*, float*, float*, int64_t, int64_t,
                           int64_t, DType, int) {
  no_cuda();
}
std::vector<GemmCandidate> time_gemm_candidates(const void*, const void*, void*, int64_t, int64_t, int64_t, DType,
                                                DType, int, int, int) {
  no_cuda();
}
GemmCandidate pin_gemm_candidate(int64_t, int64_t, int64_t, DType, DType, int, int, int*) { no_cuda(); }
void launch_qk_norm_rope(void*, const int32_t*, const void*, const void*, const float*, int64_t, int64_t,
                         int64_t, int64_t, float, DType, int, const int32_t*, void*, void*) { no_cuda(); }
void launch_kv_write(const void*, const int32_t*, void*, void*, int64_t, int64_t, int64_t, int64_t, DType,
                     int) { no_cuda(); }
void launch_paged_attention(const PagedAttentionArgs&) { no_cuda(); }
int attention_ctas_per_sm(DType, int64_t, int64_t, int, int, bool) { no_cuda(); }
bool attention_wgmma_serves(DType, int64_t, int64_t, int) { no_cuda(); }
void launch_add_bias(void*, const void*, int64_t, int64_t, DType, int) { no_cuda(); }
void launch_silu_mul(const void*, void*, int64_t, int64_t, DType, int, int64_t) { no_cuda(); }
void launch_gather_rows(const void*, const int32_t*, void*, int64_t, int64_t, DType, int) { no_cuda(); }
size_t sample_rows_workspace_bytes(int64_t, int64_t) { no_cuda(); }
void launch_combine_guidance(const float*, const cpu::GuidanceRow*, int64_t, int64_t, float*, int) { no_cuda(); }
void launch_select_unmask(const float*, const float*, const cpu::RemaskSegment*, int64_t, int32_t*, int32_t*, int64_t,
                          int) { no_cuda(); }
void launch_carry_decisions(const int32_t*, const int32_t*, const int32_t*, int32_t*, int64_t, const int32_t*,
                            const int32_t*, const int32_t*, int64_t, int32_t*, int) {
  no_cuda();
}
void launch_sample_rows(const float*, const cpu::SampleRowParams*, int32_t*, float*, float*, float*, int64_t, int64_t,
                        bool, bool, void*, int) { no_cuda(); }

}  // namespace blockinfer::cuda
#endif
