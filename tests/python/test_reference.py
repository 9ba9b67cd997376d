"""Tests of the reference implementation itself (tests/reference) and of the checkpoint
fixtures (tests/python/fixtures.py)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "reference"))

import fixtures  # noqa: E402
import philox  # noqa: E402
import sdar  # noqa: E402

MASK = 383  # fixtures' default mask id for vocab_size 384


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """One checkpoint per shape, written once."""
    cache = {}

    def get(shape="gqa", **kw):
        key = (shape, tuple(sorted(kw.items())))
        if key not in cache:
            d = tmp_path_factory.mktemp(shape)
            cache[key] = fixtures.write_sdar_checkpoint(d, **{**fixtures.SHAPES[shape], **kw})
        return cache[key]

    return get


@pytest.fixture(scope="module")
def ref(ckpt):
    return sdar.load_sdar(ckpt("gqa"))


# ----------------------------------------------------------------------------------------
# Philox
# ----------------------------------------------------------------------------------------

def test_philox_known_answers():
    philox.self_test()


def test_philox_known_answers_fail_when_wrong():
    # the vectors really pin the algorithm: 9 rounds, or a bumped key, do not reproduce them
    ctr, key, want = philox.KAT_VECTORS[2]
    assert tuple(int(w) for w in philox.philox4x32(ctr, key, rounds=9)) != want
    assert tuple(int(w) for w in philox.philox4x32(ctr, (key[0] + 1, key[1]))) != want


def test_philox_vectorised_matches_scalar():
    ids = np.arange(50, dtype=np.uint64)
    batch = philox.philox4x32((ids, 7, 3, 0), (123, 456))
    for i in (0, 1, 17, 49):
        one = philox.philox4x32((i, 7, 3, 0), (123, 456))
        assert [int(w[i]) for w in batch] == [int(w) for w in one]


def test_seed_key_and_uniform():
    assert philox.seed_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    assert philox.seed_key(-1) == (0xFFFFFFFF, 0xFFFFFFFF)
    u = philox.uniform(np.array([0, 255, 256, 0xFFFFFFFF], dtype=np.uint32))
    assert u[0] == 0.5 * 2.0 ** -24 and u[1] == u[0] and u[2] == 1.5 * 2.0 ** -24
    assert u[3] == (2 ** 24 - 0.5) * 2.0 ** -24 and u[3] < 1.0
    assert philox.gumbel(np.exp(-1.0)) == pytest.approx(0.0, abs=1e-15)


def test_token_gumbel_definition():
    seed, step, pos, V = 2 ** 40 + 5, 2, 11, 64
    g = philox.token_gumbel(seed, step, pos, V)
    assert g.dtype == np.float64 and g.shape == (V,)
    k = philox.seed_key(seed)
    for tok in (0, 5, 63):
        w0 = int(philox.philox4x32((tok, pos, step, 0), k)[0])
        u = ((w0 >> 8) + 0.5) * 2.0 ** -24
        assert g[tok] == -math.log(-math.log(u))
    # every coordinate of the counter and the seed matters
    for other in (philox.token_gumbel(seed + 1, step, pos, V),
                  philox.token_gumbel(seed, step + 1, pos, V),
                  philox.token_gumbel(seed, step, pos + 1, V),
                  philox.token_gumbel(seed + 2 ** 32, step, pos, V)):
        assert not np.array_equal(g, other)
    # roughly standard Gumbel: mean = Euler-Mascheroni constant
    big = philox.token_gumbel(1, 0, 0, 20000)
    assert abs(big.mean() - 0.5772) < 0.05 and abs(big.std() - math.pi / math.sqrt(6)) < 0.05


def test_position_uniform_definition():
    seed, step, pos = 2 ** 33 + 7, 3, 21
    k = philox.seed_key(seed)
    w0 = int(philox.philox4x32((0, pos, step, 1), k)[0])
    u = philox.position_uniform(seed, step, pos)
    assert isinstance(u, float) and u == ((w0 >> 8) + 0.5) * 2.0 ** -24 and 0.0 < u < 1.0
    # stream 1, not token 0's Gumbel uniform (stream 0) of the same (step, position)
    w_tok0 = int(philox.philox4x32((0, pos, step, 0), k)[0])
    assert u != ((w_tok0 >> 8) + 0.5) * 2.0 ** -24
    # counter order (0, position, step, 1): swapping step and position changes the draw
    assert philox.position_uniform(seed, pos, step) != u
    for other in (philox.position_uniform(seed + 1, step, pos),
                  philox.position_uniform(seed + 2 ** 32, step, pos),
                  philox.position_uniform(seed, step + 1, pos),
                  philox.position_uniform(seed, step, pos + 1)):
        assert other != u
    many = np.array([philox.position_uniform(5, t, i) for t in range(20) for i in range(100)])
    assert abs(many.mean() - 0.5) < 0.03 and many.min() > 0 and many.max() < 1


# ----------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------

def _ids(L, seed=0, high=380):
    return torch.randint(0, high, (L,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("B", [1, 4, 5])
def test_block_causal_rule(ref, B):
    L = 4 * B + 3
    ids = _ids(L)
    base = ref.forward(ids, B)
    assert base.shape == (L, 384) and base.dtype == torch.float32
    for pos in range(L):
        changed = ids.clone()
        changed[pos] = (changed[pos] + 1) % 380
        out = ref.forward(changed, B)
        start = (pos // B) * B  # first position of the changed token's block
        # earlier blocks never see it: bit-identical logits
        assert torch.equal(out[:start], base[:start]), pos
        # its own block (bidirectional) and every later position do see it
        diff = (out - base).abs().amax(-1)
        assert (diff[start:] > 1e-6).all(), (pos, diff[start:])


def test_mask_matrix():
    m = sdar.SDARReference.block_causal_mask(7, 3)
    want = [[1, 1, 1, 0, 0, 0, 0]] * 3 + [[1, 1, 1, 1, 1, 1, 0]] * 3 + [[1] * 7]
    assert m.int().tolist() == want


def test_prefix_logits_do_not_depend_on_later_blocks(ref):
    # full recompute of a longer canvas gives the same logits for complete earlier blocks
    ids = _ids(23)
    assert torch.allclose(ref.forward(ids[:16], 4), ref.forward(ids, 4)[:16], atol=1e-5)


def _slow_forward(ref: sdar.SDARReference, ids, B):
    """Same model written with explicit loops: per-position, per-head attention and an
    explicit pairwise RoPE rotation (pair d with d + D/2)."""
    w, D, H, KV = ref.w, ref.head_dim, ref.num_heads, ref.num_kv_heads
    eps = ref.eps

    def norm(v, g):
        return v / torch.sqrt((v * v).mean() + eps) * g

    def rope(v, pos):
        out = v.clone()
        for d in range(D // 2):
            ang = pos / (ref.theta ** (2 * d / D))
            c, s = math.cos(ang), math.sin(ang)
            out[d] = v[d] * c - v[d + D // 2] * s
            out[d + D // 2] = v[d + D // 2] * c + v[d] * s
        return out

    L = len(ids)
    h = [w["model.embed_tokens.weight"][int(t)].double() for t in ids]
    W = {k: v.double() for k, v in w.items()}
    for layer in range(ref.num_layers):
        p = f"model.layers.{layer}."
        xs = [norm(v, W[p + "input_layernorm.weight"]) for v in h]
        q = [[rope(norm((W[p + "self_attn.q_proj.weight"] @ x)[n * D:(n + 1) * D],
                        W[p + "self_attn.q_norm.weight"]), i) for n in range(H)]
             for i, x in enumerate(xs)]
        k = [[rope(norm((W[p + "self_attn.k_proj.weight"] @ x)[n * D:(n + 1) * D],
                        W[p + "self_attn.k_norm.weight"]), i) for n in range(KV)]
             for i, x in enumerate(xs)]
        v = [[(W[p + "self_attn.v_proj.weight"] @ x)[n * D:(n + 1) * D] for n in range(KV)]
             for x in xs]
        new_h = []
        for i in range(L):
            heads = []
            for n in range(H):
                kv = n // (H // KV)
                js = [j for j in range(L) if j // B <= i // B]
                sc = torch.stack([q[i][n] @ k[j][kv] / math.sqrt(D) for j in js])
                a = torch.softmax(sc, 0)
                heads.append(sum(a[t] * v[j][kv] for t, j in enumerate(js)))
            r = h[i] + W[p + "self_attn.o_proj.weight"] @ torch.cat(heads)
            y = norm(r, W[p + "post_attention_layernorm.weight"])
            g = W[p + "mlp.gate_proj.weight"] @ y
            u = W[p + "mlp.up_proj.weight"] @ y
            new_h.append(r + W[p + "mlp.down_proj.weight"] @ (g * torch.sigmoid(g) * u))
        h = new_h
    return torch.stack([W["lm_head.weight"] @ norm(x, W["model.norm.weight"]) for x in h])


@pytest.mark.parametrize("shape", ["mha", "gqa4"])
def test_forward_equals_slow_forward(ckpt, shape):
    r = sdar.load_sdar(ckpt(shape))
    ids = _ids(10, seed=3)
    fast = r.forward(ids, 3).double()
    slow = _slow_forward(r, ids, 3)
    assert torch.allclose(fast, slow, atol=2e-4, rtol=1e-4), (fast - slow).abs().max()


def test_forward_matches_transformers_qwen3(ckpt):
    """With block_length 1 the rule is plain causal attention: SDAR is then exactly Qwen3.
    With a block mask passed as an additive 4D mask it is SDAR's block attention."""
    tf = pytest.importorskip("transformers")
    if not hasattr(tf, "Qwen3ForCausalLM"):
        pytest.skip("transformers has no Qwen3")
    from safetensors.torch import load_file
    path = ckpt("gqa4")
    cfg = json.loads((path / "config.json").read_text())
    keys = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "intermediate_size", "vocab_size", "rms_norm_eps",
            "max_position_embeddings", "tie_word_embeddings", "rope_theta"]
    qcfg = tf.Qwen3Config(**{k: cfg[k] for k in keys}, attn_implementation="eager")
    model = tf.Qwen3ForCausalLM(qcfg).eval()
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
    r = sdar.load_sdar(path)
    ids = _ids(19, seed=4)
    with torch.no_grad():
        causal = model(input_ids=ids[None]).logits[0]
        assert torch.allclose(r.forward(ids, 1), causal, atol=1e-4)
        allowed = sdar.SDARReference.block_causal_mask(19, 4)
        add = torch.zeros(1, 1, 19, 19).masked_fill(~allowed, float("-inf"))
        block = model(input_ids=ids[None], attention_mask=add).logits[0]
        assert torch.allclose(r.forward(ids, 4), block, atol=1e-4)


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------

