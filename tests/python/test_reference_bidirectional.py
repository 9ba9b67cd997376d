"""Tests of the bidirectional references (tests/reference/llada.py, dream.py) and of their
checkpoint fixtures (tests/python/fixtures.py: write_llada_checkpoint, write_dream_checkpoint)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "reference"))

import dream  # noqa: E402
import fixtures  # noqa: E402
import llada  # noqa: E402
import philox  # noqa: E402

MASK = 383  # the fixtures' default mask id for vocab_size 384
LLADA_EOS, LLADA_EOT = 381, 382
DREAM_EOS = 382


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """write_llada_checkpoint / write_dream_checkpoint, once per (family, shape, kwargs)."""
    cache = {}

    def get(family="llada", shape=None, **kw):
        shapes = fixtures.LLADA_SHAPES if family == "llada" else fixtures.DREAM_SHAPES
        shape = shape or next(iter(shapes))
        key = (family, shape, tuple(sorted(kw.items())))
        if key not in cache:
            writer = (fixtures.write_llada_checkpoint if family == "llada"
                      else fixtures.write_dream_checkpoint)
            cache[key] = writer(tmp_path_factory.mktemp(f"{family}_{shape}"),
                                **{**shapes[shape], **kw})
        return cache[key]

    return get


@pytest.fixture(scope="module")
def lref(ckpt):
    return llada.load_llada(ckpt("llada", "mha"))


@pytest.fixture(scope="module")
def dref(ckpt):
    return dream.load_dream(ckpt("dream", "gqa"))


def _prompt(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [int(t) for t in torch.randint(0, 380, (n,), generator=g)]


# ----------------------------------------------------------------------------------------
# Fixtures: the real formats
# ----------------------------------------------------------------------------------------

def test_llada_checkpoint_format(ckpt):
    path = ckpt("llada", "mha")
    cfg = json.loads((path / "config.json").read_text())
    real_path = Path("/work/shared/models/llada-8b/config.json")
    if real_path.exists():
        assert set(cfg) == set(json.loads(real_path.read_text())), "the real LLaDA keys"
    assert cfg["model_type"] == "llada" and cfg["architectures"] == ["LLaDAModelLM"]
    assert cfg["n_kv_heads"] == cfg["n_heads"] and cfg["embedding_size"] == cfg["vocab_size"]
    assert cfg["weight_tying"] is False and cfg["include_qkv_bias"] is False
    ids = (cfg["mask_token_id"], cfg["eos_token_id"], cfg["pad_token_id"])
    assert ids == (MASK, LLADA_EOS, LLADA_EOS)
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [LLADA_EOS, LLADA_EOT]
    w = load_file(str(path / "model.safetensors"))
    d, h, V = 64, 128, 384
    want = {"model.transformer.wte.weight": (V, d), "model.transformer.ln_f.weight": (d,),
            "model.transformer.ff_out.weight": (V, d)}
    for i in range(2):
        p = f"model.transformer.blocks.{i}."
        want.update({p + "attn_norm.weight": (d,), p + "ff_norm.weight": (d,),
                     p + "q_proj.weight": (d, d), p + "k_proj.weight": (d, d),
                     p + "v_proj.weight": (d, d), p + "attn_out.weight": (d, d),
                     p + "ff_proj.weight": (h, d), p + "up_proj.weight": (h, d),
                     p + "ff_out.weight": (d, h)})
    assert {k: tuple(v.shape) for k, v in w.items()} == want
    assert all(v.dtype == torch.float32 for v in w.values())
    head = w["model.transformer.ff_out.weight"]
    assert head[MASK].norm() < 0.1 * head[:MASK].norm(dim=1).mean()  # the mask row is shrunk


def test_llada_checkpoint_options(tmp_path):
    p = fixtures.write_llada_checkpoint(tmp_path / "a", dtype="bfloat16", eot_token_id=None,
                                        mask_token_id=7, eos_token_id=9, n_layers=1)
    assert json.loads((p / "generation_config.json").read_text())["eos_token_id"] == 9  # real form
    cfg = json.loads((p / "config.json").read_text())
    assert (cfg["mask_token_id"], cfg["eos_token_id"], cfg["torch_dtype"]) == (7, 9, "bfloat16")
    assert all(v.dtype == torch.bfloat16 for v in load_file(str(p / "model.safetensors")).values())
    with pytest.raises(ValueError):
        fixtures.write_llada_checkpoint(tmp_path / "b", d_model=30, n_heads=4)


def test_dream_checkpoint_format(ckpt):
    path = ckpt("dream", "gqa")
    cfg = json.loads((path / "config.json").read_text())
    real_path = Path("/work/shared/models/dream-7b/config.json")
    if real_path.exists():
        assert set(cfg) == set(json.loads(real_path.read_text())), "the real Dream keys"
    assert cfg["model_type"] == "Dream" and cfg["architectures"] == ["DreamModel"]
    ids = (cfg["mask_token_id"], cfg["eos_token_id"], cfg["pad_token_id"])
    assert ids == (MASK, DREAM_EOS, DREAM_EOS)
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == DREAM_EOS and gen["mask_token_id"] == MASK
    w = load_file(str(path / "model.safetensors"))
    H, I, V, D = 64, 128, 384, 16
    want = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,),
            "lm_head.weight": (V, H)}
    for i in range(2):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        want.update({p + "input_layernorm.weight": (H,),
                     p + "post_attention_layernorm.weight": (H,),
                     a + "q_proj.weight": (4 * D, H), a + "q_proj.bias": (4 * D,),
                     a + "k_proj.weight": (2 * D, H), a + "k_proj.bias": (2 * D,),
                     a + "v_proj.weight": (2 * D, H), a + "v_proj.bias": (2 * D,),
                     p + "self_attn.o_proj.weight": (H, 4 * D), p + "mlp.gate_proj.weight": (I, H),
                     p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
    assert {k: tuple(v.shape) for k, v in w.items()} == want  # no q_norm / k_norm, no o_proj bias
    head = w["lm_head.weight"]
    assert head[MASK].norm() < 0.1 * head[:MASK].norm(dim=1).mean()


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_fixture_confidences_are_spread(ckpt, family):
    """Greedy confidences of the random models are neither one-hot nor uniform, and the mask
    token is rarely predicted (as the SDAR fixture's)."""
    for shape in (fixtures.LLADA_SHAPES if family == "llada" else fixtures.DREAM_SHAPES):
        path = ckpt(family, shape)
        ref = llada.load_llada(path) if family == "llada" else dream.load_dream(path)
        logits = ref.forward(_prompt(16) + [MASK] * 16)
        c = torch.softmax(logits, -1).max(-1).values
        assert 0.1 < float(c.median()) < 0.6 and float(c.max()) > 0.3 and float(c.min()) < 0.2
        assert float(torch.softmax(logits, -1)[:, MASK].max()) < 0.01


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------

def test_rope_and_rms_norm_against_slow_loops():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 8, generator=g)  # [heads, L, D]
    pos = torch.tensor([0, 1, 4, 9, 100])
    got = llada.rope(x, pos, 500.0)
    want = torch.empty_like(x)
    for h in range(3):
        for l in range(5):
            for j in range(4):  # pair (j, j + D/2) rotates by pos * theta^(-2j/D)
                a = float(pos[l]) * 500.0 ** (-2 * j / 8)
                x1, x2 = float(x[h, l, j]), float(x[h, l, j + 4])
                want[h, l, j] = x1 * math.cos(a) - x2 * math.sin(a)
                want[h, l, j + 4] = x2 * math.cos(a) + x1 * math.sin(a)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    w = torch.randn(8, generator=g)
    got = llada.rms_norm(x, w, 1e-5)
    for h in range(3):
        for l in range(5):
            ms = sum(float(v) ** 2 for v in x[h, l]) / 8
            torch.testing.assert_close(got[h, l], x[h, l] / math.sqrt(ms + 1e-5) * w)


