// Fused per-row sampling (the rules of kernels/cpu/sampling.cc). Each row's vocabulary is cut into
// fixed slices of 4096 tokens, one CTA per (row, slice), so a handful of rows still fills the GPU;
// a CTA makes three passes over its slice (max and argmax; sum of exp and the entropy term; the
// Gumbel-max draw with Philox noise keyed by (seed, step, position, token)) and a second kernel
// merges the slices of each row. Probabilities are never materialised. Sums are accumulated in
// double and the noise is computed in double, as on the CPU, so float32 logits give the CPU's
// tokens. With `fast_math` (16-bit models) the exp(z - m) terms, each thread's sums and the Gumbel
// noise's logarithms are float: the double arithmetic made the pass compute-bound.
//
// Rows with a top-k/top-p filter first get their cut from k_filter_rows (one CTA per row): the
// kept tokens are a prefix of the order "d = z - max z descending, lower id first on ties", found
// by radix selection on d's bits (top-k: the k-th token; top-p: the token at which the running
// mass of the top-k tokens reaches top_p, from per-bin masses), so no sort and no copy of the
// vocabulary. The draw then skips tokens past the cut.
//
// Rows of Dream's algorithms (`dream`) get Dream's cut instead (dream_cut; also at T = 0), the
// slices also sum exp(z - m) over the kept tokens, and the merge gives Dream's confidence over them
// (p[x0] renormalised; the two largest q; or sum q log q from a second pass, k_negentropy_*).
#include <cfloat>
#include <type_traits>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/philox.h"

