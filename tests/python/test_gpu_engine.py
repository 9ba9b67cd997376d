"""The engine on a GPU: logits of the float32, bfloat16 and float16 modes against the reference,
CUDA-graph replay against eager launches, seeded determinism, preemption and streaming on the
device. Every test here skips itself, with the
reason, where no GPU is visible; the parity grids (test_parity.py, test_policy_parity.py) also run
on the GPU in float32 mode through their `device` parameter.

Documented tolerances (docs/decoding.md, "GPU numerics"): float32-mode logits within 1e-3 of the
reference (absolute; these logits are O(10)); bfloat16 within 5% of the row's largest |logit|:
bf16 keeps 8 significant bits, the weights themselves are rounded to it, and every layer rounds its
residual stream, attention and MLP outputs once (measured on an H100: up to 2.5%).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import sdar as ref
from blockinfer import LLM, SamplingParams, _C
from conftest import requires_cuda
from fixtures import write_sdar_checkpoint

pytestmark = requires_cuda

PROMPT = [5, 17, 33, 2, 9, 11, 42, 7, 100, 200, 300, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
LONG_PROMPT = [(13 * i + 5) % 380 for i in range(600)]  # > 2 key splits of 256

# Head shapes of the real models, which the tensor-core attention kernel serves in 16-bit types
# (head_dim 64 or 128); the tiny shapes of fixtures.SHAPES take the CUDA-core kernel.
TC_SHAPES = {
    "hd64": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=64, intermediate_size=256, vocab_size=384),
    "hd128": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                  head_dim=128, intermediate_size=384, vocab_size=384),
}


@pytest.fixture(scope="module")
def tc_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tc")
    # (4,096 positions: the default fused-MLP test prefills 2,100 tokens.)
    return {name: write_sdar_checkpoint(root / name, seed=40 + i, max_position_embeddings=4096, **shape)
            for i, (name, shape) in enumerate(TC_SHAPES.items())}


def _check_logits(ckpt, prompt, dtype, block, atol, row_rel):
    llm = LLM(ckpt, device="cuda", dtype=dtype)
    assert llm.info.device == "cuda:0" and llm.info.dtype == dtype
    got = np.from_dlpack(llm.engine.compute_logits(prompt, block))
    want = ref.load_sdar(ckpt).forward(torch.tensor(prompt), block_length=block).double().numpy()
    err = np.abs(got - want)
    row_scale = np.abs(want).max(axis=1, keepdims=True)
    print(f"{ckpt.name} {dtype} B={block} len={len(prompt)}: max |dlogit| {err.max():.3g}, "
          f"max |dlogit| / row max |logit| {(err / row_scale).max():.3g}")
    assert np.all(err <= atol + row_rel * row_scale)


TOLERANCES = [("float32", 1e-3, 0.0), ("bfloat16", 0.0, 0.05), ("float16", 0.0, 0.05)]


@pytest.mark.parametrize("shape", ["mha", "gqa", "gqa4"])
@pytest.mark.parametrize("dtype, atol, row_rel", TOLERANCES)
@pytest.mark.parametrize("block", [1, 4, 16])
def test_logits_match_reference_within_tolerance(checkpoints, shape, dtype, atol, row_rel, block):
    _check_logits(checkpoints[shape], PROMPT, dtype, block, atol, row_rel)


@pytest.mark.parametrize("shape", sorted(TC_SHAPES))
@pytest.mark.parametrize("dtype, atol, row_rel", TOLERANCES)
@pytest.mark.parametrize("block, long", [(4, False), (16, False), (4, True), (7, True)])
def test_tensor_core_attention_logits_match_reference(tc_checkpoints, shape, dtype, atol, row_rel, block, long):
    _check_logits(tc_checkpoints[shape], LONG_PROMPT if long else PROMPT, dtype, block, atol, row_rel)


GRAPH_STRATEGIES = ("low_confidence_static", "low_confidence_dynamic", "entropy_bounded", "random", "sequential")


@pytest.mark.parametrize("shape", ["gqa", "hd128"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda_graph_replay_gives_the_eager_tokens(checkpoints, tc_checkpoints, shape, dtype):
    ckpt = {**checkpoints, **tc_checkpoints}[shape]
    prompts = [[(11 * i + j) % 380 for j in range(1 + (i * 7) % 45)] for i in range(20)]
    params = [SamplingParams(temperature=(0.0, 0.8)[i % 2], max_tokens=12 + 3 * i, seed=i,
                             block_length=(4, 8)[i % 2 if i < 10 else 0], ignore_eos=True,
                             remasking_strategy=GRAPH_STRATEGIES[i % len(GRAPH_STRATEGIES)])
              for i in range(20)]
    eager = LLM(ckpt, device="cuda", dtype=dtype, enforce_eager=True)
    graphed = LLM(ckpt, device="cuda", dtype=dtype)
    want = eager.generate(prompts, params, use_tqdm=False)
    got = graphed.generate(prompts, params, use_tqdm=False)
    # The same batch twice more: most forwards now replay graphs captured in the first pass.
    again = graphed.generate(prompts, params, use_tqdm=False)
    print(f"{shape} {dtype}: {graphed.num_cuda_graphs} graphs, {graphed.num_cuda_graph_replays} replays")
    assert eager.num_cuda_graphs == 0 and eager.num_cuda_graph_replays == 0
    assert graphed.num_cuda_graph_replays > 0
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert [o.token_ids for o in again] == [o.token_ids for o in want]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_shape_is_captured_behind_its_first_eager_forward(checkpoints, tc_checkpoints, dtype):
    # One forward shape met four times: eager with the capture queued behind it, then three
    # replays; all four give the same logits bit for bit.
    for ckpt in (checkpoints["gqa"], tc_checkpoints["hd128"]):
        llm = LLM(ckpt, device="cuda", dtype=dtype)
        counts, logits = [], []
        for _ in range(4):
            logits.append(np.from_dlpack(llm.engine.compute_logits(PROMPT, 4)).copy())
            counts.append((llm.num_cuda_graphs, llm.num_cuda_graph_replays))
        print(f"{ckpt.name} {dtype}: (graphs, replays) after each forward {counts}")
        assert counts == [(1, 0), (1, 1), (1, 2), (1, 3)]
        for got in logits[1:]:
            assert np.array_equal(got, logits[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graphs_past_the_limit_give_way_to_new_shapes(checkpoints, dtype):
    # Two graphs at most: one sequence's decode, then batches of three (other shapes). Each phase
    # cycles through more shapes than the limit. A graph not replayed yet does not give way until
    # it has gone unused for 4 x the limit, so the first shapes captured keep their graphs and the
    # others run eagerly, where graphs evicted before their first replay would never replay; the
    # second phase replays only if the first phase's graphs gave way.
    eager = LLM(checkpoints["gqa"], device="cuda", dtype=dtype, enforce_eager=True)
    graphed = LLM(checkpoints["gqa"], device="cuda", dtype=dtype, max_cuda_graphs=2)
    sp = SamplingParams(temperature=0.0, max_tokens=48, block_length=4, ignore_eos=True)
    phases = [[[1, 2, 3, 4, 5]], [[(5 * i + j) % 380 for j in range(3 + 4 * i)] for i in range(3)]]
    for prompts in phases:
        replays = graphed.num_cuda_graph_replays
        got = graphed.generate(prompts, sp, use_tqdm=False)
        want = eager.generate(prompts, sp, use_tqdm=False)
        assert [o.token_ids for o in got] == [o.token_ids for o in want]
        assert 1 <= graphed.num_cuda_graphs <= 2
        assert graphed.num_cuda_graph_replays > replays
    print(f"{dtype}: {graphed.num_cuda_graph_replays} replays, {graphed.num_cuda_graph_evictions} evictions")
    assert graphed.num_cuda_graph_evictions > 0


_WARMUP_CHILD = """
import json, sys
import numpy as np
from blockinfer import LLM, SamplingParams
llm = LLM(sys.argv[1], device="cuda", dtype=sys.argv[2], num_kv_pages=int(sys.argv[3]) or None)
idle = {"free": llm.num_free_kv_pages, "total": llm.num_kv_pages, "graphs": llm.num_cuda_graphs}
prompt = [(7 * i + 3) % 380 for i in range(40)]
logits = np.from_dlpack(llm.engine.compute_logits(prompt, 4))
params = [SamplingParams(temperature=(0.0, 0.9)[i % 2], seed=i, max_tokens=16, block_length=4, ignore_eos=True)
          for i in range(6)]