@pytest.mark.parametrize("family,shape", [("llada", s) for s in fixtures.LLADA_SHAPES]
                         + [("dream", s) for s in fixtures.DREAM_SHAPES])
def test_forward_is_bidirectional(ckpt, family, shape):
    path = ckpt(family, shape)
    ref = llada.load_llada(path) if family == "llada" else dream.load_dream(path)
    ids = _prompt(12)
    a = ref.forward(ids)
    ids2 = ids[:-1] + [(ids[-1] + 1) % 380]
    b = ref.forward(ids2)
    assert a.shape == (12, 384)
    # changing the last token changes every earlier row
    assert all(float((a[i] - b[i]).abs().max()) > 1e-4 for i in range(11))


def _transformers_model(family, ref):
    """The same weights in transformers' Llama (LLaDA) or Qwen2 (Dream), eager attention."""
    transformers = pytest.importorskip("transformers")
    c = ref.config
    if family == "dream":
        cfg = transformers.Qwen2Config(
            hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
            num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
            num_key_value_heads=c["num_key_value_heads"], vocab_size=c["vocab_size"],
            rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
            max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False)
        cfg._attn_implementation = "eager"
        model = transformers.Qwen2ForCausalLM(cfg)
        state = dict(ref.w)
    else:
        cfg = transformers.LlamaConfig(
            hidden_size=c["d_model"], intermediate_size=c["mlp_hidden_size"],
            num_hidden_layers=c["n_layers"], num_attention_heads=c["n_heads"],
            num_key_value_heads=c["n_kv_heads"], vocab_size=c["vocab_size"],
            rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
            max_position_embeddings=c["max_sequence_length"], tie_word_embeddings=False,
            attention_bias=False, mlp_bias=False)
        cfg._attn_implementation = "eager"
        model = transformers.LlamaForCausalLM(cfg)
        top = {"model.transformer.wte.weight": "model.embed_tokens.weight",
               "model.transformer.ln_f.weight": "model.norm.weight",
               "model.transformer.ff_out.weight": "lm_head.weight"}
        sub = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
               "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
               "v_proj": "self_attn.v_proj", "attn_out": "self_attn.o_proj",
               "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj", "ff_out": "mlp.down_proj"}
        state = {}
        for name, t in ref.w.items():
            if name in top:
                state[top[name]] = t
            else:  # model.transformer.blocks.{i}.{name}.weight
                i, part = name.split(".")[3], name.split(".")[4]
                state[f"model.layers.{i}.{sub[part]}.weight"] = t
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_forward_matches_transformers(ckpt, family):
    """LLaDA is Llama and Dream is Qwen2 with full attention: transformers' implementations
    with an all-zero additive 4-D mask give the same logits (offline: the configs are built
    here, nothing is downloaded)."""
    shape = "narrow" if family == "llada" else "gqa4"
    path = ckpt(family, shape)
    ref = llada.load_llada(path) if family == "llada" else dream.load_dream(path)
    try:
        model = _transformers_model(family, ref)
    except (ImportError, AttributeError, TypeError) as e:  # an incompatible transformers
        pytest.skip(f"transformers model unavailable: {e}")
    ids = _prompt(9) + [MASK] * 7
    L = len(ids)
    with torch.no_grad():
        no_mask = torch.zeros(1, 1, L, L)  # additive: every position attends every position
        full = model(input_ids=torch.tensor([ids]), attention_mask=no_mask).logits[0]
        causal = model(input_ids=torch.tensor([ids])).logits[0]
    ours = ref.forward(ids)
    torch.testing.assert_close(ours, full, atol=1e-4, rtol=1e-4)
    assert float((ours[:-1] - causal[:-1]).abs().max()) > 1e-2  # and the test can tell