namespace blockinfer::cuda {
namespace {

constexpr int kThreads = 256;

// A value and its index; float for maxima of float values (the same winner as in double, since
// the conversion is exact and monotonic, with half the shuffles), double for noisy scores.
template <typename V>
struct ArgMaxT {
  V value;
  int32_t index;
};
using ArgMax = ArgMaxT<double>;
using ArgMaxF = ArgMaxT<float>;

// Larger value wins; equal values go to the lower index.
template <typename V>
__device__ __forceinline__ ArgMaxT<V> better(ArgMaxT<V> a, ArgMaxT<V> b) {
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

// The warp's best (value, index): the same on every lane (dtype.cuh's warp_sum and warp_max too).
template <typename V>
__device__ __forceinline__ ArgMaxT<V> warp_argmax(ArgMaxT<V> v) {
  for (int off = 16; off > 0; off >>= 1)
    v = better(v, ArgMaxT<V>{__shfl_xor_sync(0xffffffffu, v.value, off), __shfl_xor_sync(0xffffffffu, v.index, off)});
  return v;
}

template <typename V>
__device__ ArgMaxT<V> block_argmax(ArgMaxT<V> v, ArgMaxT<V>* sh) {
  v = warp_argmax(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  ArgMaxT<V> r = sh[0];
  for (int w = 1; w < kThreads / 32; ++w) r = better(r, sh[w]);
  return r;
}

// Block sums of N values at once (one pair of barriers) over a block of kWarps warps: each value's
// order of additions is that of a single sum, so the bits do not depend on N.
template <int N, int kWarps = kThreads / 32>
__device__ void block_sums(double (&v)[N], double* sh /* [N][kWarps] */) {
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = warp_sum(v[i]);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < N; ++i) sh[i * kWarps + warp] = v[i];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    double r = 0.0;
    for (int w = 0; w < kWarps; ++w) r += sh[i * kWarps + w];
    v[i] = r;
  }
}

template <int kWarps = kThreads / 32>
__device__ double block_sum(double v, double* sh /* [kWarps] */) {
  double one[1] = {v};
  block_sums<1, kWarps>(one, sh);
  return one[0];
}

// The block's max over kWarps warps.
template <int kWarps>
__device__ float block_max(float v, float* sh /* [kWarps] */) {
  v = warp_max(v);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float r = sh[0];
  for (int w = 1; w < kWarps; ++w) r = fmaxf(r, sh[w]);
  return r;
}

// One slice of a row's vocabulary: the statistics the merge needs, each relative to the slice's
// own maximum so that slices are independent.
struct SlicePartial {
  double m;        // max of z = logit / T (the logit when greedy), and its first index
  int32_t argmax;
  double s, w;     // sum exp(z - m), sum (z - m) exp(z - m)
  double gumbel;   // best z + Gumbel noise and its first index (sampled rows)
  int32_t draw;
  double raw_m, raw_s;  // max and sum exp(l - raw_m) of the untempered logits (when needed)
  float z2;             // the second largest z, counting repeats (kMargin rows)
  double sk;            // sum exp(z - m) over the tokens the cut keeps (Dream rows)
};

// A row's max z and sum exp(z - max), kept by the merge for the kNegEntropy pass.
struct RowStats {
  float m;
  double s;
};

// The two largest values of a block's (a1 >= a2) pairs, counting repeats.
__device__ float2 block_top2(float a1, float a2, float* sh) {
  auto merge = [](float x1, float x2, float y1, float y2) {
    return make_float2(fmaxf(x1, y1), fmaxf(fminf(x1, y1), fmaxf(x2, y2)));
  };
  for (int off = 16; off > 0; off >>= 1) {
    const float2 r = merge(a1, a2, __shfl_xor_sync(0xffffffffu, a1, off), __shfl_xor_sync(0xffffffffu, a2, off));
    a1 = r.x, a2 = r.y;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) sh[2 * warp] = a1, sh[2 * warp + 1] = a2;
  __syncthreads();
  float2 r = make_float2(sh[0], sh[1]);
  for (int w = 1; w < kThreads / 32; ++w) r = merge(r.x, r.y, sh[2 * w], sh[2 * w + 1]);
  return r;
}

constexpr int64_t kSlice = 4096;  // fixed: a row's result never depends on the batch
constexpr int kPerThread = kSlice / kThreads;

// ---- Top-k / top-p cuts ---------------------------------------------------------------------

// The kept tokens of a row: key(i) > key, or key(i) == key and i <= id (every token when not
// filtered). key(i) = order_key(z_i - m).
struct RowCut {
  float m;  // max of z = l / T
  uint32_t key;
  int32_t id;
  int32_t filtered;
  int32_t kept2;  // Dream rows: the cut keeps at least two tokens
};
// The cut of a row that keeps every token.
__device__ __forceinline__ RowCut keep_all(int64_t vocab) { return RowCut{0.f, 0u, 0x7FFFFFFF, 0, vocab >= 2}; }

// Monotone map of floats onto uint32: a larger d gives a larger key.
__device__ __forceinline__ uint32_t order_key(float d) {
  const uint32_t b = __float_as_uint(d);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
// The d of a key (order_key's inverse).
__device__ __forceinline__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}
__device__ __forceinline__ bool is_kept(float z, int64_t i, const RowCut& c) {
  if (!c.filtered) return true;
  const uint32_t k = order_key(z - c.m);
  return k > c.key || (k == c.key && i <= c.id);
}

constexpr int kFilterThreads = 1024;
static_assert(kFilterThreads == 32 * 32, "block_exclusive_scan takes one warp's worth of warps");
// Masses are summed in fixed point (units of 2^-43 of the row's largest exp(d) = 1; 64 bits hold
// vocabularies up to 2^21) with integer atomics, so the cut does not depend on the order in which
// threads add.
constexpr double kMassUnit = 8796093022208.0;  // 2^43
// A token with d <= kZeroMassD has a fixed-point mass of 0 under both mass rules below
// (exp(-31) * 2^43 = 0.30 rounds to 0), so its exp is not computed.
constexpr float kZeroMassD = -31.f;
// The fixed-point mass of the tokens at key k: rule(d) at d = key_value(k), 0 at d <= kZeroMassD.
template <typename Rule>
__device__ __forceinline__ unsigned long long fixed_mass(uint32_t k, Rule&& rule) {
  const float d = key_value(k);
  return d <= kZeroMassD ? 0ull : rule(d);
}

// Radix selection takes a key's bits in three digits, 12 + 12 + 8 from the top: a first digit of
// sign, exponent and three mantissa bits spreads a row's tokens over tens of bins (the order's
// exponent alone put most of a row in two or three, whose atomics serialised).
constexpr int kDigits = 3;
__device__ __forceinline__ int digit_bits(int level) { return level < 2 ? 12 : 8; }
__device__ __forceinline__ int digit_shift(int level) { return level == 0 ? 20 : level == 1 ? 8 : 0; }
constexpr int kBins = 4096;
constexpr int kBinsPerThread = kBins / kFilterThreads;
// Once a digit leaves at most this many tokens, the next pass over the vocabulary also copies them
// (key and id) into shared memory, and the later digits and the tie-break read that list instead of
// the vocabulary.
constexpr int kListCapacity = 12288;

struct FilterShared {  // dynamic shared memory, ~145 KiB
  uint32_t count[kBins];
  // A bin's 64-bit mass as two 32-bit words, added with 32-bit atomics and the low word's carry:
  // shared memory has no native 64-bit atomic add, and the compare-and-swap loop it compiles to
  // made the top-p pass several times slower than the top-k one.
  uint32_t mass_lo[kBins], mass_hi[kBins];
  uint32_t list_key[kListCapacity];
  int32_t list_id[kListCapacity];
  uint32_t warp_count[32];
  unsigned long long warp_mass[32];
  uint32_t list_size;
  int found, last;  // a thread's bin met the rule; the last non-empty bin, in descending order
  uint32_t bin, count_before, count_eq;
  unsigned long long mass_before;
  float red[kFilterThreads / 32];
  double red_d[kFilterThreads / 32];
};

// Appends (key, id) to the shared list.
__device__ __forceinline__ void push_listed(FilterShared& sh, uint32_t k, int32_t id) {
  const uint32_t at = atomicAdd(&sh.list_size, 1u);
  sh.list_key[at] = k;
  sh.list_id[at] = id;
}

// visit(i, l[i]) for every token of a row, spread over the block: 16-byte loads, four in flight
// per thread, when the row is 16-byte aligned (a one-CTA scan of 600 KB is bound by its loads'
// latency), scalar loads four at a time otherwise. Which thread visits a token is fixed, so
// every use below is order-free or deterministic.
template <typename Visit>
__device__ __forceinline__ void for_each_logit(const float* __restrict__ l, int64_t vocab, Visit&& visit) {
  constexpr int kUnroll = 4;
  int64_t done = 0;
  if ((reinterpret_cast<uintptr_t>(l) & 15u) == 0) {
    const int64_t n4 = vocab / 4;
    const float4* l4 = reinterpret_cast<const float4*>(l);
    int64_t j = threadIdx.x;
    for (; j + (kUnroll - 1) * kFilterThreads < n4; j += kUnroll * kFilterThreads) {
      float4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) v[u] = l4[j + u * kFilterThreads];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = 4 * (j + u * kFilterThreads);
        visit(i, v[u].x), visit(i + 1, v[u].y), visit(i + 2, v[u].z), visit(i + 3, v[u].w);
      }
    }
    for (; j < n4; j += kFilterThreads) {
      const float4 v = l4[j];
      visit(4 * j, v.x), visit(4 * j + 1, v.y), visit(4 * j + 2, v.z), visit(4 * j + 3, v.w);
    }
    done = 4 * n4;
  }
  int64_t i = done + threadIdx.x;
  for (; i + (kUnroll - 1) * kFilterThreads < vocab; i += kUnroll * kFilterThreads) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = l[i + u * kFilterThreads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) visit(i + u * kFilterThreads, v[u]);
  }
  for (; i < vocab; i += kFilterThreads) visit(i, l[i]);
}

