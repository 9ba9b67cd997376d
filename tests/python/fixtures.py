"""Tiny SDAR checkpoints in the real Hugging Face layout (config.json, generation_config.json,
safetensors weights with the real tensor names, optionally a tokenizer), for tests.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from blockinfer.tiny import write_tokenizer  # noqa: F401  (re-exported for the tests)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Tiny shapes for tests; all run the reference generate of 32 tokens in well under a second.
SHAPES = {
    # multi-head attention: heads == kv heads
    "mha": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, head_dim=16, intermediate_size=128, vocab_size=384),
    # grouped-query attention: 4 query heads on 2 kv heads
    "gqa": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=384),
    # 4 query heads per kv head, head_dim 8 (heads * head_dim != hidden), 3 layers
    "gqa4": dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=8, intermediate_size=96, vocab_size=384),
}

SPECIAL_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|MASK|>")


def _random_weights(cfg: dict, *, seed: int, init_std: float, tie: bool,
                    mask_token_id: int) -> dict[str, torch.Tensor]:
    """Random float32 weights with the real SDAR tensor names.

    Linear weights are N(0, (init_std * gain)^2 / fan_in) so every sublayer output has an RMS
    of about init_std * gain; norm weights are 1 + N(0, 0.1^2).  The embedding has RMS 1 and
    the LM head is scaled so logits have a standard deviation of about 2.5 * init_std, which
    keeps a random model's greedy confidences spread (not one-hot, not uniform).
    """
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    def linear(out_f, in_f, gain=1.0):
        return torch.randn(out_f, in_f, generator=g) * (init_std * gain / math.sqrt(in_f))

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_proj.weight"] = linear(nh * D, H)
        w[p + "self_attn.k_proj.weight"] = linear(nkv * D, H)
        w[p + "self_attn.v_proj.weight"] = linear(nkv * D, H, gain=2.0)
        w[p + "self_attn.o_proj.weight"] = linear(H, nh * D, gain=2.0)
        w[p + "self_attn.q_norm.weight"] = norm(D) * 1.5  # sharper attention patterns
        w[p + "self_attn.k_norm.weight"] = norm(D) * 1.5
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "mlp.gate_proj.weight"] = linear(I, H, gain=1.5)
        w[p + "mlp.up_proj.weight"] = linear(I, H)
        w[p + "mlp.down_proj.weight"] = linear(H, I)
    w["model.norm.weight"] = norm(H)
    if tie:
        # the head is the embedding: scale the shared matrix so logits are spread
        w["model.embed_tokens.weight"] *= 2.5 * init_std / math.sqrt(H)
        head = w["model.embed_tokens.weight"]
    else:
        head = w["lm_head.weight"] = linear(V, H, gain=2.5)
    # A trained model practically never predicts the mask token; shrink its head row so its
    # logit stays near 0 (probability ~1e-4 instead of ~1/V) and tests rarely commit it.
    head[mask_token_id] *= 0.05
    return w


_DEFAULT = object()


def write_sdar_checkpoint(path, *, hidden_size: int = 64, num_hidden_layers: int = 2,
                          num_attention_heads: int = 4, num_key_value_heads: int = 2,
                          head_dim: int = 16, intermediate_size: int = 128,
                          vocab_size: int = 384, dtype: str = "float32",
                          tie_word_embeddings: bool = False, seed: int = 0, shards: int = 1,
                          mask_token_id=_DEFAULT, eos_token_ids=None, block_size=None,
                          with_tokenizer: bool = False, rope_theta: float = 10000.0,
                          rms_norm_eps: float = 1e-6, max_position_embeddings: int = 2048,
                          init_std: float = 1.0) -> Path:
    """Write a random SDAR checkpoint to `path` (created) and return it as a Path.

    mask_token_id: default vocab_size - 1; None leaves it out of config.json (the tokenizer,
    if written, still puts <|MASK|> at vocab_size - 1).  eos_token_ids: default
    (vocab_size - 3, vocab_size - 2) = (<|im_end|>, <|endoftext|>), as SDAR's
    generation_config.json lists [151645, 151643].  block_size goes to config.json when given.
    init_std scales all random weights (1.0 gives spread greedy confidences).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {sorted(DTYPES)}")
    if num_attention_heads % num_key_value_heads:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mask_in_config = mask_token_id is not None
    if mask_token_id is _DEFAULT or mask_token_id is None:
        mask_token_id = vocab_size - 1
    if eos_token_ids is None:
        eos_token_ids = (vocab_size - 3, vocab_size - 2)
    eos_token_ids = [int(e) for e in eos_token_ids]

    config = {
        "architectures": ["SDARForCausalLM"],
        "model_type": "sdar",
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "head_dim": head_dim,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "rope_theta": rope_theta,
        "rms_norm_eps": rms_norm_eps,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "rope_scaling": None,
        "bos_token_id": eos_token_ids[-1],
        "eos_token_id": eos_token_ids[-1],
        "torch_dtype": dtype,
    }
    if mask_in_config:
        config["mask_token_id"] = int(mask_token_id)
    if block_size is not None:
        config["block_size"] = int(block_size)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    gen = {"eos_token_id": eos_token_ids, "pad_token_id": eos_token_ids[-1]}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))

    weights = _random_weights(config, seed=seed, init_std=init_std, tie=tie_word_embeddings,
                             mask_token_id=mask_token_id)
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in weights.items()}
    meta = {"format": "pt"}
    if shards <= 1:
        save_file(weights, str(path / "model.safetensors"), metadata=meta)
    else:
        names = list(weights)
        per = math.ceil(len(names) / shards)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: weights[n] for n in names[s * per:(s + 1) * per]}
            save_file(part, str(path / fname), metadata=meta)
            weight_map.update({n: fname for n in part})
        total = sum(t.numel() * t.element_size() for t in weights.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    if with_tokenizer:
        write_tokenizer(path, vocab_size=vocab_size, mask_token_id=mask_token_id,
                        eos_token_ids=eos_token_ids)
    return path


# ----------------------------------------------------------------------------------------
# Bidirectional models: LLaDA and Dream (SEMANTICS §5, §6)
# ----------------------------------------------------------------------------------------

# Tiny LLaDA shapes: multi-head attention only (LLaDA has n_kv_heads == n_heads).
LLADA_SHAPES = {
    "mha": dict(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=128, vocab_size=384),
    # head_dim 8, 3 layers, an MLP width that is not a multiple of d_model
    "narrow": dict(d_model=48, n_layers=3, n_heads=6, mlp_hidden_size=88, vocab_size=384),
}

# Tiny Dream (Qwen2) shapes: grouped-query attention with q/k/v biases.
DREAM_SHAPES = {
    "gqa": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=128, vocab_size=384),
    # 4 query heads per kv head, head_dim 8, 3 layers
    "gqa4": dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                 num_key_value_heads=2, intermediate_size=96, vocab_size=384),
}