def test_greedy_sampling_ties_and_confidence():
    row = torch.tensor([1.0, 3.0, 3.0, -2.0])
    x0, c = sdar.sample_position(row, temperature=0, topk=0, topp=1.0, seed=0, step=0, position=0)
    assert x0 == 1 and c == pytest.approx(float(torch.softmax(row, 0)[1]))


def test_gumbel_max_sampling_distribution():
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 1.0], dtype=torch.float32)
    T = 0.8
    p = torch.softmax(row / T, 0).numpy()
    counts = np.zeros(6)
    n = 6000
    for pos in range(n):
        x0, c = sdar.sample_position(row, temperature=T, topk=0, topp=1.0, seed=9, step=0,
                                     position=pos)
        counts[x0] += 1
        assert c == pytest.approx(float(p[x0]), rel=1e-6)
    assert np.abs(counts / n - p).max() < 0.02, (counts / n, p)


def test_topk_topp_filters():
    row = torch.tensor([0.0, 3.0, 2.9, 3.0, 1.0, -1.0, 2.0, 0.5])
    p = torch.softmax(row, 0).numpy()
    seen_k, seen_p = set(), set()
    for pos in range(400):
        kw = dict(temperature=1.0, seed=1, step=2, position=pos)
        x0, c = sdar.sample_position(row, topk=2, topp=1.0, **kw)
        seen_k.add(x0)
        assert c == pytest.approx(float(p[x0]))  # the unfiltered probability
        x0, _ = sdar.sample_position(row, topk=0, topp=0.5, **kw)
        seen_p.add(x0)
        # topk 1 or a tiny topp keep only the top token (ties -> lower id)
        assert sdar.sample_position(row, topk=1, topp=1.0, **kw)[0] == 1
        assert sdar.sample_position(row, topk=0, topp=1e-9, **kw)[0] == 1
    assert seen_k == {1, 3}  # the two largest, tie at 3.0 broken to lower ids (both kept)
    # ranks: 1, 3 (p 0.31 each, cumulative before rank 1 = 0.31 < 0.5), 2 (before = 0.62)
    assert seen_p == {1, 3}