// A row as the filter sees it: z = l / T (l itself for Dream's greedy rows, and at T = 1, where the
// division is exact), d = z - m, key(d). The filter is bound by its instructions (an H100 issues
// three a cycle on a top-p row's SMs), and a division is a good part of a pass's.
struct FilterRow {
  const float* l;
  int64_t vocab;
  float temperature;
  bool divide;
  float m;
  __device__ FilterRow(const float* l_, int64_t vocab_, float t, bool tempered)
      : l(l_), vocab(vocab_), temperature(t), divide(tempered && t != 1.f), m(0.f) {}
  __device__ __forceinline__ float z(float x) const { return divide ? x / temperature : x; }
  __device__ __forceinline__ uint32_t key(float x) const { return order_key(z(x) - m); }
};

// The tokens of a row where pred(key, id) holds, each selected by rkey(key, id): from the
// vocabulary, or from the shared list when it holds them.
template <typename Pred, typename RKey>
struct Tokens {
  FilterRow row;
  Pred pred;
  RKey rkey;
  // f(rkey, key, id)
  template <typename F>
  __device__ __forceinline__ void for_each(F&& f) const {
    for_each_logit(row.l, row.vocab, [&](int64_t i, float x) {
      const uint32_t k = row.key(x);
      const int32_t id = static_cast<int32_t>(i);
      if (pred(k, id)) f(rkey(k, id), k, id);
    });
  }
  template <typename F>
  __device__ __forceinline__ void for_each_listed(const FilterShared& sh, F&& f) const {
    for (uint32_t j = threadIdx.x; j < sh.list_size; j += kFilterThreads) {
      const uint32_t k = sh.list_key[j];
      const int32_t id = sh.list_id[j];
      if (pred(k, id)) f(rkey(k, id), k, id);
    }
  }
};
template <typename Pred, typename RKey>
__device__ Tokens<Pred, RKey> tokens(const FilterRow& row, Pred pred, RKey rkey) {
  return Tokens<Pred, RKey>{row, pred, rkey};
}
struct SameKey {
  __device__ uint32_t operator()(uint32_t k, int32_t) const { return k; }
};
struct EveryToken {
  __device__ bool operator()(uint32_t, int32_t) const { return true; }
};

// A radix selection's state: the key prefix chosen so far (the whole key after the last digit)
// and the tokens above it.
struct Selection {
  uint32_t key = 0, mask = 0;
  uint32_t rank = 0;            // by rank: the rank left among the tokens with the prefix
  uint32_t count_eq = 0;        // the tokens with the prefix
  uint32_t above = 0;           // the tokens whose key is above it
  unsigned long long acc = 0;   // by mass: their mass
  unsigned long long target = 0;
  bool listed = false;          // the shared list holds every token with the prefix
};

struct CountMass {
  uint32_t c;
  unsigned long long m;
};

// The inclusive prefix sums of a warp's values, lane by lane.
__device__ __forceinline__ CountMass warp_inclusive_scan(CountMass v) {
  const int lane = threadIdx.x % 32;
  for (int off = 1; off < 32; off <<= 1) {
    const uint32_t c = __shfl_up_sync(0xffffffffu, v.c, off);
    const unsigned long long m = __shfl_up_sync(0xffffffffu, v.m, off);
    if (lane >= off) v.c += c, v.m += m;
  }
  return v;
}

// Exclusive prefix sums over the block's threads, in thread order, and the block's totals.
__device__ CountMass block_exclusive_scan(CountMass v, CountMass& total, FilterShared& sh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const CountMass inc = warp_inclusive_scan(v);
  if (lane == 31) sh.warp_count[warp] = inc.c, sh.warp_mass[warp] = inc.m;
  __syncthreads();
  if (warp == 0) {
    const CountMass w = warp_inclusive_scan(CountMass{sh.warp_count[lane], sh.warp_mass[lane]});
    sh.warp_count[lane] = w.c, sh.warp_mass[lane] = w.m;
  }
  __syncthreads();
  total = CountMass{sh.warp_count[31], sh.warp_mass[31]};
  const uint32_t wc = warp ? sh.warp_count[warp - 1] : 0u;
  const unsigned long long wm = warp ? sh.warp_mass[warp - 1] : 0ull;
  return CountMass{wc + inc.c - v.c, wm + inc.m - v.m};
}

