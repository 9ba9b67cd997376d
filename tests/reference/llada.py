"""A plain float32 PyTorch reference of LLaDA (bidirectional, Llama-shaped) and of BlockInfer's
`canvas` decoding of it (docs SEMANTICS.md §2, §3, §5).  Written to be read, not to be fast:
every denoise step forwards the whole canvas with no cache.

Model (ML-GSAI/LLaDA `modeling_llada.py`, block_type "llama"):
    h = wte[ids]
    per block:  a = attn_norm(h)
                h += attn_out(attention(rope(q_proj(a)), rope(k_proj(a)), v_proj(a)))
                f = ff_norm(h)
                h += ff_out(silu(ff_proj(f)) * up_proj(f))
    logits = ln_f(h) @ ff_out^T   (model.transformer.ff_out is the LM head)
Full bidirectional attention (no mask), scale 1/sqrt(head_dim), n_kv_heads == n_heads,
rotate-half RoPE over head_dim = d_model / n_heads with rope_theta, RMSNorm
x * rsqrt(mean(x^2) + eps) * w.  No logit shift: row i predicts the token at position i.

Choices SEMANTICS leaves open, and how this file resolves them:
- Canvas: G = ceil(max_tokens / B) * B masks after the prompt; blocks cover
  [P + kB, P + (k+1)B) (aligned to the end of the prompt, as LLaDA's generate.py, not to 0).
  `denoising_steps` S is per block (None = B); the official `steps` is S * G / B.
- Per step, the WHOLE canvas is forwarded (committed blocks, the current block and the masks
  after it); only the current block's still-masked rows are sampled.
- Sampling and Philox keying are sdar.py's `sample_position_full`: the Philox step is the step
  index t inside the block (0..S-1), the position is the absolute canvas position.  x0 is the
  Gumbel-max draw over float64(l/T) + token_gumbel (LLaDA's exp(l)/(-log u)^T in float64 has the
  same argmax); LLaDA has no top-k/top-p: with topk=0, topp=1 the filter is off, otherwise it is
  §2's filter.  `low_confidence`'s c is the untempered softmax(l)[x0]; `random`'s c is
  position_uniform(seed, t, position) (LLaDA's torch.rand).
- Positions are chosen by sdar.py's `choose_positions` (any §3 block strategy; the last step
  t = S-1 takes everything still masked; a block with no masks left is done early).  Dream's
  algorithms are rejected.
- Masked positions are tracked by flags: prompt positions are never changed even if they hold
  mask_id (LLaDA's `x == mask_id` would resample them), and a committed x0 that equals mask_id
  is final.
- Stop (the engine's early stop; the official loop never stops): after each block, the first
  max_tokens completion tokens committed so far are scanned for the first stop token ->
  'stop', cut after it; else if max_tokens completion tokens are committed -> 'length',
  truncated to max_tokens; else the next block.  Committed blocks never change, so this gives
  the official loop's text.  Stop ids are exactly `stop_token_ids` (the caller adds EOS ids).
- decode_mode "prefix_cache" / "dual_cache" (Fast-dLLM's llada/generate.py): the first step of
  each block forwards the whole canvas and keeps every position's K/V (post-RoPE, per layer) as
  the cache; each later step of the block forwards [block_start, end of canvas) (prefix) or
  [block_start, block_end) (dual) against the cached K/V of every other position, the queries'
  own K/V fresh (`forward_cached`). The block strategies and schedule are the canvas mode's.
- cfg_scale > 0 (LLaDA's classifier-free guidance): each step also forwards the canvas with the
  prompt positions replaced by the mask id, and the logits used are
  un + (cfg_scale + 1) * (cond - un), in float32 (LLaDA's generate.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

try:  # imported as the package tests.reference
    from .sdar import (BLOCK_STRATEGIES, _load_tensors, choose_positions, end_of_completion, sample_position_full,
                        swiglu)
except ImportError:  # tests/reference on sys.path
    from sdar import (BLOCK_STRATEGIES, _load_tensors, choose_positions, end_of_completion, sample_position_full,
                      swiglu)


# ----------------------------------------------------------------------------------------
# Pieces shared with dream.py
# ----------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * w over the last dim, in float32."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half (NeoX) RoPE of x [heads, L, D] at integer positions [L], as LLaDA's and
    Qwen2's: inv_freq_j = 1 / theta^(2j/D) for j < D/2, angle = position * inv_freq_j,
    x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x[D/2:], x[:D/2])."""
    D = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [L, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [L, D]
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def splice_kv(cached, k, v, q_start: int, q_end: int):
    """A layer's keys and values for a cached forward: the cached ones with positions
    [q_start, q_end) replaced by the forwarded rows' k, v (just k, v without a cache)."""
    if cached is None:
        return k, v
    k_all, v_all = cached[0].clone(), cached[1].clone()
    k_all[:, q_start:q_end] = k
    v_all[:, q_start:q_end] = v
    return k_all, v_all


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   allowed: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v with every position attending every position, or only where
    `allowed` [L, L] (query, key) is true.
    q [H, L, D], k and v [KV, L, D] (query head h reads kv head h // (H / KV)) -> [L, H * D]."""
    H, L, D = q.shape
    group = H // k.shape[0]
    k = k.repeat_interleave(group, dim=0)
    v = v.repeat_interleave(group, dim=0)
    scores = (q @ k.transpose(1, 2)) / math.sqrt(D)  # [H, L, L], no mask: bidirectional
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # [H, L, D]
    return out.transpose(0, 1).reshape(L, H * D)


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

class LLaDAReference:
    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        self.config = config
        self.w = weights
        self.num_layers = config["n_layers"]
        self.num_heads = config["n_heads"]
        self.num_kv_heads = config.get("n_kv_heads") or self.num_heads
        self.hidden = config["d_model"]
        self.head_dim = self.hidden // self.num_heads
        self.eps = config.get("rms_norm_eps", 1e-5)
        self.theta = config.get("rope_theta", 10000.0)
        self.vocab_size = config.get("embedding_size") or config["vocab_size"]
        if config.get("weight_tying", False):  # the head is the embedding
            weights.setdefault("model.transformer.ff_out.weight",
                               weights["model.transformer.wte.weight"])
        assert not config.get("include_qkv_bias", False), "q/k/v biases are not in the reference"

    def _attention(self, i: int, x: torch.Tensor, positions: torch.Tensor,
                   allowed: torch.Tensor | None = None) -> torch.Tensor:
        p = f"model.transformer.blocks.{i}."
        L, H, KV, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q = (x @ self.w[p + "q_proj.weight"].T).view(L, H, D).transpose(0, 1)  # [H, L, D]
        k = (x @ self.w[p + "k_proj.weight"].T).view(L, KV, D).transpose(0, 1)
        v = (x @ self.w[p + "v_proj.weight"].T).view(L, KV, D).transpose(0, 1)
        q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
        return full_attention(q, k, v, allowed) @ self.w[p + "attn_out.weight"].T

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = f"model.transformer.blocks.{i}."
        return swiglu(x, self.w[p + "ff_proj.weight"], self.w[p + "up_proj.weight"],
                      self.w[p + "ff_out.weight"])

    @torch.no_grad()
    def forward(self, input_ids, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """logits [L, vocab] (float32) of positions 0..L-1, full bidirectional attention (or the
        `allowed` [L, L] mask), no cache.  No logit shift: row i predicts the token at i."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        positions = torch.arange(ids.shape[0])
        h = self.w["model.transformer.wte.weight"][ids]
        for i in range(self.num_layers):
            p = f"model.transformer.blocks.{i}."
            a = rms_norm(h, self.w[p + "attn_norm.weight"], self.eps)
            h = h + self._attention(i, a, positions, allowed)
            f = rms_norm(h, self.w[p + "ff_norm.weight"], self.eps)
            h = h + self._mlp(i, f)
        h = rms_norm(h, self.w["model.transformer.ln_f.weight"], self.eps)
        return h @ self.w["model.transformer.ff_out.weight"].T

    __call__ = forward


    # -------------------------------------------------------------- Fast-dLLM's KV caches
    @torch.no_grad()
    def forward_cached(self, input_ids, q_start: int, q_end: int, cache=None):
        """Fast-dLLM's cached forward, written out plainly.

        Computes only positions [q_start, q_end) (the queries) through every layer; each layer's
        queries attend to keys/values at ALL positions [0, L): the fresh ones of the query
        positions, and for every other position the K/V stored in `cache` (per layer, post-RoPE,
        as the last full forward left them). With cache=None and the full range it is a plain
        forward. Returns (logits of the query positions [q_end - q_start, V], the K/V of this
        forward per layer over all positions, stale outside the queries)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        L, H, KV, D = ids.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        positions = torch.arange(L)
        qpos = positions[q_start:q_end]
        h = self.w["model.transformer.wte.weight"][ids[q_start:q_end]]
        new_cache = []
        for i in range(self.num_layers):
            p = f"model.transformer.blocks.{i}."
            a = rms_norm(h, self.w[p + "attn_norm.weight"], self.eps)
            n = a.shape[0]
            q = (a @ self.w[p + "q_proj.weight"].T).view(n, H, D).transpose(0, 1)
            k = (a @ self.w[p + "k_proj.weight"].T).view(n, KV, D).transpose(0, 1)
            v = (a @ self.w[p + "v_proj.weight"].T).view(n, KV, D).transpose(0, 1)
            q, k = rope(q, qpos, self.theta), rope(k, qpos, self.theta)
            k_all, v_all = splice_kv(None if cache is None else cache[i], k, v, q_start, q_end)
            new_cache.append((k_all, v_all))
            group = H // KV
            kk = k_all.repeat_interleave(group, dim=0)
            vv = v_all.repeat_interleave(group, dim=0)
            scores = (q @ kk.transpose(1, 2)) / math.sqrt(D)  # [H, n, L]: every key, no mask
            attn = (torch.softmax(scores, dim=-1) @ vv).transpose(0, 1).reshape(n, H * D)
            h = h + attn @ self.w[p + "attn_out.weight"].T
            f = rms_norm(h, self.w[p + "ff_norm.weight"], self.eps)
            h = h + self._mlp(i, f)
        h = rms_norm(h, self.w["model.transformer.ln_f.weight"], self.eps)
        return h @ self.w["model.transformer.ff_out.weight"].T, new_cache


def load_llada(model_dir) -> LLaDAReference:
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return LLaDAReference(config, _load_tensors(model_dir))


# ----------------------------------------------------------------------------------------
# Canvas decoding (SEMANTICS §5, decode_mode="canvas")
# ----------------------------------------------------------------------------------------

def unmask_step(logits, x, is_masked, masked, *, t, last_step, n_t, strategy, temperature, topk,
                topp, seed, dynamic_threshold, eb_threshold, factor) -> list[int]:
    """One denoise step of a block (SEMANTICS §2-§3): sample x0 and the strategy's scores at every
    still-masked position, choose the positions to unmask, write their x0. Only masked positions
    ever change. Returns the chosen positions."""
    sampled = {pos: sample_position_full(
        logits[pos], temperature=temperature, topk=topk, topp=topp, seed=seed, step=t,
        position=pos, strategy=strategy) for pos in masked}
    chosen = choose_positions(
        masked, {pos: s.confidence for pos, s in sampled.items()}, n_t, strategy, dynamic_threshold,
        entropy={pos: s.entropy for pos, s in sampled.items()},
        eb_threshold=eb_threshold, factor=factor, last_step=last_step)
    for pos in chosen:
        x[pos] = sampled[pos].x0
        is_masked[pos] = False
    return chosen


def generate_canvas(ref: LLaDAReference, prompt_ids: list[int], *, mask_id: int, block_length: int,
                    denoising_steps: int | None = None, remasking_strategy: str = "low_confidence",
                    temperature: float = 0.0, topk: int = 0, topp: float = 1.0,
                    dynamic_threshold: float = 0.9, eb_threshold: float = 0.35, factor: float = 1.0,
                    max_tokens: int = 64, stop_token_ids=(), seed: int = 0, trace: bool = False,
                    cfg_scale: float = 0.0, decode_mode: str = "canvas"):
    """-> (completion token ids, finish_reason 'stop' | 'length'); with trace=True a third
    element: one list per forward (in order) of the absolute positions unmasked by that step,
    so len(trace) is the number of forwards."""
    if remasking_strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"remasking_strategy {remasking_strategy!r} not a block strategy")
    if decode_mode not in ("canvas", "prefix_cache", "dual_cache"):
        raise ValueError(f"decode_mode {decode_mode!r}")
    if cfg_scale > 0 and decode_mode != "canvas":
        raise ValueError("cfg_scale applies to canvas mode only")
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    B = block_length
    S = denoising_steps or B
    P = len(prompt_ids)
    G = -(-max_tokens // B) * B  # max_tokens rounded up to a multiple of B
    stops = set(int(s) for s in stop_token_ids)
    x = [int(t) for t in prompt_ids] + [mask_id] * G
    is_masked = [False] * P + [True] * G
    steps_log: list[list[int]] = []

    def result(tokens, reason):
        return (tokens, reason, steps_log) if trace else (tokens, reason)

    for k in range(G // B):
        block_start, block_end = P + k * B, P + (k + 1) * B
        for t in range(S):
            masked = [pos for pos in range(block_start, block_end) if is_masked[pos]]
            if not masked:  # no masks left before the last step: the block is finished
                break
            n_t = B // S + (1 if t < B % S else 0)
            if decode_mode == "canvas":
                logits = ref.forward(x)  # the whole canvas, bidirectional
            elif t == 0:
                # Fast-dLLM: the block's first step forwards the whole canvas and refreshes the
                # cache (every position's K/V) that the block's later steps reuse.
                full, cache = ref.forward_cached(x, 0, len(x))
                logits = full
            else:
                # prefix_cache: the block and everything after it are recomputed against the
                # cached prefix; dual_cache: only the block, against the cached prefix AND suffix.
                q_end = len(x) if decode_mode == "prefix_cache" else block_end
                part, _ = ref.forward_cached(x, block_start, q_end, cache)
                logits = torch.zeros(len(x), part.shape[1])
                logits[block_start:q_end] = part
            if cfg_scale > 0:  # classifier-free guidance: the same canvas with the prompt masked
                un = ref.forward([mask_id] * P + x[P:])
                scale = torch.tensor(cfg_scale + 1.0, dtype=torch.float32)
                logits = un + scale * (logits - un)
            chosen = unmask_step(logits, x, is_masked, masked, t=t, last_step=(t == S - 1), n_t=n_t,
                                 strategy=remasking_strategy, temperature=temperature, topk=topk,
                                 topp=topp, seed=seed, dynamic_threshold=dynamic_threshold,
                                 eb_threshold=eb_threshold, factor=factor)
            steps_log.append(sorted(chosen))
        # the block is committed: the stop rule, then the length rule
        done = end_of_completion(x[P:block_end], max_tokens, stops)
        if done:
            return result(*done)
    raise AssertionError("unreachable: the last block reaches max_tokens")


# ----------------------------------------------------------------------------------------
# Block decode (SEMANTICS §5, decode_mode="block_causal")
# ----------------------------------------------------------------------------------------

def prompt_block_mask(L: int, P: int, B: int) -> torch.Tensor:
    """allowed[i, j]: the prompt [0, P) is one bidirectional block; after it, blocks of B start at
    P and attend to the prompt, earlier blocks and themselves (no future blocks)."""
    pos = torch.arange(L)
    block = torch.where(pos < P, torch.full_like(pos, -1), (pos - P) // B)
    return block[None, :] <= block[:, None]


def generate_block_causal(ref: LLaDAReference, prompt_ids: list[int], *, mask_id: int, block_length: int,
                          denoising_steps: int | None = None, remasking_strategy: str = "low_confidence",
                          temperature: float = 0.0, topk: int = 0, topp: float = 1.0,
                          dynamic_threshold: float = 0.9, eb_threshold: float = 0.35, factor: float = 1.0,
                          max_tokens: int = 64, stop_token_ids=(), seed: int = 0):
    """Block decode of LLaDA (BlockInfer/JetEngine): the whole prompt is prefilled
    bidirectionally, then blocks of B masks are appended one at a time and denoised with the
    block strategies of §3 exactly as SDAR's blocks are (§4), every step a full recompute of the
    canvas so far under `prompt_block_mask`.  Stop and length rules as in canvas mode."""
    if remasking_strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"remasking_strategy {remasking_strategy!r} not a block strategy")
    B, P = block_length, len(prompt_ids)
    S = denoising_steps or B
    stops = set(int(s) for s in stop_token_ids)
    x = [int(t) for t in prompt_ids]
    is_masked = [False] * P
    while True:
        block_start = len(x)
        x += [mask_id] * B
        is_masked += [True] * B
        block_end = len(x)
        for t in range(S):
            masked = [pos for pos in range(block_start, block_end) if is_masked[pos]]
            if not masked:
                break
            n_t = B // S + (1 if t < B % S else 0)
            logits = ref.forward(x, prompt_block_mask(len(x), P, B))
            unmask_step(logits, x, is_masked, masked, t=t, last_step=(t == S - 1), n_t=n_t,
                        strategy=remasking_strategy, temperature=temperature, topk=topk, topp=topp,
                        seed=seed, dynamic_threshold=dynamic_threshold, eb_threshold=eb_threshold,
                        factor=factor)
        done = end_of_completion(x[P:block_end], max_tokens, stops)
        if done:
            return done
