#!/usr/bin/env python
"""Train the tiny SDAR, LLaDA and Dream models that ship with BlockInfer (issue 6).

    python training/train_tiny.py --out DIR --models sdar llada dream \
        --seconds-per-model 100 --device cuda            # ~7-8 minutes on one H100
    python training/train_tiny.py --out DIR --device cpu --seconds-per-model 20   # smoke test

writes DIR/tiny-sdar, DIR/tiny-llada and DIR/tiny-dream: complete Hugging Face checkpoint
directories in the real formats (config.json, generation_config.json, a bfloat16
model.safetensors with the real tensor names, a character-level tokenizer, README.md with the
measured held-out accuracy) and DIR/summary.json.  Copy them into python/blockinfer/assets/.

The data is the synthetic task suite of python/blockinfer/assets/tasks.py (addition, sorting,
reversing a word, counting a letter; the held-out split is decided by a hash of the problem and
never trained on).  Objectives:

- SDAR, block diffusion: the input is [noisy half ; clean half] of one sequence (prompt, answer,
  EOS padding to a fixed length), both halves at positions 0..L-1.  Every block of the noisy half
  gets its own masking rate p ~ U(eps, 1) and each answer position of it is masked with
  probability p.  Attention: a noisy position sees its own noisy block (bidirectionally) and the
  clean blocks before it; a clean position sees the clean blocks up to its own (SEMANTICS §4's
  block-causal rule).  Loss: cross-entropy on the masked positions weighted by 1/p, over the
  number of answer positions.  The training block length is drawn per batch from {4, 8, 16}.
- LLaDA and Dream, masked diffusion: the sequence is a canvas (prompt, answer, EOS up to a canvas
  length G that varies per example); half of the examples mask every answer position with one
  rate p ~ U(eps, 1), the other half mimic semi-autoregressive block decoding (earlier blocks
  clean, one block masked at rate p, later blocks fully masked).  Loss: cross-entropy on the
  masked positions weighted by 1/(their masking probability).  Dream predicts position j from
  the hidden state at j - 1 (its logit shift); LLaDA predicts j from j.

AdamW with linear warmup and cosine decay over the time budget (which starts after the ~20 s
torch.compile of the transformer body), bfloat16 autocast on a GPU; an update whose gradient is
not finite, or a loss spike, rolls back to an earlier snapshot at half the learning rate.
After training, the held-out accuracy is measured on the exported checkpoint (each setting of
benchmarks/quality.py's README_SETTINGS) with the engine (blockinfer.LLM) when it is importable,
else with the PyTorch references in tests/reference; `--evaluate-only` measures existing
checkpoints again and rewrites their READMEs.  On an H100 (measured): about 60, 75 and 64 steps/s
of batch 512 for SDAR, LLaDA and Dream, and 100% held-out accuracy on every task after 100 s.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def _load_by_path(name: str, path: Path):
    """Imports a file without importing the blockinfer package (whose compiled engine may be
    missing on a training machine)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


T = _load_by_path("blockinfer_tiny_tasks", REPO / "python" / "blockinfer" / "assets" / "tasks.py")

SDAR_LEN = 48      # SDAR training sequence: prompt + answer + EOS padding (a multiple of 16)
CANVAS_LEN = 64    # LLaDA/Dream: the longest canvas trained on (prompt + G)
EPS = 0.02         # lowest masking rate p (the 1/p loss weight is at most 50)
DEFAULT_LR = {"sdar": 2e-3, "llada": 1e-3, "dream": 1e-3}
DEFAULT_TASK_WEIGHTS = {"add": 0.45, "sort": 0.15, "reverse": 0.15, "count": 0.25}


# ----------------------------------------------------------------------------------------
# Data: a pool of tokenised training problems
# ----------------------------------------------------------------------------------------

def _pool_chunk(seed: int, count: int, weights: dict[str, float]):
    rng = random.Random(seed)
    tasks, w = list(weights), list(weights.values())
    tokens = np.full((count, SDAR_LEN), T.EOS_ID, dtype=np.uint8)
    plen = np.zeros(count, dtype=np.int16)
    alen = np.zeros(count, dtype=np.int16)
    for i in range(count):
        p = T.train_problem(rng.choices(tasks, w)[0], rng)
        prompt, answer = p.prompt_ids(), p.answer_ids()
        row = prompt + answer
        assert len(row) <= SDAR_LEN, p
        tokens[i, :len(row)] = row
        plen[i], alen[i] = len(prompt), len(answer)
    return tokens, plen, alen


