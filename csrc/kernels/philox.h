// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), usable from
// host and device code. BlockInfer keys every random draw by (request seed, step, position,
// token), never by batch slot, so a request gets the same tokens whatever else is in the batch.
// tests/reference/philox.py implements the same functions bit-exactly.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define BI_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define BI_HOST_DEVICE inline
#endif

namespace blockinfer {

struct Philox4 {
  uint32_t v[4];
};

BI_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

BI_HOST_DEVICE Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, ctr.v[0], hi0, lo0);
    philox_mulhilo(kM1, ctr.v[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// Which stream a draw belongs to (the last counter word), so that draws of different purposes
// at the same (step, position) are independent.
enum class RandomStream : uint32_t { kTokenGumbel = 0, kPositionUniform = 1, kPositionGumbel = 2 };

// A uniform double in (0, 1) from the top 24 bits of a word: never 0 or 1, so log() is finite.
BI_HOST_DEVICE double philox_uniform(uint32_t word) {
  return (static_cast<double>(word >> 8) + 0.5) * (1.0 / 16777216.0);
}

// The Philox word behind the Gumbel noise of token `token` of `position` at `step` of its block.
BI_HOST_DEVICE uint32_t token_gumbel_word(uint64_t seed, uint32_t step, uint32_t position, uint32_t token) {
  return philox4x32_10(Philox4{{token, position, step, static_cast<uint32_t>(RandomStream::kTokenGumbel)}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32))
      .v[0];
}

// The Gumbel noise added to token `token` of `position` at `step` of its block.
BI_HOST_DEVICE double token_gumbel(uint64_t seed, uint32_t step, uint32_t position, uint32_t token) {
  return -std::log(-std::log(philox_uniform(token_gumbel_word(seed, step, position, token))));
}

// The same noise, -log(-log(u)) of the same u = (k + 1/2) / 2^24, evaluated in float (the GPU's
// sampling pass for 16-bit models): -log(u) from u itself below 1/2 and as -log1p(-(1 - u)) above,
// where u and 1 - u are exact in float, so the result is within about 1e-6 of token_gumbel's (the
// noise of a winning token, u near 1, keeps its precision).
BI_HOST_DEVICE float gumbel_of_word_f32(uint32_t word) {
  const uint32_t k = word >> 8;
  constexpr float kInv = 1.f / 16777216.f;
  const float e = k < (1u << 23) ? -std::log((static_cast<float>(k) + 0.5f) * kInv)
                                 : -std::log1p(-(static_cast<float>((1u << 24) - 1u - k) + 0.5f) * kInv);
  return -std::log(e);
}

// The uniform of position `position` at `step` of its block (the `random` strategy's score).
BI_HOST_DEVICE double position_uniform(uint64_t seed, uint32_t step, uint32_t position) {
  Philox4 out = philox4x32_10(
      Philox4{{0u, position, step, static_cast<uint32_t>(RandomStream::kPositionUniform)}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return philox_uniform(out.v[0]);
}

// Gumbel noise of a position at `step` (Dream's alg_temp draws without replacement).
BI_HOST_DEVICE double position_gumbel(uint64_t seed, uint32_t step, uint32_t position) {
  Philox4 out = philox4x32_10(
      Philox4{{0u, position, step, static_cast<uint32_t>(RandomStream::kPositionGumbel)}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return -std::log(-std::log(philox_uniform(out.v[0])));
}

}  // namespace blockinfer
