// Embedding gather, row gather, SiLU-and-mul and guided logits: memory-bound elementwise kernels, one thread per
// output element (SiLU-and-mul: per 16 bytes where aligned) in a grid-stride loop.
#include <algorithm>

#include "core/pow2.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"

namespace blockinfer::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

template <typename T>
__global__ void k_gather_rows(const T* __restrict__ src,      // [*, width]
                              const int32_t* __restrict__ rows,  // [num_rows]
                              T* __restrict__ dst,            // [num_rows, width]
                              int64_t num_rows, int64_t width) {
  const int64_t total = num_rows * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / width, c = i % width;
    dst[i] = src[static_cast<int64_t>(rows[r]) * width + c];
  }
}

// Where output column c's gate and up values sit in a gate_up row: [gate | up], or (block > 0)
// `block` gate columns then the up columns of the same outputs, alternating.
// I: the index type (int64_t, or uint32_t where every index fits).
template <typename I>
__device__ __forceinline__ I gate_col(I c, I block) {
  return block > 0 ? c / block * 2 * block + c % block : c;
}
template <typename I>
__device__ __forceinline__ I up_col(I c, I inter, I block) {
  return block > 0 ? gate_col(c, block) + block : inter + c;
}

// out[0, 16 bytes) = silu(gate) * up over one 16-byte vector of each (the two 16-byte kernels below).
template <typename T>
__device__ __forceinline__ void silu_mul_vec16(const T* __restrict__ gate, const T* __restrict__ up,
                                               T* __restrict__ out) {
  constexpr int kVec = 16 / sizeof(T);
  struct alignas(16) Vec {
    T v[kVec];
  };
  const Vec gv = *reinterpret_cast<const Vec*>(gate);
  const Vec uv = *reinterpret_cast<const Vec*>(up);
  Vec o;
#pragma unroll
  for (int e = 0; e < kVec; ++e) o.v[e] = from_f32<T>(silu_times(to_f32(gv.v[e]), to_f32(uv.v[e])));
  *reinterpret_cast<Vec*>(out) = o;
}

// The 16-byte kernel for a gate_up whose block is 0 or a power of two (2^block_shift), the engine's
// layouts: grid.y walks the rows and a thread takes one 16-byte vector of its row, so its columns
// come from shifts and masks. The flat-index kernel below divides for the row, the column and the
// block; without those divisions SDAR-4B batch 128 block 4 ran 0.1-0.5% faster on an H100 (three
// alternating pairs), the same bits.
template <typename T>
__global__ void k_silu_mul_rows(const T* __restrict__ gate_up, T* __restrict__ out, int64_t n, uint32_t inter,
                                uint32_t block, uint32_t block_shift) {
  const uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) * static_cast<uint32_t>(16 / sizeof(T));
  if (c >= inter) return;
  const uint32_t g = block ? ((c >> block_shift) << (block_shift + 1)) + (c & (block - 1)) : c;
  const uint32_t u = block ? g + block : inter + c;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    const T* row = gate_up + t * 2 * inter;
    silu_mul_vec16(row + g, row + u, out + t * inter + c);
  }
}

template <typename T>
__global__ void k_silu_mul(const T* __restrict__ gate_up,  // [n, 2 * inter]
                           T* __restrict__ out,            // [n, inter]
                           int64_t n, int64_t inter, int64_t block) {
  const int64_t total = n * inter;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / inter, c = i % inter;
    const float g = to_f32(gate_up[t * 2 * inter + gate_col(c, block)]);
    const float u = to_f32(gate_up[t * 2 * inter + up_col(c, inter, block)]);
    out[i] = from_f32<T>(silu_times(g, u));
  }
}

// The same with 16-byte loads and stores (inter and block multiples of the vector width; a block
// that is not a power of two): one thread per 16 bytes of output, the same arithmetic per element.
// I: the index type, 32-bit unsigned where every index fits (its divisions cost a fraction of
// 64-bit ones, which made this memory-bound kernel slower with a block, whose column map adds two).
template <typename T, typename I>
__global__ void k_silu_mul_vec(const T* __restrict__ gate_up, T* __restrict__ out, I n, I inter, I block) {
  constexpr I kVec = 16 / sizeof(T);
  const I per_row = inter / kVec, total = n * per_row;
  for (I i = blockIdx.x * I{blockDim.x} + threadIdx.x; i < total; i += I{gridDim.x} * blockDim.x) {
    const I t = i / per_row, c = (i % per_row) * kVec;
    const T* row = gate_up + t * 2 * inter;
    silu_mul_vec16(row + gate_col(c, block), row + up_col(c, inter, block), out + t * inter + c);
  }
}

