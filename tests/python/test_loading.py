"""Loading variants give the right model (SEMANTICS §1, §4): weight dtypes, sharded and tied
checkpoints, dummy weights, the resolution order of mask_token_id and block_length, text prompts
through the tokenizer, EOS ids from generation_config.json, stop_token_ids and max_tokens.

Token-level checks compare greedy LLM.generate (ignore_eos=True) with the float32 reference of
tests/reference/sdar.py run with no stop ids.  Edited checkpoints are tmp_path copies.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from safetensors import safe_open

import sdar  # tests/reference, put on sys.path by conftest
from blockinfer import LLM, SamplingParams
from fixtures import SHAPES, write_sdar_checkpoint

MASK = 383  # fixtures' mask id for vocab_size 384
PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [100, 200, 300]]


def _engine_tokens(llm: LLM, prompts, max_tokens=16, **kw) -> list[list[int]]:
    params = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=max_tokens, **kw)
    outs = llm.generate(prompts, params, use_tqdm=False)
    for o in outs:
        assert o.finish_reason == "length" and len(o.token_ids) == max_tokens
    return [o.token_ids for o in outs]


def _ref_tokens(ref, prompts, *, block_length=4, max_tokens=16, mask_id=MASK,
                **kw) -> list[list[int]]:
    return [sdar.generate(ref, p, mask_id=mask_id, block_length=block_length,
                          remasking_strategy="low_confidence_static", temperature=0.0,
                          max_tokens=max_tokens, seed=0, **kw)[0] for p in prompts]


@pytest.fixture(scope="module")
def refs():
    """Reference models, loaded once per checkpoint directory."""
    cache: dict[str, sdar.SDARReference] = {}

    def get(model_dir) -> sdar.SDARReference:
        key = str(model_dir)
        if key not in cache:
            cache[key] = sdar.load_sdar(model_dir)
        return cache[key]

    return get


# ========================================================================================
# Weight formats
# ========================================================================================

@pytest.fixture(scope="module")
def dtype_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The same random weights (seed 1, gqa shape) saved as float32, bfloat16 and float16."""
    root = tmp_path_factory.mktemp("dtypes")
    return {dt: write_sdar_checkpoint(root / dt, seed=1, dtype=dt, **SHAPES["gqa"])
            for dt in ("float32", "bfloat16", "float16")}


@pytest.mark.parametrize("dtype, st_dtype", [("float32", "F32"), ("bfloat16", "BF16"),
                                             ("float16", "F16")])
def test_weight_dtypes_match_reference_on_rounded_weights(dtype_checkpoints, refs, dtype, st_dtype):
    d = dtype_checkpoints[dtype]
    with safe_open(str(d / "model.safetensors"), "pt") as f:  # really stored in that dtype
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == st_dtype
    llm = LLM(d)
    # the reference reads the file and casts to float32: the fp32 model of the rounded weights
    assert _engine_tokens(llm, PROMPTS) == _ref_tokens(refs(d), PROMPTS)


def test_bf16_rounding_changes_the_model(dtype_checkpoints, refs):
    # guards the test above: bf16 rounding must matter for these prompts, or equality with the
    # rounded reference would not show that the engine used the rounded weights
    assert (_ref_tokens(refs(dtype_checkpoints["bfloat16"]), PROMPTS)
            != _ref_tokens(refs(dtype_checkpoints["float32"]), PROMPTS))


def test_sharded_checkpoint_matches_single_file(checkpoints, tmp_path, refs):
    # checkpoints["gqa4"] is SHAPES["gqa4"] with seed 2 (conftest's order)
    sharded = write_sdar_checkpoint(tmp_path / "sharded", seed=2, shards=3, **SHAPES["gqa4"])
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) == 3
    assert not (sharded / "model.safetensors").exists()
    got = _engine_tokens(LLM(sharded), PROMPTS)
    assert got == _engine_tokens(LLM(checkpoints["gqa4"]), PROMPTS)
    assert got == _ref_tokens(refs(checkpoints["gqa4"]), PROMPTS)