def _linear_init(g: torch.Generator, init_std: float):
    """N(0, (init_std * gain)^2 / fan_in) weights [out, in]: outputs of RMS ~ init_std * gain."""
    def linear(out_f, in_f, gain=1.0):
        return torch.randn(out_f, in_f, generator=g) * (init_std * gain / math.sqrt(in_f))
    return linear


def _norm_init(g: torch.Generator):
    """RMSNorm weights 1 + N(0, 0.1^2)."""
    return lambda n: 1.0 + 0.1 * torch.randn(n, generator=g)


def _save_weights(path: Path, weights: dict[str, torch.Tensor], dtype: str) -> None:
    weights = {k: v.to(DTYPES[dtype]).contiguous() for k, v in weights.items()}
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})


def _random_llada_weights(*, d_model: int, n_layers: int, mlp_hidden_size: int,
                          vocab_size: int, seed: int, init_std: float,
                          mask_token_id: int) -> dict[str, torch.Tensor]:
    """Random float32 weights with the real LLaDA tensor names, scaled as the SDAR fixture's:
    the embedding has RMS 1; q and k have gain 1.5 (LLaDA has no QK-norm, so their scale sets how
    sharp attention is: scores of standard deviation ~1.5^2, like the SDAR fixture's q/k norms of
    1.5); the LM head gives logits of standard deviation ~2.5 * init_std, so a random model's
    greedy confidences are spread."""
    g = torch.Generator().manual_seed(seed)
    linear, norm = _linear_init(g, init_std), _norm_init(g)
    d, hidden, V = d_model, mlp_hidden_size, vocab_size
    w = {"model.transformer.wte.weight": torch.randn(V, d, generator=g)}
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        w[p + "q_proj.weight"] = linear(d, d, gain=1.5)
        w[p + "k_proj.weight"] = linear(d, d, gain=1.5)
        w[p + "v_proj.weight"] = linear(d, d, gain=2.0)
        w[p + "attn_out.weight"] = linear(d, d, gain=2.0)
        w[p + "ff_norm.weight"] = norm(d)
        w[p + "ff_proj.weight"] = linear(hidden, d, gain=1.5)  # the gate
        w[p + "up_proj.weight"] = linear(hidden, d)
        w[p + "ff_out.weight"] = linear(d, hidden)  # down
    w["model.transformer.ln_f.weight"] = norm(d)
    head = w["model.transformer.ff_out.weight"] = linear(V, d, gain=2.5)
    head[mask_token_id] *= 0.05  # a trained model practically never predicts the mask token
    return w