// Picks this digit's bin from the histogram, in descending order: by rank, the bin holding the
// rank-th token; by mass, the first non-empty bin at which the running mass reaches the target
// (on the first digit, target_of(the total mass)). Past the end (a rank beyond the tokens, or a
// mass that rounding never brings to the target): the last non-empty bin, and by rank its last
// token. Thread t holds the bins at descending positions 4t .. 4t + 3.
template <bool kByMass, typename Target>
__device__ void choose_bin(Selection& s, int level, Target&& target_of, FilterShared& sh) {
  const int bits = digit_bits(level), shift = digit_shift(level), nbins = 1 << bits;
  uint32_t c[kBinsPerThread];
  unsigned long long m[kBinsPerThread];
  CountMass mine{0u, 0ull};
  int last = -1;
#pragma unroll
  for (int u = 0; u < kBinsPerThread; ++u) {
    const int pos = threadIdx.x * kBinsPerThread + u, b = nbins - 1 - pos;
    c[u] = pos < nbins ? sh.count[b] : 0u;
    m[u] = kByMass && pos < nbins ? (static_cast<unsigned long long>(sh.mass_hi[b]) << 32) | sh.mass_lo[b] : 0ull;
    mine.c += c[u], mine.m += m[u];
    if (c[u]) last = pos;
  }
  if (threadIdx.x == 0) sh.found = 0, sh.last = -1;
  CountMass total;
  const CountMass before = block_exclusive_scan(mine, total, sh);  // its barriers order the reset
  if (kByMass && level == 0) s.target = target_of(total.m);
  if (last >= 0) atomicMax(&sh.last, last);
  uint32_t cb = before.c;
  unsigned long long mb = s.acc + before.m;
#pragma unroll
  for (int u = 0; u < kBinsPerThread; ++u) {
    const bool hit = c[u] > 0 && (kByMass ? mb < s.target && mb + m[u] >= s.target
                                          : cb < s.rank && s.rank <= cb + c[u]);
    if (hit) {  // at most one bin in the block
      sh.found = 1;
      sh.bin = nbins - 1 - (threadIdx.x * kBinsPerThread + u);
      sh.count_before = cb, sh.mass_before = mb - s.acc, sh.count_eq = c[u];
    }
    cb += c[u], mb += m[u];
  }
  __syncthreads();
  if (!sh.found && threadIdx.x == static_cast<unsigned>(max(sh.last, 0)) / kBinsPerThread) {
    const int u = max(sh.last, 0) % kBinsPerThread;
    sh.bin = nbins - 1 - max(sh.last, 0);
    sh.count_before = total.c - c[u], sh.mass_before = total.m - m[u], sh.count_eq = c[u];
  }
  __syncthreads();
  if (!kByMass) s.rank = sh.found ? s.rank - sh.count_before : sh.count_eq;
  s.key |= sh.bin << shift;
  s.mask |= static_cast<uint32_t>(nbins - 1) << shift;
  s.above += sh.count_before;
  s.acc += sh.mass_before;
  s.count_eq = sh.count_eq;
  __syncthreads();  // the next digit resets found and last
}

// Radix selection over `toks` in descending rkey order. By rank: the rkey of the rank-th token
// (1-based; `rank` on return is its rank among the tokens with that rkey). By mass (rkey = key,
// mass(key) in fixed point): the first token at which the running mass reaches the target
// (target_of(total mass)); `acc` is the mass of the tokens before that key. `listed`: the shared
// list already holds every token of `toks`.
template <bool kByMass, typename Toks, typename Mass, typename Target>
__device__ Selection select_desc(const Toks& toks, Mass&& mass, Target&& target_of, uint32_t rank, bool listed,
                                 FilterShared& sh) {
  Selection s;
  s.rank = rank;
  s.listed = listed;
  for (int level = 0; level < kDigits; ++level) {
    const int shift = digit_shift(level);
    const uint32_t nbins = 1u << digit_bits(level);
    const bool fill = !s.listed && level > 0 && s.count_eq <= static_cast<uint32_t>(kListCapacity);
    for (uint32_t b = threadIdx.x; b < nbins; b += kFilterThreads) {
      sh.count[b] = 0;
      if constexpr (kByMass) sh.mass_lo[b] = sh.mass_hi[b] = 0;
    }
    if (fill && threadIdx.x == 0) sh.list_size = 0;
    __syncthreads();
    auto add = [&](uint32_t rk, uint32_t k, int32_t id) {
      if ((rk & s.mask) != s.key) return;
      const uint32_t bin = (rk >> shift) & (nbins - 1);
      atomicAdd(&sh.count[bin], 1u);
      if constexpr (kByMass) {
        const unsigned long long w = mass(k);
        const uint32_t lo = static_cast<uint32_t>(w);
        uint32_t hi = static_cast<uint32_t>(w >> 32);
        if (lo && atomicAdd(&sh.mass_lo[bin], lo) > 0xFFFFFFFFu - lo) ++hi;  // the low word carried
        if (hi) atomicAdd(&sh.mass_hi[bin], hi);
      }
      if (fill) push_listed(sh, k, id);
    };
    if (s.listed) toks.for_each_listed(sh, add);
    else toks.for_each(add);
    __syncthreads();
    s.listed = s.listed || fill;
    choose_bin<kByMass>(s, level, target_of, sh);
  }
  return s;
}

// Copies every token of `toks` into the shared list (at most kListCapacity of them).
template <typename Toks>
__device__ void list_tokens(const Toks& toks, FilterShared& sh) {
  if (threadIdx.x == 0) sh.list_size = 0;
  __syncthreads();
  toks.for_each([&](uint32_t, uint32_t k, int32_t id) { push_listed(sh, k, id); });
  __syncthreads();
}

struct NoMass {  // (selections by rank)
  __device__ unsigned long long operator()(unsigned long long) const { return 0ull; }
};

// The rank-th lowest id among the tokens of `toks` (pred) with key `key`.
template <typename Pred>
__device__ int32_t select_id(const FilterRow& row, Pred pred, uint32_t key, uint32_t rank, bool listed,
                             FilterShared& sh) {
  auto at_key = [&](uint32_t k, int32_t id) { return k == key && pred(k, id); };
  auto by_id = [](uint32_t, int32_t id) { return 0xFFFFFFFFu - static_cast<uint32_t>(id); };
  const Selection s = select_desc<false>(tokens(row, at_key, by_id), NoMass{}, NoMass{}, rank, listed, sh);
  return static_cast<int32_t>(0xFFFFFFFFu - s.key);
}

// The row's max of z: z(max l), since a correctly rounded division by T > 0 keeps the order.
__device__ float row_max(const FilterRow& row, FilterShared& sh) {
  float m = -INFINITY;
  for_each_logit(row.l, row.vocab, [&](int64_t, float x) { m = fmaxf(m, x); });
  return row.z(block_max<kFilterThreads / 32>(m, sh.red));
}

