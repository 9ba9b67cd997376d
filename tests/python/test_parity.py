"""Engine vs the plain PyTorch reference (tests/reference/sdar.py): identical tokens on CPU float32.

The grid: 3 tiny shapes x block lengths 4, 8, 16 x steps = B and B/2 x the three strategies of
this milestone x greedy and seeded sampling = 108 cases, each with its own prompt. Sampled cases
mirror the engine's RNG: the reference draws the same Philox Gumbel noise keyed by
(seed, step in block, position, token), so sampled tokens must match exactly, like greedy ones.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys

import pytest

import sdar as ref
import numpy as np
from blockinfer import LLM, SamplingParams
from conftest import DEVICES

SHAPE_NAMES = ("mha", "gqa", "gqa4")
BLOCKS = (4, 8, 16)
STRATEGIES = ("sequential", "low_confidence_static", "low_confidence_dynamic")
# (temperature, topk, topp): greedy, and sampling plain / top-k / top-p.
SAMPLERS = {"greedy": (0.0, 0, 1.0), "sampled": None}
SAMPLED_VARIANTS = ((1.0, 0, 1.0), (0.8, 20, 1.0), (1.2, 0, 0.9))

CASES = list(itertools.product(SHAPE_NAMES, BLOCKS, ("full", "half"), STRATEGIES, SAMPLERS))
EOS = (381, 382)  # generation_config.json of the fixtures
MASK = 383


@pytest.fixture(scope="module", params=DEVICES)
def engines(request, checkpoints):
    # On a GPU the float32 checkpoints run in the exact float32 mode (cuBLASLt FP32, TF32 off).
    return {name: (LLM(checkpoints[name], device=request.param), ref.load_sdar(checkpoints[name]))
            for name in SHAPE_NAMES}


def case_setup(index: int, block: int, steps_kind: str, sampler: str):
    rng = random.Random(1000 + index)
    prompt = [rng.randrange(0, MASK) for _ in range(rng.randint(1, 3 * block))]
    steps = block if steps_kind == "full" else block // 2
    if sampler == "greedy":
        temperature, topk, topp = SAMPLERS["greedy"]
    else:
        temperature, topk, topp = SAMPLED_VARIANTS[index % len(SAMPLED_VARIANTS)]
    threshold = (0.9, 0.5, 0.3)[index % 3]
    max_tokens = rng.randint(block, 3 * block + 5)
    return prompt, steps, temperature, topk, topp, threshold, max_tokens


def test_grid_size():
    assert len(CASES) >= 100


@pytest.mark.parametrize("index,case", list(enumerate(CASES)), ids=["-".join(map(str, c)) for c in CASES])
def test_engine_matches_reference(engines, index, case):
    shape, block, steps_kind, strategy, sampler = case
    prompt, steps, temperature, topk, topp, threshold, max_tokens = case_setup(index, block, steps_kind, sampler)
    llm, reference = engines[shape]
    seed = 7919 * index + 1
    params = SamplingParams(temperature=temperature, topk=topk, topp=topp, max_tokens=max_tokens,
                            remasking_strategy=strategy, block_length=block, denoising_steps=steps,
                            dynamic_threshold=threshold, seed=seed)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    want, reason = ref.generate(reference, prompt, mask_id=MASK, block_length=block,
                                denoising_steps=steps, remasking_strategy=strategy,
                                temperature=temperature, topk=topk, topp=topp,
                                dynamic_threshold=threshold, max_tokens=max_tokens,
                                stop_token_ids=EOS, seed=seed)
    assert out.token_ids == want
    assert out.finish_reason == reason
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_sampling_is_not_greedy(engines):
    """Guards the sampled half of the grid: sampling must actually change tokens."""
    llm, _ = engines["gqa"]
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    greedy = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True), use_tqdm=False)
    sampled = [llm.generate([prompt], SamplingParams(temperature=1.0, max_tokens=32, seed=s, ignore_eos=True),
                            use_tqdm=False)[0].token_ids for s in range(3)]
    assert all(s != greedy[0].token_ids for s in sampled)
    assert len({tuple(s) for s in sampled}) == 3


# The child of the test below: argv[1] the checkpoint, argv[2] the device; prints its logits of a
# 40-token prompt and its tokens of a small batch as JSON.
_RESIDUAL_CHILD = r"""
import json, sys
import numpy as np
from blockinfer import LLM, SamplingParams
llm = LLM(sys.argv[1], device=sys.argv[2])
prompt = [(7 * i + 3) % 380 for i in range(40)]
logits = np.from_dlpack(llm.engine.compute_logits(prompt, 4))
sp = SamplingParams(temperature=0.0, max_tokens=13, block_length=4, ignore_eos=True)
outs = llm.generate([prompt[:5 + 3 * i] for i in range(6)], sp, use_tqdm=False)
print(json.dumps({"logits": logits.tolist(), "tokens": [o.token_ids for o in outs]}))
"""


@pytest.mark.parametrize("device", DEVICES)
def test_residual_add_in_the_gemm_gives_the_norms_bits(checkpoints, device):
    """By default o_proj and down add their products into the residual stream (the GEMM's
    accumulate); BLOCKINFER_RESIDUAL_GEMM=0 puts the add back into the next norm. In float32 both
    are the same additions: the same logits bit for bit, and the same tokens. The switch is read
    once a process, so each side runs in a child."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    runs = {}
    for value in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _RESIDUAL_CHILD, str(checkpoints["gqa"]), device],
                           env=dict(env, BLOCKINFER_RESIDUAL_GEMM=value), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-4000:]
        runs[value] = json.loads(r.stdout.strip().splitlines()[-1])
    on, off = (np.array(runs[v]["logits"], dtype=np.float32) for v in ("1", "0"))
    assert on.shape == off.shape and on.shape[0] > 0
    print(f"{device}: logits differing {int((on != off).sum())} of {on.size}, max |diff| {np.abs(on - off).max():.3g}")
    assert np.array_equal(on, off)
    assert runs["1"]["tokens"] == runs["0"]["tokens"]