def test_topp_boundary_is_strict():
    # four equal tokens: renormalised 0.25 each; rank 2 has exactly 0.5 before it -> dropped
    row = torch.zeros(4)
    seen = {sdar.sample_position(row, temperature=1.0, topk=0, topp=0.5, seed=0, step=0,
                                 position=pos)[0] for pos in range(200)}
    assert seen == {0, 1}
    seen = {sdar.sample_position(row, temperature=1.0, topk=0, topp=0.5000001, seed=0, step=0,
                                 position=pos)[0] for pos in range(200)}
    assert seen == {0, 1, 2}


def test_topk_tie_goes_to_lower_id():
    row = torch.tensor([1.0, 5.0, 5.0, 5.0])
    seen = {sdar.sample_position(row, temperature=1.0, topk=2, topp=1.0, seed=0, step=0,
                                 position=pos)[0] for pos in range(200)}
    assert seen == {1, 2}


def _np_log_softmax(z32):
    """float64 log-softmax of a float32 row, plain numpy (a different formula from the
    reference's: log p = z - logsumexp z, H = -sum p log p with p = exp(log p))."""
    z = np.asarray(z32, dtype=np.float64)
    lse = z.max() + np.log(np.exp(z - z.max()).sum())
    return z - lse


@pytest.mark.parametrize("T", [0.0, 0.7, 1.0, 1.6])
@pytest.mark.parametrize("topk, topp", [(0, 1.0), (3, 1.0), (0, 0.3)])
def test_logprob_and_entropy_values(T, topk, topp):
    rows = torch.randn(12, 50, generator=torch.Generator().manual_seed(4)) * 3
    for pos, row in enumerate(rows):
        s = sdar.sample_position_full(row, temperature=T, topk=topk, topp=topp, seed=2,
                                      step=1, position=pos)
        z = row.numpy() if T == 0 else (row / T).numpy()  # l / T in float32
        logp = _np_log_softmax(z)
        p = np.exp(logp)
        # tempered (softmax(l) when T == 0), UNFILTERED distribution, float64
        assert s.logprob == pytest.approx(logp[s.x0], abs=1e-9)
        assert s.entropy == pytest.approx(-(p * logp).sum(), abs=1e-9)
        assert s.logprob <= 0 and s.entropy >= 0
        # and the confidence of the default strategy is p[x0] (float32)
        assert s.confidence == pytest.approx(p[s.x0], rel=1e-6)
        # sample_position is the (x0, c) of the same draw
        assert sdar.sample_position(row, temperature=T, topk=topk, topp=topp, seed=2, step=1,
                                    position=pos) == (s.x0, s.confidence)
    # a filter does not renormalise logprob: with topk=1 the token is the argmax but its
    # logprob is log p[argmax] < 0, not 0
    row = torch.tensor([2.0, 1.0, 0.0, -1.0])
    s = sdar.sample_position_full(row, temperature=1.0, topk=1, topp=1.0, seed=0, step=0,
                                  position=0)
    assert s.x0 == 0 and s.logprob == pytest.approx(_np_log_softmax(row.numpy())[0], abs=1e-12)


def test_logprob_entropy_formula_edge_cases():
    # uniform row: H = log V, logprob = -log V
    lp, h = sdar.logprob_entropy(np.zeros(8, dtype=np.float32), 3)
    assert lp == pytest.approx(-math.log(8), abs=1e-15) and h == pytest.approx(math.log(8), abs=1e-15)
    # a near one-hot row: H clamped at >= 0, logprob of the winner ~ 0
    lp, h = sdar.logprob_entropy(np.array([100.0, 0.0, 0.0], dtype=np.float32), 0)
    assert h >= 0 and h < 1e-40 and lp == pytest.approx(0.0, abs=1e-40)
    # -inf logits contribute nothing (no NaN)
    lp, h = sdar.logprob_entropy(np.array([0.0, 0.0, -np.inf], dtype=np.float32), 1)
    assert lp == pytest.approx(-math.log(2)) and h == pytest.approx(math.log(2))
    # the row is taken as float32: a float64 row is rounded first
    z64 = np.array([0.1, 0.2, 0.3])
    assert sdar.logprob_entropy(z64, 0) == sdar.logprob_entropy(z64.astype(np.float32), 0)


