"""Continuous batching, preemption and chunked prefill never change a request's tokens, and every
KV page comes back when requests finish or are aborted."""
from __future__ import annotations

import random

import numpy as np
import pytest

from blockinfer import LLM, SamplingParams

MASK = 383


def make_requests(n: int, seed: int = 0, max_prompt: int = 60):
    rng = random.Random(seed)
    prompts, params = [], []
    strategies = ("sequential", "low_confidence_static", "low_confidence_dynamic")
    for i in range(n):
        prompts.append([rng.randrange(0, MASK) for _ in range(rng.randint(1, max_prompt))])
        block = rng.choice((4, 8, 16))
        params.append(SamplingParams(
            temperature=rng.choice((0.0, 1.0)), max_tokens=rng.randint(4, 40), block_length=block,
            denoising_steps=rng.choice((block, block // 2)), remasking_strategy=strategies[i % 3],
            dynamic_threshold=0.5, seed=1234 + i))
    return prompts, params


def alone(llm: LLM, prompts, params):
    return [llm.generate([p], sp, use_tqdm=False)[0] for p, sp in zip(prompts, params)]


def assert_same(batched, single):
    for b, s in zip(batched, single):
        assert (b.token_ids, b.finish_reason) == (s.token_ids, s.finish_reason)


def assert_all_pages_free(llm: LLM):
    assert llm.num_free_kv_pages == llm.num_kv_pages
    assert llm.engine.num_running() == 0 and llm.engine.num_waiting() == 0


def generate_and_check(llm: LLM, requests, reference):
    """Generates the requests as one batch: the reference's tokens, and every page back after."""
    batched = llm.generate(*requests, use_tqdm=False)
    assert_same(batched, reference)
    assert_all_pages_free(llm)
    return batched


@pytest.fixture(scope="module")
def llm(checkpoints):
    return LLM(checkpoints["gqa"])


@pytest.fixture(scope="module")
def requests32():
    return make_requests(32, seed=5)


@pytest.fixture(scope="module")
def reference_outputs(llm, requests32):
    out = alone(llm, *requests32)
    assert_all_pages_free(llm)
    return out


def test_batch_of_32_equals_alone(llm, requests32, reference_outputs):
    batched = generate_and_check(llm, requests32, reference_outputs)
    assert [o.index for o in batched] == list(range(32))


def test_preemption_gives_same_tokens(checkpoints, requests32, reference_outputs):
    # 40 pages of 4 tokens: the 32 requests need far more at once, so the scheduler must preempt
    # and recompute; the largest single request (60 + 40 + 16 positions) still fits.
    small = LLM(checkpoints["gqa"], kv_page_size=4, num_kv_pages=40)
    generate_and_check(small, requests32, reference_outputs)
    assert small.engine.num_preemptions() > 0


def test_chunked_prefill_gives_same_tokens(checkpoints, requests32, reference_outputs):
    # 16 positions per forward: long prompts are prefilled in whole-block chunks over several steps.
    generate_and_check(LLM(checkpoints["gqa"], max_num_batched_tokens=32), requests32, reference_outputs)


def test_lm_head_in_passes_gives_same_tokens(checkpoints, requests32, reference_outputs):
    # 3 logit rows per LM-head pass: every step of the batch samples its rows over many passes
    # (greedy and Gumbel rows, every block strategy), a block's rows split between passes.
    generate_and_check(LLM(checkpoints["gqa"], lm_head_chunk_rows=3), requests32, reference_outputs)
    prompt = requests32[0][0]
    whole = np.from_dlpack(LLM(checkpoints["gqa"]).engine.compute_logits(prompt, 4))
    parts = np.from_dlpack(LLM(checkpoints["gqa"], lm_head_chunk_rows=2).engine.compute_logits(prompt, 4))
    assert whole.shape == (len(prompt), MASK + 1)
    np.testing.assert_array_equal(parts, whole)


def test_max_num_seqs_limits_the_batch(checkpoints, requests32, reference_outputs):
    generate_and_check(LLM(checkpoints["gqa"], max_num_seqs=3), requests32, reference_outputs)


def test_order_of_arrival_does_not_matter(llm, requests32, reference_outputs):
    prompts, params = requests32
    order = list(range(32))
    random.Random(3).shuffle(order)
    batched = llm.generate([prompts[i] for i in order], [params[i] for i in order], use_tqdm=False)
    assert_same(batched, [reference_outputs[i] for i in order])
    assert_all_pages_free(llm)


def test_abort_frees_pages(llm):
    prompts, params = make_requests(4, seed=9)
    ids = [llm.engine.add_request(p, sp.to_cpp()) for p, sp in zip(prompts, params)]
    llm.engine.step()
    assert llm.num_free_kv_pages < llm.num_kv_pages
    for rid in ids:
        assert llm.engine.abort(rid)
    assert not llm.engine.abort(ids[0])  # already gone
    assert not llm.engine.has_unfinished()
    assert_all_pages_free(llm)


def test_fused_commit_saves_one_forward_per_block(llm):
    # Greedy sequential with steps = B: each block takes exactly B forwards, its commit riding on
    # the next block's first forward (SEMANTICS §4 allows it); the reference would need B + 1.
    block, max_tokens = 4, 16
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]  # block-aligned: the first forward prefills 8 and denoises 4
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens, block_length=block,
                                                remasking_strategy="sequential", ignore_eos=True),
                       use_tqdm=False)[0]
    assert out.num_forwards == (max_tokens // block) * block


def test_seed_none_is_reproducible_per_llm_seed(checkpoints):
    prompt = [5, 6, 7]
    sp = SamplingParams(temperature=1.0, max_tokens=24, ignore_eos=True)
    a = LLM(checkpoints["gqa"], seed=1).generate([prompt, prompt], sp, use_tqdm=False)
    b = LLM(checkpoints["gqa"], seed=1).generate([prompt, prompt], sp, use_tqdm=False)
    c = LLM(checkpoints["gqa"], seed=2).generate([prompt], sp, use_tqdm=False)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert a[0].token_ids != a[1].token_ids  # a fresh seed per request
    assert c[0].token_ids != a[0].token_ids
