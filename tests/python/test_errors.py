"""Bad input gets a clear error (SEMANTICS §1): the right exception type, and a message that
names the offending thing.  Three groups: SamplingParams values, requests through
LLM.generate, and LLM construction (model directory, config.json, weights, arguments).

Every edited checkpoint is a tmp_path copy; the session fixtures are never modified.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from blockinfer import LLM, SamplingParams
from fixtures import SHAPES, write_sdar_checkpoint  # tests/python, on sys.path via conftest

MASK = 383   # fixtures' mask id for vocab_size 384
VOCAB = 384
GREEDY = dict(temperature=0.0, ignore_eos=True)


def _gen(llm: LLM, prompts, params=None):
    if params is None:
        params = SamplingParams(max_tokens=8, **GREEDY)
    return llm.generate(prompts, params, use_tqdm=False)


@pytest.fixture(scope="module")
def llm(checkpoints) -> LLM:
    return LLM(checkpoints["gqa"])


def _copy(src: Path, tmp_path: Path, name: str = "m") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _edit_config(model_dir: Path, edit) -> None:
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg)
    path.write_text(json.dumps(cfg, indent=2))


def _edit_weights(model_dir: Path, edit) -> None:
    path = str(model_dir / "model.safetensors")
    weights = load_file(path)
    edit(weights)
    save_file(weights, path, metadata={"format": "pt"})


# ========================================================================================
# SamplingParams values
# ========================================================================================

@pytest.mark.parametrize("kwargs, pattern", [
    pytest.param(dict(temperature=-0.5), r"temperature.*-0\.5", id="temperature<0"),
    pytest.param(dict(temperature=math.nan), r"temperature.*nan", id="temperature=nan"),
    pytest.param(dict(temperature=math.inf), r"temperature", id="temperature=inf"),
    pytest.param(dict(temperature=1e40), r"temperature", id="temperature-overflows-float32"),
    pytest.param(dict(topk=-1), r"topk.*-1", id="topk<0"),
    pytest.param(dict(topp=0.0), r"topp.*\(0, 1\]", id="topp=0"),
    pytest.param(dict(topp=1.5), r"topp.*1\.5", id="topp>1"),
    pytest.param(dict(topp=math.nan), r"topp", id="topp=nan"),
    pytest.param(dict(top_p=0.0), r"topp", id="top_p=0"),
    pytest.param(dict(max_tokens=0), r"max_tokens.*0", id="max_tokens=0"),
    pytest.param(dict(max_tokens=-3), r"max_tokens.*-3", id="max_tokens<0"),
    pytest.param(dict(max_tokens=2**31), r"max_tokens", id="max_tokens>int32"),
    pytest.param(dict(denoising_steps=0), r"denoising_steps.*0", id="denoising_steps=0"),
    pytest.param(dict(block_length=0), r"block_length.*0", id="block_length=0"),
    pytest.param(dict(dynamic_threshold=1.5), r"dynamic_threshold.*1\.5", id="dynamic_threshold>1"),
    pytest.param(dict(dynamic_threshold=-0.1), r"dynamic_threshold", id="dynamic_threshold<0"),
    pytest.param(dict(eb_threshold=0.0), r"eb_threshold", id="eb_threshold=0"),
    pytest.param(dict(factor=0.0), r"factor", id="factor=0"),
    pytest.param(dict(alg_temp=-1.0), r"alg_temp", id="alg_temp<0"),
    pytest.param(dict(cfg_scale=-1.0), r"cfg_scale", id="cfg_scale<0"),
    pytest.param(dict(seed=-1), r"seed", id="seed<0"),
    pytest.param(dict(seed=2**64), r"seed", id="seed>=2**64"),
    pytest.param(dict(stop_token_ids=[-1]), r"stop_token_ids.*-1", id="stop_token_ids<0"),
    pytest.param(dict(stop=[""]), r"stop", id="empty-stop-string"),
])
def test_sampling_params_out_of_range(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    pytest.param(dict(max_tokens=1.5), "max_tokens", id="max_tokens=1.5"),
    pytest.param(dict(max_tokens="8"), "max_tokens", id="max_tokens=str"),
    pytest.param(dict(temperature="hot"), "temperature", id="temperature=str"),
    pytest.param(dict(temperature=True), "temperature", id="temperature=bool"),
    pytest.param(dict(ignore_eos=1), "ignore_eos", id="ignore_eos=1"),
    pytest.param(dict(logprobs="yes"), "logprobs", id="logprobs=str"),
    pytest.param(dict(topk=2.0), "topk", id="topk=float"),
    pytest.param(dict(topk=True), "topk", id="topk=bool"),
    pytest.param(dict(block_length="4"), "block_length", id="block_length=str"),
    pytest.param(dict(denoising_steps=2.0), "denoising_steps", id="denoising_steps=float"),
    pytest.param(dict(seed=1.0), "seed", id="seed=float"),
    pytest.param(dict(remasking_strategy=3), "remasking_strategy", id="strategy=int"),
    pytest.param(dict(stop=[1]), "stop", id="stop=[int]"),
    pytest.param(dict(stop_token_ids=5), "stop_token_ids", id="stop_token_ids=int"),
    pytest.param(dict(stop_token_ids=[1.0]), "stop_token_ids", id="stop_token_ids=[float]"),
])
def test_sampling_params_wrong_type(kwargs, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        SamplingParams(**kwargs)


def test_sampling_params_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match=r"remasking_strategy.*'lowest_confidence'") as info:
        SamplingParams(remasking_strategy="lowest_confidence")
    msg = str(info.value)
    for name in ("sequential", "low_confidence_static", "low_confidence_dynamic"):
        assert name in msg


def test_sampling_params_topk_alias_conflict():
    with pytest.raises(ValueError, match=r"topk.*top_k"):
        SamplingParams(topk=3, top_k=5)
    with pytest.raises(ValueError, match=r"topp.*top_p"):
        SamplingParams(topp=0.7, top_p=0.5)


def test_sampling_params_aliases_accepted():
    assert SamplingParams(top_k=5).topk == 5
    assert SamplingParams(topk=5, top_k=5).topk == 5  # the same value twice is not a conflict
    assert SamplingParams(top_p=0.5).topp == 0.5


def test_cfg_scale_outside_llada_canvas(llm):
    # cfg_scale is a valid SamplingParams value; it applies to LLaDA in canvas mode only.
    with pytest.raises(ValueError, match=r"prompt 0: cfg_scale > 0 applies to LLaDA"):
        _gen(llm, [[1, 2, 3]], SamplingParams(cfg_scale=1.0, max_tokens=4))


@pytest.mark.parametrize("strategy", ["origin", "maskgit_plus", "topk_margin", "entropy"])
def test_dream_algorithm_on_a_block_causal_model(llm, strategy):
    # A valid SamplingParams, but Dream's canvas algorithms do not apply to SDAR.
    p = SamplingParams(remasking_strategy=strategy, max_tokens=4)
    with pytest.raises(ValueError, match=rf"prompt 0: remasking_strategy '{strategy}'.*valid: .*low_confidence_static"):
        _gen(llm, [[1, 2, 3]], p)


def test_params_mutated_after_construction_are_revalidated(llm):
    p = SamplingParams(max_tokens=8, **GREEDY)
    p.temperature = -1.0  # dataclass fields can be reassigned; add_request validates again
    with pytest.raises(ValueError, match=r"prompt 0: temperature"):
        _gen(llm, [[1, 2, 3]], p)
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_params_mutated_to_wrong_type_gives_value_error(llm):
    p = SamplingParams(max_tokens=8, **GREEDY)
    p.max_tokens = 1.5
    with pytest.raises(ValueError, match=r"max_tokens"):
        _gen(llm, [[1, 2, 3]], p)


# ========================================================================================
# Requests through LLM.generate
# ========================================================================================

def test_empty_token_prompt(llm):
    with pytest.raises(ValueError, match=r"prompt 0 is empty"):
        _gen(llm, [[]])
    with pytest.raises(ValueError, match=r"prompt 1 is empty"):
        _gen(llm, [[1, 2], []])


def test_empty_text_prompt(tokenizer_checkpoint):
    llm = LLM(tokenizer_checkpoint)
    with pytest.raises(ValueError, match=r"prompt 0 is empty"):
        _gen(llm, [""])
    with pytest.raises(ValueError, match=r"prompt 0 is empty"):
        _gen(llm, "")


def test_empty_prompt_list_is_an_empty_batch(llm):
    # generate([]) is a batch of no prompts (as in vLLM), not one empty prompt
    assert _gen(llm, []) == []


def test_prompt_longer_than_max_model_len(checkpoints):
    llm = LLM(checkpoints["gqa"], max_model_len=32)
    with pytest.raises(ValueError, match=r"prompt 0: prompt of 40 tokens .*max_model_len 32"):
        _gen(llm, [list(range(40))])
    # a prompt whose first block still fits is served, and stops at max_model_len
    out = _gen(llm, [list(range(30))], SamplingParams(max_tokens=64, **GREEDY))[0]
    assert len(out.token_ids) == 2 and out.finish_reason == "length"


@pytest.mark.parametrize("bad", [VOCAB, -1, VOCAB + 1000])
def test_prompt_token_outside_vocab(llm, bad):
    pattern = rf"prompt 0: prompt token id {bad} at index 2 is outside the vocabulary"
    with pytest.raises(ValueError, match=pattern):
        _gen(llm, [[1, 2, bad, 4]])


def test_prompt_token_beyond_int32(llm):
    with pytest.raises(ValueError, match=r"outside the vocabulary"):
        _gen(llm, [[1, 2, 2**40]])


@pytest.mark.parametrize("bad", [True, 2.0, "7", None])
def test_prompt_token_wrong_type(llm, bad):
    with pytest.raises(ValueError, match=r"prompt 0 must be a string or a list of int token ids"):
        _gen(llm, [[1, bad, 3]])


def test_prompts_wrong_type(llm):
    with pytest.raises(ValueError, match=r"prompts must be"):
        _gen(llm, 5)


@pytest.mark.parametrize("bad", [b"abc", bytearray(b"abc")])
def test_byte_string_prompt_is_not_token_ids(llm, bad):
    # A byte string iterates as ints; it must not be taken for the token ids 97, 98, 99.
    with pytest.raises(ValueError, match=r"prompt 0 must be a string or a list of int token ids"):
        _gen(llm, [bad])
    with pytest.raises(ValueError, match=r"prompts must be a list of strings or of token-id lists, got "):
        _gen(llm, bad)


def test_prompt_contains_mask_id(llm):
    pattern = rf"prompt 0: prompt contains the mask token id {MASK} at index 1"
    with pytest.raises(ValueError, match=pattern):
        _gen(llm, [[1, MASK, 2]])


def test_block_length_larger_than_max_model_len(checkpoints):
    llm = LLM(checkpoints["gqa"], max_model_len=32)
    with pytest.raises(ValueError,
                       match=r"prompt 0: block_length 64 is larger than max_model_len 32"):
        _gen(llm, [[1, 2, 3]], SamplingParams(block_length=64, max_tokens=8, **GREEDY))
    with pytest.raises(ValueError, match=r"block_length 64 .*max_model_len=32"):
        LLM(checkpoints["gqa"], max_model_len=32, block_length=64)


def test_block_length_larger_than_max_num_batched_tokens(checkpoints):
    llm = LLM(checkpoints["gqa"], max_num_batched_tokens=8)
    with pytest.raises(ValueError,
                       match=r"block_length 16 is larger than max_num_batched_tokens 8"):
        _gen(llm, [[1, 2, 3]], SamplingParams(block_length=16, max_tokens=8, **GREEDY))


def test_request_never_fits_kv_cache(checkpoints):
    llm = LLM(checkpoints["gqa"], num_kv_pages=2, kv_page_size=4)
    pattern = r"prompt 0: request needs up to \d+ KV pages .*cache has only 2"
    with pytest.raises(ValueError, match=pattern):
        _gen(llm, [[1, 2, 3]], SamplingParams(max_tokens=64, **GREEDY))
    assert llm.num_free_kv_pages == llm.num_kv_pages == 2
    # a request that fits in 2 pages of 4 still runs
    out = _gen(llm, [[1, 2, 3]], SamplingParams(max_tokens=4, **GREEDY))[0]
    assert len(out.token_ids) == 4


def test_stop_token_id_outside_vocab(llm):
    pattern = rf"prompt 0: stop_token_ids: {VOCAB} is outside the vocabulary"
    with pytest.raises(ValueError, match=pattern):
        _gen(llm, [[1, 2]], SamplingParams(stop_token_ids=[VOCAB], max_tokens=4, **GREEDY))


def test_text_prompt_without_tokenizer(llm):
    with pytest.raises(ValueError, match=r"prompt 0 is text but .* has no tokenizer"):
        _gen(llm, ["hello"])
    with pytest.raises(ValueError, match=r"prompt 1 is text but .* has no tokenizer"):
        _gen(llm, [[1, 2], "hello"])


def test_params_list_wrong_length(llm):
    p = SamplingParams(max_tokens=4, **GREEDY)
    with pytest.raises(ValueError, match=r"got 1 SamplingParams for 2 prompts"):
        _gen(llm, [[1, 2], [3, 4]], [p])
    with pytest.raises(ValueError, match=r"got 3 SamplingParams for 2 prompts"):
        _gen(llm, [[1, 2], [3, 4]], [p, p, p])


def test_params_list_wrong_element(llm):
    p = SamplingParams(max_tokens=4, **GREEDY)
    with pytest.raises(ValueError, match=r"params\[1\] is not a SamplingParams"):
        _gen(llm, [[1, 2], [3, 4]], [p, {"max_tokens": 4}])


@pytest.mark.parametrize("bad_prompt, bad_params, pattern", [
    pytest.param([5, 6, MASK], None, r"prompt 2: prompt contains the mask token id",
                 id="mask-in-prompt"),
    pytest.param([5, 6, VOCAB], None, r"prompt 2: prompt token id 384", id="out-of-vocab"),
    pytest.param([5, 6, 7], dict(max_tokens=10_000), r"prompt 2: request needs up to",
                 id="never-fits"),
    pytest.param([5, 6, 7], dict(block_length=64), r"prompt 2: block_length 64",
                 id="block>max_model_len"),
])
def test_bad_request_in_batch_leaves_engine_clean(checkpoints, bad_prompt, bad_params, pattern):
    llm = LLM(checkpoints["gqa"], max_model_len=48, num_kv_pages=8, kv_page_size=4)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    params = [SamplingParams(max_tokens=8, **GREEDY),
              SamplingParams(temperature=0.8, max_tokens=8, ignore_eos=True, seed=7)]
    before = [o.token_ids for o in _gen(llm, prompts, params)]
    assert llm.num_free_kv_pages == llm.num_kv_pages

    bad = SamplingParams(**{**dict(max_tokens=8, **GREEDY), **(bad_params or {})})
    with pytest.raises(ValueError, match=pattern):
        _gen(llm, prompts + [bad_prompt], params + [bad])
    # nothing queued, nothing running, every page free
    assert llm.num_free_kv_pages == llm.num_kv_pages
    assert not llm.engine.has_unfinished()
    assert llm.engine.num_running() == 0 and llm.engine.num_waiting() == 0

    after = [o.token_ids for o in _gen(llm, prompts, params)]
    assert after == before
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_failed_generate_does_not_advance_unseeded_rng(checkpoints):
    a = LLM(checkpoints["gqa"], seed=3)
    b = LLM(checkpoints["gqa"], seed=3)
    p = SamplingParams(max_tokens=8, ignore_eos=True)  # temperature 1, seed=None
    with pytest.raises(ValueError):
        _gen(b, [[1, 2, 3], [1, 2, MASK]], p)
    assert _gen(a, [[1, 2, 3]], p)[0].token_ids == _gen(b, [[1, 2, 3]], p)[0].token_ids


# ========================================================================================
# LLM construction
# ========================================================================================

def test_missing_model_directory(tmp_path):
    missing = tmp_path / "does-not-exist"
    pattern = rf"model directory '{re.escape(str(missing))}' does not exist"
    with pytest.raises(ValueError, match=pattern):
        LLM(missing)


def test_directory_without_config(tmp_path):
    with pytest.raises(ValueError, match=r"has no config\.json"):
        LLM(tmp_path)


def test_unknown_model_type(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.update(model_type="gpt2"))
    with pytest.raises(ValueError, match=r"unknown model_type 'gpt2'") as info:
        LLM(d)
    assert "sdar" in str(info.value).split("gpt2", 1)[1]  # the supported types are listed


def test_documented_but_unimplemented_model_type(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.update(model_type="sdar_moe"))
    with pytest.raises(NotImplementedError, match=r"sdar_moe"):
        LLM(d)


def test_missing_model_type(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.pop("model_type"))
    with pytest.raises(ValueError, match=r"config\.json: required field 'model_type' is missing"):
        LLM(d)


def test_missing_required_config_field(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.pop("hidden_size"))
    with pytest.raises(ValueError, match=r"config\.json: required field 'hidden_size' is missing"):
        LLM(d)


def test_config_field_wrong_type(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.update(hidden_size="64"))
    with pytest.raises(ValueError, match=r"config\.json: field 'hidden_size' has the wrong type"):
        LLM(d)


@pytest.mark.parametrize("edit, pattern", [
    pytest.param(dict(vocab_size=0), r"vocab_size must be positive", id="vocab_size=0"),
    pytest.param(dict(num_key_value_heads=3), r"num_attention_heads 4 is not a multiple of "
                 r"num_key_value_heads 3", id="heads%kv"),
    pytest.param(dict(hidden_act="gelu"), r"hidden_act \"gelu\" is not supported", id="gelu"),
    pytest.param(dict(head_dim=15), r"head_dim 15 must be even", id="odd-head_dim"),
])
def test_invalid_config_values(checkpoints, tmp_path, edit, pattern):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.update(edit))
    with pytest.raises(ValueError, match=pattern):
        LLM(d)


def test_rope_scaling_not_implemented(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_config(d, lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}))
    with pytest.raises(NotImplementedError, match=r"rope_scaling"):
        LLM(d)


def test_config_not_json(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json"):
        LLM(d)


def test_config_not_an_object(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json"):
        LLM(d)


def test_generation_config_not_json(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "generation_config.json").write_text("{")
    with pytest.raises(ValueError, match=r"generation_config\.json is not valid JSON"):
        LLM(d)


def test_generation_config_eos_outside_vocab(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [VOCAB + 16]}))
    with pytest.raises(ValueError, match=rf"eos_token_id {VOCAB + 16} is outside the vocabulary"):
        LLM(d)


def test_generation_config_eos_wrong_type(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": "</s>"}))
    with pytest.raises(ValueError, match=r"eos_token_id"):
        LLM(d)


def test_missing_weight(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    name = "model.layers.1.mlp.up_proj.weight"
    _edit_weights(d, lambda w: w.pop(name))
    with pytest.raises(ValueError, match=rf"missing tensor '{re.escape(name)}'"):
        LLM(d)


def test_missing_lm_head_without_tied_embeddings(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    _edit_weights(d, lambda w: w.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'lm_head\.weight'"):
        LLM(d)


def test_misshaped_weight(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    name = "model.layers.0.self_attn.k_proj.weight"  # 2 kv heads * 16 = [32, 64]

    def edit(w):
        w[name] = torch.zeros(16, 64)

    _edit_weights(d, edit)
    with pytest.raises(ValueError, match=rf"'{re.escape(name)}' has shape \[16, 64\] .*\[32, 64\]"):
        LLM(d)


def test_unexpected_extra_tensor(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    name = "model.layers.0.self_attn.q_proj.bias"

    def edit(w):
        w[name] = torch.zeros(64)

    _edit_weights(d, edit)
    with pytest.raises(ValueError, match=rf"unexpected tensors: '{re.escape(name)}'"):
        LLM(d)


def test_rotary_inv_freq_is_ignored(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)

    def edit(w):
        w["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)

    _edit_weights(d, edit)
    LLM(d)  # some exporters save it; it is recomputed, not an unexpected tensor


@pytest.mark.parametrize("dtype, pattern", [
    pytest.param(torch.int32, r"tensor 'model\.norm\.weight' has dtype int32", id="int32"),
    pytest.param(torch.float64, r"tensor 'model\.norm\.weight' has unsupported dtype F64",
                 id="float64"),
])
def test_unsupported_weight_dtype(checkpoints, tmp_path, dtype, pattern):
    d = _copy(checkpoints["gqa"], tmp_path)

    def edit(w):
        w["model.norm.weight"] = w["model.norm.weight"].to(dtype)

    _edit_weights(d, edit)
    with pytest.raises(ValueError, match=pattern):
        LLM(d)


def test_decode_mode_on_block_causal_model(checkpoints):
    with pytest.raises(ValueError, match=r"decode_mode .*'sdar' is block-causal"):
        LLM(checkpoints["gqa"], decode_mode="dual_cache")


def test_tensor_parallel_not_implemented(checkpoints):
    with pytest.raises(NotImplementedError, match=r"tensor_parallel_size"):
        LLM(checkpoints["gqa"], tensor_parallel_size=2)


def test_device_cuda_without_a_gpu(checkpoints):
    from blockinfer import _C

    if _C.cuda_device_count() > 0:
        pytest.skip("a GPU is visible: device='cuda' is valid here")
    # Without a GPU (or without the CUDA backend) a CUDA device is a clear error, never a crash.
    with pytest.raises((ValueError, NotImplementedError), match=r"device 'cuda:3'"):
        LLM(checkpoints["gqa"], device="cuda:3")


def test_gpu_dtype_on_the_cpu_backend(checkpoints):
    with pytest.raises(ValueError, match=r"dtype 'bfloat16'.*CPU backend computes in float32"):
        LLM(checkpoints["gqa"], device="cpu", dtype="bfloat16")


def test_device_unknown(checkpoints):
    with pytest.raises(ValueError, match=r"device 'bogus'"):
        LLM(checkpoints["gqa"], device="bogus")


def test_load_format_unknown(checkpoints):
    with pytest.raises(ValueError, match=r"load_format .*'bogus'"):
        LLM(checkpoints["gqa"], load_format="bogus")


def test_dtype_unknown(checkpoints):
    with pytest.raises(ValueError, match=r"dtype 'int8'"):
        LLM(checkpoints["gqa"], dtype="int8")


@pytest.mark.parametrize("kwargs, pattern", [
    pytest.param(dict(mask_token_id=VOCAB), r"mask_token_id 384 is outside the vocabulary",
                 id="mask=vocab"),
    pytest.param(dict(mask_token_id=-1), r"mask_token_id", id="mask<0"),
    pytest.param(dict(max_model_len=0), r"max_model_len", id="max_model_len=0"),
    pytest.param(dict(block_length=0), r"block_length", id="block_length=0"),
    pytest.param(dict(num_kv_pages=0), r"num_kv_pages", id="num_kv_pages=0"),
    pytest.param(dict(kv_page_size=0), r"kv_page_size", id="kv_page_size=0"),
    pytest.param(dict(max_num_seqs=0), r"max_num_seqs", id="max_num_seqs=0"),
    pytest.param(dict(max_num_batched_tokens=0), r"max_num_batched_tokens",
                 id="max_num_batched_tokens=0"),
    pytest.param(dict(gpu_memory_utilization=0.0), r"gpu_memory_utilization", id="gpu_mem=0"),
    pytest.param(dict(kv_cache_memory_bytes=0), r"kv_cache_memory_bytes must be a positive int or None, got 0",
                 id="kv_bytes=0"),
    pytest.param(dict(kv_cache_memory_bytes=1), r"KV cache budget of 1 bytes holds no page", id="kv_bytes=1"),
    pytest.param(dict(kv_cache_memory_bytes=1.5e9), r"kv_cache_memory_bytes must be a positive int",
                 id="kv_bytes=float"),
    pytest.param(dict(kv_cache_memory_bytes=True), r"kv_cache_memory_bytes", id="kv_bytes=bool"),
    pytest.param(dict(kv_cache_memory_bytes="1GiB"), r"kv_cache_memory_bytes", id="kv_bytes=str"),
    pytest.param(dict(enforce_eager="no"), r"enforce_eager must be a bool, got 'no'", id="eager=str"),
    pytest.param(dict(enforce_eager=1), r"enforce_eager must be a bool", id="eager=int"),
    pytest.param(dict(gpu_memory_utilization=True), r"gpu_memory_utilization", id="gpu_mem=bool"),
    pytest.param(dict(device=0), r"device must be a string, got 0", id="device=int"),
    pytest.param(dict(dtype=None), r"dtype must be a string, got None", id="dtype=None"),
    pytest.param(dict(max_model_len=1.5), r"max_model_len", id="max_model_len=float"),
    pytest.param(dict(lm_head_chunk_rows=1), r"lm_head_chunk_rows must be an int >= 2, got 1", id="chunk_rows=1"),
    pytest.param(dict(lm_head_chunk_rows=True), r"lm_head_chunk_rows", id="chunk_rows=bool"),
    pytest.param(dict(lm_head_chunk_rows=64.0), r"lm_head_chunk_rows", id="chunk_rows=float"),
    pytest.param(dict(max_cuda_graphs=0), r"max_cuda_graphs must be a positive int, got 0", id="graphs=0"),
    pytest.param(dict(max_cuda_graphs=8.0), r"max_cuda_graphs", id="graphs=float"),
])
def test_invalid_llm_arguments(checkpoints, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LLM(checkpoints["gqa"], **kwargs)


def test_engine_config_checks_max_cuda_graphs_itself(checkpoints):
    # C++ embedders skip the Python checks: the engine names the bad value too.
    from blockinfer import _C
    cfg = _C.EngineConfig()
    cfg.model_dir = str(checkpoints["gqa"])
    cfg.max_cuda_graphs = 0
    with pytest.raises(ValueError, match=r"max_cuda_graphs must be >= 1, got 0"):
        _C.Engine(cfg)


@pytest.mark.parametrize("value", ["2", "yes", ""])
def test_bad_wide_tiles_override(checkpoints, monkeypatch, value):
    monkeypatch.setenv("BLOCKINFER_ATTENTION_WIDE_TILES", value)
    with pytest.raises(ValueError, match=rf"BLOCKINFER_ATTENTION_WIDE_TILES is '{value}'; it must be 0 or 1"):
        LLM(checkpoints["gqa"])


@pytest.mark.parametrize("value", ["0", "1"])
def test_wide_tiles_override_accepted(checkpoints, monkeypatch, value):
    # The CPU backend has no tiles: the override is checked and changes nothing.
    monkeypatch.setenv("BLOCKINFER_ATTENTION_WIDE_TILES", value)
    assert len(_gen(LLM(checkpoints["gqa"]), [[1, 2, 3]])[0].token_ids) == 8


def test_llm_negative_seed(checkpoints):
    with pytest.raises(ValueError, match=r"seed"):
        LLM(checkpoints["gqa"], seed=-1)


def test_no_safetensors_files(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    os.remove(d / "model.safetensors")
    with pytest.raises(ValueError, match=r"has no \*\.safetensors files"):
        LLM(d)


def test_corrupted_safetensors_header_length(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[:8] = b"\xde\xad\xbe\xef\xde\xad\xbe\xef"  # the header length: garbage
    (d / "model.safetensors").write_bytes(bytes(data))
    pattern = r"model\.safetensors: header length \d+ exceeds the file size"
    with pytest.raises(ValueError, match=pattern):
        LLM(d)


def test_corrupted_safetensors_header_json(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[8:40] = b"\x00garbage\xff" * 4  # the JSON header itself: garbage
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: malformed safetensors header"):
        LLM(d)


def test_truncated_safetensors(checkpoints, tmp_path):
    d = _copy(checkpoints["gqa"], tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    pattern = r"model\.safetensors: tensor '.*' extends past the end of the file"
    with pytest.raises(ValueError, match=pattern):
        LLM(d)


@pytest.mark.parametrize("content", [b"", b"abc"], ids=["0-bytes", "3-bytes"])
def test_tiny_safetensors(checkpoints, tmp_path, content):
    d = _copy(checkpoints["gqa"], tmp_path)
    (d / "model.safetensors").write_bytes(content)
    pattern = r"model\.safetensors is too small to be a safetensors file"
    with pytest.raises(ValueError, match=pattern):
        LLM(d)


def test_sharded_index_names_missing_shard(tmp_path):
    d = write_sdar_checkpoint(tmp_path / "sharded", seed=0, shards=3, **SHAPES["gqa"])
    missing = "model-00002-of-00003.safetensors"
    os.remove(d / missing)
    with pytest.raises(ValueError, match=rf"names shard {re.escape(missing)} which does not exist"):
        LLM(d)
