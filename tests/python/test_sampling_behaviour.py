"""Sampled paths: seeded determinism whatever the batch, distributions of the draws, and mixed
per-request parameters."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import sdar as ref
from blockinfer import LLM, SamplingParams

MASK = 383
STRATEGIES = ("sequential", "low_confidence_static", "low_confidence_dynamic", "entropy_bounded",
              "low_confidence", "random", "confidence_threshold", "confidence_factor")


@pytest.fixture(scope="module")
def llm(checkpoints):
    return LLM(checkpoints["gqa"])


def _prompt(i: int, n: int = 9):
    rng = random.Random(i)
    return [rng.randrange(0, MASK) for _ in range(n)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_tokens_alone_in_a_batch_and_last_in_a_queue(checkpoints, llm, strategy):
    target = _prompt(0)
    sp = SamplingParams(temperature=1.0, topp=0.95, max_tokens=24, block_length=8, denoising_steps=4,
                        remasking_strategy=strategy, dynamic_threshold=0.3, seed=424242, logprobs=True)
    alone = llm.generate([target], sp, use_tqdm=False)[0]
    again = llm.generate([target], sp, use_tqdm=False)[0]
    assert again.token_ids == alone.token_ids and again.logprobs == alone.logprobs
    # In a batch of 16 whose other requests use other seeds, lengths and strategies.
    others = [SamplingParams(temperature=0.7, max_tokens=8 + i, block_length=4, seed=i,
                             remasking_strategy=STRATEGIES[i % len(STRATEGIES)]) for i in range(15)]
    batch = llm.generate([_prompt(i + 1) for i in range(15)] + [target], others + [sp], use_tqdm=False)
    assert batch[-1].token_ids == alone.token_ids and batch[-1].logprobs == alone.logprobs
    # Last of 64 queued requests on an engine admitting 4 at a time, with a tiny KV cache.
    small = LLM(checkpoints["gqa"], max_num_seqs=4, kv_page_size=4, num_kv_pages=30)
    queue = small.generate([_prompt(i + 100) for i in range(63)] + [target],
                           [SamplingParams(temperature=1.0, max_tokens=16, seed=i) for i in range(63)] + [sp],
                           use_tqdm=False)
    assert queue[-1].token_ids == alone.token_ids


def test_sampled_tokens_follow_the_filtered_tempered_distribution(checkpoints, llm):
    # Block length 1 and max_tokens 1: the one completion token is drawn from q at position P.
    prompt = _prompt(7, 6)
    T, topk, topp = 0.8, 6, 0.9
    reference = ref.load_sdar(checkpoints["gqa"])
    logits = reference.forward(torch.tensor(prompt + [MASK]), block_length=1)[-1].double()
    p = torch.softmax(logits / T, -1).numpy()
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))[:topk]
    mass, kept, cum = sum(p[i] for i in order), [], 0.0
    for i in order:
        if kept and cum >= topp:
            break
        kept.append(i)
        cum += p[i] / mass
    q = np.zeros_like(p)
    q[kept] = p[kept] / p[kept].sum()
    n = 4000
    outs = llm.generate([prompt] * n, [SamplingParams(temperature=T, topk=topk, topp=topp, max_tokens=1,
                                                      block_length=1, seed=s, ignore_eos=True)
                                       for s in range(n)], use_tqdm=False)
    counts = np.bincount([o.token_ids[0] for o in outs], minlength=len(p))
    assert counts[q == 0].sum() == 0  # nothing outside the filtered set
    for i in kept:
        sd = math.sqrt(q[i] * (1 - q[i]) / n)
        assert abs(counts[i] / n - q[i]) <= 5 * sd + 1e-9, (i, counts[i] / n, q[i])
    assert len(kept) >= 2  # the test must exercise a real draw


def test_random_strategy_picks_positions_uniformly(llm):
    # Block 8, 8 steps (one position per step), greedy tokens: which position is unmasked first
    # depends only on the random scores, which must be uniform over the 8 positions.
    block, n = 8, 1600
    prompt = _prompt(3, 8)  # block-aligned: the first block is 8 masks
    outs = llm.generate([prompt] * n, [SamplingParams(temperature=0.0, max_tokens=block, block_length=block,
                                                      remasking_strategy="random", seed=s, logprobs=True,
                                                      ignore_eos=True) for s in range(n)], use_tqdm=False)
    first = [[lp.step for lp in o.logprobs].index(0) for o in outs]
    counts = np.bincount(first, minlength=block)
    q = 1 / block
    sd = math.sqrt(q * (1 - q) / n)
    assert all(abs(c / n - q) <= 5 * sd for c in counts), counts
    # Each step unmasked exactly one position.
    assert all(sorted(lp.step for lp in o.logprobs) == list(range(block)) for o in outs)


def test_mixed_parameter_batch_equals_each_request_alone(llm):
    rng = random.Random(11)
    prompts, params = [], []
    for i in range(24):
        block = rng.choice((1, 2, 4, 8, 16))
        prompts.append(_prompt(200 + i, rng.randint(1, 30)))
        params.append(SamplingParams(
            temperature=rng.choice((0.0, 0.6, 1.0, 1.5)), topk=rng.choice((0, 10)),
            topp=rng.choice((1.0, 0.9)), max_tokens=rng.randint(1, 30), block_length=block,
            denoising_steps=rng.choice((1, max(1, block // 2), block, 2 * block)),
            remasking_strategy=STRATEGIES[i % len(STRATEGIES)],
            dynamic_threshold=rng.choice((0.3, 0.6, 0.9)), eb_threshold=rng.choice((0.35, 2.0)),
            factor=rng.choice((0.5, 1.0, 3.0)), seed=rng.randrange(2**63), logprobs=i % 2 == 0,
            ignore_eos=i % 3 == 0))
    batched = llm.generate(prompts, params, use_tqdm=False)
    for p, sp, b in zip(prompts, params, batched):
        a = llm.generate([p], sp, use_tqdm=False)[0]
        assert (a.token_ids, a.finish_reason, a.logprobs) == (b.token_ids, b.finish_reason, b.logprobs)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(dynamic_threshold=1.5), "dynamic_threshold"),
    (dict(dynamic_threshold=-0.1), "dynamic_threshold"),
    (dict(eb_threshold=0.0), "eb_threshold"),
    (dict(factor=-1.0), "factor"),
    (dict(factor=0.0), "factor"),
    (dict(denoising_steps=0), "denoising_steps"),
    (dict(block_length=0), "block_length"),
    (dict(remasking_strategy="fastest"), "valid: sequential, low_confidence_static"),
])
def test_bad_policy_parameters(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SamplingParams(**kwargs)