def test_low_confidence_uses_untempered_probability():
    row = torch.tensor([2.0, 1.5, 0.0, -1.0, 1.0])
    T = 0.5
    for pos in range(40):
        kw = dict(temperature=T, topk=0, topp=1.0, seed=3, step=1, position=pos)
        base = sdar.sample_position_full(row, **kw)
        low = sdar.sample_position_full(row, strategy="low_confidence", **kw)
        # the same draw and the same (tempered) logprob / entropy, only c differs
        assert (low.x0, low.logprob, low.entropy) == (base.x0, base.logprob, base.entropy)
        assert low.confidence == float(torch.softmax(row, 0)[low.x0])
        assert base.confidence == float(torch.softmax(row / T, 0)[base.x0])
        assert low.confidence != pytest.approx(base.confidence, rel=1e-3)
    # T == 0: untempered == tempered
    kw = dict(temperature=0, topk=0, topp=1.0, seed=3, step=1, position=0)
    assert sdar.sample_position_full(row, strategy="low_confidence", **kw) == \
        sdar.sample_position_full(row, **kw)


@pytest.mark.parametrize("T", [0.0, 1.0])
def test_random_confidence_is_the_position_uniform(T):
    row = torch.tensor([0.5, 2.0, 1.0, -1.0, 1.9])
    seed = 2 ** 35 + 11
    for step, pos in [(0, 0), (0, 9), (3, 9), (1, 130)]:
        kw = dict(temperature=T, topk=0, topp=1.0, seed=seed, step=step, position=pos)
        base = sdar.sample_position_full(row, **kw)
        rnd = sdar.sample_position_full(row, strategy="random", **kw)
        assert (rnd.x0, rnd.logprob, rnd.entropy) == (base.x0, base.logprob, base.entropy)
        w0 = int(philox.philox4x32((0, pos, step, 1), philox.seed_key(seed))[0])
        want = float(np.float32(((w0 >> 8) + 0.5) * 2.0 ** -24))  # held as a float32
        assert rnd.confidence == want
        assert rnd.confidence == float(np.float32(philox.position_uniform(seed, step, pos)))
        # independent of the logits
        assert sdar.sample_position_full(row * 3, strategy="random", **kw).confidence == want


# ----------------------------------------------------------------------------------------
# Generate
# ----------------------------------------------------------------------------------------

PROMPT = [5, 17, 42, 99, 7, 250, 31, 64, 128, 3]  # P = 10: a tail of 2 with B = 4


@pytest.mark.parametrize("max_tokens", [1, 3, 6, 8, 13])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generate_max_tokens_exact(ref, max_tokens, temperature):
    out, reason = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4,
                                temperature=temperature, max_tokens=max_tokens, seed=5)
    assert reason == "length" and len(out) == max_tokens
    assert MASK not in out
    # a longer run commits the same blocks: its prefix equals the shorter run
    longer, _ = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4,
                              temperature=temperature, max_tokens=max_tokens + 9, seed=5)
    assert longer[:max_tokens] == out


def test_generate_stop_rule(ref):
    full, reason = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4, temperature=1.0,
                                 max_tokens=24, seed=1)
    assert reason == "length" and len(full) == 24
    for idx in (0, 5, 13, 23):
        stop = full[idx]
        first = full.index(stop)
        out, reason = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4, temperature=1.0,
                                    max_tokens=24, seed=1, stop_token_ids=[stop, 10 ** 6])
        assert reason == "stop" and out == full[: first + 1]
    # a stop token that only appears beyond max_tokens does not count
    tail_only = [t for t in full[12:] if t not in full[:12]]
    if tail_only:
        out, reason = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4, temperature=1.0,
                                    max_tokens=12, seed=1, stop_token_ids=[tail_only[0]])
        assert reason == "length" and out == full[:12]


def test_generate_stop_ignores_prompt_tail(ref):
    # a stop id that occurs in the prompt tail (positions < P, inside the first block) but not
    # in the completion never stops the request
    full = None
    for tail_tok in (77, 78, 79, 80):
        prompt = PROMPT + [tail_tok]  # P = 11: the tail [3, tail_tok] opens the first block
        full, _ = sdar.generate(ref, prompt, mask_id=MASK, block_length=4, temperature=0,
                                max_tokens=12)
        if tail_tok not in full:
            break
    assert tail_tok not in full
    out, reason = sdar.generate(ref, prompt, mask_id=MASK, block_length=4, temperature=0,
                                max_tokens=12, stop_token_ids=[tail_tok])
    assert reason == "length" and out == full


def test_generate_seed_and_determinism(ref):
    kw = dict(mask_id=MASK, block_length=4, temperature=1.0, max_tokens=16)
    a = sdar.generate(ref, PROMPT, seed=3, **kw)
    assert a == sdar.generate(ref, PROMPT, seed=3, **kw)
    assert a != sdar.generate(ref, PROMPT, seed=4, **kw)
    g = sdar.generate(ref, PROMPT, temperature=0, **{k: v for k, v in kw.items()
                                                     if k != "temperature"})
    assert g == sdar.generate(ref, PROMPT, seed=123, mask_id=MASK, block_length=4,
                              temperature=0, max_tokens=16)


def test_topk1_equals_greedy(ref):
    # T = 1 and topk = 1: x0 = argmax, c = softmax(l)[x0], exactly the greedy rule
    kw = dict(mask_id=MASK, block_length=4, max_tokens=16)
    greedy = sdar.generate(ref, PROMPT, temperature=0, **kw)
    for strategy in ("low_confidence_static", "low_confidence_dynamic", "sequential"):
        assert sdar.generate(ref, PROMPT, temperature=1.0, topk=1, seed=8,
                             remasking_strategy=strategy, **kw)[0] == \
            sdar.generate(ref, PROMPT, temperature=0, remasking_strategy=strategy, **kw)[0]
    assert sdar.generate(ref, PROMPT, temperature=1.0, topp=1e-9, seed=8, **kw) == greedy