def test_dream_biases_matter(ckpt):
    path = ckpt("dream", "gqa")
    ref, nob = dream.load_dream(path), dream.load_dream(path)
    for k in nob.w:
        if k.endswith(".bias"):
            nob.w[k] = torch.zeros_like(nob.w[k])
    ids = _prompt(10)
    assert float((ref.forward(ids) - nob.forward(ids)).abs().max()) > 0.1


def test_dream_shift(dref):
    ids = _prompt(10)
    raw, shifted = dref.forward(ids), dref.shifted_logits(ids)
    assert torch.equal(shifted[0], raw[0])
    for j in range(1, 10):
        assert torch.equal(shifted[j], raw[j - 1])
    assert not torch.equal(shifted[5], raw[5])


# ----------------------------------------------------------------------------------------
# LLaDA canvas decoding (SEMANTICS §5)
# ----------------------------------------------------------------------------------------

def test_llada_one_step_is_argmax_of_the_canvas(lref):
    """S = 1: the block's single step commits argmax of the full-canvas logits, no shift."""
    prompt = _prompt(5)
    out, reason, steps = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=8,
                                               denoising_steps=1, max_tokens=8, trace=True)
    want = lref.forward(prompt + [MASK] * 8)[5:13].argmax(-1).tolist()
    assert out == want and reason == "length" and steps == [list(range(5, 13))]