def write_llada_checkpoint(path, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                           mlp_hidden_size: int = 128, vocab_size: int = 384, seed: int = 0,
                           dtype: str = "float32", mask_token_id=None, eos_token_id=None,
                           eot_token_id=_DEFAULT, rope_theta: float = 10000.0,
                           rms_norm_eps: float = 1e-5, max_sequence_length: int = 2048,
                           init_std: float = 1.0, with_tokenizer: bool = False) -> Path:
    """Write a random LLaDA checkpoint (GSAI-ML/LLaDA-8B-Instruct's format) and return its Path.

    Defaults: mask_token_id = vocab_size - 1, eos_token_id = vocab_size - 3 (LLaDA's
    <|endoftext|>, 126081), eot_token_id = vocab_size - 2 (LLaDA's <|eot_id|>, 126348).
    config.json has eos = pad = eos_token_id as the real one.  generation_config.json lists
    eos_token_id [eos, eot]; with eot_token_id=None it holds the scalar eos alone, exactly the
    real file's form (LLaDA's EOT then only stops a request through the tokenizer's EOS).
    with_tokenizer writes the SDAR-style test tokenizer (tokenizer EOS = eos_token_id,
    <|im_end|> = eot_token_id, which must then be given).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {sorted(DTYPES)}")
    if d_model % n_heads:
        raise ValueError("d_model must be a multiple of n_heads")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mask_token_id = vocab_size - 1 if mask_token_id is None else int(mask_token_id)
    eos_token_id = vocab_size - 3 if eos_token_id is None else int(eos_token_id)
    if eot_token_id is _DEFAULT:
        eot_token_id = vocab_size - 2
    config = {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_heads,
        "mlp_hidden_size": mlp_hidden_size,
        "mlp_ratio": 4,
        "vocab_size": vocab_size,
        "embedding_size": vocab_size,
        "max_sequence_length": max_sequence_length,
        "rope": True,
        "rope_theta": rope_theta,
        "rope_full_precision": True,
        "layer_norm_type": "rms",
        "rms_norm_eps": rms_norm_eps,
        "layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "activation_type": "silu",
        "block_type": "llama",
        "include_bias": False,
        "include_qkv_bias": False,
        "attention_layer_norm": False,
        "input_emb_norm": False,
        "scale_logits": False,
        "weight_tying": False,
        "alibi": False,
        "block_group_size": 1,
        "eos_token_id": eos_token_id,
        "pad_token_id": eos_token_id,
        "mask_token_id": mask_token_id,
        "torch_dtype": dtype,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    gen_eos = eos_token_id if eot_token_id is None else [eos_token_id, int(eot_token_id)]
    gen = {"eos_token_id": gen_eos, "pad_token_id": eos_token_id}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    weights = _random_llada_weights(d_model=d_model, n_layers=n_layers,
                                    mlp_hidden_size=mlp_hidden_size, vocab_size=vocab_size,
                                    seed=seed, init_std=init_std, mask_token_id=mask_token_id)
    _save_weights(path, weights, dtype)
    if with_tokenizer:
        if eot_token_id is None:
            raise ValueError("with_tokenizer needs an eot_token_id")
        write_tokenizer(path, vocab_size=vocab_size, mask_token_id=mask_token_id,
                        eos_token_ids=(int(eot_token_id), eos_token_id))
    return path


def _random_dream_weights(*, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                          num_key_value_heads: int, intermediate_size: int, vocab_size: int,
                          seed: int, init_std: float,
                          mask_token_id: int) -> dict[str, torch.Tensor]:
    """Random float32 weights with Dream's (Qwen2's) tensor names, scaled as the LLaDA ones;
    q/k/v biases are N(0, (0.5 * init_std)^2), large enough that dropping them changes tokens."""
    g = torch.Generator().manual_seed(seed)
    linear, norm = _linear_init(g, init_std), _norm_init(g)
    H, I, V = hidden_size, intermediate_size, vocab_size
    D = H // num_attention_heads
    nq, nkv = num_attention_heads * D, num_key_value_heads * D

    def bias(n):
        return 0.5 * init_std * torch.randn(n, generator=g)

    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_proj.weight"] = linear(nq, H, gain=1.5)
        w[p + "self_attn.q_proj.bias"] = bias(nq)
        w[p + "self_attn.k_proj.weight"] = linear(nkv, H, gain=1.5)
        w[p + "self_attn.k_proj.bias"] = bias(nkv)
        w[p + "self_attn.v_proj.weight"] = linear(nkv, H, gain=2.0)
        w[p + "self_attn.v_proj.bias"] = bias(nkv)
        w[p + "self_attn.o_proj.weight"] = linear(H, nq, gain=2.0)
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "mlp.gate_proj.weight"] = linear(I, H, gain=1.5)
        w[p + "mlp.up_proj.weight"] = linear(I, H)
        w[p + "mlp.down_proj.weight"] = linear(H, I)
    w["model.norm.weight"] = norm(H)
    head = w["lm_head.weight"] = linear(V, H, gain=2.5)
    head[mask_token_id] *= 0.05  # a trained model practically never predicts the mask token
    return w


def write_dream_checkpoint(path, *, hidden_size: int = 64, num_hidden_layers: int = 2,
                           num_attention_heads: int = 4, num_key_value_heads: int = 2,
                           intermediate_size: int = 128, vocab_size: int = 384, seed: int = 0,
                           dtype: str = "float32", mask_token_id=None, eos_token_id=None,
                           rope_theta: float = 10000.0, rms_norm_eps: float = 1e-6,
                           max_position_embeddings: int = 2048, init_std: float = 1.0,
                           with_tokenizer: bool = False) -> Path:
    """Write a random Dream checkpoint (Dream-org/Dream-v0-Instruct-7B's format) and return it.

    Defaults: mask_token_id = vocab_size - 1 (Dream's <|mask|>, 151666), eos_token_id =
    vocab_size - 2 (Dream's <|endoftext|>, 151643, also its pad and bos).  Qwen2 config field
    names; the q/k/v biases are in the weights although the config has no key for them, as in
    the real checkpoint.  rope_theta defaults to 1e4 (the real 1e6 barely rotates the few
    positions of a test).  with_tokenizer writes the SDAR-style test tokenizer (tokenizer EOS =
    eos_token_id, <|im_end|> = vocab_size - 3).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {sorted(DTYPES)}")
    if hidden_size % num_attention_heads:
        raise ValueError("hidden_size must be a multiple of num_attention_heads")
    if num_attention_heads % num_key_value_heads:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mask_token_id = vocab_size - 1 if mask_token_id is None else int(mask_token_id)
    eos_token_id = vocab_size - 2 if eos_token_id is None else int(eos_token_id)
    config = {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "vocab_size": vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": rope_theta,
        "rope_scaling": None,
        "rms_norm_eps": rms_norm_eps,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "sliding_window": None,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "mask_token_id": mask_token_id,
        "pad_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "bos_token_id": eos_token_id,
        "torch_dtype": dtype,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    gen = {"eos_token_id": eos_token_id, "pad_token_id": eos_token_id,
           "mask_token_id": mask_token_id}
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    weights = _random_dream_weights(
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size, vocab_size=vocab_size, seed=seed,
        init_std=init_std, mask_token_id=mask_token_id)
    _save_weights(path, weights, dtype)
    if with_tokenizer:
        write_tokenizer(path, vocab_size=vocab_size, mask_token_id=mask_token_id,
                        eos_token_ids=(vocab_size - 3, eos_token_id))
    return path


def check_block_decode_with_a_small_budget(model_dir) -> None:
    """Block decode of a bidirectional model where prompt + B fits max_num_batched_tokens but a
    block's commit fused with the next block (2B positions) does not: the commit is forwarded on
    its own, and the tokens do not change."""
    from blockinfer import LLM, SamplingParams

    sp = SamplingParams(temperature=0.0, max_tokens=24, block_length=8)
    want = LLM(model_dir, decode_mode="block_causal").generate([[1, 2]], sp, use_tqdm=False)[0]
    small = LLM(model_dir, decode_mode="block_causal", max_num_batched_tokens=10)
    got = small.generate([[1, 2], [3, 4]], sp, use_tqdm=False)
    assert got[0].token_ids == want.token_ids
    assert got[0].num_forwards > want.num_forwards