class _Counting:
    """Wraps a reference, records every forward's length."""

    def __init__(self, r):
        self.r, self.calls = r, []

    def forward(self, ids, B):
        self.calls.append(len(ids))
        return self.r.forward(ids, B)


@pytest.mark.parametrize("P, static_calls, two_step_calls", [
    # P = 8: blocks [8,12) [12,16), 4 masks each
    (8, [12] * 4 + [16] * 4, [12] * 2 + [16] * 2),
    # P = 10: block [8,12) holds the tail 2 masks, then [12,16) [16,20)
    (10, [12] * 2 + [16] * 4 + [20] * 4, [12] * 1 + [16] * 2 + [20] * 2),
])
def test_generate_steps_schedule(ref, P, static_calls, two_step_calls):
    prompt = PROMPT[:P]
    kw = dict(mask_id=MASK, block_length=4, temperature=0, max_tokens=8)
    # S = B = 4: one position per step; a block ends as soon as its masks are gone
    c = _Counting(ref)
    sdar.generate(c, prompt, **kw)
    assert c.calls == static_calls
    # S = 2: n_t = (2, 2); the tail block has only 2 masks and ends after one step
    c = _Counting(ref)
    out, _ = sdar.generate(c, prompt, denoising_steps=2, **kw)
    assert c.calls == two_step_calls and MASK not in out
    # S = 3: n_t = (2, 1, 1)
    c = _Counting(ref)
    sdar.generate(c, PROMPT[:8], denoising_steps=3, **kw)
    assert c.calls == [12] * 3 + [16] * 3
    # S = 1: the whole block in one forward
    c = _Counting(ref)
    sdar.generate(c, prompt, denoising_steps=1, **kw)
    assert c.calls == sorted(set(static_calls))


def test_noise_counters(ref, monkeypatch):
    """The Gumbel noise of step t at absolute position i is token_gumbel(seed, t, i, V), drawn
    for every still-masked position of the block; S = 3 over B = 4 gives n_t = (2, 1, 1)."""
    calls = []
    real = sdar.token_gumbel

    def recording(seed, step, position, vocab_size):
        calls.append((seed, step, position))
        return real(seed, step, position, vocab_size)

    monkeypatch.setattr(sdar, "token_gumbel", recording)
    sdar.generate(ref, PROMPT, mask_id=MASK, block_length=4, denoising_steps=3,
                  temperature=1.0, max_tokens=4, seed=77)
    assert {c[0] for c in calls} == {77}
    per_step = {}
    for _, step, pos in calls:
        per_step.setdefault(step, []).append(pos)
    # block [8, 12) holds the tail 8, 9: masks 10, 11 -> step 0 unmasks both (n_0 = 2)
    # block [12, 16): 4 masks -> 2 + 1 + 1 over the three steps
    assert per_step[0] == [10, 11, 12, 13, 14, 15]
    assert len(per_step[1]) == 2 and len(per_step[2]) == 1
    assert set(per_step[2]) < set(per_step[1]) < set(range(12, 16))


def test_dynamic_threshold_extremes(ref):
    kw = dict(mask_id=MASK, block_length=4, temperature=0, max_tokens=12)
    static = sdar.generate(ref, PROMPT, **kw)
    # threshold above 1: G is always empty -> the static rule
    assert sdar.generate(ref, PROMPT, remasking_strategy="low_confidence_dynamic",
                         dynamic_threshold=1.5, **kw) == static
    # threshold below 0: every masked position is in G -> one forward per block
    c = _Counting(ref)
    one_shot = sdar.generate(c, PROMPT, remasking_strategy="low_confidence_dynamic",
                             dynamic_threshold=-1.0, **kw)
    assert len(c.calls) == 4  # blocks [8,12) [12,16) [16,20) [20,24)
    assert one_shot == sdar.generate(ref, PROMPT, denoising_steps=1, **kw)


def test_sequential_unmasks_left_to_right(ref):
    # B steps of one: sequential must equal decoding each block left to right by hand
    B = 4
    out, _ = sdar.generate(ref, PROMPT[:8], mask_id=MASK, block_length=B, temperature=0,
                           remasking_strategy="sequential", max_tokens=4)
    x = PROMPT[:8] + [MASK] * B
    for j in range(B):
        x[8 + j] = int(torch.argmax(ref.forward(x, B)[8 + j]))
    assert out == x[8:]


def test_choose_positions_rules():
    conf = {10: 0.5, 11: 0.9, 12: 0.9, 13: 0.95}
    M = [10, 11, 12, 13]
    assert sdar.choose_positions(M, conf, 2, "sequential", 0.9) == [10, 11]
    assert sdar.choose_positions(M, conf, 2, "low_confidence_static", 0.9) == [13, 11]
    assert sdar.choose_positions(M, conf, 3, "low_confidence_static", 0.9) == [13, 11, 12]
    assert sdar.choose_positions(M, conf, 1, "low_confidence_dynamic", 0.9) == [13]  # strict >
    assert sorted(sdar.choose_positions(M, conf, 1, "low_confidence_dynamic", 0.8)) == [11, 12, 13]
    assert sdar.choose_positions(M, conf, 4, "low_confidence_dynamic", 0.8) == [13, 11, 12, 10]
    assert sdar.choose_positions([12], conf, 3, "low_confidence_static", 0.9) == [12]


def _f32(v):
    return float(np.float32(v))