def test_llada_blocks_start_at_the_prompt_end_and_forward_the_whole_canvas(lref, monkeypatch):
    prompt, B, S = _prompt(5), 4, 2
    lengths = []
    forward = lref.forward
    monkeypatch.setattr(lref, "forward", lambda ids: lengths.append(len(ids)) or forward(ids))
    out, reason, steps = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=B,
                                               denoising_steps=S, max_tokens=10, trace=True)
    G = 12  # 10 rounded up to a multiple of 4
    assert len(out) == 10 and reason == "length"
    assert lengths == [5 + G] * len(steps) and len(steps) == 3 * S
    for n, chosen in enumerate(steps):  # block k covers [5 + 4k, 9 + 4k); n_t = 2 per step
        k = n // S
        assert len(chosen) == 2 and all(5 + 4 * k <= p < 9 + 4 * k for p in chosen)


def test_llada_low_confidence_ranks_by_untempered_probability(lref):
    prompt, B = _prompt(6), 8
    canvas = prompt + [MASK] * 16
    out, _, steps = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=B,
                                          denoising_steps=4, max_tokens=16, temperature=0.7,
                                          seed=5, trace=True)
    # step 0: c = softmax(l)[x0] with x0 the Gumbel draw of sdar.sample_position_full
    logits = lref.forward(canvas)
    conf = {}
    for pos in range(6, 14):
        z = (logits[pos] / 0.7).numpy().astype(np.float64) + philox.token_gumbel(5, 0, pos, 384)
        x0 = int(np.argmax(z))
        conf[pos] = float(torch.softmax(logits[pos], -1)[x0])
    assert steps[0] == sorted(sorted(conf, key=lambda p: (-conf[p], p))[:2])


@pytest.mark.parametrize("strategy", ["low_confidence", "random", "low_confidence_static",
                                      "confidence_threshold", "entropy_bounded"])
def test_llada_stop_equals_the_official_loop_cut(lref, strategy):
    """The early stop only cuts: the completion with a stop token is the no-stop completion
    up to and including the first occurrence of that token (committed blocks never change)."""
    prompt = _prompt(7, seed=2)
    kw = dict(mask_id=MASK, block_length=4, denoising_steps=3, max_tokens=16,
              remasking_strategy=strategy, temperature=0.8, seed=11)
    full, reason = llada.generate_canvas(lref, prompt, **kw)
    assert len(full) == 16 and reason == "length"
    stop = full[9]
    cut, reason, steps = llada.generate_canvas(lref, prompt, stop_token_ids=[stop], trace=True,
                                               **kw)
    n = full.index(stop)
    assert cut == full[: n + 1] and reason == "stop"
    # ... and it stopped after the block holding the stop token: fewer forwards
    _, _, all_steps = llada.generate_canvas(lref, prompt, trace=True, **kw)
    assert len(steps) <= len(all_steps)
    if n < 12:
        assert len(steps) < len(all_steps)


def test_llada_stop_token_past_max_tokens_is_ignored(lref):
    """max_tokens 5 with B 8: the canvas holds 8 completion positions, but a stop token at
    completion index 5..7 is past max_tokens and does not count."""
    for seed in range(10):
        prompt = _prompt(4, seed=seed)
        full, reason = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=8,
                                             max_tokens=5)
        assert len(full) == 5 and reason == "length"
        # the same canvas (G = 8 either way), so the same tokens, three more of them
        full8, _ = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=8, max_tokens=8)
        assert full8[:5] == full
        tail = [t for t in full8[5:] if t not in full]
        if tail:
            out, reason = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=8,
                                                max_tokens=5, stop_token_ids=[tail[0]])
            assert out == full and reason == "length"
            return
    pytest.fail("no prompt gave a token past max_tokens that is not before it")


def test_llada_prompt_masks_are_never_changed_and_flags_rule(lref):
    prompt = _prompt(6)
    prompt[2] = MASK  # a mask id inside the prompt is a prompt token, not a masked position
    out, _, steps = llada.generate_canvas(lref, prompt, mask_id=MASK, block_length=4,
                                          max_tokens=8, trace=True)
    assert all(p >= 6 for chosen in steps for p in chosen)
    assert sorted(p for chosen in steps for p in chosen) == list(range(6, 14))