// How many of the count_eq tokens at the top-p cut's key (each of fixed-point mass `each`) the
// running mass `acc` before that key needs to reach `target`: at least one, at most all.
__device__ uint32_t tokens_to_reach(unsigned long long target, unsigned long long acc, unsigned long long each,
                                    uint32_t count_eq) {
  uint32_t need = count_eq;
  if (each > 0 && target > acc) {
    const unsigned long long j = (target - acc + each - 1) / each;
    need = j < count_eq ? static_cast<uint32_t>(j) : count_eq;
  }
  return need < 1 ? 1 : need;
}

// A row with Dream's rules (kernels/cpu/sampling.cc, sample_dream_row; also at T = 0): top-p keeps
// a token while the mass of the float32 probabilities before it is <= top_p (the first token
// where the running mass, in 2^-43 fixed point, passes top_p is the last kept), then top-k keeps
// every token with z at least the k-th kept one's.
__device__ RowCut dream_cut(const float* l, const cpu::SampleRowParams& p, int64_t vocab, FilterShared& sh) {
  FilterRow row(l, vocab, p.temperature, p.temperature != 0.f);
  row.m = row_max(row, sh);
  const auto all = tokens(row, EveryToken{}, SameKey{});
  RowCut cut{row.m, 0u, 0x7FFFFFFF, 1, 0};  // key 0 is the least: every token
  uint32_t kept = static_cast<uint32_t>(vocab);
  if (p.topp < 1.f) {
    double s = 0.0;
    for_each_logit(l, vocab, [&](int64_t, float x) { s += exp(static_cast<double>(row.z(x) - row.m)); });
    s = block_sum<kFilterThreads / 32>(s, sh.red_d);
    // A token's mass is a function of d = z - m, so the tokens at one key have the same mass.
    auto mass = [&](uint32_t k) {
      return fixed_mass(k, [&](float d) {
        return static_cast<unsigned long long>(
            static_cast<double>(static_cast<float>(exp(static_cast<double>(d)) / s)) * kMassUnit + 0.5);
      });
    };
    const unsigned long long target =
        static_cast<unsigned long long>(floor(static_cast<double>(p.topp) * kMassUnit)) + 1;
    const Selection sel = select_desc<true>(all, mass, [&](unsigned long long) { return target; }, 0u, false, sh);
    const uint32_t need = tokens_to_reach(target, sel.acc, mass(sel.key), sel.count_eq);
    cut.key = sel.key;
    cut.id = need < sel.count_eq ? select_id(row, EveryToken{}, sel.key, need, sel.listed, sh) : 0x7FFFFFFF;
    kept = sel.above + min(need, sel.count_eq);
  }
  if (p.topk > 0 && kept > static_cast<uint32_t>(p.topk)) {
    // The k-th token of the order is inside the top-p prefix: its key is >= the top-p cut's. At a
    // larger key every tie stays; at the same key the top-p cut stands (ties past it were dropped).
    const Selection sel = select_desc<false>(all, NoMass{}, NoMass{}, static_cast<uint32_t>(p.topk), false, sh);
    if (sel.key > cut.key) {
      cut.key = sel.key;
      cut.id = 0x7FFFFFFF;
      kept = sel.above + sel.count_eq;
    }
  }
  cut.kept2 = kept >= 2;
  return cut;
}

// One CTA per row: the row's cut (RowCut), from a max pass and radix selections (three digits, the
// later ones over a shared-memory list once a digit leaves few tokens).
__global__ void __launch_bounds__(kFilterThreads)
k_filter_rows(const float* __restrict__ logits, const cpu::SampleRowParams* __restrict__ params,
              RowCut* __restrict__ cuts, int64_t vocab) {
  extern __shared__ __align__(16) unsigned char filter_smem[];
  FilterShared& sh = *reinterpret_cast<FilterShared*>(filter_smem);
  const int64_t row_index = blockIdx.x;
  const cpu::SampleRowParams p = params[row_index];
  const float* l = logits + row_index * vocab;
  if (p.dream) {
    const RowCut cut = dream_cut(l, p, vocab, sh);
    if (threadIdx.x == 0) cuts[row_index] = cut;
    return;
  }
  const bool use_topk = cpu::uses_topk(p, vocab), use_topp = cpu::uses_topp(p);
  RowCut cut = keep_all(vocab);
  if (p.temperature == 0.f || !(use_topk || use_topp)) {  // greedy rows ignore the filter
    if (threadIdx.x == 0) cuts[row_index] = cut;
    return;
  }
  FilterRow row(l, vocab, p.temperature, true);
  row.m = row_max(row, sh);
  cut.m = row.m;
  cut.filtered = 1;
  // Top-k: the k-th token of the order, ties at its key kept by lowest id.
  uint32_t k_key = 0;
  int32_t k_id = 0x7FFFFFFF;
  if (use_topk) {
    const Selection sel = select_desc<false>(tokens(row, EveryToken{}, SameKey{}), NoMass{}, NoMass{},
                                             static_cast<uint32_t>(p.topk), false, sh);
    k_key = sel.key;
    if (sel.rank < sel.count_eq) k_id = select_id(row, EveryToken{}, k_key, sel.rank, sel.listed, sh);
  }
  auto in_topk = [&](uint32_t k, int32_t id) { return !use_topk || k > k_key || (k == k_key && id <= k_id); };
  cut.key = k_key;
  cut.id = k_id;
  if (use_topp) {
    // The nucleus of the renormalised top-k mass: tokens up to and including the one at which the
    // running mass reaches top_p of it.
    auto mass = [](uint32_t k) {
      return fixed_mass(k, [](float d) { return static_cast<unsigned long long>(exp(static_cast<double>(d)) * kMassUnit + 0.5); });
    };
    auto target_of = [&](unsigned long long total) {
      return static_cast<unsigned long long>(ceil(static_cast<double>(p.topp) * static_cast<double>(total)));
    };
    // The top-k tokens are listed first when they fit: the top-p selection then reads only them.
    const auto kept = tokens(row, in_topk, SameKey{});
    const bool listed = use_topk && p.topk <= kListCapacity;
    if (listed) list_tokens(kept, sh);
    const Selection sel = select_desc<true>(kept, mass, target_of, 0u, listed, sh);
    // Tokens at the cut's key all have the same mass: as many as it takes to reach the target.
    const uint32_t need = tokens_to_reach(sel.target, sel.acc, mass(sel.key), sel.count_eq);
    // (All of them: the top-k cut still applies at its own key.)
    int32_t p_id = use_topk && sel.key == k_key ? k_id : 0x7FFFFFFF;
    if (need < sel.count_eq) p_id = select_id(row, in_topk, sel.key, need, sel.listed, sh);
    cut.key = sel.key;
    cut.id = p_id;
  }
  if (threadIdx.x == 0) cuts[row_index] = cut;
}