def _below(v):
    """The float32 just below float32(v)."""
    return float(np.nextafter(np.float32(v), np.float32(0)))


def test_choose_positions_last_step_and_unknown():
    conf = {10: 0.5, 11: 0.9, 12: 0.1}
    ent = {10: 1.0, 11: 1.0, 12: 1.0}
    for strategy in sdar.BLOCK_STRATEGIES:
        assert sdar.choose_positions([10, 11, 12], conf, 1, strategy, 2.0, entropy=ent,
                                     eb_threshold=0.0, factor=0.0, last_step=True) == [10, 11, 12]
        # every strategy takes at least one position
        assert len(sdar.choose_positions([10, 11, 12], conf, 1, strategy, 2.0, entropy=ent,
                                         eb_threshold=0.0, factor=0.0)) >= 1
    with pytest.raises(ValueError):
        sdar.choose_positions([10], {10: 0.5}, 1, "origin", 0.9)


def test_entropy_bounded_rule():
    M = [10, 11, 12, 13]
    conf = {10: 0.9, 11: 0.1, 12: 0.2, 13: 0.3}  # not used by the rule
    H = {10: 0.25, 11: 0.125, 12: 0.0625, 13: 0.5}  # order 12, 11, 10, 13
    # prefix sums 0.0625, 0.1875, 0.4375, 0.9375; the bound is strict
    eb = lambda g, n_t=1: sdar.choose_positions(M, conf, n_t, "entropy_bounded", 0.9, entropy=H,
                                                eb_threshold=g)
    assert eb(0.4375) == [12, 11]
    assert eb(float(np.nextafter(np.float32(0.4375), np.float32(1)))) == [12, 11, 10]
    assert eb(0.1875) == [12]
    assert eb(0.19) == [12, 11]
    assert eb(0.01) == [12]  # no prefix below the bound: still one, the lowest entropy
    assert eb(0.0) == [12]
    assert eb(10.0, n_t=1) == [12, 11, 10, 13]  # no n_t cap
    assert eb(0.19, n_t=4) == [12, 11]  # nor an n_t floor
    # ties in H go to the lower position
    tie = {10: 0.1, 11: 0.1, 12: 0.1}
    assert sdar.choose_positions([10, 11, 12], conf, 1, "entropy_bounded", 0.9, entropy=tie,
                                 eb_threshold=0.25) == [10, 11]
    # H is a float32 number: values that round to one float32 tie -> lower position first
    near = {10: 0.1 + 1e-12, 11: 0.1}
    assert sdar.choose_positions([10, 11], conf, 1, "entropy_bounded", 0.9, entropy=near,
                                 eb_threshold=0.15) == [10]
    # the bound is float32(eb_threshold): a sum equal to float32(0.35) is not below 0.35
    h35 = {10: 0.0, 11: _f32(0.35)}
    assert _f32(0.35) < 0.35  # (in float64 the sum would be below the bound)
    assert sdar.choose_positions([10, 11], conf, 1, "entropy_bounded", 0.9, entropy=h35,
                                 eb_threshold=0.35) == [10]
    # the sum is float64 over float32 H: 3 x float32(0.1) = 0.3000000045 < float32(0.3) =
    # 0.3000000119, while float32 partial sums would round the third to float32(0.3) itself
    tenth = {10: 0.1, 11: 0.1, 12: 0.1, 13: 1.0}
    assert sdar.choose_positions([10, 11, 12, 13], conf, 1, "entropy_bounded", 0.9,
                                 entropy=tenth, eb_threshold=0.3) == [10, 11, 12]
    assert np.float32(np.float32(0.1) * 2 + np.float32(0.1)) == np.float32(0.3)  # (the trap)


def test_low_confidence_and_random_rules():
    M = [10, 11, 12, 13]
    conf = {10: 0.5, 11: 0.9, 12: 0.9, 13: 0.95}
    for strategy in ("low_confidence", "random"):
        assert sdar.choose_positions(M, conf, 2, strategy, 0.0) == [13, 11]
        assert sdar.choose_positions(M, conf, 3, strategy, 0.0) == [13, 11, 12]
        assert sdar.choose_positions([10, 12], conf, 3, strategy, 0.0) == [12, 10]
        # the threshold plays no part
        assert sdar.choose_positions(M, conf, 1, strategy, 0.1) == [13]


def test_confidence_threshold_rule():
    M = [10, 11, 12, 13]
    conf = {10: 0.5, 11: _f32(0.9), 12: _below(0.9), 13: 0.95}
    ct = lambda tau, m=M, c=conf: sdar.choose_positions(m, c, 1, "confidence_threshold", tau)
    # c >= tau, non-strict, in float32: float32(0.9) < 0.9 in float64 but is taken
    assert sorted(ct(0.9)) == [11, 13]
    assert sorted(ct(_below(0.9))) == [11, 12, 13]
    assert ct(0.96) == [13]  # the top-1 even below the threshold
    assert sorted(ct(0.5)) == M and sorted(ct(-1.0)) == M  # no n_t cap
    assert ct(0.95) == [13]
    # top-1 ties go to the lower position
    flat = {10: 0.3, 11: 0.3, 12: 0.3}
    assert ct(0.9, [10, 11, 12], flat) == [10]
    assert sorted(ct(0.3, [10, 11, 12], flat)) == [10, 11, 12]


