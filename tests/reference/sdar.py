"""A plain float32 PyTorch reference of SDAR (Qwen3-shaped, block-causal) and of BlockInfer's
decoding contract for it (docs SEMANTICS.md §2-§4).  Written to be read, not to be fast:
every denoise step recomputes the whole sequence with no KV cache.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

try:  # imported as the package tests.reference
    from .philox import token_gumbel
except ImportError:  # tests/reference on sys.path
    from philox import token_gumbel


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

def _load_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: one model.safetensors, or shards listed in the index."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(str(model_dir / name)))
    return {k: v.to(torch.float32) for k, v in tensors.items()}


class SDARReference:
    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        self.config = config
        self.w = weights
        self.num_layers = config["num_hidden_layers"]
        self.num_heads = config["num_attention_heads"]
        self.num_kv_heads = config.get("num_key_value_heads", self.num_heads)
        self.hidden = config["hidden_size"]
        self.head_dim = config.get("head_dim") or self.hidden // self.num_heads
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.theta = config.get("rope_theta", 10000.0)
        self.vocab_size = config["vocab_size"]
        if "lm_head.weight" not in weights:  # tie_word_embeddings: the head is the embedding
            assert config.get("tie_word_embeddings", False), "lm_head.weight missing"
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]

    # -- pieces --------------------------------------------------------------------------
    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) * w, over the last dim, in float32
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # Neox / rotate_half RoPE as Qwen3: x [heads, L, D]
        D = self.head_dim
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [L, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [L, D]
        cos, sin = emb.cos(), emb.sin()
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin

    @staticmethod
    def block_causal_mask(L: int, block_length: int) -> torch.Tensor:
        # SEMANTICS §4: i may attend j iff floor(j/B) <= floor(i/B), blocks aligned to 0
        blk = torch.arange(L) // block_length
        return blk[None, :] <= blk[:, None]  # [L(i), L(j)] bool

    def _attention(self, i: int, x: torch.Tensor, positions, allowed) -> torch.Tensor:
        p = f"model.layers.{i}.self_attn."
        L, H, KV, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q = (x @ self.w[p + "q_proj.weight"].T).view(L, H, D)
        k = (x @ self.w[p + "k_proj.weight"].T).view(L, KV, D)
        v = (x @ self.w[p + "v_proj.weight"].T).view(L, KV, D)
        # Qwen3 QK-norm: RMSNorm of each head vector over head_dim, before RoPE
        q = self._rms_norm(q, self.w[p + "q_norm.weight"]).transpose(0, 1)  # [H, L, D]
        k = self._rms_norm(k, self.w[p + "k_norm.weight"]).transpose(0, 1)  # [KV, L, D]
        v = v.transpose(0, 1)
        q, k = self._rope(q, positions), self._rope(k, positions)
        # GQA: query head h reads kv head h // (H / KV)
        group = H // KV
        k = k.repeat_interleave(group, dim=0)
        v = v.repeat_interleave(group, dim=0)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(D)  # [H, L, L]
        scores = scores.masked_fill(~allowed, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v  # [H, L, D]
        out = out.transpose(0, 1).reshape(L, H * D)
        return out @ self.w[p + "o_proj.weight"].T

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = f"model.layers.{i}.mlp."
        gate = x @ self.w[p + "gate_proj.weight"].T
        up = x @ self.w[p + "up_proj.weight"].T
        return (torch.nn.functional.silu(gate) * up) @ self.w[p + "down_proj.weight"].T

    # -- full forward --------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, input_ids, block_length: int) -> torch.Tensor:
        """logits [L, vocab] (float32) of positions 0..L-1, block-causal, no cache.
        No logit shift: row i predicts the token at position i."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        L = ids.shape[0]
        positions = torch.arange(L)
        allowed = self.block_causal_mask(L, block_length)
        h = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            h = h + self._attention(i, self._rms_norm(h, self.w[p + "input_layernorm.weight"]),
                                    positions, allowed)
            h = h + self._mlp(i, self._rms_norm(h, self.w[p + "post_attention_layernorm.weight"]))
        h = self._rms_norm(h, self.w["model.norm.weight"])
        return h @ self.w["lm_head.weight"].T

    __call__ = forward


def load_sdar(model_dir) -> SDARReference:
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return SDARReference(config, _load_tensors(model_dir))


# ----------------------------------------------------------------------------------------
# Per-position sampling (SEMANTICS §2)
# ----------------------------------------------------------------------------------------