// kFast: pass 2's exp(z - m) in float (expf) and its per-thread sums in float, the block and
// merge sums still in double (the argmax, the draw and the cuts do not use these sums); pass 3's
// Gumbel noise in float (gumbel_of_word_f32, within about 1e-6 of the double noise).
template <bool kFast>
__global__ void __launch_bounds__(kThreads, 4)
k_sample_slices(const float* __restrict__ logits,  // [rows, vocab]
                const cpu::SampleRowParams* __restrict__ params, const RowCut* __restrict__ cuts,
                SlicePartial* __restrict__ partials, int64_t vocab) {
  __shared__ ArgMax sh_arg[kThreads / 32];
  __shared__ ArgMaxF sh_argf[kThreads / 32];
  __shared__ double sh_sum[3 * kThreads / 32];
  __shared__ float sh_top2[2 * kThreads / 32];
  const int64_t row = blockIdx.x;
  // The slice's tokens v0 + j, j < n (32-bit: a vocabulary is far below 2^31 tokens); this thread's
  // are j = threadIdx.x + k * kThreads.
  const int v0 = static_cast<int>(blockIdx.y) * static_cast<int>(kSlice);
  const int n = static_cast<int>(min(kSlice, vocab - v0));
  const float* lr = logits + row * vocab + v0;
  const cpu::SampleRowParams p = params[row];
  const bool greedy = p.temperature == 0.f;
  auto j_of = [](int k) { return static_cast<int>(threadIdx.x) + k * kThreads; };
  auto valid = [&](int k) { return j_of(k) < n; };
  auto id = [&](int k) { return v0 + j_of(k); };
  // z = l / T (the logit when greedy, and at T = 1, where x / 1 is x), read once into registers
  // (coalesced, one division a token); every pass below reuses them.
  float z[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) z[k] = valid(k) ? lr[j_of(k)] : 0.f;
  if (!greedy && p.temperature != 1.f) {
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) z[k] = z[k] / p.temperature;
  }

  // Pass 1: max of z (and the greedy argmax). A thread's tokens come in id order, so after its
  // first, a larger z alone takes over (ties keep the lower id, as better() does).
  ArgMaxF best{-FLT_MAX, -1};
  if (valid(0)) best = ArgMaxF{z[0], id(0)};
#pragma unroll
  for (int k = 1; k < kPerThread; ++k)
    if (valid(k) && z[k] > best.value) best = ArgMaxF{z[k], id(k)};
  best = block_argmax(best, sh_argf);
  const float m = best.value;
  float z2 = -INFINITY;
  if (p.confidence_kind == cpu::ConfidenceKind::kMargin) {
    float a1 = -INFINITY, a2 = -INFINITY;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      if (!valid(k)) continue;
      a2 = fmaxf(a2, fminf(a1, z[k]));
      a1 = fmaxf(a1, z[k]);
    }
    z2 = block_top2(a1, a2, sh_top2).y;
  }
  // Pass 2: S and W relative to the slice max, in double (each thread's terms in float when kFast;
  // and, for Dream rows, S over the kept).
  const RowCut cut = cuts ? cuts[row] : keep_all(vocab);
  using Acc = std::conditional_t<kFast, float, double>;  // each thread's terms and sums
  Acc sa = 0, wa = 0, ska = 0;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    if (!valid(k)) continue;
    const Acc d = static_cast<Acc>(z[k] - m);
    Acc e;
    if constexpr (kFast) e = expf(d);
    else e = exp(d);
    sa += e;
    wa += d * e;
    if (p.dream && is_kept(z[k], id(k), cut)) ska += e;
  }
  double s = sa, w = wa, sk = ska;
  if (p.dream) {
    double v[3] = {s, w, sk};
    block_sums(v, sh_sum);
    s = v[0], w = v[1], sk = v[2];
  } else {
    double v[2] = {s, w};
    block_sums(v, sh_sum);
    s = v[0], w = v[1];
  }
  ArgMax draw{-DBL_MAX, -1};
  if (!greedy) {
    // Pass 3: the Gumbel-max draw over the kept tokens. The loop stays rolled (unrolled, its 16
    // Philox draws made the pass slower), so it reads a copy of z: z itself keeps constant indices
    // and stays in registers for the rows that never come here.
    float zr[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) zr[k] = z[k];
    for (int k = 0; k < kPerThread; ++k) {
      if (!valid(k) || !is_kept(zr[k], id(k), cut)) continue;
      const uint32_t token = static_cast<uint32_t>(id(k));
      const double score =
          static_cast<double>(zr[k]) +
          (kFast ? static_cast<double>(gumbel_of_word_f32(token_gumbel_word(p.seed, p.step, p.position, token)))
                 : token_gumbel(p.seed, p.step, p.position, token));
      draw = better(draw, ArgMax{score, id(k)});
    }
    draw = block_argmax(draw, sh_arg);
  }
  double raw_m = 0.0, raw_s = 0.0;
  if (p.confidence_kind == cpu::ConfidenceKind::kUntempered && !greedy) {
    // The untempered logits, read again (z holds l / T).
    float l[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) l[k] = valid(k) ? lr[j_of(k)] : 0.f;
    ArgMaxF raw{-FLT_MAX, -1};
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (valid(k)) raw = better(raw, ArgMaxF{l[k], id(k)});
    const float rm = block_argmax(raw, sh_argf).value;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k)
      if (valid(k)) raw_s += exp(static_cast<double>(l[k] - rm));
    raw_s = block_sum(raw_s, sh_sum);
    raw_m = rm;
  }
  if (threadIdx.x == 0)
    partials[row * gridDim.y + blockIdx.y] =
        SlicePartial{best.value, best.index, s, w, draw.value, draw.index, raw_m, raw_s, z2, sk};
}

