"""Tiny random SDAR checkpoints in the real Hugging Face format, built offline.

Used by the quick-start example and by the tests: config.json, generation_config.json, a
model.safetensors with the real tensor names and, optionally, a byte-level BPE tokenizer trained on
a small built-in corpus. Needs numpy, safetensors, tokenizers and transformers (no PyTorch).
Random weights produce fluent-looking nonsense: they show the pipeline, not a useful model.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A block diffusion language model writes text
one block at a time: every block starts as a row of mask tokens, and at each step the model
fills in the positions it is most confident about, until no mask is left. Then the next
block is appended, and the model attends to everything written before it.
What is the capital of France? The capital of France is Paris. How many legs does a spider
have? A spider has eight legs. Please write a short poem about the sea and the sky.
The sea is wide, the sky is blue, the wind is cold, the day is new.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 2024. Hello, world! Hello there, friend.
In the beginning there was a small model with random weights, and it said nothing useful,
but it said it quickly and always the same way, which is all that a test needs.
"""


def write_tokenizer(path, *, vocab_size: int, mask_token_id: int, eos_token_ids) -> None:
    """A byte-level BPE tokenizer trained offline on a small built-in English corpus, with
    `<|im_end|>` = eos_token_ids[0], `<|endoftext|>` = eos_token_ids[1] and
    `<|MASK|>` = mask_token_id.  Ids not produced by training are filled with
    `<|reserved_k|>` special tokens, so the tokenizer's vocabulary is exactly vocab_size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_ids = {"<|im_end|>": int(eos_token_ids[0]), "<|endoftext|>": int(eos_token_ids[1]),
                   "<|MASK|>": int(mask_token_id)}
    if len(set(special_ids.values())) != 3 or not all(0 <= i < vocab_size for i in special_ids.values()):
        raise ValueError(f"special token ids {special_ids} must be distinct and < {vocab_size}")
    n_regular = vocab_size - 3  # every id except the three special ones
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if n_regular < len(alphabet):
        raise ValueError(f"a byte-level tokenizer needs vocab_size >= {len(alphabet) + 3}")

    # 1. train a byte-level BPE with n_regular tokens at most
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, initial_alphabet=alphabet,
                                  show_progress=False)
    trained.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    model_json = json.loads(trained.to_str())["model"]
    learned = sorted(model_json["vocab"].items(), key=lambda kv: kv[1])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]

    # 2. lay out the final vocabulary: regular tokens fill the free ids in order
    free = [i for i in range(vocab_size) if i not in special_ids.values()]
    vocab = dict(special_ids)
    for (tok, _), new_id in zip(learned, free):
        vocab[tok] = new_id
    reserved = [f"<|reserved_{k}|>" for k in range(len(free) - len(learned))]
    for tok, new_id in zip(reserved, free[len(learned):]):
        vocab[tok] = new_id
    assert sorted(vocab.values()) == list(range(vocab_size))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # already in the model's vocabulary, so they keep the ids laid out above
    tok.add_special_tokens(list(special_ids) + reserved)
    for name, want in special_ids.items():
        assert tok.token_to_id(name) == want, (name, tok.token_to_id(name), want)

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", mask_token="<|MASK|>")
    fast.save_pretrained(str(path))
    # name the class explicitly so AutoTokenizer never needs the (unknown 'sdar') model config
    cfg_path = Path(path) / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text())
    tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tcfg, indent=2))


def write_random_sdar(path, *, hidden_size: int = 64, num_hidden_layers: int = 2,
                      num_attention_heads: int = 4, num_key_value_heads: int = 2, head_dim: int = 16,
                      intermediate_size: int = 128, vocab_size: int = 384, seed: int = 0,
                      block_size: int = 4, with_tokenizer: bool = True) -> Path:
    """Writes a float32 SDAR checkpoint with random weights (and a tokenizer) to `path`.

    Special ids: <|im_end|> = vocab_size - 3, <|endoftext|> = vocab_size - 2 (both EOS in
    generation_config.json, as SDAR lists [151645, 151643]) and <|MASK|> = vocab_size - 1.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    eos = [vocab_size - 3, vocab_size - 2]
    mask = vocab_size - 1
    config = {
        "architectures": ["SDARForCausalLM"], "model_type": "sdar", "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers, "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads, "head_dim": head_dim,
        "intermediate_size": intermediate_size, "vocab_size": vocab_size, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "tie_word_embeddings": False,
        "hidden_act": "silu", "attention_bias": False, "bos_token_id": eos[1],
        "eos_token_id": eos[1], "torch_dtype": "float32", "mask_token_id": mask,
        "block_size": block_size,
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}, indent=2))

    rng = np.random.default_rng(seed)
    H, I, V, D = hidden_size, intermediate_size, vocab_size, head_dim
    nh, nkv = num_attention_heads, num_key_value_heads

    def linear(out_f, in_f, gain=1.0):
        return (rng.standard_normal((out_f, in_f)) * gain / math.sqrt(in_f)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32)}
    for i in range(num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_proj.weight"] = linear(nh * D, H)
        w[p + "self_attn.k_proj.weight"] = linear(nkv * D, H)
        w[p + "self_attn.v_proj.weight"] = linear(nkv * D, H, 2.0)
        w[p + "self_attn.o_proj.weight"] = linear(H, nh * D, 2.0)
        w[p + "self_attn.q_norm.weight"] = norm(D)
        w[p + "self_attn.k_norm.weight"] = norm(D)
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "mlp.gate_proj.weight"] = linear(I, H)
        w[p + "mlp.up_proj.weight"] = linear(I, H)
        w[p + "mlp.down_proj.weight"] = linear(H, I)
    w["model.norm.weight"] = norm(H)
    w["lm_head.weight"] = linear(V, H, 2.5)
    w["lm_head.weight"][mask] *= 0.05  # a real model practically never predicts the mask token
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    if with_tokenizer:
        write_tokenizer(path, vocab_size=vocab_size, mask_token_id=mask, eos_token_ids=eos)
    return path