def test_llada_seeds(lref):
    prompt = _prompt(5)
    kw = dict(mask_id=MASK, block_length=8, max_tokens=16, temperature=1.0,
              remasking_strategy="random")
    a = llada.generate_canvas(lref, prompt, seed=1, **kw)
    assert a == llada.generate_canvas(lref, prompt, seed=1, **kw)
    assert any(llada.generate_canvas(lref, prompt, seed=s, **kw) != a for s in (2, 3))


def test_llada_rejects_dream_algorithms(lref):
    with pytest.raises(ValueError):
        llada.generate_canvas(lref, [1, 2], mask_id=MASK, block_length=4,
                              remasking_strategy="maskgit_plus")


# ----------------------------------------------------------------------------------------
# Dream: schedule and sampling (SEMANTICS §6)
# ----------------------------------------------------------------------------------------

def test_dream_timesteps_are_torch_linspace():
    for S in list(range(1, 300)) + [511, 512, 1000, 2048]:
        got = np.array(dream.dream_timesteps(S), dtype=np.float32)
        want = torch.linspace(1, 1e-3, S + 1).numpy()
        assert np.array_equal(got, want), S


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16, 32, 64, 100, 256, 512])
def test_dream_schedule_one_step_per_token(n):
    """S equal to the number of masks: the first step unmasks 0, the last 2 (SEMANTICS §6)."""
    assert dream.transfer_schedule(n, n) == [0] + [1] * (n - 2) + [2]


def test_dream_schedule_counts_in_float32():
    # S = 37, step 35, 55 masks: float32 gives int(27.00...) = 27, float64 int(26.99...) = 26
    ts = dream.dream_timesteps(37)
    assert dream.num_transfer_tokens(55, 35, ts) == 27
    assert int(55 * (1 - float(ts[36]) / float(ts[35]))) == 26
    assert dream.num_transfer_tokens(55, 36, ts) == 55  # the last step takes all
    # the product is rounded to float32 too: S = 27, step 24, 112 masks
    ts = dream.dream_timesteps(27)
    frac = dream.transfer_fraction(ts[24], ts[25])
    assert dream.num_transfer_tokens(112, 24, ts) == 37 and int(112 * float(frac)) == 36


def test_dream_schedule_few_steps():
    # 8 masks over 2 steps: int(8 * (1 - t_1 / t_0)) = int(8 * 0.4995) = 3, then the rest
    assert dream.transfer_schedule(8, 2) == [3, 5]
    assert dream.transfer_schedule(5, 1) == [5]


def _row(values, V=8):
    l = torch.full((V,), -30.0)
    l[: len(values)] = torch.tensor(values, dtype=torch.float32)
    return l


def test_dream_filter_order_and_rules():
    lg = np.log
    # top-p keeps a rank while the mass before it is <= top_p (Dream's rule: 0.5 <= 0.5 kept)
    z = np.array([lg(0.5), lg(0.25), lg(0.25)], dtype=np.float32)
    assert dream.dream_filter(z, 0, 0.5).tolist() == [True, True, False]
    # top-p on the full distribution THEN top-k (SDAR's order would keep only the first)
    z = np.array([lg(0.5), lg(0.3), lg(0.2)], dtype=np.float32)
    assert dream.dream_filter(z, 2, 0.55).tolist() == [True, True, False]
    # top-k keeps every tie at the threshold
    z = np.array([1, 1, 1, 0], dtype=np.float32)
    assert dream.dream_filter(z, 2, 1.0).tolist() == [True, True, True, False]
    assert dream.dream_filter(z, 0, 1.0).all()


def test_dream_confidences():
    row = _row([3.0, 2.0, 1.0, 0.5])
    q = torch.softmax(row, -1)
    kw = dict(temperature=0.0, topk=0, topp=1.0, seed=0, step=0, position=0)
    s = dream.sample_position_dream(row, alg="maskgit_plus", **kw)
    assert s.x0 == 0 and s.confidence == float(q[0])
    s = dream.sample_position_dream(row, alg="topk_margin", **kw)
    assert s.confidence == float(np.float32(q[0] - q[1]))
    s = dream.sample_position_dream(row, alg="entropy", **kw)
    qd = q.double()
    assert s.confidence == pytest.approx(float((qd * qd.log()).sum()), rel=1e-6)
    assert s.confidence < 0
    # the filtered q: top-k 2 renormalises over two ids, for T == 0 too (Dream filters anyway)
    s = dream.sample_position_dream(row, alg="maskgit_plus", **{**kw, "topk": 2})
    assert s.confidence == pytest.approx(1 / (1 + math.exp(-1.0)), rel=1e-6)
    s = dream.sample_position_dream(row, alg="entropy", **{**kw, "topk": 2})
    p = 1 / (1 + math.exp(-1.0))
    assert s.confidence == pytest.approx(p * math.log(p) + (1 - p) * math.log(1 - p), rel=1e-5)
    # margin is q_top1 - q_top2 even when x0 is not the top-1 (T > 0)
    flat = _row([1.0, 1.0, 0.9], V=3)
    for seed in range(20):
        s = dream.sample_position_dream(flat, alg="topk_margin",
                                        **{**kw, "temperature": 1.0, "seed": seed})
        qf = torch.softmax(flat, -1)
        assert s.confidence == float(np.float32(qf[0] - qf[1]))