constexpr int kMergeRows = 8;  // rows a merge CTA takes, one warp each

// Combines a row's slices: one warp a row, lane j taking slices j, j + 32, ... (ties keep the
// lowest index, as on the CPU, whatever the order; the sums are double, so their order moves only
// the last bits of a double).
__global__ void __launch_bounds__(kMergeRows * 32)
k_sample_merge(const float* __restrict__ logits, const cpu::SampleRowParams* __restrict__ params,
               const RowCut* __restrict__ cuts, const SlicePartial* __restrict__ partials, int num_slices,
               int64_t num_rows, int32_t* __restrict__ x0, float* __restrict__ confidence,
               float* __restrict__ logprob, float* __restrict__ entropy, RowStats* __restrict__ stats, int64_t vocab) {
  const int64_t row = int64_t{blockIdx.x} * kMergeRows + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= num_rows) return;  // the whole warp
  const SlicePartial* part = partials + row * num_slices;
  const cpu::SampleRowParams p = params[row];
  const bool greedy = p.temperature == 0.f;
  ArgMax best{-DBL_MAX, -1}, draw{-DBL_MAX, -1};
  double raw_max = -DBL_MAX;
  float top1 = -INFINITY, top2 = -INFINITY;  // the row's two largest z (kMargin)
  auto top2_merge = [&](float y1, float y2) {
    top2 = fmaxf(fminf(top1, y1), fmaxf(top2, y2));
    top1 = fmaxf(top1, y1);
  };
  for (int j = lane; j < num_slices; j += 32) {
    top2_merge(static_cast<float>(part[j].m), part[j].z2);
    best = better(best, ArgMax{part[j].m, part[j].argmax});
    draw = better(draw, ArgMax{part[j].gumbel, part[j].draw});
    raw_max = fmax(raw_max, part[j].raw_m);
  }
  best = warp_argmax(best);
  draw = warp_argmax(draw);
  raw_max = warp_max(raw_max);
  for (int off = 16; off > 0; off >>= 1)
    top2_merge(__shfl_xor_sync(0xffffffffu, top1, off), __shfl_xor_sync(0xffffffffu, top2, off));
  const double m = best.value;
  double s = 0.0, w = 0.0, raw_sum = 0.0, ksum = 0.0;
  for (int j = lane; j < num_slices; j += 32) {
    const double shift = part[j].m - m, scale = exp(shift);
    s += part[j].s * scale;
    ksum += part[j].sk * scale;
    w += (part[j].w + shift * part[j].s) * scale;
    raw_sum += part[j].raw_s * exp(part[j].raw_m - raw_max);
  }
  s = warp_sum(s);
  ksum = warp_sum(ksum);
  w = warp_sum(w);
  raw_sum = warp_sum(raw_sum);
  if (lane != 0) return;
  const int32_t token = greedy ? best.index : draw.index;  // a filter keeps at least one token
  const float* l = logits + row * vocab;
  const float z_tok = greedy ? l[token] : l[token] / p.temperature;
  double conf = exp(static_cast<double>(z_tok - static_cast<float>(m))) / s;
  if (p.confidence_kind == cpu::ConfidenceKind::kUntempered && !greedy) {
    conf = exp(static_cast<double>(l[token] - static_cast<float>(raw_max))) / raw_sum;
  } else if (p.confidence_kind == cpu::ConfidenceKind::kRandom) {
    conf = position_uniform(p.seed, p.step, p.position);
  }
  x0[row] = token;
  confidence[row] = static_cast<float>(conf);
  if (p.dream) {
    // Dream's q = float(exp(z - m) / ksum) over the kept tokens (the top one among them, so their
    // max is m): p[x0] renormalised, or the two largest q (repeats count; 0 for the second when
    // one token is kept), or sum q log q (k_negentropy_*).
    const float mf = static_cast<float>(m);
    const bool kept2 = cuts ? cuts[row].kept2 != 0 : vocab >= 2;
    if (p.confidence_kind == cpu::ConfidenceKind::kMargin) {
      const float q1 = static_cast<float>(1.0 / ksum);
      const float q2 = kept2 ? static_cast<float>(exp(static_cast<double>(top2 - mf)) / ksum) : 0.f;
      confidence[row] = q1 - q2;
    } else {
      confidence[row] = static_cast<float>(exp(static_cast<double>(z_tok - mf)) / ksum);
    }
    if (stats) stats[row] = RowStats{mf, ksum};
  }
  logprob[row] = static_cast<float>(static_cast<double>(z_tok - static_cast<float>(m)) - log(s));
  entropy[row] = static_cast<float>(fmax(0.0, log(s) - w / s));
}

