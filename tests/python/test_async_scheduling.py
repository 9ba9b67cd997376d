"""Asynchronous scheduling (LLM(async_scheduling=True)): each step's forward is launched before the
host has applied the previous step's decisions, which reach it on the device. Every request must
get the synchronous engine's tokens, logprobs and finish reasons: through stop tokens found after
the next forward is queued, length limits, preemption, a small token budget, strategies that force
synchronous steps, aborts and streaming."""
from __future__ import annotations

import random

import pytest

from blockinfer import LLM, SamplingParams
from conftest import DEVICES
from fixtures import LLADA_SHAPES, SHAPES, write_llada_checkpoint

STATIC = ("low_confidence_static", "sequential", "random", "low_confidence")
OTHER = ("low_confidence_dynamic", "entropy_bounded", "confidence_threshold", "confidence_factor")


def _requests(n, *, stops=None, mixed=False):
    prompts = [[(11 * i + j) % 380 for j in range(1 + (i * 7) % 45)] for i in range(n)]
    params = []
    for i in range(n):
        strategy = OTHER[i % len(OTHER)] if mixed and i % 3 == 2 else STATIC[i % len(STATIC)]
        params.append(SamplingParams(
            temperature=(0.0, 0.8)[i % 2], max_tokens=9 + 3 * i, seed=i, block_length=(4, 8, 2)[i % 3],
            denoising_steps=(None, None, 1)[i % 3] if i % 4 else None, logprobs=True,
            stop_token_ids=stops, remasking_strategy=strategy, dynamic_threshold=0.5))
    return prompts, params


def _key(o):
    return (o.token_ids, o.finish_reason, [lp.step for lp in o.logprobs or []])


def _values(o):
    return [(lp.logprob, lp.entropy) for lp in o.logprobs or []]


def assert_same_outputs(got, want, device):
    """Tokens, finish reasons and each token's step exactly; logprobs and entropies exactly on the
    CPU. On a GPU the asynchronous forwards hold other row counts (a forward queued ahead carries
    every row still masked before the step's selection; a stop found late drops rows), and
    cuBLASLt's float32 GEMMs pick their kernels by row count, so the logits may differ in the
    last bits there, as batching changes them (test_batching)."""
    assert [_key(o) for o in got] == [_key(o) for o in want]
    if device == "cpu":
        assert [_values(o) for o in got] == [_values(o) for o in want]
        return
    diff = max((abs(a - b) for g, w in zip(got, want) for pg, pw in zip(_values(g), _values(w))
                for a, b in zip(pg, pw)), default=0.0)
    print(f"largest |logprob or entropy difference| on {device}: {diff:.2e}")
    assert diff <= 1e-4


def _compare(ckpt, device, prompts, params, **kw):
    want = LLM(ckpt, device=device, async_scheduling=False, **kw).generate(prompts, params, use_tqdm=False)
    llm = LLM(ckpt, device=device, async_scheduling=True, **kw)
    got = llm.generate(prompts, params, use_tqdm=False)
    assert_same_outputs(got, want, device)
    assert llm.num_free_kv_pages == llm.num_kv_pages
    return llm, want


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["plain", "stops", "preemption", "budget", "mixed"])
def test_async_scheduling_gives_the_synchronous_outputs(checkpoints, device, case):
    # "stops": one token in 17 stops, so many requests end on a stop token found while
    # their next forward is already queued. "preemption": a cache of 24 pages of 4 tokens, which
    # the batch outgrows. "budget": 24 positions a forward, so prompts prefill in chunks. "mixed":
    # a third of the requests take strategies whose count per step is not known ahead (their steps
    # run synchronously).
    stops = list(range(0, 384, 17)) if case == "stops" else None
    prompts, params = _requests(16, stops=stops, mixed=case == "mixed")
    kw = {"preemption": {"num_kv_pages": 24, "kv_page_size": 4},
          "budget": {"max_num_batched_tokens": 24}}.get(case, {})
    llm, want = _compare(checkpoints["gqa"], device, prompts, params, **kw)
    ahead = llm.num_forwards_launched_ahead
    print(f"{case} on {device}: {ahead} forwards launched ahead, finish reasons "
          f"{sorted({o.finish_reason for o in want})}, preemptions {llm.engine.num_preemptions()}, "
          f"{llm.num_logit_rows_discarded} logit rows discarded")
    assert ahead > 0
    if case == "stops":
        assert sum(o.finish_reason == "stop" for o in want) >= 4
    if case == "preemption":
        assert llm.engine.num_preemptions() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_async_scheduling_launches_every_steady_forward_ahead(checkpoints, device):
    # One strategy; half the requests end by length halfway. Only the first forward runs
    # synchronously: a request that ends by length leaves the next forward, which is launched
    # ahead without it.
    prompts = [[(5 * i + j) % 380 for j in range(8)] for i in range(6)]
    sp = [SamplingParams(temperature=0.0, max_tokens=(32, 16)[i % 2], block_length=4, ignore_eos=True)
          for i in range(6)]
    llm, want = _compare(checkpoints["gqa"], device, prompts, sp)
    forwards = max(o.num_forwards for o in want)
    print(f"{device}: {llm.num_forwards_launched_ahead} of {forwards} forwards launched ahead")
    assert [len(o.token_ids) for o in want] == [32, 16] * 3
    assert llm.num_forwards_launched_ahead == forwards - 1
    # Each forward launched ahead ran its last layer on the rows the next sampling read: the step
    # in flight fills a known count of each block's positions, and the device picked the rest.
    assert llm.num_logit_rows_discarded == 0
    # The prompts are alike, so every forward holds every request still running; the engine
    # counts the same forwards as the synchronous one (the startup warm-up's not among them).
    sync = LLM(checkpoints["gqa"], device=device, async_scheduling=False)
    sync.generate(prompts, sp, use_tqdm=False)
    assert llm.engine.num_forwards() == sync.engine.num_forwards() == forwards