def test_confidence_factor_rule():
    # factor 1: rank n >= 2 needs c >= 1 - 1/(n+1): 2/3, 3/4, 4/5
    M = [10, 11, 12, 13]
    cf = lambda c, f, n_t=1: sdar.choose_positions(M, c, n_t, "confidence_factor", 0.9, factor=f)
    conf = {10: 0.95, 11: 0.7, 12: 0.75, 13: 0.9}  # ranks 10, 13, 12, 11
    assert cf(conf, 1.0) == [10, 13, 12]  # 0.75 >= 3/4 (non-strict); 0.7 < 4/5 stops
    assert cf({**conf, 12: _below(0.75)}, 1.0) == [10, 13]  # just below 3/4: stop at rank 3
    four = {10: 0.95, 13: 0.9, 12: 0.85, 11: 0.8}
    assert cf(four, 1.0) == [10, 13, 12, 11]  # float32(0.8) >= 1 - 1/5
    assert cf({**four, 11: _below(0.8)}, 1.0) == [10, 13, 12]
    assert cf(conf, 2.0) == [10, 13, 12, 11]  # 1/3, 1/2, 3/5: all taken, no n_t cap
    assert cf(conf, 0.0) == [10]  # threshold 1: the top-1 only
    assert cf(conf, 0.0, n_t=4) == [10]  # nor an n_t floor
    # the divisor is n + 1, not n: c_(2) = 0.6 fails 2/3 (it would pass 1 - 1/2)
    assert cf({10: 0.9, 11: 0.6, 12: 0.1, 13: 0.1}, 1.0) == [10]
    assert cf({10: 0.9, 11: 0.6, 12: 0.1, 13: 0.1}, 1.2) == [10, 11]  # 1 - 1.2/3 = 0.6
    # the top-1 is always taken, ties to the lower position
    assert cf({10: 0.1, 11: 0.2, 12: 0.2, 13: 0.0}, 0.5) == [11]