def test_tied_embeddings_without_lm_head(tmp_path, refs):
    d = write_sdar_checkpoint(tmp_path / "tied", seed=5, tie_word_embeddings=True, **SHAPES["gqa"])
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    assert _engine_tokens(LLM(d), PROMPTS) == _ref_tokens(refs(d), PROMPTS)


def test_dummy_load_format_needs_only_config(checkpoints, tmp_path):
    d = tmp_path / "dummy"
    d.mkdir()
    shutil.copy(checkpoints["gqa"] / "config.json", d / "config.json")
    llm = LLM(d, load_format="dummy")
    assert llm.info.vocab_size == 384 and llm.info.mask_token_id == MASK
    for max_tokens in (1, 10):
        outs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, ignore_eos=True,
                                                    max_tokens=max_tokens), use_tqdm=False)
        for o in outs:
            assert len(o.token_ids) == max_tokens and o.finish_reason == "length"
            assert all(0 <= t < 384 for t in o.token_ids)
    # without dummy the same directory has no weights
    with pytest.raises(ValueError, match=r"no \*\.safetensors files"):
        LLM(d)


# ========================================================================================
# mask_token_id resolution: argument > config.json > tokenizer > family default > error
# ========================================================================================

def test_mask_id_argument_wins_over_config(checkpoints, refs):
    llm = LLM(checkpoints["gqa"], mask_token_id=100)
    assert llm.info.mask_token_id == 100
    # and it is the id really put at masked positions
    prompts = [[1, 2, 3, 4, 5, 6, 7], [10, 20, 30]]
    want = _ref_tokens(refs(checkpoints["gqa"]), prompts, mask_id=100)
    assert _engine_tokens(llm, prompts) == want
    with pytest.raises(ValueError, match=r"mask token id 100"):
        llm.generate([[1, 100, 2]], SamplingParams(max_tokens=4), use_tqdm=False)


def test_mask_id_argument_wins_over_tokenizer(tokenizer_checkpoint):
    assert LLM(tokenizer_checkpoint, mask_token_id=100).info.mask_token_id == 100