@pytest.mark.parametrize("device", DEVICES)
def test_async_scheduling_with_a_canvas_model_steps_synchronously(tmp_path, device):
    # LLaDA's canvas modes are not served asynchronously: every step is synchronous, same tokens.
    ckpt = write_llada_checkpoint(tmp_path / "llada", seed=1, **LLADA_SHAPES["mha"])
    prompts = [[3, 4, 5, 6], [7, 8, 9]]
    sp = SamplingParams(temperature=0.0, max_tokens=8, block_length=4)
    for mode in ("canvas", "dual_cache"):
        llm, _ = _compare(ckpt, device, prompts, sp, decode_mode=mode)
        assert llm.num_forwards_launched_ahead == 0


@pytest.mark.parametrize("device", DEVICES)
def test_async_scheduling_abort_and_streaming(checkpoints, device):
    prompts, params = _requests(6)
    want = LLM(checkpoints["gqa"], device=device, async_scheduling=False).generate(prompts, params, use_tqdm=False)
    llm = LLM(checkpoints["gqa"], device=device, async_scheduling=True)
    # Streaming gives each request's tokens in order, ending with the synchronous engine's.
    got = {i: [] for i in range(len(prompts))}
    for event in llm.generate_streaming(prompts, params):
        got[event.index].extend(event.token_ids)
    assert [got[i] for i in range(len(prompts))] == [o.token_ids for o in want]
    # An abort while the request's next forward is in flight: its pages come back, no output for
    # it follows, and the other requests finish as they would have.
    eng = llm.engine
    ids = [eng.add_request(p, sp.to_cpp()) for p, sp in zip(prompts, params)]
    seen = {i: [] for i in ids}
    for _ in range(5):
        for o in eng.step():
            seen[o.request_id].extend(o.new_token_ids)
    assert eng.abort(ids[2])
    while eng.has_unfinished():
        for o in eng.step():
            assert o.request_id != ids[2]
            seen[o.request_id].extend(o.new_token_ids)
    assert [seen[rid] for k, rid in enumerate(ids) if k != 2] == [o.token_ids for k, o in enumerate(want) if k != 2]
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_async_scheduling_must_be_a_bool(checkpoints):
    with pytest.raises(ValueError, match="async_scheduling must be a bool"):
        LLM(checkpoints["gqa"], async_scheduling=1)


@pytest.mark.parametrize("seed", range(8))
def test_async_scheduling_on_random_workloads(checkpoints, seed):
    # Random batches: strategies (mostly fixed-count), blocks of 1-16, steps, stop tokens, EOS on or
    # off, top-k, logprobs; sometimes a small token budget or a small KV cache.
    rng = random.Random(seed)
    n = rng.randint(1, 20)
    prompts = [[rng.randrange(0, 383) for _ in range(rng.randint(1, 50))] for _ in range(n)]
    params = []
    for i in range(n):
        block = rng.choice((1, 2, 4, 8, 16))
        params.append(SamplingParams(
            temperature=rng.choice((0.0, 1.0)), max_tokens=rng.randint(1, 40), block_length=block,
            denoising_steps=rng.choice((block, max(1, block // 2), 1)), seed=100 * seed + i,
            logprobs=rng.random() < 0.5, topk=rng.choice((0, 0, 5)), dynamic_threshold=0.5,
            remasking_strategy=rng.choice(STATIC) if rng.random() < 0.8 else rng.choice(STATIC + OTHER),
            stop_token_ids=[rng.randrange(0, 383) for _ in range(rng.randint(0, 30))],
            ignore_eos=rng.random() < 0.5))
    kw = {}
    if rng.random() < 0.3:
        kw["max_num_batched_tokens"] = rng.choice((16, 24, 64))
    if rng.random() < 0.3:
        kw.update(num_kv_pages=60, kv_page_size=4)
    llm, _ = _compare(checkpoints[rng.choice(sorted(SHAPES))], "cpu", prompts, params, **kw)
    print(f"seed {seed}: {n} requests, {kw}, {llm.num_forwards_launched_ahead} forwards launched ahead")


def test_async_scheduling_is_the_default(checkpoints):
    prompts = [[(5 * i + j) % 380 for j in range(8)] for i in range(3)]
    sp = SamplingParams(temperature=0.0, max_tokens=16, block_length=4, ignore_eos=True)
    on, off = LLM(checkpoints["gqa"]), LLM(checkpoints["gqa"], async_scheduling=False)
    assert [o.token_ids for o in on.generate(prompts, sp, use_tqdm=False)] == \
        [o.token_ids for o in off.generate(prompts, sp, use_tqdm=False)]
    assert on.num_forwards_launched_ahead > 0 and off.num_forwards_launched_ahead == 0