def _order_desc(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices of `values` sorted descending, ties to the lower id."""
    return np.lexsort((ids, -values))


def sample_position(logits_row: torch.Tensor, *, temperature: float, topk: int, topp: float,
                    seed: int, step: int, position: int) -> tuple[int, float]:
    """-> (x0, confidence) for one position's float32 logits row."""
    l = logits_row.to(torch.float32)
    V = l.shape[0]
    if temperature == 0:
        # greedy: argmax (torch.argmax returns the first maximum = lowest id), c = softmax(l)[x0]
        x0 = int(torch.argmax(l))
        return x0, float(torch.softmax(l, dim=-1)[x0])
    scaled = l / temperature  # float32
    p = torch.softmax(scaled, dim=-1).numpy()  # tempered, float32
    ids = np.arange(V)
    keep = np.ones(V, dtype=bool)
    if topk > 0:  # keep the topk largest p, ties to the lower id
        keep[:] = False
        keep[_order_desc(p, ids)[:topk]] = True
    if topp < 1.0:
        # ranks of the kept ids by p descending (ties lower id); renormalise over the kept;
        # keep rank r iff the sum of renormalised probabilities of ranks < r is < topp
        kept = ids[keep]
        kept = kept[_order_desc(p[kept], kept)]
        q = p[kept].astype(np.float64)
        q = q / q.sum()
        before = np.concatenate([[0.0], np.cumsum(q)[:-1]])
        keep[:] = False
        keep[kept[before < topp]] = True  # rank 0 always has before = 0 < topp
    # Gumbel-max draw from the filtered renormalised distribution:
    # x0 = argmax over kept ids of float64(l_i / T in float32) + g_i, ties to the lower id
    score = scaled.numpy().astype(np.float64) + token_gumbel(seed, step, position, V)
    score[~keep] = -np.inf
    x0 = int(np.argmax(score))  # first maximum = lowest id
    return x0, float(p[x0])  # c = tempered, UNFILTERED probability


# ----------------------------------------------------------------------------------------
# Remasking strategies (SEMANTICS §3)
# ----------------------------------------------------------------------------------------

def choose_positions(masked: list[int], conf: dict[int, float], n_t: int, strategy: str,
                     dynamic_threshold: float) -> list[int]:
    """Positions (absolute) of the still-masked set `masked` to unmask at this step."""
    k = min(n_t, len(masked))
    # highest confidence first, ties to the lower position
    by_conf = sorted(masked, key=lambda i: (-conf[i], i))
    if strategy == "sequential":
        chosen = sorted(masked)[:k]
    elif strategy == "low_confidence_static":
        chosen = by_conf[:k]
    elif strategy == "low_confidence_dynamic":
        G = [i for i in masked if conf[i] > dynamic_threshold]  # strict
        chosen = G if len(G) >= n_t else by_conf[:k]
    else:
        raise ValueError(f"remasking_strategy {strategy!r} not in the reference")
    if not chosen and masked:  # §3: at least one position per step while M is non-empty
        chosen = by_conf[:1]
    return chosen


# ----------------------------------------------------------------------------------------
# Block decoding (SEMANTICS §4)
# ----------------------------------------------------------------------------------------

def generate(ref: SDARReference, prompt_ids: list[int], *, mask_id: int, block_length: int,
             denoising_steps: int | None = None,
             remasking_strategy: str = "low_confidence_static", temperature: float = 1.0,
             topk: int = 0, topp: float = 1.0, dynamic_threshold: float = 0.9,
             max_tokens: int = 64, stop_token_ids=(), seed: int = 0) -> tuple[list[int], str]:
    """-> (completion token ids, finish_reason 'stop' | 'length')."""
    B = block_length
    S = denoising_steps or B
    P = len(prompt_ids)
    stops = set(int(s) for s in stop_token_ids)
    x = [int(t) for t in prompt_ids]
    # The first block starts at A = floor(P/B)*B and holds the prompt tail prompt[A:]
    block_start = (P // B) * B
    while True:
        # extend the canvas with masks up to the end of the current block
        block_end = block_start + B
        is_masked = [False] * (block_end - block_start)
        for pos in range(len(x), block_end):
            x.append(mask_id)
            is_masked[pos - block_start] = True
        for t in range(S):
            masked = [block_start + j for j, m in enumerate(is_masked) if m]
            if not masked:  # no masks left before the last step: the block is finished
                break
            n_t = B // S + (1 if t < B % S else 0)
            logits = ref.forward(x[:block_end], B)[block_start:block_end]
            x0, conf = {}, {}
            for pos in masked:
                x0[pos], conf[pos] = sample_position(
                    logits[pos - block_start], temperature=temperature, topk=topk, topp=topp,
                    seed=seed, step=t, position=pos)
            if t == S - 1:  # last step: everything still masked is committed
                chosen = masked
            else:
                chosen = choose_positions(masked, conf, n_t, remasking_strategy,
                                          dynamic_threshold)
            for pos in chosen:  # only masked positions ever change
                x[pos] = x0[pos]
                is_masked[pos - block_start] = False
        # the block is committed: apply the stop rule, then the length rule
        completion = x[P:]
        kept = completion[:max_tokens]
        for n, tok in enumerate(kept):
            if tok in stops:
                return kept[: n + 1], "stop"
        if len(completion) >= max_tokens:
            return kept, "length"
        block_start = block_end