def test_mask_id_config_wins_over_tokenizer(tokenizer_checkpoint, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tokenizer_checkpoint, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["mask_token_id"] = 100
    (d / "config.json").write_text(json.dumps(cfg))
    assert LLM(d).info.mask_token_id == 100


def test_mask_id_from_tokenizer(tokenizer_checkpoint):
    assert "mask_token_id" not in json.loads((tokenizer_checkpoint / "config.json").read_text())
    llm = LLM(tokenizer_checkpoint)
    assert llm.tokenizer.mask_token_id == MASK
    assert llm.info.mask_token_id == MASK


def test_mask_id_family_default_outside_vocab(tmp_path):
    d = write_sdar_checkpoint(tmp_path / "nomask", seed=3, mask_token_id=None, **SHAPES["gqa"])
    with pytest.raises(ValueError, match=r"mask_token_id 151669 is outside the vocabulary of 384"):
        LLM(d)
    assert LLM(d, mask_token_id=MASK).info.mask_token_id == MASK


def test_mask_id_family_default_inside_vocab(checkpoints, tmp_path):
    # a real-size SDAR vocabulary takes the family default; dummy weights keep this cheap
    d = tmp_path / "bigvocab"
    d.mkdir()
    cfg = json.loads((checkpoints["gqa"] / "config.json").read_text())
    cfg["vocab_size"] = 151936
    del cfg["mask_token_id"]
    (d / "config.json").write_text(json.dumps(cfg))
    assert LLM(d, load_format="dummy").info.mask_token_id == 151669


# ========================================================================================
# block_length resolution: argument > config.json block_size > family default (SDAR 4)
# ========================================================================================

@pytest.fixture(scope="module")
def block8_checkpoint(tmp_path_factory) -> Path:
    return write_sdar_checkpoint(tmp_path_factory.mktemp("bs8") / "m", seed=1, block_size=8,
                                 **SHAPES["gqa"])


def test_block_length_family_default(checkpoints, refs):
    llm = LLM(checkpoints["gqa"])
    assert llm.info.block_length == 4
    want = _ref_tokens(refs(checkpoints["gqa"]), PROMPTS, block_length=4)
    assert _engine_tokens(llm, PROMPTS) == want


def test_block_length_from_config(block8_checkpoint, refs):
    llm = LLM(block8_checkpoint)
    assert llm.info.block_length == 8
    assert (_engine_tokens(llm, PROMPTS)
            == _ref_tokens(refs(block8_checkpoint), PROMPTS, block_length=8))


def test_block_length_argument_wins(block8_checkpoint, checkpoints, refs):
    assert LLM(block8_checkpoint, block_length=16).info.block_length == 16
    llm = LLM(checkpoints["gqa"], block_length=8)
    assert llm.info.block_length == 8
    assert (_engine_tokens(llm, PROMPTS)
            == _ref_tokens(refs(checkpoints["gqa"]), PROMPTS, block_length=8))


def test_block_length_sampling_params_overrides_llm(block8_checkpoint, refs):
    llm = LLM(block8_checkpoint)  # LLM's block length 8; the request asks for 4
    assert (_engine_tokens(llm, PROMPTS, block_length=4)
            == _ref_tokens(refs(block8_checkpoint), PROMPTS, block_length=4))


# ========================================================================================
# Text prompts through the tokenizer
# ========================================================================================

@pytest.fixture(scope="module")
def tok_llm(tokenizer_checkpoint) -> LLM:
    return LLM(tokenizer_checkpoint)


def test_text_prompt_output_text(tok_llm):
    prompt = "The capital of France is"
    params = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=12)
    out = tok_llm.generate([prompt], params, use_tqdm=False)[0]
    assert out.prompt == prompt
    assert out.prompt_token_ids == tok_llm.tokenizer.encode(prompt, add_special_tokens=False)
    assert isinstance(out.text, str)
    assert len(out.token_ids) == 12
    assert out.text == tok_llm.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_text_and_token_id_prompts_agree(tok_llm):
    texts = ["The capital of France is", "Hello, world!"]
    ids = [tok_llm.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    params = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=10)
    by_text = tok_llm.generate(texts, params, use_tqdm=False)
    by_ids = tok_llm.generate(ids, params, use_tqdm=False)
    single = tok_llm.generate(texts[0], params, use_tqdm=False)  # a bare str is one prompt
    assert [o.token_ids for o in by_text] == [o.token_ids for o in by_ids]
    assert single[0].token_ids == by_text[0].token_ids
    for o in by_ids:  # id prompts still get decoded text when a tokenizer exists
        assert o.prompt is None
        assert o.text == tok_llm.tokenizer.decode(o.token_ids, skip_special_tokens=True)


def test_no_tokenizer_gives_text_none(checkpoints):
    llm = LLM(checkpoints["gqa"])
    out = llm.generate([[1, 2, 3]], SamplingParams(max_tokens=4), use_tqdm=False)[0]
    assert out.text is None and out.prompt is None


def test_tokenizer_eos_added_to_eos_ids(tokenizer_checkpoint, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tokenizer_checkpoint, d)
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [5]}))
    llm = LLM(d)
    eos = llm.tokenizer.eos_token_id
    assert eos == 382
    assert sorted(llm.info.eos_token_ids) == [5, eos]


# ========================================================================================
# EOS ids (generation_config.json), stop_token_ids, max_tokens
# ========================================================================================