outs = llm.generate([prompt[:5 + 3 * i] for i in range(6)], params, use_tqdm=False)
print(json.dumps({"idle": idle, "logits": logits.tolist(), "tokens": [o.token_ids for o in outs]}))
"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("num_kv_pages", [0, 12])
def test_startup_warm_up_leaves_the_engine_idle_and_the_results_alone(checkpoints, dtype, num_kv_pages):
    """A GPU engine runs one forward at its token budget when it starts (BLOCKINFER_WARMUP=0 skips
    it; 12 pages hold fewer tokens than the budget, so the warm-up shrinks to the cache). It
    returns every KV page and captures no graph, and the logits and tokens that follow are the
    bits of an engine that never warmed up. The switch is read when an engine starts; each side
    runs in a child."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    runs = {}
    for value in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _WARMUP_CHILD, str(checkpoints["gqa"]), dtype, str(num_kv_pages)],
                           env=dict(env, BLOCKINFER_WARMUP=value), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-4000:]
        runs[value] = json.loads(r.stdout.strip().splitlines()[-1])
    for value, run in runs.items():
        assert run["idle"]["free"] == run["idle"]["total"] > 0 and run["idle"]["graphs"] == 0, (value, run["idle"])
    on, off = (np.array(runs[v]["logits"], dtype=np.float32) for v in ("1", "0"))
    assert on.shape == off.shape and on.shape[0] > 0
    assert np.array_equal(on, off)
    assert runs["1"]["tokens"] == runs["0"]["tokens"]
    assert all(len(t) == 16 for t in runs["1"]["tokens"])


def test_bf16_greedy_tokens_mostly_agree_with_fp32(checkpoints):
    prompts = [[(7 * i + j) % 380 for j in range(1 + i % 13)] for i in range(16)]
    sp = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    a = LLM(checkpoints["gqa"], device="cuda", dtype="float32").generate(prompts, sp, use_tqdm=False)
    b = LLM(checkpoints["gqa"], device="cuda", dtype="bfloat16").generate(prompts, sp, use_tqdm=False)
    same = sum(x == y for oa, ob in zip(a, b) for x, y in zip(oa.token_ids, ob.token_ids))
    total = sum(len(o.token_ids) for o in a)
    print(f"bf16 vs fp32 greedy token agreement: {same}/{total}")
    assert same >= 0.5 * total  # random tiny models have near-ties; a broken kernel gives ~0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_seeded_sampling_is_deterministic_and_preemption_is_transparent(checkpoints, dtype):
    prompts = [[(3 * i + j) % 380 for j in range(1 + (i * 5) % 40)] for i in range(24)]
    params = [SamplingParams(temperature=1.0, max_tokens=20 + i, seed=i, block_length=(4, 8)[i % 2],
                             remasking_strategy=("low_confidence_static", "random", "entropy_bounded")[i % 3])
              for i in range(24)]
    big = LLM(checkpoints["gqa"], device="cuda", dtype=dtype)
    first = big.generate(prompts, params, use_tqdm=False)
    again = big.generate(prompts, params, use_tqdm=False)
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    small = LLM(checkpoints["gqa"], device="cuda", dtype=dtype, kv_page_size=4, num_kv_pages=48)
    squeezed = small.generate(prompts, params, use_tqdm=False)
    assert small.engine.num_preemptions() > 0
    # Preemption recomputes a sequence's KV inside a different batch. cuBLASLt may pick another
    # algorithm for another batch size, so on the GPU the recomputed KV can differ in the last
    # bits and a near-tie can flip a token; the CPU backend is exactly batch-invariant.
    agree = sum(a.token_ids == b.token_ids for a, b in zip(first, squeezed))
    print(f"{dtype}: {agree}/24 requests identical under preemption")
    assert agree >= 20  # KV corruption would make nearly every request differ
    assert small.num_free_kv_pages == small.num_kv_pages


def test_top_k_top_p_sampling_on_gpu_gives_the_cpu_tokens(checkpoints):
    # Top-k/top-p rows are cut on the device (radix selection); the float32 mode gives the CPU
    # engine's tokens, with filtered, unfiltered and greedy requests in one batch.
    prompts = [[(5 * i + j) % 380 for j in range(3 + i % 9)] for i in range(18)]
    params = [SamplingParams(temperature=(0.0, 0.7, 1.0)[i % 3], max_tokens=16, seed=100 + i, ignore_eos=True,
                             topk=(0, 1, 5, 40)[i % 4], topp=(1.0, 0.9, 0.5)[(i // 4) % 3],
                             block_length=4, remasking_strategy=("low_confidence_static", "random")[i % 2])
              for i in range(18)]
    want = LLM(checkpoints["gqa"], device="cpu").generate(prompts, params, use_tqdm=False)
    got = LLM(checkpoints["gqa"], device="cuda", dtype="float32").generate(prompts, params, use_tqdm=False)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]


def test_streaming_on_gpu_equals_generate(checkpoints):
    llm = LLM(checkpoints["gqa4"], device="cuda")
    prompts = [[1 + i, 2, 3, 4] for i in range(12)]
    sp = SamplingParams(temperature=0.0, max_tokens=17, block_length=4)
    outs = llm.generate(prompts, sp, use_tqdm=False)
    got: dict[int, list[int]] = {}
    for ev in llm.generate_streaming(prompts, sp):
        got.setdefault(ev.index, []).extend(ev.token_ids)
    assert [got[i] for i in range(12)] == [o.token_ids for o in outs]


# The child of the fused-MLP tests below: argv[1] the checkpoint folder, argv[2] "logits" or
# "graphs", argv[3] (graphs) the number of sequences, argv[4] the block length (default 4) and
# argv[5] (logits) the prompt length (default 600).
_OPT_IN_CHILD = r'''
import json
import sys
import numpy as np
import torch
import sdar as ref
from blockinfer import LLM, SamplingParams, _C

ckpt, what = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{ckpt}/config.json"))
serves = _C.ops.fused_silu_mul_block("bfloat16", 0, cfg["intermediate_size"], cfg["hidden_size"]) > 0
print(f"fused kernel serves: {serves}")
block = int(sys.argv[4]) if len(sys.argv) > 4 else 4
long_prompt = [(13 * i + 5) % 380 for i in range(int(sys.argv[5]) if len(sys.argv) > 5 else 600)]
if what == "logits":
    for dtype in ("bfloat16", "float16"):
        got = np.from_dlpack(LLM(ckpt, device="cuda", dtype=dtype).engine.compute_logits(long_prompt, block))
        want = ref.load_sdar(ckpt).forward(torch.tensor(long_prompt), block_length=block).double().numpy()
        rel = (np.abs(got - want) / np.abs(want).max(axis=1, keepdims=True)).max()
        print(f"{dtype}: max |dlogit| / row max |logit| {rel:.3g}")
        assert rel <= 0.05, rel
else:
    prompts = [long_prompt[i % 300:i % 300 + 40 + i % 40] for i in range(int(sys.argv[3]))]
    sp = SamplingParams(temperature=0.0, max_tokens=2 * block, block_length=block, ignore_eos=True)
    want = LLM(ckpt, device="cuda", dtype="bfloat16", enforce_eager=True).generate(prompts, sp, use_tqdm=False)
    graphed = LLM(ckpt, device="cuda", dtype="bfloat16")
    got = graphed.generate(prompts, sp, use_tqdm=False)
    assert graphed.num_cuda_graph_replays > 0
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    print(f"graphs: {graphed.num_cuda_graph_replays} replays, tokens equal to eager")
'''


def _fused_mlp_children(ckpt, env, sequences, block=4, prompt=600):
    """Runs the child in each mode under `env`; a profiled (eager, per-op names) logits child then
    says whether the fused gate_up + SiLU·mul ran, which must be where its process says a fused
    kernel serves (under `env`'s switches)."""
    env = dict(env, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for what in ("logits", "graphs"):
        r = subprocess.run([sys.executable, "-c", _OPT_IN_CHILD, str(ckpt), what, str(sequences), str(block), str(prompt)],
                           env=env, capture_output=True, text=True, timeout=600)
        print(r.stdout)
        assert r.returncode == 0, r.stderr[-4000:]
    r = subprocess.run([sys.executable, "-c", _OPT_IN_CHILD, str(ckpt), "logits", "0", str(block), str(prompt)],
                       env=dict(env, BLOCKINFER_PROFILE="events"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    fused = "gemm_silu_mul" in r.stderr
    print(f"{ckpt.name}: the fused gate_up + SiLU·mul {'ran' if fused else 'did not run'}")
    assert fused == ("fused kernel serves: True" in r.stdout)


@pytest.mark.parametrize("shape", sorted(TC_SHAPES))
def test_opt_in_hopper_mlp_keeps_the_tolerance_and_graph_parity(tc_checkpoints, shape):
    """BLOCKINFER_GEMM_SM90=1 puts the MLP's gate_up into the fused Hopper GEMM's layout, and batches
    of at least 128 rows take it (gate_up with SiLU·mul in its epilogue) where the device serves it
    (sm_90a code, compute capability 9.0; elsewhere the plain path runs and this checks that). The
    switch is read once a process, so each check runs in a child: 16-bit logits of a 600-token
    prefill within the documented tolerance, and graph replay equal to eager over 40 sequences
    (160 rows a decode forward). A profiled child (eager, per-op names) shows which path ran."""
    _fused_mlp_children(tc_checkpoints[shape], dict(os.environ, BLOCKINFER_GEMM_SM90="1"), 40)


@pytest.mark.parametrize("shape", sorted(TC_SHAPES))
def test_default_cutlass_mlp_keeps_the_tolerance_and_graph_parity(tc_checkpoints, shape):
    """By default (no switch) the MLP's gate_up takes CUTLASS's Hopper GEMM with SiLU·mul in its
    epilogue for batches of 512 to 4,096 rows, where it serves (a build with the nvidia-cutlass
    headers, compute capability 9.0); elsewhere the plain path runs and this checks that. Children:
    logits of a 2,100-token prefill within the documented tolerance, and graph replay equal to eager
    over 136 sequences at block length 16 (decode forwards of 2,176 rows and more)."""
    env = {k: v for k, v in os.environ.items() if k not in ("BLOCKINFER_GEMM_SM90", "BLOCKINFER_GEMM_CUTLASS")}
    _fused_mlp_children(tc_checkpoints[shape], env, 136, block=16, prompt=2100)


# The child of the fused-LM-head test below: argv[1] the checkpoint folder, argv[2] the dtype. It
# prints whether the fused LM head serves, then the outputs as JSON on its last line.
_FUSED_HEAD_CHILD = r'''
import json
import sys
from blockinfer import LLM, SamplingParams, _C

ckpt, dtype = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{ckpt}/config.json"))
print(f"fused LM head serves: {_C.ops.lm_head_greedy_serves(dtype, 0, cfg['vocab_size'], cfg['hidden_size'])}")
prompts = [[(11 * i + j) % 380 for j in range(3 + i % 19)] for i in range(24)]
sp = SamplingParams(temperature=0.0, max_tokens=24, block_length=4, ignore_eos=True, logprobs=True)
outs = LLM(ckpt, device="cuda", dtype=dtype).generate(prompts, sp, use_tqdm=False)
print(json.dumps([[o.token_ids, [[lp.logprob, lp.entropy] for lp in o.logprobs]] for o in outs]))
'''


@pytest.mark.parametrize("shape", sorted(TC_SHAPES))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_fused_lm_head_gives_the_unfused_outputs(tc_checkpoints, shape, dtype):
    """Greedy rows of a 16-bit model take the LM head and sampling in one kernel (CUTLASS's GEMM
    reducing each tile of logits in its epilogue) where it serves, from 16 rows a step; the switch
    BLOCKINFER_FUSED_LM_HEAD=0 keeps cuBLASLt's float32 logits and the sampling pass. Children,
    profiled (eager, per-op names): the fused op runs exactly where it serves and the switch is on,
    and both paths give the same tokens and, within 1e-4, the same logprobs and entropies. The two
    GEMMs sum k in their own orders, so a near-tie may flip a token of a random tiny model."""
    env = dict(os.environ, BLOCKINFER_PROFILE="events", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    runs = {}
    for switch in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _FUSED_HEAD_CHILD, str(tc_checkpoints[shape]), dtype],
                           env=dict(env, BLOCKINFER_FUSED_LM_HEAD=switch), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        serves = "fused LM head serves: True" in r.stdout
        ran = "lm_head_greedy" in r.stderr
        print(f"{shape} {dtype} switch {switch}: serves {serves}, fused op ran {ran}")
        assert ran == (serves and switch == "1")
        runs[switch] = json.loads(r.stdout.strip().splitlines()[-1])
    same = [a[0] == b[0] for a, b in zip(runs["1"], runs["0"])]
    diff = max((abs(x - y) for a, b, s in zip(runs["1"], runs["0"], same) if s
                for pa, pb in zip(a[1], b[1]) for x, y in zip(pa, pb)), default=0.0)
    print(f"{shape} {dtype}: {sum(same)}/24 requests identical, largest |logprob or entropy difference| {diff:.2e}")
    assert sum(same) >= 22 and diff <= 1e-4