def make_pool(size: int, weights: dict[str, float], seed: int, workers: int):
    """size training problems (never held-out ones): tokens [size, SDAR_LEN] (prompt, answer,
    EOS, EOS padding), prompt lengths and answer lengths (EOS included)."""
    chunks = max(1, min(workers, size // 10000))
    per = [size // chunks + (1 if k < size % chunks else 0) for k in range(chunks)]
    jobs = [(seed * 1000 + k, per[k], weights) for k in range(chunks)]
    if chunks == 1:
        parts = [_pool_chunk(*jobs[0])]
    else:  # fork before any CUDA work: the workers only run tasks.py
        with mp.get_context("fork").Pool(chunks) as pool:
            parts = pool.starmap(_pool_chunk, jobs)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


# ----------------------------------------------------------------------------------------
# Model: one transformer, exported under each family's tensor names
# ----------------------------------------------------------------------------------------

@dataclass
class Arch:
    family: str          # "sdar" | "llada" | "dream"
    hidden: int = 256
    layers: int = 6
    heads: int = 8
    kv_heads: int = 4    # SDAR only: LLaDA has no grouped-query attention, and Dream with 4 KV
                         # heads learned far slower in the time budget than with 8 (measured)
    intermediate: int = 512
    vocab: int = T.VOCAB_SIZE
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def eps(self) -> float:
        return 1e-5 if self.family == "llada" else 1e-6

    @property
    def n_kv(self) -> int:
        return self.kv_heads if self.family == "sdar" else self.heads


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def rope_tables(positions: torch.Tensor, dim: int, theta: float):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device,
                                             dtype=torch.float32) / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()  # [L, D]


def apply_rope(x, cos, sin):
    """Rotate-half RoPE of x [N, L, heads, D] (Qwen/LLaDA layout)."""
    d = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat([-xf[..., d:], xf[..., :d]], dim=-1)
    return (xf * cos[:, None, :] + rotated * sin[:, None, :]).to(x.dtype)


def attention(q, k, v, mask):
    """softmax(q k^T / sqrt(D) + bias) v with the scores and softmax in float32; `mask` (bool,
    broadcastable to [N, H, Lq, Lk], True = may attend) becomes a finite bias.  Written out
    rather than F.scaled_dot_product_attention: its memory-efficient kernel's backward gave NaN
    gradients with the padded canvases' key masks (no row fully masked) on an H100."""
    scores = (q.float() @ k.float().transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    return (torch.softmax(scores, dim=-1).to(v.dtype) @ v)


class Layer(nn.Module):
    def __init__(self, a: Arch):
        super().__init__()
        self.a = a
        H, D, KV = a.heads, a.head_dim, a.n_kv
        bias = a.family == "dream"
        self.attn_norm = RMSNorm(a.hidden, a.eps)
        self.q = nn.Linear(a.hidden, H * D, bias=bias)
        self.k = nn.Linear(a.hidden, KV * D, bias=bias)
        self.v = nn.Linear(a.hidden, KV * D, bias=bias)
        self.o = nn.Linear(H * D, a.hidden, bias=False)
        if a.family == "sdar":  # Qwen3's QK-norm
            self.q_norm = RMSNorm(D, a.eps)
            self.k_norm = RMSNorm(D, a.eps)
        self.mlp_norm = RMSNorm(a.hidden, a.eps)
        self.gate = nn.Linear(a.hidden, a.intermediate, bias=False)
        self.up = nn.Linear(a.hidden, a.intermediate, bias=False)
        self.down = nn.Linear(a.intermediate, a.hidden, bias=False)

    def forward(self, x, cos, sin, mask):
        a = self.a
        N, L, _ = x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(N, L, a.heads, a.head_dim)
        k = self.k(h).view(N, L, a.n_kv, a.head_dim)
        v = self.v(h).view(N, L, a.n_kv, a.head_dim)
        if a.family == "sdar":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        group = a.heads // a.n_kv
        if group > 1:
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        out = attention(q, k.to(q.dtype), v.to(q.dtype), mask)
        x = x + self.o(out.transpose(1, 2).reshape(N, L, a.heads * a.head_dim))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TinyLM(nn.Module):
    def __init__(self, a: Arch):
        super().__init__()
        self.a = a
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, a.eps)
        self.head = nn.Linear(a.hidden, a.vocab, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = 0.02 / math.sqrt(2 * a.layers) if name.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def hidden_states(self, ids, positions, mask):
        cos, sin = rope_tables(positions, self.a.head_dim, self.a.rope_theta)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)

    def forward(self, ids, positions, mask):
        return self.head(self.hidden_states(ids, positions, mask))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------
# Objectives
# ----------------------------------------------------------------------------------------

_SDAR_MASKS: dict = {}


def sdar_training_mask(L: int, B: int, device) -> torch.Tensor:
    """[2L, 2L] bool, True = may attend; rows/cols 0..L-1 the noisy half, L..2L-1 the clean half.
    noisy i -> noisy j iff same block; noisy i -> clean j iff block(j) < block(i);
    clean i -> clean j iff block(j) <= block(i) (SEMANTICS §4); clean never sees noisy."""
    key = (L, B, str(device))
    if key not in _SDAR_MASKS:
        blk = torch.arange(L, device=device) // B
        same = blk[:, None] == blk[None, :]
        earlier = blk[None, :] < blk[:, None]
        upto = blk[None, :] <= blk[:, None]
        top = torch.cat([same, earlier], dim=1)
        bottom = torch.cat([torch.zeros_like(same), upto], dim=1)
        _SDAR_MASKS[key] = torch.cat([top, bottom], dim=0)
    return _SDAR_MASKS[key]


def _masked_ce(model, h, targets, selected, weight, denom):
    """sum over selected positions of weight * CE(head(h), target), per example / denom, mean."""
    logits = model.head(h[selected]).float()
    ce = F.cross_entropy(logits, targets[selected], reduction="none")
    per = torch.zeros(h.shape[0], device=h.device).index_add_(
        0, selected.nonzero()[:, 0], ce * weight[selected])
    return (per / denom.clamp(min=1)).mean()


def sdar_loss(model, batch, B: int, body=None):
    x, plen = batch["tokens"], batch["plen"]
    N, L = x.shape
    dev = x.device
    pos = torch.arange(L, device=dev)
    answer = pos[None, :] >= plen[:, None]
    rate = torch.rand(N, L // B, device=dev) * (1 - EPS) + EPS
    rate = rate.repeat_interleave(B, dim=1)
    masked = answer & (torch.rand(N, L, device=dev) < rate)
    noisy = torch.where(masked, torch.full_like(x, T.MASK_ID), x)
    ids = torch.cat([noisy, x], dim=1)
    body = body or model.hidden_states
    h = body(ids, torch.cat([pos, pos]), sdar_training_mask(L, B, dev))[:, :L]
    return _masked_ce(model, h, x, masked, 1.0 / rate, answer.sum(1))


def canvas_batch(batch, *, semi_ar_fraction: float = 0.5):
    """LLaDA/Dream: canvases of varying length and the masking pattern of one training step."""
    x, plen, alen = batch["tokens"], batch["plen"], batch["alen"]
    N = x.shape[0]
    dev = x.device
    L = CANVAS_LEN
    x = torch.cat([x, torch.full((N, L - x.shape[1]), T.EOS_ID, device=dev, dtype=x.dtype)], dim=1)
    # canvas length G: half the time a typical generation length, else uniform; >= the answer
    typical = torch.tensor([16, 24, 32], device=dev)[torch.randint(0, 3, (N,), device=dev)]
    uniform = torch.randint(1, 41, (N,), device=dev)
    G = torch.where(torch.rand(N, device=dev) < 0.5, typical, uniform)
    G = torch.minimum(torch.maximum(G, alen), L - plen)
    pos = torch.arange(L, device=dev)[None, :]
    rel = pos - plen[:, None]
    valid = rel < G[:, None]
    answer = (rel >= 0) & valid
    rate = (torch.rand(N, device=dev) * (1 - EPS) + EPS)[:, None].expand(N, L)
    # semi-autoregressive pattern: blocks before k clean, block k at `rate`, later ones masked
    Bt = torch.tensor([4, 8, 16, 32], device=dev)[torch.randint(0, 4, (N,), device=dev)]
    nblocks = (G + Bt - 1) // Bt
    k = (torch.rand(N, device=dev) * nblocks).long()
    start, end = (k * Bt)[:, None], ((k + 1) * Bt)[:, None]
    semi_prob = torch.where(rel < start, torch.zeros_like(rate),
                            torch.where(rel < end, rate, torch.ones_like(rate)))
    semi = (torch.rand(N, device=dev) < semi_ar_fraction)[:, None]
    prob = torch.where(semi, semi_prob, rate)
    masked = answer & (torch.rand(N, L, device=dev) < prob)
    noisy = torch.where(masked, torch.full_like(x, T.MASK_ID), x)
    weight = 1.0 / prob.clamp(min=EPS)
    key_mask = valid[:, None, None, :]  # [N, 1, 1, L]: a canvas ends at plen + G
    return x, noisy, masked, weight, answer.sum(1), key_mask


def canvas_loss(model, batch, family: str, body=None):
    x, noisy, masked, weight, n_answer, key_mask = canvas_batch(batch)
    L = x.shape[1]
    pos = torch.arange(L, device=x.device)
    body = body or model.hidden_states
    h = body(noisy, pos, key_mask)
    if family == "dream":  # position j is predicted from the hidden state at j - 1
        return _masked_ce(model, h[:, :-1], x[:, 1:], masked[:, 1:], weight[:, 1:], n_answer)
    return _masked_ce(model, h, x, masked, weight, n_answer)


# ----------------------------------------------------------------------------------------
# Quick held-out probe during training (one forward, every answer position masked)
# ----------------------------------------------------------------------------------------

def probe_batch(device, per_task: int = 64):
    rows, plen, alen, tasks = [], [], [], []
    for task in T.TASKS:
        for p in T.test_problems(task, per_task):
            prompt, answer = p.prompt_ids(), p.answer_ids()
            row = prompt + answer
            rows.append(row + [T.EOS_ID] * (SDAR_LEN - len(row)))
            plen.append(len(prompt))
            alen.append(len(answer))
            tasks.append(task)
    t = lambda v: torch.tensor(v, device=device)  # noqa: E731
    return {"tokens": t(rows), "plen": t(plen), "alen": t(alen), "task": tasks}


@torch.no_grad()
def probe_accuracy(model, family: str, probe) -> dict[str, float]:
    """SDAR: every answer block masked at once, each block seeing the true earlier blocks (one
    step per block); LLaDA/Dream: a canvas of G = tasks.MAX_TOKENS, all masked, one step.
    Exact match of answer + EOS.  A cheap lower-bound proxy of decoding accuracy."""
    model.eval()
    x, plen, alen = probe["tokens"], probe["plen"], probe["alen"]
    N, L = x.shape
    dev = x.device
    pos = torch.arange(L, device=dev)
    answer = pos[None, :] >= plen[:, None]
    noisy = torch.where(answer, torch.full_like(x, T.MASK_ID), x)
    if family == "sdar":
        ids = torch.cat([noisy, x], dim=1)
        logits = model(ids, torch.cat([pos, pos]), sdar_training_mask(L, 4, dev))[:, :L]
    else:
        G = T.MAX_TOKENS
        Lc = int(plen.max()) + G
        canvas = torch.full((N, Lc), T.EOS_ID, device=dev, dtype=x.dtype)
        m = min(L, Lc)
        canvas[:, :m] = x[:, :m]
        rel = torch.arange(Lc, device=dev)[None, :] - plen[:, None]
        canvas = torch.where((rel >= 0) & (rel < G), torch.full_like(canvas, T.MASK_ID), canvas)
        logits = model(canvas, torch.arange(Lc, device=dev), (rel < G)[:, None, None, :])
        if family == "dream":
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        logits = logits[:, :L] if Lc >= L else F.pad(logits, (0, 0, 0, L - Lc), value=0.0)
    pred = logits.argmax(-1)
    target_span = answer & (pos[None, :] < (plen + alen)[:, None])
    ok = ((pred == x) | ~target_span).all(1).tolist()
    model.train()
    acc: dict[str, list[bool]] = {}
    for task, good in zip(probe["task"], ok):
        acc.setdefault(task, []).append(good)
    return {task: sum(v) / len(v) for task, v in acc.items()}


# ----------------------------------------------------------------------------------------
# Export in the real checkpoint formats
# ----------------------------------------------------------------------------------------

def export_weights(model: TinyLM, family: str) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    if family == "llada":
        out["model.transformer.wte.weight"] = sd["embed.weight"]
        for i in range(model.a.layers):
            s, p = f"layers.{i}.", f"model.transformer.blocks.{i}."
            names = {"attn_norm.weight": "attn_norm.weight", "q.weight": "q_proj.weight",
                     "k.weight": "k_proj.weight", "v.weight": "v_proj.weight",
                     "o.weight": "attn_out.weight", "mlp_norm.weight": "ff_norm.weight",
                     "gate.weight": "ff_proj.weight", "up.weight": "up_proj.weight",
                     "down.weight": "ff_out.weight"}
            out.update({p + dst: sd[s + src] for src, dst in names.items()})
        out["model.transformer.ln_f.weight"] = sd["norm.weight"]
        out["model.transformer.ff_out.weight"] = sd["head.weight"]
    else:
        out["model.embed_tokens.weight"] = sd["embed.weight"]
        for i in range(model.a.layers):
            s, p = f"layers.{i}.", f"model.layers.{i}."
            names = {"attn_norm.weight": "input_layernorm.weight",
                     "q.weight": "self_attn.q_proj.weight", "k.weight": "self_attn.k_proj.weight",
                     "v.weight": "self_attn.v_proj.weight", "o.weight": "self_attn.o_proj.weight",
                     "mlp_norm.weight": "post_attention_layernorm.weight",
                     "gate.weight": "mlp.gate_proj.weight", "up.weight": "mlp.up_proj.weight",
                     "down.weight": "mlp.down_proj.weight"}
            if family == "sdar":
                names.update({"q_norm.weight": "self_attn.q_norm.weight",
                              "k_norm.weight": "self_attn.k_norm.weight"})
            else:
                names.update({"q.bias": "self_attn.q_proj.bias", "k.bias": "self_attn.k_proj.bias",
                              "v.bias": "self_attn.v_proj.bias"})
            out.update({p + dst: sd[s + src] for src, dst in names.items()})
        out["model.norm.weight"] = sd["norm.weight"]
        out["lm_head.weight"] = sd["head.weight"]
    assert len(out) == len(sd), (sorted(out), sorted(sd))
    return {k: v.to(torch.bfloat16).contiguous() for k, v in out.items()}


def model_config(a: Arch) -> tuple[dict, dict]:
    """(config.json, generation_config.json) of the family, with the tiny vocabulary's own special
    ids spelled out so the engine never falls back to the family defaults."""
    eos, mask = T.EOS_ID, T.MASK_ID
    if a.family == "sdar":
        config = {
            "architectures": ["SDARForCausalLM"], "model_type": "sdar",
            "hidden_size": a.hidden, "num_hidden_layers": a.layers,
            "num_attention_heads": a.heads, "num_key_value_heads": a.n_kv, "head_dim": a.head_dim,
            "intermediate_size": a.intermediate, "vocab_size": a.vocab,
            "rope_theta": a.rope_theta, "rms_norm_eps": a.eps,
            "max_position_embeddings": 512, "tie_word_embeddings": False, "hidden_act": "silu",
            "attention_bias": False, "bos_token_id": eos, "eos_token_id": eos,
            "pad_token_id": eos, "mask_token_id": mask, "block_size": 4,
            "torch_dtype": "bfloat16",
        }
    elif a.family == "llada":
        config = {
            "architectures": ["LLaDAModelLM"], "model_type": "llada",
            "d_model": a.hidden, "n_layers": a.layers, "n_heads": a.heads,
            "n_kv_heads": a.heads, "mlp_hidden_size": a.intermediate, "mlp_ratio": 2,
            "vocab_size": a.vocab, "embedding_size": a.vocab, "max_sequence_length": 512,
            "rope": True, "rope_theta": a.rope_theta, "rope_full_precision": True,
            "layer_norm_type": "rms", "rms_norm_eps": a.eps, "layer_norm_with_affine": True,
            "bias_for_layer_norm": False, "activation_type": "silu", "block_type": "llama",
            "include_bias": False, "include_qkv_bias": False, "attention_layer_norm": False,
            "input_emb_norm": False, "scale_logits": False, "weight_tying": False,
            "alibi": False, "block_group_size": 1, "eos_token_id": eos, "pad_token_id": eos,
            "mask_token_id": mask, "block_size": 8, "torch_dtype": "bfloat16",
        }
    else:
        config = {
            "architectures": ["DreamModel"], "model_type": "Dream",
            "hidden_size": a.hidden, "intermediate_size": a.intermediate,
            "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
            "num_key_value_heads": a.n_kv, "vocab_size": a.vocab,
            "max_position_embeddings": 512, "rope_theta": a.rope_theta,
            "rms_norm_eps": a.eps, "hidden_act": "silu", "tie_word_embeddings": False,
            "sliding_window": None, "use_sliding_window": False, "attention_dropout": 0.0,
            "mask_token_id": mask, "pad_token_id": eos, "eos_token_id": eos,
            "bos_token_id": eos, "block_size": 8, "torch_dtype": "bfloat16",
        }
    gen = {"eos_token_id": [eos], "pad_token_id": eos, "mask_token_id": mask}
    return config, gen


def write_checkpoint(model: TinyLM, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config, gen = model_config(model.a)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    save_file(export_weights(model, model.a.family), str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    T.write_tokenizer(out_dir)


@torch.no_grad()
def verify_export(model: TinyLM, ckpt: Path) -> float:
    """The exported checkpoint through tests/reference gives the trained model's logits (with its
    weights rounded to bfloat16 as stored): catches a wrong tensor name or layout.  Returns the
    largest difference relative to the largest logit."""
    Q = _quality()
    sdar, llada, dream = Q._reference_modules()
    family = model.a.family
    ref = {"sdar": sdar.load_sdar, "llada": llada.load_llada, "dream": dream.load_dream}[family](ckpt)
    probe = T.test_problems("sort", 1)[0]
    ids = probe.prompt_ids() + [T.MASK_ID] * 8 + probe.answer_ids()
    L = len(ids)
    cpu = TinyLM(model.a)
    cpu.load_state_dict({k: v.detach().to(torch.bfloat16).float().cpu() for k, v in model.state_dict().items()})
    x = torch.tensor([ids])
    pos = torch.arange(L)
    if family == "sdar":
        got = cpu(x, pos, sdar.SDARReference.block_causal_mask(L, 4))[0]
        want = ref.forward(ids, 4)
    else:
        got = cpu(x, pos, None)[0]
        want = ref.forward(ids)
    err = float((got - want).abs().max() / want.abs().max())
    assert err < 1e-3, f"{ckpt}: exported weights do not reproduce the trained model (rel. err {err:.2e})"
    return err


# ----------------------------------------------------------------------------------------
# Held-out evaluation of an exported checkpoint
# ----------------------------------------------------------------------------------------

def _quality():
    """benchmarks/quality.py (settings and the engine/reference runners).  It imports the engine
    lazily, so it loads where blockinfer's compiled module is missing; imported by name so the
    reference's worker processes can import it too."""
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import quality

    return quality


def evaluate(model_dir: Path, family: str, n_per_task: int, backend: str, device: str,
             workers: int) -> dict:
    """Held-out exact match of the checkpoint in each README setting of the family (the first is
    its default decode mode), with the engine or the references."""
    Q = _quality()
    problems = [p for task in T.TASKS for p in T.test_problems(task, n_per_task)]
    if backend == "auto":
        backend = "engine" if Q.engine_available() else "reference"
    start = time.perf_counter()
    results = []
    for setting in Q.README_SETTINGS[family]:
        if backend == "engine":
            llm = Q.make_llm(model_dir, setting, device=device)
            ok = Q.run_engine(llm, problems, setting)["correct"]
            used = f"engine (blockinfer.LLM, device {llm.info.device})"
            del llm
        else:
            comps = Q.run_reference(model_dir, family, problems, setting, workers=workers)
            ok = [p.is_correct(T.decode(c)) for p, c in zip(problems, comps)]
            used = "references (tests/reference, CPU float32)"
        acc = {task: sum(o for p, o in zip(problems, ok) if p.task == task) / n_per_task
               for task in T.TASKS}
        results.append({"setting": setting.describe(), "accuracy": acc})
    return {"backend": used, "problems_per_task": n_per_task, "settings": results,
            "accuracy": results[0]["accuracy"], "setting": results[0]["setting"],
            "seconds": round(time.perf_counter() - start, 1)}


def write_readme(out_dir: Path, family: str, info: dict) -> None:
    name = f"tiny-{family}"
    fam = {"sdar": "SDAR (block diffusion, block-causal attention, Qwen3-shaped)",
           "llada": "LLaDA (masked diffusion, bidirectional, LLaMA-shaped)",
           "dream": "Dream (masked diffusion, bidirectional, Qwen2-shaped, shifted logits)"}[family]
    ev = info.get("eval")
    lines = [
        f"# {name}", "",
        f"A tiny {fam} model trained from scratch by `training/train_tiny.py` on BlockInfer's",
        "synthetic task suite (`blockinfer/assets/tasks.py`). It is a demo and a quality benchmark",
        "for the decoding strategies, not a language model: it only knows the four tasks below.", "",
        "## Prompt and answer format", "",
        "A character-level tokenizer (64 ids); the prompt is `<|user|>{question}<|assistant|>` and",
        "the model answers with the plain answer followed by `<|endoftext|>` (id 0, the EOS); the",
        "mask token is `<|mask|>` (id 3, `mask_token_id` in config.json).", "",
        "| task | question | answer |", "| --- | --- | --- |",
        "| add (1-4 digit operands) | `4821+397=` | `5218` |",
        "| sort (3-6 numbers in 0..99) | `sort 42 7 19` | `7 19 42` |",
        "| reverse (3-8 random letters) | `reverse kqzom` | `mozqk` |",
        "| count (letter occurs 0-4 times) | `count a in banana` | `3` |", "",
        "A problem is held out (never trained on) iff `int(sha256('{task}|{question}')[:8], 16) % 100 < 10`;",
        "`blockinfer.assets.tasks.test_problems(task, n)` lists held-out problems.", "",
        "```python",
        "from blockinfer import LLM, SamplingParams",
        "from blockinfer.assets import model_path",
        f"llm = LLM(model_path(\"{name}\"), device=\"cpu\")",
        "out = llm.generate([\"<|user|>4821+397=<|assistant|>\"],",
        "                   SamplingParams(temperature=0.0, max_tokens=24), use_tqdm=False)",
        "print(out[0].text)   # 5218",
        "```", "",
        "## Model", "",
        f"{info['params']:,} parameters (hidden {info['arch']['hidden']}, {info['arch']['layers']} layers, "
        f"{info['arch']['heads']} heads, {info['arch_kv_heads']} KV heads, MLP {info['arch']['intermediate']}), "
        "stored in bfloat16.", "",
        "## Training", "",
        "```bash", info["command"], "```", "",
        f"{info['steps']} steps of batch {info['batch_size']} in {info['train_seconds']:.0f} s on "
        f"{info['device_name']} (final loss {info['final_loss']:.4f}); {info['objective']}", "",
        "## Held-out accuracy", "",
    ]
    if ev:
        settings = ev.get("settings") or [{"setting": ev["setting"], "accuracy": ev["accuracy"]}]
        lines += [f"Exact match on {ev['problems_per_task']} held-out problems per task "
                  f"(greedy, max_tokens {T.MAX_TOKENS}), measured with the {ev['backend']}; the "
                  "first column is the model's default decode mode:", "",
                  "| task | " + " | ".join(f"`{s['setting']}`" for s in settings) + " |",
                  "| --- |" + " --- |" * len(settings)]
        lines += [f"| {t} | " + " | ".join(f"{100 * s['accuracy'][t]:.1f}%" for s in settings) + " |"
                  for t in T.TASKS]
        lines += ["", "`python benchmarks/quality.py` measures every strategy and setting."]
    else:
        lines += ["Not measured at export (`--eval-backend none`); run `python benchmarks/quality.py`."]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------
# Training loop
# ----------------------------------------------------------------------------------------

def train_one(family: str, args, pool, device: torch.device) -> tuple[TinyLM, dict]:
    torch.manual_seed(args.seed + {"sdar": 0, "llada": 1, "dream": 2}[family])
    a = Arch(family, hidden=args.hidden, layers=args.layers, heads=args.heads,
             kv_heads=args.kv_heads, intermediate=args.intermediate)
    model = TinyLM(a).to(device)
    use_bf16 = device.type == "cuda"
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    peak_lr = args.lr or DEFAULT_LR[family]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=peak_lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    tokens, plen, alen = (torch.from_numpy(v).to(device) for v in pool)
    tokens, plen, alen = tokens.long(), plen.long(), alen.long()
    probe = probe_batch(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    n_pool = tokens.shape[0]
    print(f"[{family}] {num_params(model):,} parameters, batch {args.batch_size}, "
          f"{args.seconds_per_model:.0f} s of training", flush=True)
    # The transformer body compiled (the loss, with its data-dependent shapes, stays eager); the
    # probe uses the eager module.  The budget's clock starts after the first (compiling) step.
    body = torch.compile(model.hidden_states, dynamic=False) if args.compile else model.hidden_states

    def batch_loss():
        idx = torch.randint(0, n_pool, (args.batch_size,), device=device, generator=gen)
        batch = {"tokens": tokens[idx], "plen": plen[idx], "alen": alen[idx]}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if family == "sdar":
                B = random.choices([4, 8, 16], weights=[0.6, 0.25, 0.15])[0]
                return sdar_loss(model, batch, B, body)
            return canvas_loss(model, batch, family, body)

    compile_seconds = 0.0
    if args.compile:  # compile forward and backward before the clock starts (no update)
        t = time.perf_counter()
        batch_loss().backward()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        compile_seconds = time.perf_counter() - t
        print(f"[{family}] compiled in {compile_seconds:.1f} s", flush=True)

    budget = args.seconds_per_model
    warmup = args.warmup_fraction
    step, rollbacks, loss_ema, best_ema, last_log = 0, 0, None, float("inf"), 0.0
    lr_scale = 1.0
    snapshots: list = []  # (step, model state, optimizer state), every 100 steps, the last 3
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        frac = elapsed / budget
        if frac >= 1.0:
            break
        if frac < warmup:
            lr = peak_lr * max(frac / warmup, 0.01)
        else:
            progress = (frac - warmup) / (1 - warmup)
            lr = peak_lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        lr *= lr_scale
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        diverged = args.check_finite and not bool(torch.isfinite(grad_norm))  # a sync per step
        if step % 25 == 0 and not diverged:
            value = float(loss.detach())
            loss_ema = value if loss_ema is None else 0.9 * loss_ema + 0.1 * value
            best_ema = min(best_ema, loss_ema)
            # a loss spike: the model is leaving its basin (attention logit growth)
            diverged = step > 500 and loss_ema > 2.0 * best_ema + 0.05
        if diverged:
            # Roll back to the oldest snapshot (taken before the trouble began) and halve the
            # learning rate.  Families without QK-norm (LLaDA, Dream) can diverge at high lr.
            rollbacks += 1
            if not snapshots or rollbacks > 8:
                raise RuntimeError(f"{family}: training diverged at step {step} (lower --lr)")
            step, model_state, opt_state = snapshots[0]
            model.load_state_dict(model_state)
            opt.load_state_dict(opt_state)
            del snapshots[1:]
            lr_scale *= 0.5
            loss_ema, best_ema = None, float("inf")
            print(f"[{family}] divergence (loss {float(loss.detach()):.4g}, gradient norm "
                  f"{float(grad_norm):.3g}): rolled back to step {step}, learning rate x{lr_scale}",
                  flush=True)
            continue
        opt.step()
        step += 1
        if step % 100 == 0:
            snapshots.append((step, copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())))
            del snapshots[:-3]
        if elapsed - last_log > args.log_every:
            last_log = elapsed
            acc = probe_accuracy(model, family, probe)
            accs = " ".join(f"{t}={100 * v:.0f}%" for t, v in acc.items())
            print(f"[{family}] {elapsed:6.1f}s step {step:6d} lr {lr:.2e} loss {loss_ema:.4f} "
                  f"probe {accs}", flush=True)
    train_seconds = time.perf_counter() - start
    acc = probe_accuracy(model, family, probe)
    final_loss = loss_ema if loss_ema is not None else float(loss.detach())
    print(f"[{family}] done: {step} steps in {train_seconds:.1f} s ({step / train_seconds:.1f} steps/s), "
          f"loss {final_loss:.4f}, probe {acc}", flush=True)
    info = {"family": family, "params": num_params(model), "arch": asdict(a),
            "arch_kv_heads": a.n_kv, "steps": step, "batch_size": args.batch_size,
            "train_seconds": round(train_seconds, 1), "compile_seconds": round(compile_seconds, 1), "final_loss": round(final_loss, 5),
            "probe_accuracy": acc, "lr": peak_lr, "rollbacks": rollbacks,
            "final_lr_scale": lr_scale,
            "objective": ("block diffusion (noisy/clean halves, block-causal mask, per-block "
                          "masking rate p, CE on masked positions / p; training block length "
                          "4, 8 or 16)") if family == "sdar" else (
                "masked diffusion (CE on masked positions / p; half uniform masking, half "
                "semi-autoregressive block masking; canvases of varying length" +
                ("; position j predicted from hidden j-1)" if family == "dream" else ")"))}
    return model, info


def reevaluate(args, out: Path) -> None:
    """--evaluate-only: measure the checkpoints already in `out` again (e.g. with the engine on a
    machine that has it) and rewrite their READMEs and summary.json."""
    summary = json.loads((out / "summary.json").read_text())
    device = "cpu" if args.device == "cpu" else "auto"
    for family in args.models:
        name = f"tiny-{family}"
        info = summary["models"][name]
        info["eval"] = evaluate(out / name, family, args.eval_problems, args.eval_backend
                                if args.eval_backend != "none" else "auto", device, args.workers)
        print(f"[{family}] held-out: {info['eval']}", flush=True)
        write_readme(out / name, family, info)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (gets tiny-<family>/ per model)")
    ap.add_argument("--models", nargs="+", default=["sdar", "llada", "dream"],
                    choices=["sdar", "llada", "dream"])
    ap.add_argument("--seconds-per-model", type=float, default=100.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="default 512 on a GPU, 32 on CPU")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 2e-3 for SDAR, 1e-3 for LLaDA and Dream)")
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--warmup-fraction", type=float, default=0.04)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--pool-size", type=int, default=None,
                    help="training problems generated up front (default 1.5M on a GPU, 50k on CPU)")
    ap.add_argument("--task-weights", default=None,
                    help="e.g. add=0.45,sort=0.15,reverse=0.15,count=0.25 (the default)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--eval-problems", type=int, default=100, help="held-out problems per task")
    ap.add_argument("--eval-backend", default="auto", choices=["auto", "engine", "reference", "none"])
    ap.add_argument("--evaluate-only", action="store_true",
                    help="no training: evaluate the checkpoints in --out again, rewrite their READMEs")
    ap.add_argument("--log-every", type=float, default=10.0, help="seconds between progress lines")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the transformer body (default: on for CUDA)")
    ap.add_argument("--check-finite", action=argparse.BooleanOptionalAction, default=True,
                    help="skip an update whose gradient is not finite (one sync per step)")
    args = ap.parse_args(argv)
    if args.compile is None:
        args.compile = args.device.startswith("cuda")

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size is None:
        args.batch_size = 512 if device.type == "cuda" else 32
    if args.pool_size is None:
        args.pool_size = 1_500_000 if device.type == "cuda" else 50_000
    weights = dict(DEFAULT_TASK_WEIGHTS)
    if args.task_weights:
        weights = {k: float(v) for k, v in (kv.split("=") for kv in args.task_weights.split(","))}
        unknown = set(weights) - set(T.TASKS)
        if unknown:
            ap.error(f"unknown tasks in --task-weights: {sorted(unknown)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python training/train_tiny.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    if args.evaluate_only:
        reevaluate(args, out)
        return
    t0 = time.perf_counter()
    pool = make_pool(args.pool_size, weights, args.seed, args.workers)
    print(f"pool: {args.pool_size:,} training problems in {time.perf_counter() - t0:.1f} s "
          f"(task weights {weights})", flush=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    summary = {"command": command, "device": device_name, "models": {}}
    failed = []
    for family in args.models:
        try:
            model, info = train_one(family, args, pool, device)
        except RuntimeError as e:  # a diverged model must not cost the others their turn
            print(f"[{family}] FAILED: {e}", flush=True)
            failed.append(family)
            summary["models"][f"tiny-{family}"] = {"error": str(e)}
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            continue
        info["command"] = command
        info["device_name"] = device_name
        ckpt = out / f"tiny-{family}"
        write_checkpoint(model, ckpt)
        info["export_check_rel_error"] = verify_export(model, ckpt)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.eval_backend != "none":
            eval_device = "auto" if device.type == "cuda" else "cpu"
            info["eval"] = evaluate(ckpt, family, args.eval_problems, args.eval_backend,
                                    eval_device, args.workers)
            print(f"[{family}] held-out: {info['eval']}", flush=True)
        write_readme(ckpt, family, info)
        size = (ckpt / "model.safetensors").stat().st_size
        info["safetensors_bytes"] = size
        summary["models"][f"tiny-{family}"] = info
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"[{family}] wrote {ckpt} ({size / 1e6:.1f} MB weights)", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s; summary in {out / 'summary.json'}")
    if failed:
        sys.exit(f"training failed for: {', '.join(failed)}")


if __name__ == "__main__":
    main()
