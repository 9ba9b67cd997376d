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