def _block_steps(info, P, B):
    """{block start: {position: step}} of a logprobs list."""
    out = {}
    for n, (step, _, _) in enumerate(info):
        pos = P + n
        out.setdefault(pos // B * B, {})[pos] = step
    return out


@pytest.mark.parametrize("S", [4, 2, 3])
def test_generate_random_unmasks_by_position_uniform(ref, S):
    """`random`'s order comes from position_uniform(seed, t, pos) alone: replay it from the
    philox draws and compare with the steps that generate reports."""
    B, seed = 4, 31
    out, reason, info = sdar.generate(ref, PROMPT, mask_id=MASK, block_length=B,
                                      denoising_steps=S, remasking_strategy="random",
                                      temperature=0, max_tokens=14, seed=seed, logprobs=True)
    assert len(out) == len(info) == 14
    # the completion covers positions 10..23: blocks [8,12) (masks 10, 11), [12,16) .. [20,24)
    for start, got in _block_steps(info, len(PROMPT), B).items():
        masked = [p for p in range(max(start, len(PROMPT)), start + B)]
        want = {}
        for t in range(S):
            if not masked:
                break
            n_t = B // S + (1 if t < B % S else 0)
            u = {p: _f32(philox.position_uniform(seed, t, p)) for p in masked}
            chosen = masked if t == S - 1 else sorted(masked, key=lambda p: (-u[p], p))[:n_t]
            for p in chosen:
                want[p] = t
            masked = [p for p in masked if p not in chosen]
        assert got == {p: want[p] for p in got}, (start, got, want)


def test_generate_low_confidence_greedy_equals_static(ref):
    # T = 0: softmax(l)[x0] is both confidences, and both take the top n_t
    kw = dict(mask_id=MASK, block_length=4, temperature=0, max_tokens=12, logprobs=True)
    for S in (4, 2):
        assert sdar.generate(ref, PROMPT, remasking_strategy="low_confidence",
                             denoising_steps=S, **kw) == \
            sdar.generate(ref, PROMPT, denoising_steps=S, **kw)


@pytest.mark.parametrize("strategy, kw, per_block", [
    ("entropy_bounded", dict(eb_threshold=1e9), 1),  # every position at step 0
    ("entropy_bounded", dict(eb_threshold=0.0), 4),  # one per step (B = S = 4)
    ("confidence_threshold", dict(dynamic_threshold=-1.0), 1),
    ("confidence_threshold", dict(dynamic_threshold=2.0), 4),
    ("confidence_factor", dict(factor=100.0), 1),
    ("confidence_factor", dict(factor=0.0), 4),
])
def test_generate_uncapped_strategies_forwards(ref, strategy, kw, per_block):
    # P = 8: blocks [8,12) [12,16) with 4 masks each
    c = _Counting(ref)
    out, reason = sdar.generate(c, PROMPT[:8], mask_id=MASK, block_length=4, temperature=0,
                                max_tokens=8, remasking_strategy=strategy, **kw)
    assert reason == "length" and len(out) == 8 and MASK not in out
    assert c.calls == [12] * per_block + [16] * per_block


def test_generate_entropy_bounded_last_step_guarantee(ref):
    # eb 0 takes one position per step; with S = 2 the second (last) step takes the other 3
    c = _Counting(ref)
    out, _, info = sdar.generate(c, PROMPT[:8], mask_id=MASK, block_length=4, denoising_steps=2,
                                 temperature=1.0, seed=2, max_tokens=8,
                                 remasking_strategy="entropy_bounded", eb_threshold=0.0,
                                 logprobs=True)
    assert c.calls == [12, 12, 16, 16] and MASK not in out
    for blk in (info[:4], info[4:]):
        assert sorted(s for s, _, _ in blk) == [0, 1, 1, 1]
        # the one unmasked at step 0 had the lowest entropy of the four at step 0
        first = [h for s, _, h in blk if s == 0][0]
        assert first >= 0


@pytest.mark.parametrize("T", [0.0, 0.7])
def test_generate_logprobs_match_hand_decoding(ref, T):
    """sequential with S = B unmasks position j of a block at step j: recompute each token's
    logits by hand and check the reported (step, logprob, entropy)."""
    B, P, seed = 4, 8, 6
    out, reason, info = sdar.generate(ref, PROMPT[:P], mask_id=MASK, block_length=B,
                                      temperature=T, remasking_strategy="sequential",
                                      max_tokens=8, seed=seed, logprobs=True)
    plain = sdar.generate(ref, PROMPT[:P], mask_id=MASK, block_length=B, temperature=T,
                          remasking_strategy="sequential", max_tokens=8, seed=seed)
    assert plain == (out, reason)
    x = PROMPT[:P] + [MASK] * B
    for n in range(8):
        pos = P + n
        if n == B:
            x += [MASK] * B
        row = ref.forward(x, B)[pos]
        z = row.numpy() if T == 0 else (row / T).numpy()
        logp = _np_log_softmax(z)
        step, lp, h = info[n]
        assert step == n % B
        assert lp == pytest.approx(logp[out[n]], abs=1e-9)
        assert h == pytest.approx(-(np.exp(logp) * logp).sum(), abs=1e-9)
        x[pos] = out[n]


def test_generate_logprobs_follow_stop_and_length(ref):
    kw = dict(mask_id=MASK, block_length=4, temperature=1.0, seed=1)
    full, _, info = sdar.generate(ref, PROMPT, max_tokens=24, logprobs=True, **kw)
    assert len(info) == 24 and all(0 <= s < 4 for s, _, _ in info)
    short, reason, short_info = sdar.generate(ref, PROMPT, max_tokens=7, logprobs=True, **kw)
    assert reason == "length" and short_info == info[:7]
    stop = full[9]
    out, reason, stop_info = sdar.generate(ref, PROMPT, max_tokens=24, logprobs=True,
                                           stop_token_ids=[stop], **kw)
    assert reason == "stop" and len(stop_info) == len(out) == full.index(stop) + 1
    assert stop_info == info[:len(out)]
    # the prompt tail (positions 8, 9) has no entry: the first entry is position 10's, which
    # is unmasked at step 0 or 1 (two masks, n_t = 1)
    assert info[0][0] in (0, 1) and info[1][0] in (0, 1) and info[0][0] != info[1][0]


# ----------------------------------------------------------------------------------------
# Checkpoint fixtures
# ----------------------------------------------------------------------------------------

def test_checkpoint_files_and_config(ckpt):
    path = ckpt("gqa", block_size=4)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "sdar" and cfg["architectures"] == ["SDARForCausalLM"]
    assert cfg["mask_token_id"] == 383 and cfg["block_size"] == 4
    assert cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 16
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [381, 382]
    from safetensors.torch import load_file
    names = set(load_file(str(path / "model.safetensors")))
    assert "lm_head.weight" in names and "model.layers.1.self_attn.k_norm.weight" in names
    assert len(names) == 3 + 11 * 2
    no_mask = ckpt("mha", mask_token_id=None)
    assert "mask_token_id" not in json.loads((no_mask / "config.json").read_text())


def test_sharded_equals_single(ckpt):
    ids = _ids(13)
    single = sdar.load_sdar(ckpt("gqa4")).forward(ids, 4)
    path = ckpt("gqa4", shards=3)
    assert not (path / "model.safetensors").exists()
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert torch.equal(sdar.load_sdar(path).forward(ids, 4), single)


def test_tied_checkpoint(ckpt):
    from safetensors.torch import load_file
    path = ckpt("gqa", tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(str(path / "model.safetensors"))
    r = sdar.load_sdar(path)
    assert torch.equal(r.w["lm_head.weight"], r.w["model.embed_tokens.weight"])
    assert r.forward(_ids(8), 4).isfinite().all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_checkpoint_loads(ckpt, dtype):
    from safetensors.torch import load_file
    path = ckpt("gqa", dtype=dtype)
    stored = load_file(str(path / "model.safetensors"))
    assert all(t.dtype == fixtures.DTYPES[dtype] for t in stored.values())
    r = sdar.load_sdar(path)
    assert all(t.dtype == torch.float32 for t in r.w.values())
    f32 = sdar.load_sdar(ckpt("gqa"))
    for name, t in f32.w.items():  # the same random weights, rounded
        assert torch.equal(r.w[name], t.to(fixtures.DTYPES[dtype]).float()), name
    ids = _ids(12)
    assert (r.forward(ids, 4) - f32.forward(ids, 4)).abs().max() < 1.0


def test_random_model_is_not_degenerate(ckpt):
    for shape in fixtures.SHAPES:
        r = sdar.load_sdar(ckpt(shape))
        ids = _ids(24)
        ids[12:] = MASK
        conf = torch.softmax(r.forward(ids, 4), -1).amax(-1)
        assert conf.min() > 0.02 and conf.max() < 0.97, (shape, conf)
        assert conf.max() - conf.min() > 0.2, (shape, conf)
        out, _ = sdar.generate(r, PROMPT, mask_id=MASK, block_length=4, temperature=0,
                               max_tokens=32)
        assert len(set(out)) >= 4, (shape, out)


def test_tokenizer_loads_with_autotokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = fixtures.write_sdar_checkpoint(tmp_path / "tok", with_tokenizer=True,
                                          **fixtures.SHAPES["gqa"])
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    assert len(tok) == 384
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>", "<|MASK|>"]) == [381, 382, 383]
    assert tok.eos_token_id == 382 and tok.mask_token_id == 383
    text = "Hello, world! The capital of France is Paris. Zebras: 123 ünïcode"
    ids = tok.encode(text, add_special_tokens=False)
    assert max(ids) < 381 and tok.decode(ids) == text
    with_special = tok.encode("a<|im_end|>b<|MASK|>", add_special_tokens=False)
    assert 381 in with_special and 383 in with_special
    assert tok.decode(with_special, skip_special_tokens=True) == "ab"
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