template <typename T>
__global__ void k_add_bias(T* __restrict__ out,         // [n, w]
                           const T* __restrict__ bias,  // [w]
                           int64_t n, int64_t w) {
  const int64_t total = n * w;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f32<T>(to_f32(out[i]) + to_f32(bias[i % w]));
}

// Guided logits: one thread per output element; __fsub_rn/__fmul_rn/__fadd_rn keep the three
// roundings of the CPU (nvcc would otherwise fuse the multiply and the add).
__global__ void k_combine_guidance(const float* __restrict__ logits, const cpu::GuidanceRow* __restrict__ rows,
                                   float* __restrict__ out, int64_t num_rows, int64_t vocab) {
  const int64_t total = num_rows * vocab;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / vocab, c = i % vocab;
    const cpu::GuidanceRow g = rows[r];
    const float cond = logits[int64_t{g.cond} * vocab + c];
    if (g.uncond < 0) {
      out[i] = cond;
    } else {
      const float un = logits[int64_t{g.uncond} * vocab + c];
      out[i] = __fadd_rn(un, __fmul_rn(g.weight, __fsub_rn(cond, un)));
    }
  }
}

}  // namespace

void launch_combine_guidance(const float* logits, const cpu::GuidanceRow* rows, int64_t num_rows, int64_t vocab,
                             float* out, int device) {
  if (num_rows == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  k_combine_guidance<<<grid_for(num_rows * vocab), kThreads, 0, current_stream()>>>(logits, rows, out, num_rows,
                                                                                    vocab);
  BI_CUDA_CHECK_LAUNCH();
}

void launch_add_bias(void* out, const void* bias, int64_t n, int64_t w, DType dtype, int device) {
  if (n == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "add_bias", [&](auto tag) {
    using T = decltype(tag);
    k_add_bias<T><<<grid_for(n * w), kThreads, 0, current_stream()>>>(static_cast<T*>(out), static_cast<const T*>(bias), n, w);
    BI_CUDA_CHECK_LAUNCH();
  });
}

void launch_gather_rows(const void* src, const int32_t* rows, void* dst, int64_t num_rows,
                        int64_t width, DType dtype, int device) {
  if (num_rows == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "gather_rows", [&](auto tag) {
    using T = decltype(tag);
    k_gather_rows<T><<<grid_for(num_rows * width), kThreads, 0, current_stream()>>>(
        static_cast<const T*>(src), rows, static_cast<T*>(dst), num_rows, width);
    BI_CUDA_CHECK_LAUNCH();
  });
}

void launch_embedding(const int32_t* ids, const void* table, void* out, int64_t n, int64_t hidden,
                      DType dtype, int device) {
  // An embedding lookup is a row gather of the table.
  launch_gather_rows(table, ids, out, n, hidden, dtype, device);
}

void launch_silu_mul(const void* gate_up, void* out, int64_t n, int64_t inter, DType dtype, int device, int64_t block) {
  if (n == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  dispatch_float(dtype, "silu_mul", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVec = 16 / sizeof(T);
    const bool aligned = inter % kVec == 0 && block % kVec == 0 && aligned16(gate_up) && aligned16(out);
    // (32-bit indices: every index, up to n * 2 * inter plus a grid's stride, below 2^32.)
    const bool narrow = n * 2 * inter + int64_t{kThreads} * grid_for(n * inter / kVec) < (int64_t{1} << 32);
    const int block_shift = block == 0 ? 0 : log2_if_pow2(block);
    if (aligned && block_shift >= 0 && inter < (int64_t{1} << 31)) {
      const dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, ceil_div(inter / kVec, int64_t{kThreads}))),
                      static_cast<unsigned>(std::min<int64_t>(n, 65535)));
      k_silu_mul_rows<T><<<grid, kThreads, 0, current_stream()>>>(static_cast<const T*>(gate_up), static_cast<T*>(out), n,
                                                                  static_cast<uint32_t>(inter),
                                                                  static_cast<uint32_t>(block),
                                                                  static_cast<uint32_t>(block_shift));
    } else if (aligned && narrow)
      k_silu_mul_vec<T, uint32_t><<<grid_for(n * inter / kVec), kThreads, 0, current_stream()>>>(
          static_cast<const T*>(gate_up), static_cast<T*>(out), static_cast<uint32_t>(n), static_cast<uint32_t>(inter),
          static_cast<uint32_t>(block));
    else if (aligned)
      k_silu_mul_vec<T, int64_t><<<grid_for(n * inter / kVec), kThreads, 0, current_stream()>>>(
          static_cast<const T*>(gate_up), static_cast<T*>(out), n, inter, block);
    else
      k_silu_mul<T><<<grid_for(n * inter), kThreads, 0, current_stream()>>>(static_cast<const T*>(gate_up),
                                                                          static_cast<T*>(out), n, inter, block);
    BI_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace blockinfer::cuda