def test_dream_sampling_is_the_philox_gumbel_draw():
    g = torch.Generator().manual_seed(0)
    row = torch.randn(384, generator=g) * 2
    for seed, step, pos in [(1, 0, 5), (7, 3, 19), (2 ** 40, 9, 100)]:
        s = dream.sample_position_dream(row, alg="maskgit_plus", temperature=0.7, topk=20, topp=0.9,
                                        seed=seed, step=step, position=pos)
        z = (row / 0.7).numpy()
        keep = dream.dream_filter(z, 20, 0.9)
        score = z.astype(np.float64) + philox.token_gumbel(seed, step, pos, 384)
        score[~keep] = -np.inf
        assert s.x0 == int(np.argmax(score)) and keep[s.x0]
        q = torch.softmax(torch.from_numpy(np.where(keep, z, -np.inf).astype(np.float32)), -1)
        assert s.confidence == float(q[s.x0])
    # unfiltered and hot: the draw follows the (seed, step, position) key
    draws = []
    for step in range(8):
        s = dream.sample_position_dream(row, alg="maskgit_plus", temperature=3.0, topk=0, topp=1.0,
                                        seed=5, step=step, position=7)
        score = (row / 3.0).numpy().astype(np.float64) + philox.token_gumbel(5, step, 7, 384)
        assert s.x0 == int(np.argmax(score))
        draws.append(s.x0)
    assert len(set(draws)) > 1


def test_position_gumbel_definition():
    w0, _, _, _ = philox.philox4x32((0, 13, 4, 2), philox.seed_key(99))
    assert philox.position_gumbel(99, 4, 13, 2) == float(philox.gumbel(philox.uniform(w0)))
    u = philox.position_uniform(99, 4, 13)  # stream 1: a different draw
    assert philox.position_gumbel(99, 4, 13, 1) == float(philox.gumbel(u))
    assert philox.position_gumbel(99, 4, 13, 2) != philox.position_gumbel(99, 4, 13, 1)


# ----------------------------------------------------------------------------------------
# Dream: canvas decoding
# ----------------------------------------------------------------------------------------

def test_dream_one_step_is_argmax_of_the_shifted_logits(dref):
    prompt = _prompt(5)
    out, reason, steps = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=8,
                                               denoising_steps=1, trace=True)
    raw = dref.forward(prompt + [MASK] * 8)
    assert out == raw[4:12].argmax(-1).tolist()  # position j from row j - 1
    assert reason == "length" and steps == [list(range(5, 13))]


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_steps_follow_the_schedule(dref, alg):
    prompt, N = _prompt(4), 12
    out, reason, steps = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=N,
                                               denoising_steps=N, alg=alg, trace=True)
    assert [len(c) for c in steps] == [0] + [1] * (N - 2) + [2]
    assert sorted(p for c in steps for p in c) == list(range(4, 4 + N))
    assert len(out) == N and reason == "length"


def test_dream_maskgit_takes_the_top_k_by_confidence(dref):
    prompt, N = _prompt(6), 8
    out, _, steps = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=N,
                                          denoising_steps=2, trace=True)
    logits = dref.shifted_logits(prompt + [MASK] * N)
    conf = {p: float(torch.softmax(logits[p], -1).max()) for p in range(6, 14)}
    assert len(steps) == 2 and len(steps[0]) == 3
    assert steps[0] == sorted(sorted(conf, key=lambda p: (-conf[p], p))[:3])
    for p in steps[0]:  # committed with the argmax of that step's shifted row
        assert out[p - 6] == int(logits[p].argmax())


