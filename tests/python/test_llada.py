"""LLaDA on the engine: canvas mode, Fast-dLLM's caches and block decode (SEMANTICS §5) against
tests/reference/llada.py, token for token on CPU float32 (and on a GPU in float32 mode where one is
visible). Dream is in test_dream.py."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

import llada as ref
from blockinfer import LLM, SamplingParams
from conftest import DEVICES
from fixtures import LLADA_SHAPES, check_block_decode_with_a_small_budget, write_llada_checkpoint

STRATEGIES = ("low_confidence", "random", "low_confidence_static", "sequential", "confidence_threshold")
BLOCKS = (4, 8, "gen")   # "gen": one block as long as the generation (LLaDA's single-block setting)
STEPS = ("equal", "half")


@pytest.fixture(scope="module")
def llada_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada")
    return {name: write_llada_checkpoint(root / name, seed=i, **shape)
            for i, (name, shape) in enumerate(LLADA_SHAPES.items())}


@pytest.fixture(scope="module", params=DEVICES)
def engines(request, llada_dirs):
    return {name: (LLM(d, device=request.param, decode_mode="canvas"), ref.load_llada(d))
            for name, d in llada_dirs.items()}


CASES = list(itertools.product(sorted(LLADA_SHAPES), BLOCKS, STEPS, STRATEGIES, ("greedy", "sampled")))


def test_llada_forward_is_bidirectional_and_matches_reference(llada_dirs):
    name = sorted(llada_dirs)[0]
    llm = LLM(llada_dirs[name], decode_mode="canvas")
    ids = [5, 17, 33, 2, 9, 11, 42, 7]
    got = np.from_dlpack(llm.engine.compute_logits(ids, 0))
    want = ref.load_llada(llada_dirs[name]).forward(torch.tensor(ids)).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    changed = np.from_dlpack(llm.engine.compute_logits(ids[:-1] + [8], 0))
    assert np.abs(changed[0] - got[0]).max() > 1e-4  # the first position sees the last


@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=["-".join(map(str, c)) for c in CASES])
def test_canvas_matches_reference(engines, index, case):
    shape, block, steps_kind, strategy, sampler = case
    llm, reference = engines[shape]
    rng = random.Random(900 + index)
    mask = llm.info.mask_token_id
    prompt = [rng.randrange(0, mask - 3) for _ in range(rng.randint(1, 20))]
    max_tokens = rng.randint(4, 24)
    b = (max_tokens + 3) // 4 * 4 if block == "gen" else block
    steps = b if steps_kind == "equal" else max(1, b // 2)
    temperature = 0.0 if sampler == "greedy" else 0.8
    seed = 4242 + index
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, block_length=b,
                            denoising_steps=steps, remasking_strategy=strategy, dynamic_threshold=0.3,
                            seed=seed)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason = ref.generate_canvas(reference, prompt, mask_id=mask, block_length=b, denoising_steps=steps,
                                       remasking_strategy=strategy, temperature=temperature,
                                       dynamic_threshold=0.3, max_tokens=max_tokens,
                                       stop_token_ids=tuple(llm.info.eos_token_ids), seed=seed)
    assert (out.token_ids, out.finish_reason) == (want, reason)
    assert llm.info.decode_mode == "canvas"


@pytest.mark.parametrize("mode", ["canvas", "prefix_cache", "dual_cache"])
def test_canvas_batch_equals_alone(llada_dirs, mode):
    llm = LLM(llada_dirs[sorted(llada_dirs)[0]], decode_mode=mode)
    rng = random.Random(5)
    prompts = [[rng.randrange(0, 380) for _ in range(rng.randint(1, 30))] for _ in range(12)]
    params = [SamplingParams(temperature=rng.choice((0.0, 1.0)), max_tokens=rng.randint(3, 20),
                             block_length=rng.choice((4, 8)), remasking_strategy="low_confidence", seed=i)
              for i in range(12)]
    batched = llm.generate(prompts, params, use_tqdm=False)
    for p, sp, b in zip(prompts, params, batched):
        assert llm.generate([p], sp, use_tqdm=False)[0].token_ids == b.token_ids
    # A canvas reserves all of its pages when admitted, so a small cache limits how many run at
    # once (never preempting): the tokens must not change.
    small = LLM(llada_dirs[sorted(llada_dirs)[0]], kv_page_size=4, num_kv_pages=24, decode_mode=mode)
    stream = small.generate_streaming(prompts, params)
    next(stream)
    assert small.engine.num_waiting() > 0
    stream.close()
    squeezed = small.generate(prompts, params, use_tqdm=False)
    assert small.engine.num_preemptions() == 0
    assert [o.token_ids for o in squeezed] == [o.token_ids for o in batched]


def test_decode_mode_errors(llada_dirs):
    d = llada_dirs[sorted(llada_dirs)[0]]
    assert LLM(d).info.decode_mode == "dual_cache"  # SEMANTICS §5's default
    assert LLM(d, decode_mode="block_causal").info.decode_mode == "block_causal"
    with pytest.raises(ValueError, match="cfg_scale > 0 applies to LLaDA in decode_mode 'canvas'"):
        LLM(d).generate([[1, 2]], SamplingParams(cfg_scale=1.0, max_tokens=4), use_tqdm=False)
    with pytest.raises(ValueError, match="decode_mode 'fastest'"):
        LLM(d, decode_mode="fastest")


@pytest.mark.parametrize("cfg", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("strategy", ["low_confidence", "random"])
def test_cfg_scale_matches_reference(engines, cfg, strategy):
    # LLaDA's classifier-free guidance: a second forward with the prompt masked each step.
    shape = sorted(LLADA_SHAPES)[0]
    llm, reference = engines[shape]
    prompt = [7, 11, 13, 17, 19, 23, 29]
    for temperature in (0.0, 0.7):
        params = SamplingParams(temperature=temperature, max_tokens=12, block_length=4, cfg_scale=cfg,
                                remasking_strategy=strategy, seed=3)
        out = llm.generate([prompt, prompt[:3]], params, use_tqdm=False)
        for p, o in zip([prompt, prompt[:3]], out):
            want, reason = ref.generate_canvas(reference, p, mask_id=llm.info.mask_token_id, block_length=4,
                                               remasking_strategy=strategy, temperature=temperature,
                                               max_tokens=12, stop_token_ids=tuple(llm.info.eos_token_ids),
                                               seed=3, cfg_scale=cfg)
            assert (o.token_ids, o.finish_reason) == (want, reason)
    unguided = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12, block_length=4,
                                                     remasking_strategy=strategy, seed=3), use_tqdm=False)
    assert llm.num_free_kv_pages == llm.num_kv_pages
    assert unguided[0].token_ids  # and guidance must change something on some setting:
    guided = [llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12, block_length=4,
                                                    remasking_strategy=strategy, seed=3, cfg_scale=c),
                           use_tqdm=False)[0].token_ids for c in (0.5, 1.0, 2.0, 4.0)]
    assert any(g != unguided[0].token_ids for g in guided)


@pytest.mark.parametrize("device", DEVICES)
def test_cfg_scale_in_lm_head_passes_matches_reference(llada_dirs, device):
    # Guided rows in passes of 3 logit rows: a pass holds whole (conditional, unconditional) pairs,
    # so a block's 4 guided rows (8 logit rows) are cut across passes and sequences share them.
    d = llada_dirs[sorted(llada_dirs)[0]]
    llm = LLM(d, device=device, decode_mode="canvas", lm_head_chunk_rows=3)
    reference = ref.load_llada(d)
    prompts = [[7, 11, 13, 17, 19, 23, 29], [5, 3], [2, 4, 6, 8]]
    params = [SamplingParams(temperature=t, max_tokens=12, block_length=4, cfg_scale=c, seed=3 + i)
              for i, (t, c) in enumerate([(0.0, 1.0), (0.7, 0.0), (0.7, 2.0)])]
    for p, sp, o in zip(prompts, params, llm.generate(prompts, params, use_tqdm=False)):
        want, reason = ref.generate_canvas(reference, p, mask_id=llm.info.mask_token_id, block_length=4,
                                           remasking_strategy="low_confidence", temperature=sp.temperature,
                                           max_tokens=12, stop_token_ids=tuple(llm.info.eos_token_ids),
                                           seed=sp.seed, cfg_scale=sp.cfg_scale)
        assert (o.token_ids, o.finish_reason) == (want, reason)
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_canvas_longer_than_max_model_len_is_rejected(llada_dirs):
    llm = LLM(llada_dirs[sorted(llada_dirs)[0]], max_model_len=32, decode_mode="canvas")
    with pytest.raises(ValueError, match="exceeds max_model_len"):
        llm.generate([[1] * 20], SamplingParams(max_tokens=16, block_length=8), use_tqdm=False)


# ------------------------------------------------------------------- Fast-dLLM caches (LLaDA)
CACHE_CASES = list(itertools.product(sorted(LLADA_SHAPES), ("prefix_cache", "dual_cache"), (4, 8),
                                     ("low_confidence", "confidence_threshold", "low_confidence_static"),
                                     ("greedy", "sampled")))


@pytest.fixture(scope="module", params=DEVICES)
def cache_engines(request, llada_dirs):
    return {(name, mode): LLM(d, device=request.param, decode_mode=mode)
            for name, d in llada_dirs.items() for mode in ("prefix_cache", "dual_cache")}


@pytest.mark.parametrize("index,case", list(enumerate(CACHE_CASES)), ids=["-".join(map(str, c)) for c in CACHE_CASES])
def test_cache_modes_match_reference(cache_engines, engines, index, case):
    # With and without a threshold (confidence_threshold is Fast-dLLM's threshold rule).
    shape, mode, block, strategy, sampler = case
    llm = cache_engines[(shape, mode)]
    reference = engines[shape][1]
    rng = random.Random(1300 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 20))]
    max_tokens = rng.randint(4, 24)
    temperature = 0.0 if sampler == "greedy" else 0.8
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, block_length=block,
                            remasking_strategy=strategy, dynamic_threshold=0.3, seed=index)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason = ref.generate_canvas(reference, prompt, mask_id=llm.info.mask_token_id, block_length=block,
                                       remasking_strategy=strategy, temperature=temperature, dynamic_threshold=0.3,
                                       max_tokens=max_tokens, stop_token_ids=tuple(llm.info.eos_token_ids),
                                       seed=index, decode_mode=mode)
    assert (out.token_ids, out.finish_reason) == (want, reason)


def test_dual_cache_forwards_only_the_block_after_the_first_step(llada_dirs):
    # Fewer positions per forward is the point of the cache: the same number of forwards, but only
    # the first step of each block forwards the whole canvas.
    d = llada_dirs[sorted(llada_dirs)[0]]
    sp = SamplingParams(temperature=0.0, max_tokens=16, block_length=4, ignore_eos=True,
                        remasking_strategy="low_confidence_static")
    outs = {m: LLM(d, decode_mode=m).generate([[1, 2, 3]], sp, use_tqdm=False)[0] for m in ("canvas", "dual_cache")}
    assert outs["canvas"].num_forwards == outs["dual_cache"].num_forwards == 16


# ------------------------------------------------------------------ block decode (LLaDA)
BLOCK_CASES = list(itertools.product(sorted(LLADA_SHAPES), (4, 8), ("equal", "half"),
                                     ("low_confidence", "low_confidence_static", "random"), ("greedy", "sampled")))


@pytest.mark.parametrize("index,case", list(enumerate(BLOCK_CASES)), ids=["-".join(map(str, c)) for c in BLOCK_CASES])
@pytest.mark.parametrize("device", DEVICES)
def test_block_causal_matches_reference(llada_dirs, index, case, device):
    shape, block, steps_kind, strategy, sampler = case
    llm = LLM(llada_dirs[shape], decode_mode="block_causal", device=device)
    reference = ref.load_llada(llada_dirs[shape])
    rng = random.Random(2100 + index)
    prompt = [rng.randrange(0, 380) for _ in range(rng.randint(1, 20))]
    max_tokens = rng.randint(3, 20)
    steps = block if steps_kind == "equal" else block // 2
    temperature = 0.0 if sampler == "greedy" else 0.8
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, block_length=block,
                            denoising_steps=steps, remasking_strategy=strategy, seed=index)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason = ref.generate_block_causal(reference, prompt, mask_id=llm.info.mask_token_id, block_length=block,
                                             denoising_steps=steps, remasking_strategy=strategy,
                                             temperature=temperature, max_tokens=max_tokens,
                                             stop_token_ids=tuple(llm.info.eos_token_ids), seed=index)
    assert (out.token_ids, out.finish_reason) == (want, reason)


def test_block_causal_batch_equals_alone(llada_dirs):
    llm = LLM(llada_dirs[sorted(llada_dirs)[0]], decode_mode="block_causal", kv_page_size=4, num_kv_pages=40)
    rng = random.Random(8)
    prompts = [[rng.randrange(0, 380) for _ in range(rng.randint(1, 25))] for _ in range(10)]
    params = [SamplingParams(temperature=1.0, max_tokens=rng.randint(3, 20), block_length=4, seed=i)
              for i in range(10)]
    batched = llm.generate(prompts, params, use_tqdm=False)
    alone = [llm.generate([p], sp, use_tqdm=False)[0] for p, sp in zip(prompts, params)]
    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]
    assert llm.engine.num_preemptions() > 0


def test_block_causal_commits_on_their_own_when_the_budget_is_small(llada_dirs):
    check_block_decode_with_a_small_budget(llada_dirs[sorted(llada_dirs)[0]])
