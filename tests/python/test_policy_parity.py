"""Every block strategy against the reference (tests/reference/sdar.py) over the grid of issue 3:
block lengths 1, 4, 8, 32 x steps 1, B/2, B, 2B x thresholds, greedy (plus seeded sampling for the
strategies whose draws are random by design), with logprobs compared on every case."""
from __future__ import annotations

import itertools
import random

import pytest

import sdar as ref
from blockinfer import LLM, SamplingParams
from conftest import DEVICES

MASK, EOS = 383, (381, 382)
DETERMINISTIC = ("sequential", "low_confidence_static", "low_confidence_dynamic", "entropy_bounded",
                 "low_confidence", "confidence_threshold", "confidence_factor")
BLOCKS = (1, 4, 8, 32)
STEPS = ("one", "half", "equal", "double")
# Threshold settings cycled over the cases: (dynamic_threshold, eb_threshold, factor).
THRESHOLDS = ((0.9, 0.35, 1.0), (0.5, 1.5, 2.0), (0.2, 4.0, 0.5), (0.05, 0.05, 4.0))

CASES = list(itertools.product(DETERMINISTIC, BLOCKS, STEPS)) + \
    [("random", b, s) for b in BLOCKS for s in STEPS]


def steps_for(block: int, kind: str) -> int:
    return {"one": 1, "half": max(1, block // 2), "equal": block, "double": 2 * block}[kind]


@pytest.fixture(scope="module", params=DEVICES)
def models(request, checkpoints):
    return LLM(checkpoints["gqa4"], device=request.param), ref.load_sdar(checkpoints["gqa4"])


def test_grid_covers_every_block_strategy():
    assert {c[0] for c in CASES} == set(ref.BLOCK_STRATEGIES)
    assert len(CASES) == 8 * 4 * 4


@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=["-".join(map(str, c)) for c in CASES])
def test_strategy_matches_reference(models, index, case):
    strategy, block, steps_kind = case
    llm, reference = models
    rng = random.Random(500 + index)
    prompt = [rng.randrange(0, MASK) for _ in range(rng.randint(1, 40))]
    steps = steps_for(block, steps_kind)
    dyn, eb, factor = THRESHOLDS[index % len(THRESHOLDS)]
    # Greedy, except every third case samples (seeded: the reference mirrors the Philox draws).
    temperature, topk, topp = ((0.0, 0, 1.0), (0.0, 0, 1.0), (0.9, 20, 0.95))[index % 3]
    max_tokens = rng.randint(max(1, block // 2), block + 24)
    seed = 31337 + index
    params = SamplingParams(temperature=temperature, topk=topk, topp=topp, max_tokens=max_tokens,
                            remasking_strategy=strategy, block_length=block, denoising_steps=steps,
                            dynamic_threshold=dyn, eb_threshold=eb, factor=factor, seed=seed,
                            logprobs=True)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason, want_lp = ref.generate(
        reference, prompt, mask_id=MASK, block_length=block, denoising_steps=steps,
        remasking_strategy=strategy, temperature=temperature, topk=topk, topp=topp,
        dynamic_threshold=dyn, eb_threshold=eb, factor=factor, max_tokens=max_tokens,
        stop_token_ids=EOS, seed=seed, logprobs=True)
    assert out.token_ids == want
    assert out.finish_reason == reason
    assert [lp.step for lp in out.logprobs] == [s for s, _, _ in want_lp]
    for got, (_, logprob, entropy) in zip(out.logprobs, want_lp):
        assert got.logprob == pytest.approx(logprob, abs=2e-5)
        assert got.entropy == pytest.approx(entropy, abs=2e-5)
        assert got.entropy >= 0.0 and got.logprob <= 0.0
        assert 0 <= got.step < steps
