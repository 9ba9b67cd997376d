"""Dream on the engine (SEMANTICS §5, §6) against tests/reference/dream.py, token for token on CPU
float32 (and on a GPU in float32 mode where one is visible): canvas mode (diffusion_generate and
the block strategies), Fast-dLLM's prefix and dual caches (dual_cache is Dream's default), block
decode (CPU only), logprobs, batching."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

import dream as ref
import llada as llada_ref
from blockinfer import LLM, SamplingParams
from conftest import DEVICES
from fixtures import (DREAM_SHAPES, LLADA_SHAPES, check_block_decode_with_a_small_budget, write_dream_checkpoint,
                      write_llada_checkpoint)

DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
CACHE_MODES = ("prefix_cache", "dual_cache")


@pytest.fixture(scope="module")
def dream_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dream")
    return {name: write_dream_checkpoint(root / name, seed=10 + i, **shape)
            for i, (name, shape) in enumerate(DREAM_SHAPES.items())}


@pytest.fixture(scope="module")
def references(dream_dirs):
    return {name: ref.load_dream(d) for name, d in dream_dirs.items()}


@pytest.fixture(scope="module", params=DEVICES)
def engines(request, dream_dirs):
    """One LLM per (shape, decode mode) on each device."""
    modes = ("canvas",) + CACHE_MODES + ("block_causal",)
    return {(name, mode): LLM(d, device=request.param, decode_mode=mode)
            for name, d in dream_dirs.items() for mode in modes}


def _eos(llm):
    return tuple(llm.info.eos_token_ids)


def _check(llm, reference, prompt, *, mode, **kw):
    """Generate with the engine and the reference and compare tokens, finish reason and logprobs."""
    block = kw.pop("block_length", None)
    params = SamplingParams(block_length=block, logprobs=True, **kw)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason, want_lp = ref.generate(
        reference, prompt, mask_id=llm.info.mask_token_id, decode_mode=mode,
        block_length=block or llm.info.block_length, stop_token_ids=_eos(llm), logprobs=True, **kw)
    assert (out.token_ids, out.finish_reason) == (want, reason)
    assert [lp.step for lp in out.logprobs] == [s for s, _, _ in want_lp]
    for got, (_, logprob, entropy) in zip(out.logprobs, want_lp):
        assert got.logprob == pytest.approx(logprob, abs=2e-5)
        assert got.entropy == pytest.approx(entropy, abs=2e-5)
    return out


# ------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", sorted(DREAM_SHAPES))
def test_dream_forward_matches_reference(dream_dirs, references, shape, device):
    llm = LLM(dream_dirs[shape], device=device)
    ids = [5, 17, 33, 2, 9, 11, 42, 7, 300]
    got = np.from_dlpack(llm.engine.compute_logits(ids, 0))  # raw rows, not shifted
    want = references[shape].forward(torch.tensor(ids)).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4 if device == "cpu" else 1e-3)  # GPU fp32 tolerance


def test_dream_default_decode_mode_is_dual_cache(dream_dirs):
    assert LLM(dream_dirs[sorted(DREAM_SHAPES)[0]]).info.decode_mode == "dual_cache"  # SEMANTICS §5


# ------------------------------------------------------------------------------------ canvas
CANVAS_BLOCK_CASES = list(itertools.product(sorted(DREAM_SHAPES), (4, 8), ("low_confidence_static", "low_confidence",
                                                                           "entropy_bounded"), ("greedy", "sampled")))


@pytest.mark.parametrize("index,case", list(enumerate(CANVAS_BLOCK_CASES)),
                         ids=["-".join(map(str, c)) for c in CANVAS_BLOCK_CASES])
def test_canvas_with_block_strategies_matches_reference(engines, references, index, case):
    shape, block, strategy, sampler = case
    rng = random.Random(77 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 16))]
    _check(engines[(shape, "canvas")], references[shape], prompt, mode="canvas", block_length=block,
           temperature=0.0 if sampler == "greedy" else 0.9, max_tokens=rng.randint(4, 20),
           remasking_strategy=strategy, seed=index)


def test_reference_canvas_equals_the_llada_loop_on_shifted_logits(references):
    # The Dream reference's block loop in canvas mode is llada.py's canvas loop on shifted logits.
    class Shifted:
        def __init__(self, r):
            self.r = r

        def forward(self, ids):
            return self.r.shifted_logits(ids)

    reference = references[sorted(DREAM_SHAPES)[0]]
    rng = random.Random(3)
    for strategy in ("low_confidence_static", "random", "confidence_threshold"):
        prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 10))]
        kw = dict(mask_id=383, block_length=4, denoising_steps=2, remasking_strategy=strategy, temperature=0.8,
                  max_tokens=11, seed=5, dynamic_threshold=0.3, trace=True)
        assert (ref.generate(reference, prompt, decode_mode="canvas", **kw)
                == llada_ref.generate_canvas(Shifted(reference), prompt, **kw))


CANVAS_ALG_CASES = list(itertools.product(sorted(DREAM_SHAPES), DREAM_ALGS, ("equal", "half"),
                                          ((0.0, 0.0), (0.9, 0.0), (0.0, 0.5), (0.9, 0.3))))


@pytest.mark.parametrize("index,case", list(enumerate(CANVAS_ALG_CASES)),
                         ids=["-".join(map(str, c)) for c in CANVAS_ALG_CASES])
def test_canvas_dream_algorithms_match_reference(engines, references, index, case):
    # diffusion_generate: one block of max_tokens over denoising_steps steps.
    shape, alg, steps_kind, (temperature, alg_temp) = case
    rng = random.Random(300 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 16))]
    max_tokens = rng.randint(4, 24)
    steps = max_tokens if steps_kind == "equal" else max(1, max_tokens // 2)
    topk, topp = ((0, 1.0), (20, 1.0), (0, 0.9))[index % 3]
    out = _check(engines[(shape, "canvas")], references[shape], prompt, mode="canvas", temperature=temperature,
                 topk=topk, topp=topp, max_tokens=max_tokens, denoising_steps=steps, remasking_strategy=alg,
                 alg_temp=alg_temp, seed=index)
    assert all(0 <= lp.step < steps for lp in out.logprobs)


def test_canvas_schedule_first_step_unmasks_nothing(engines):
    # S = max_tokens: Dream's k is 0 on the first step and 2 on the last (SEMANTICS §6), so the
    # request takes S forwards and the first one commits nothing.
    llm = engines[(sorted(DREAM_SHAPES)[0], "canvas")]
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0.0, max_tokens=12, denoising_steps=12,
                                                   remasking_strategy="maskgit_plus", ignore_eos=True),
                       use_tqdm=False)[0]
    assert len(out.token_ids) == 12 and out.num_forwards == 12
    assert ref.transfer_schedule(12, 12)[0] == 0


# ---------------------------------------------------------------- Fast-dLLM caches (Dream)
CACHE_STRATEGIES = ("low_confidence_static", "low_confidence_dynamic", "confidence_threshold", "entropy_bounded",
                    "random") + DREAM_ALGS
CACHE_CASES = list(itertools.product(sorted(DREAM_SHAPES), CACHE_MODES, CACHE_STRATEGIES, ("greedy", "sampled")))


@pytest.mark.parametrize("index,case", list(enumerate(CACHE_CASES)), ids=["-".join(map(str, c)) for c in CACHE_CASES])
def test_cache_modes_match_reference(engines, references, index, case):
    shape, mode, strategy, sampler = case
    # each (mode, strategy) runs both block lengths, one per shape
    block = (4, 8)[(CACHE_STRATEGIES.index(strategy) + index // 18 + index // 36) % 2]
    rng = random.Random(1300 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 20))]
    max_tokens = rng.randint(4, 24)
    steps = (None, block // 2, block + 2)[index % 3]  # per block
    # confidence_threshold with a low and a high threshold (Fast-dLLM's threshold rule)
    threshold = (0.3, 0.9)[(index // 3) % 2]
    temperature, topk, topp, alg_temp = ((0.0, 0, 1.0, 0.0) if sampler == "greedy"
                                         else ((0.8, 0, 1.0, 0.0), (0.8, 20, 0.9, 0.3))[index % 2])
    out = _check(engines[(shape, mode)], references[shape], prompt, mode=mode, block_length=block,
                 denoising_steps=steps, temperature=temperature, topk=topk, topp=topp, alg_temp=alg_temp,
                 max_tokens=max_tokens, remasking_strategy=strategy, dynamic_threshold=threshold, seed=index)
    # Fast-dLLM's Dream loop: each block's step 0 (the full forward) unmasks its first position only.
    if (steps or block) > 1:
        for n, lp in enumerate(out.logprobs):  # completion token n sits at block offset n % block
            assert (lp.step == 0) == (n % block == 0), (n, lp)


def test_cache_step_zero_takes_the_first_position_then_the_window(dream_dirs):
    # The cached steps forward only the block (dual) or the block and the rest (prefix), one
    # forward per step: with S = B = 4 and one position per step, 4 forwards per block.
    d = dream_dirs[sorted(DREAM_SHAPES)[0]]
    sp = SamplingParams(temperature=0.0, max_tokens=16, block_length=4, ignore_eos=True,
                        remasking_strategy="low_confidence_static", logprobs=True)
    for mode in CACHE_MODES:
        out = LLM(d, decode_mode=mode).generate([[1, 2, 3]], sp, use_tqdm=False)[0]
        assert out.num_forwards == 16 and len(out.token_ids) == 16
        assert [lp.step for lp in out.logprobs][::4] == [0, 0, 0, 0]
    # S = 1: step 0 is the last step and unmasks the whole block from the full forward.
    one = SamplingParams(temperature=0.0, max_tokens=8, block_length=4, denoising_steps=1, ignore_eos=True)
    for mode in CACHE_MODES:
        out = LLM(d, decode_mode=mode).generate([[1, 2, 3]], one, use_tqdm=False)[0]
        assert out.num_forwards == 2 and len(out.token_ids) == 8


def test_cached_steps_are_approximate(references):
    # The cache is stale by design (SEMANTICS §5): on a one-layer model it is exact, so the
    # reference's cached rows equal a full forward; with two layers they do not.
    reference = references["gqa"]
    ids = list(range(5, 25))
    _, cache = reference.forward_cached(ids, 0, len(ids))
    changed = ids[:10] + [7, 8] + ids[12:]
    part, _ = reference.forward_cached(changed, 8, 12, cache)
    assert (part - reference.forward(changed)[8:12]).abs().max() > 1e-3
    full, _ = reference.forward_cached(changed, 0, len(ids))
    assert torch.equal(full, reference.forward(changed))


def test_one_layer_cache_is_exact(tmp_path):
    shape = dict(DREAM_SHAPES["gqa"], num_hidden_layers=1)
    reference = ref.load_dream(write_dream_checkpoint(tmp_path / "one", seed=4, **shape))
    ids = list(range(5, 25))
    _, cache = reference.forward_cached(ids, 0, len(ids))
    changed = ids[:10] + [7, 8] + ids[12:]
    for q_end in (12, len(ids)):  # dual, prefix
        part, _ = reference.forward_cached(changed, 8, q_end, cache)
        torch.testing.assert_close(part, reference.forward(changed)[8:q_end], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", CACHE_MODES + ("canvas", "block_causal"))
def test_batch_equals_alone(dream_dirs, mode):
    d = dream_dirs[sorted(DREAM_SHAPES)[0]]
    small = dict(kv_page_size=4, num_kv_pages=40) if mode == "block_causal" else {}
    llm = LLM(d, decode_mode=mode, **small)
    rng = random.Random(5)
    prompts = [[rng.randrange(0, 380) for _ in range(rng.randint(1, 25))] for _ in range(10)]
    strategies = ("low_confidence_static", "maskgit_plus", "confidence_threshold", "entropy", "origin")
    params = [SamplingParams(temperature=rng.choice((0.0, 1.0)), max_tokens=rng.randint(3, 20),
                             block_length=rng.choice((4, 8)), remasking_strategy=strategies[i % len(strategies)],
                             seed=i, logprobs=True)
              for i in range(10)]
    batched = llm.generate(prompts, params, use_tqdm=False)
    for p, sp, b in zip(prompts, params, batched):
        alone = llm.generate([p], sp, use_tqdm=False)[0]
        assert (alone.token_ids, alone.logprobs) == (b.token_ids, b.logprobs)
    if mode == "block_causal":  # a small cache preempts; recompute gives the same tokens
        assert llm.engine.num_preemptions() > 0


@pytest.mark.parametrize("mode", ("canvas", "dual_cache"))
def test_lm_head_in_passes_gives_same_tokens(dream_dirs, mode):
    # Dream's shifted logit rows and its algorithms, sampled over passes of 2 logit rows.
    d = dream_dirs[sorted(DREAM_SHAPES)[0]]
    whole, passes = LLM(d, decode_mode=mode), LLM(d, decode_mode=mode, lm_head_chunk_rows=2)
    rng = random.Random(7)
    prompts = [[rng.randrange(0, 380) for _ in range(rng.randint(1, 25))] for _ in range(6)]
    strategies = ("low_confidence_static", "maskgit_plus", "entropy", "topk_margin", "origin", "random")
    params = [SamplingParams(temperature=rng.choice((0.0, 1.0)), max_tokens=rng.randint(3, 20), block_length=8,
                             remasking_strategy=strategies[i], seed=i, logprobs=True) for i in range(6)]
    for w, p in zip(whole.generate(prompts, params, use_tqdm=False), passes.generate(prompts, params, use_tqdm=False)):
        assert (w.token_ids, w.logprobs, w.finish_reason) == (p.token_ids, p.logprobs, p.finish_reason)


# ------------------------------------------------------------------------- block decode
BLOCK_CASES = list(itertools.product(sorted(DREAM_SHAPES), (4, 8),
                                     ("low_confidence_static", "random", "maskgit_plus", "entropy", "origin"),
                                     ("greedy", "sampled")))


@pytest.mark.parametrize("index,case", list(enumerate(BLOCK_CASES)), ids=["-".join(map(str, c)) for c in BLOCK_CASES])
def test_block_causal_matches_reference(engines, references, index, case):
    shape, block, strategy, sampler = case
    steps_kind = ("equal", "half")[(index // 2) % 2]
    llm = engines[(shape, "block_causal")]
    rng = random.Random(2100 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 20))]
    _check(llm, references[shape], prompt, mode="block_causal", block_length=block,
           denoising_steps=block if steps_kind == "equal" else block // 2,
           temperature=0.0 if sampler == "greedy" else 0.8, alg_temp=0.0 if index % 4 else 0.4,
           max_tokens=rng.randint(3, 20), remasking_strategy=strategy, seed=index)


def test_block_causal_first_position_sees_the_previous_block(dream_dirs, references):
    # The shift: each block's first position is predicted from the last position of the block
    # (or prompt) before it. S = 1 commits every block from one forward: the greedy argmax of the
    # shifted rows under the block-decode mask.
    shape = sorted(DREAM_SHAPES)[0]
    llm = LLM(dream_dirs[shape], decode_mode="block_causal")
    prompt, B = [9, 8, 7, 6, 5], 4
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8, block_length=B, denoising_steps=1,
                                                ignore_eos=True), use_tqdm=False)[0]
    mask = llm.info.mask_token_id
    for k in range(2):
        start = len(prompt) + k * B
        x = prompt + out.token_ids[:k * B] + [mask] * B
        raw = references[shape].forward(x, llada_ref.prompt_block_mask(len(x), len(prompt), B))
        assert out.token_ids[k * B:(k + 1) * B] == raw[start - 1:start + B - 1].argmax(-1).tolist()
    assert out.num_forwards == 2


# ------------------------------------------------------------------------------------ errors
def test_errors(dream_dirs, tmp_path):
    d = dream_dirs[sorted(DREAM_SHAPES)[0]]
    for mode in ("canvas",) + CACHE_MODES + ("block_causal",):
        llm = LLM(d, decode_mode=mode)
        assert llm.info.decode_mode == mode
        with pytest.raises(ValueError, match="cfg_scale > 0 applies to LLaDA in decode_mode 'canvas'"):
            llm.generate([[1, 2]], SamplingParams(cfg_scale=1.0, max_tokens=4), use_tqdm=False)
    with pytest.raises(ValueError, match="decode_mode 'fastest'"):
        LLM(d, decode_mode="fastest")
    # Dream's algorithms stay Dream's
    llada = LLM(write_llada_checkpoint(tmp_path / "llada", seed=1, **LLADA_SHAPES["mha"]), decode_mode="dual_cache")
    with pytest.raises(ValueError, match="Dream's algorithms"):
        llada.generate([[1, 2, 3]], SamplingParams(remasking_strategy="maskgit_plus"), use_tqdm=False)
    # a cached canvas must fit the per-forward budget whole, as in canvas mode
    with pytest.raises(ValueError, match="exceeds max_num_batched_tokens"):
        LLM(d, max_num_batched_tokens=16).generate([[1] * 10], SamplingParams(max_tokens=8, block_length=4),
                                                  use_tqdm=False)


def test_block_causal_commits_on_their_own_when_the_budget_is_small(dream_dirs):
    check_block_decode_with_a_small_budget(dream_dirs[sorted(DREAM_SHAPES)[0]])  # B + 1 rows fit too
