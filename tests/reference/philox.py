"""Philox4x32-10 counter-based RNG (Salmon, Moraes, Dror, Shaw: "Parallel random numbers:
as easy as 1, 2, 3", SC'11; the Random123 library), vectorised with numpy.

The BlockInfer engine draws all sampling noise from this generator, so the helpers below
(`seed_key`, `uniform`, `gumbel`, `token_gumbel`, `position_uniform`) define the noise
bit-exactly; the C++ engine implements the same functions.
"""
from __future__ import annotations

import numpy as np

M0 = 0xD2511F53  # multiplier applied to counter word 0
M1 = 0xCD9E8D57  # multiplier applied to counter word 2
W0 = 0x9E3779B9  # key bump for key word 0 (golden ratio)
W1 = 0xBB67AE85  # key bump for key word 1 (sqrt(3) - 1)
ROUNDS = 10

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def _u32(x) -> np.ndarray:
    """Any int / array of ints -> uint32 array (values must already fit in 32 bits)."""
    return np.asarray(x, dtype=np.uint64).astype(np.uint32)


def _mulhilo(m: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """32x32 -> 64-bit product, returned as (hi, lo) uint32 halves."""
    prod = np.uint64(m) * x.astype(np.uint64)  # < 2**64, exact in uint64
    return (prod >> _SHIFT32).astype(np.uint32), (prod & _MASK32).astype(np.uint32)


def philox4x32(counter, key, rounds: int = ROUNDS):
    """Philox4x32 with `rounds` rounds (10 = the standard Philox4x32-10).

    counter: 4 uint32 words (ints or arrays, broadcast against each other);
    key: 2 uint32 words.  Returns 4 uint32 arrays of the broadcast shape.
    """
    c0, c1, c2, c3 = np.broadcast_arrays(*(_u32(c) for c in counter))
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for r in range(rounds):
        if r > 0:  # the key is bumped between rounds (Weyl sequence)
            k0 = (k0 + W0) & 0xFFFFFFFF
            k1 = (k1 + W1) & 0xFFFFFFFF
        hi0, lo0 = _mulhilo(M0, c0)
        hi1, lo1 = _mulhilo(M1, c2)
        c0, c1, c2, c3 = (hi1 ^ c1 ^ np.uint32(k0), lo1, hi0 ^ c3 ^ np.uint32(k1), lo0)
    return c0, c1, c2, c3


def seed_key(seed: int) -> tuple[int, int]:
    """A request's uint64 seed -> Philox key (low word, high word)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF


def uniform(x) -> np.ndarray:
    """uint32 word -> float64 in (0, 1): ((x >> 8) + 0.5) * 2**-24.  Never 0 or 1."""
    x = _u32(x)
    return ((x >> np.uint32(8)).astype(np.float64) + 0.5) * 2.0 ** -24


def gumbel(u) -> np.ndarray:
    """Standard Gumbel sample from a uniform in (0, 1): -log(-log(u)), in float64."""
    u = np.asarray(u, dtype=np.float64)
    return -np.log(-np.log(u))


def token_gumbel(seed: int, step: int, position: int, vocab_size: int) -> np.ndarray:
    """Gumbel noise for every token id at one (step, absolute position) of a request.

    counter = (token_id, position, step, 0), key = seed_key(seed); word 0 of the output
    -> uniform -> gumbel.  Returns float64 [vocab_size].
    """
    ids = np.arange(vocab_size, dtype=np.uint64)
    w0, _, _, _ = philox4x32((ids, position, step, 0), seed_key(seed))
    return gumbel(uniform(w0))


def position_uniform(seed: int, step: int, position: int) -> float:
    """The uniform of one (step, absolute position) of a request: the `random` strategy's score.

    counter = (0, position, step, 1), key = seed_key(seed); word 0 of the output -> uniform.
    The last counter word is the stream (0 = token Gumbel noise, 1 = position uniforms), so
    this never reuses a token_gumbel draw.  Returns a float64 in (0, 1).
    """
    w0, _, _, _ = philox4x32((0, position, step, 1), seed_key(seed))
    return float(uniform(w0))


def position_gumbel(seed: int, step: int, position: int, stream: int) -> float:
    """Gumbel noise of one (step, absolute position) of a request on counter stream `stream`.

    counter = (0, position, step, stream), key = seed_key(seed); word 0 of the output
    -> uniform -> gumbel.  Stream 2 is Dream's `alg_temp` position draw (streams 0 and 1 are
    token_gumbel and position_uniform), so it never reuses their draws.  Returns a float64.
    """
    w0, _, _, _ = philox4x32((0, position, step, stream), seed_key(seed))
    return float(gumbel(uniform(w0)))


# Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
KAT_VECTORS = [
    # (counter, key, expected output)
    ((0, 0, 0, 0), (0, 0),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def self_test() -> None:
    """Raise AssertionError unless the implementation reproduces the Random123 vectors,
    both one counter at a time and vectorised."""
    for ctr, key, want in KAT_VECTORS:
        got = tuple(int(w) for w in philox4x32(ctr, key))
        assert got == want, f"philox4x32{ctr, key} = {[hex(g) for g in got]}, want {[hex(w) for w in want]}"
    # vectorised: the three counters of the same key (0, 0) in one call
    ctr = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint64).T
    batch = philox4x32(tuple(ctr), (0, 0))
    assert tuple(int(w[0]) for w in batch) == KAT_VECTORS[0][2]
    assert tuple(int(w[2]) for w in batch) == KAT_VECTORS[0][2]
    assert tuple(int(w[1]) for w in batch) != KAT_VECTORS[0][2]
    assert all(w.dtype == np.uint32 for w in batch)


if __name__ == "__main__":
    self_test()
    print("philox4x32-10 known-answer vectors: ok")