def test_eos_from_config_json_without_generation_config(checkpoints, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(checkpoints["gqa"], d)
    assert LLM(d).info.eos_token_ids == [381, 382]  # generation_config.json's list
    (d / "generation_config.json").unlink()
    assert LLM(d).info.eos_token_ids == [382]  # config.json's eos_token_id


@pytest.fixture(scope="module")
def stop_case(checkpoints, refs):
    """(prompt, stop token, reference completion with ignore_eos) where the stop token is the
    last token of the prompt (in the prompt tail of the first block, so it must not stop there)
    and also appears in the completion, at a position that is not a block's last one (so later
    tokens of its block must be dropped)."""
    ref = refs(checkpoints["gqa"])
    base = [10, 20, 30, 40]
    completion = _ref_tokens(ref, [base], max_tokens=24)[0]
    for tok, _ in Counter(completion).most_common():  # the most repeated tokens first
        prompt = base + [tok]
        comp = _ref_tokens(ref, [prompt], max_tokens=24)[0]
        if tok in comp:
            k = comp.index(tok)
            if (len(prompt) + k + 1) % 4 != 0 and k + 1 < len(comp):
                return prompt, tok, comp
    pytest.fail("no prompt found whose tail token reappears mid-block in its completion")


def _with_eos(src: Path, dst: Path, eos_ids) -> Path:
    shutil.copytree(src, dst)
    gen = json.loads((dst / "generation_config.json").read_text())
    gen["eos_token_id"] = list(eos_ids)
    (dst / "generation_config.json").write_text(json.dumps(gen))
    return dst


def test_generation_config_eos_stops(checkpoints, tmp_path, stop_case, refs):
    prompt, tok, comp = stop_case
    d = _with_eos(checkpoints["gqa"], tmp_path / "eos", [tok])
    llm = LLM(d)
    assert llm.info.eos_token_ids == [tok]
    want = comp[: comp.index(tok) + 1]
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)[0]
    assert out.finish_reason == "stop"
    assert out.token_ids[-1] == tok
    assert out.token_ids == want
    # the reference's own stop rule agrees
    assert sdar.generate(refs(checkpoints["gqa"]), prompt, mask_id=MASK, block_length=4,
                         temperature=0.0, max_tokens=24, stop_token_ids=[tok],
                         seed=0) == (want, "stop")
    # ignore_eos: runs to max_tokens
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True),
                       use_tqdm=False)[0]
    assert out.finish_reason == "length" and out.token_ids == comp


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_stop_token_ids_stop(checkpoints, stop_case, ignore_eos):
    prompt, tok, comp = stop_case
    llm = LLM(checkpoints["gqa"])
    assert tok not in llm.info.eos_token_ids
    params = SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[tok],
                            ignore_eos=ignore_eos)
    out = llm.generate([prompt], params, use_tqdm=False)[0]
    assert out.finish_reason == "stop"
    assert out.token_ids == comp[: comp.index(tok) + 1]


def test_stop_token_in_later_block(checkpoints, stop_case):
    # a stop token (one not in the first completion block) ends the completion inside a later block
    prompt, _, comp = stop_case
    first_block = 4 - len(prompt) % 4
    later = [t for t in comp[first_block:] if t not in comp[:first_block]]
    assert later, comp
    tok = later[0]
    params = SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[tok], ignore_eos=True)
    out = LLM(checkpoints["gqa"]).generate([prompt], params, use_tqdm=False)[0]
    assert out.finish_reason == "stop" and out.token_ids == comp[: comp.index(tok) + 1]


@pytest.mark.parametrize("block_length", [4, 8])
def test_max_tokens_exact(checkpoints, block_length):
    llm = LLM(checkpoints["gqa"], block_length=block_length)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2], [42]]
    longest = _engine_tokens(llm, prompts, max_tokens=17)
    for max_tokens in (1, 3, 5, 17):
        outs = llm.generate(prompts, SamplingParams(temperature=0.0, ignore_eos=True,
                                                    max_tokens=max_tokens), use_tqdm=False)
        for o, full in zip(outs, longest):
            assert len(o.token_ids) == max_tokens
            assert o.finish_reason == "length"
            assert o.token_ids == full[:max_tokens]  # committed blocks do not depend on max_tokens
    assert llm.num_free_kv_pages == llm.num_kv_pages