def test_dream_alg_temp(dref):
    prompt, N = _prompt(6), 10
    kw = dict(mask_id=MASK, max_tokens=N, denoising_steps=4, trace=True)
    greedy = dream.generate_canvas(dref, prompt, **kw)
    # deterministic per seed
    a = dream.generate_canvas(dref, prompt, alg_temp=0.5, seed=3, **kw)
    assert a == dream.generate_canvas(dref, prompt, alg_temp=0.5, seed=3, **kw)
    assert [len(c) for c in a[2]] == [len(c) for c in greedy[2]]  # same k per step
    # a different seed draws other positions; a tiny alg_temp is the plain top-k
    assert any(dream.generate_canvas(dref, prompt, alg_temp=0.5, seed=s, **kw)[2] != a[2]
               for s in (4, 5, 6))
    assert dream.generate_canvas(dref, prompt, alg_temp=1e-9, seed=3, **kw) == greedy
    # step 0's draw is Gumbel-top-k of c / alg_temp with stream-2 noise
    canvas = prompt + [MASK] * N
    logits = dref.shifted_logits(canvas)
    c = {p: float(torch.softmax(logits[p], -1).max()) for p in range(6, 6 + N)}
    score = {p: float(np.float32(c[p]) / np.float32(0.5)) + philox.position_gumbel(3, 0, p, 2)
             for p in c}
    k = len(a[2][0])
    assert k > 0 and a[2][0] == sorted(sorted(score, key=lambda p: (-score[p], p))[:k])


def test_dream_origin(dref):
    prompt, N, S = _prompt(5), 10, 5
    out, reason, steps = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=N,
                                               denoising_steps=S, alg="origin", seed=8,
                                               temperature=0.5, trace=True)
    assert len(out) == N and reason == "length"
    assert sorted(p for c in steps for p in c) == list(range(5, 5 + N))
    ts = dream.dream_timesteps(S)
    p0 = float(dream.transfer_fraction(ts[0], ts[1]))
    assert steps[0] == [p for p in range(5, 5 + N) if philox.position_uniform(8, 0, p) < p0]
    # S = 1: the last step transfers everything
    _, _, steps1 = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=N,
                                         denoising_steps=1, alg="origin", trace=True)
    assert steps1 == [list(range(5, 5 + N))]


def test_dream_origin_stops_forwarding_when_nothing_is_masked(dref, monkeypatch):
    """origin can unmask everything before the last step; the remaining steps (which change
    nothing in Dream's loop) are skipped with their forwards."""
    calls = []
    forward = dref.forward
    monkeypatch.setattr(dref, "forward", lambda ids: calls.append(1) or forward(ids))
    early = 0
    for seed in range(4):
        calls.clear()
        # 2 masks over 50 steps: each transfers before the last step with probability ~0.98
        out, _, steps = dream.generate_canvas(dref, _prompt(3), mask_id=MASK, max_tokens=2,
                                              denoising_steps=50, alg="origin", seed=seed,
                                              trace=True)
        assert len(out) == 2 and len(calls) == len(steps) <= 50
        assert sorted(p for c in steps for p in c) == [3, 4] and steps[-1]
        early += len(steps) < 50
    assert early > 0


def test_dream_stop_and_length(dref):
    prompt = _prompt(5, seed=4)
    kw = dict(mask_id=MASK, max_tokens=12, denoising_steps=6, temperature=0.9, seed=2)
    full, reason = dream.generate_canvas(dref, prompt, **kw)
    assert len(full) == 12 and reason == "length"
    stop = full[7]
    cut, reason = dream.generate_canvas(dref, prompt, stop_token_ids=[stop, 10 ** 6], **kw)
    assert cut == full[: full.index(stop) + 1] and reason == "stop"


def test_dream_prompt_masks_are_never_changed(dref):
    prompt = _prompt(6)
    prompt[0] = prompt[3] = MASK
    _, _, steps = dream.generate_canvas(dref, prompt, mask_id=MASK, max_tokens=6,
                                        denoising_steps=6, trace=True)
    assert sorted(p for c in steps for p in c) == list(range(6, 12))


def test_dream_rejects_block_strategies(dref):
    with pytest.raises(ValueError):
        dream.generate_canvas(dref, [1, 2], mask_id=MASK, max_tokens=4, denoising_steps=4,
                              alg="low_confidence")