// kNegEntropy rows (Dream's), after the merge: per slice, sum over the kept tokens with q > 0 of
// q log q in double, q = float(exp(z - m) / ksum) with the row's m and kept sum; then the slices in
// order.
__global__ void __launch_bounds__(kThreads)
k_negentropy_slices(const float* __restrict__ logits, const cpu::SampleRowParams* __restrict__ params,
                    const RowCut* __restrict__ cuts, const RowStats* __restrict__ stats,
                    double* __restrict__ partials, int64_t vocab) {
  __shared__ double sh_sum[kThreads / 32];
  const int64_t row = blockIdx.x, slice = blockIdx.y;
  const cpu::SampleRowParams p = params[row];
  if (p.confidence_kind != cpu::ConfidenceKind::kNegEntropy) return;
  const bool greedy = p.temperature == 0.f;
  const RowStats st = stats[row];
  const RowCut cut = cuts ? cuts[row] : keep_all(vocab);
  const int64_t v0 = slice * kSlice, v1 = min(vocab, v0 + kSlice);
  double acc = 0.0;
  for (int64_t i = v0 + threadIdx.x; i < v1; i += kThreads) {
    const float l = logits[row * vocab + i];
    const float z = greedy ? l : l / p.temperature;
    if (!is_kept(z, i, cut)) continue;
    const double q = static_cast<float>(exp(static_cast<double>(z - st.m)) / st.s);
    if (q > 0) acc += q * log(q);
  }
  acc = block_sum(acc, sh_sum);
  if (threadIdx.x == 0) partials[row * gridDim.y + slice] = acc;
}

__global__ void __launch_bounds__(kMergeRows * 32)
k_negentropy_merge(const cpu::SampleRowParams* __restrict__ params, const double* __restrict__ partials,
                   int num_slices, int64_t num_rows, float* __restrict__ confidence) {
  const int64_t row = int64_t{blockIdx.x} * kMergeRows + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= num_rows || params[row].confidence_kind != cpu::ConfidenceKind::kNegEntropy) return;  // whole warps
  double sum = 0.0;
  for (int j = lane; j < num_slices; j += 32) sum += partials[row * num_slices + j];
  sum = warp_sum(sum);
  if (lane == 0) confidence[row] = static_cast<float>(sum);
}

// The workspace: slice partials, then the rows' cuts, their stats and the kNegEntropy partials.
struct Workspace {
  SlicePartial* partials;
  RowCut* cuts;
  RowStats* stats;
  double* negentropy;
  size_t bytes;
};
Workspace carve(void* base, int64_t num_rows, int64_t slices) {
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  char* p = static_cast<char*>(base);
  Workspace w{};
  size_t at = 0;
  auto take = [&](size_t bytes) {
    void* q = p ? p + at : nullptr;
    at += align(bytes);
    return q;
  };
  const size_t rows = static_cast<size_t>(num_rows);
  w.partials = static_cast<SlicePartial*>(take(rows * static_cast<size_t>(slices) * sizeof(SlicePartial)));
  w.cuts = static_cast<RowCut*>(take(rows * sizeof(RowCut)));
  w.stats = static_cast<RowStats*>(take(rows * sizeof(RowStats)));
  w.negentropy = static_cast<double*>(take(rows * static_cast<size_t>(slices) * sizeof(double)));
  w.bytes = at;
  return w;
}

}  // namespace

size_t sample_rows_workspace_bytes(int64_t num_rows, int64_t vocab) {
  return carve(nullptr, num_rows, (vocab + kSlice - 1) / kSlice).bytes;
}

void launch_sample_rows(const float* logits, const cpu::SampleRowParams* params, int32_t* x0,
                        float* confidence, float* logprob, float* entropy, int64_t num_rows,
                        int64_t vocab, bool any_filtered, bool any_negentropy, bool fast_math, void* workspace,
                        int device) {
  if (num_rows == 0) return;
  BI_CUDA_CHECK(cudaSetDevice(device));
  const int slices = static_cast<int>((vocab + kSlice - 1) / kSlice);
  const Workspace ws = carve(workspace, num_rows, slices);
  const dim3 grid(static_cast<unsigned>(num_rows), static_cast<unsigned>(slices));
  if (any_filtered) {
    allow_dynamic_smem(reinterpret_cast<const void*>(k_filter_rows), sizeof(FilterShared), device);
    k_filter_rows<<<static_cast<unsigned>(num_rows), kFilterThreads, sizeof(FilterShared), current_stream()>>>(
        logits, params, ws.cuts, vocab);
    BI_CUDA_CHECK_LAUNCH();
  }
  (fast_math ? k_sample_slices<true> : k_sample_slices<false>)<<<grid, kThreads, 0, current_stream()>>>(
      logits, params, any_filtered ? ws.cuts : nullptr, ws.partials, vocab);
  BI_CUDA_CHECK_LAUNCH();
  const RowCut* cuts = any_filtered ? ws.cuts : nullptr;
  const unsigned merge_ctas = static_cast<unsigned>(ceil_div(num_rows, kMergeRows));
  k_sample_merge<<<merge_ctas, kMergeRows * 32, 0, current_stream()>>>(
      logits, params, cuts, ws.partials, slices, num_rows, x0, confidence, logprob, entropy,
      any_negentropy ? ws.stats : nullptr, vocab);
  BI_CUDA_CHECK_LAUNCH();
  if (any_negentropy) {
    k_negentropy_slices<<<grid, kThreads, 0, current_stream()>>>(logits, params, cuts, ws.stats, ws.negentropy,
                                                                 vocab);
    BI_CUDA_CHECK_LAUNCH();
    k_negentropy_merge<<<merge_ctas, kMergeRows * 32, 0, current_stream()>>>(params, ws.negentropy, slices,
                                                                             num_rows, confidence);
    BI_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace blockinfer::cuda
