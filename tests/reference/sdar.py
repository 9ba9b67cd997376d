"""A plain float32 PyTorch reference of SDAR (Qwen3-shaped, block-causal) and of BlockInfer's
decoding contract for it (docs SEMANTICS.md §2-§4).  Written to be read, not to be fast:
every denoise step recomputes the whole sequence with no KV cache.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file

try:  # imported as the package tests.reference
    from .philox import position_uniform, token_gumbel
except ImportError:  # tests/reference on sys.path
    from philox import position_uniform, token_gumbel


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


def swiglu(x: torch.Tensor, gate_w: torch.Tensor, up_w: torch.Tensor,
           down_w: torch.Tensor) -> torch.Tensor:
    """The gated MLP of every family here: down(silu(x gate^T) * (x up^T))."""
    return (torch.nn.functional.silu(x @ gate_w.T) * (x @ up_w.T)) @ down_w.T


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
        return swiglu(x, self.w[p + "gate_proj.weight"], self.w[p + "up_proj.weight"],
                      self.w[p + "down_proj.weight"])

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

# The block strategies of SEMANTICS §3 (Dream's canvas algorithms are not block strategies).
BLOCK_STRATEGIES = ("sequential", "low_confidence_static", "low_confidence_dynamic",
                    "entropy_bounded", "low_confidence", "random", "confidence_threshold",
                    "confidence_factor")


class PositionSample(NamedTuple):
    """Everything one position's sampling produces at one step."""
    x0: int            # the sampled token
    confidence: float  # the strategy's ranking score c (a float32 value)
    logprob: float     # log p[x0], float64 (p tempered, unfiltered; softmax(l) when T == 0)
    entropy: float     # -sum p log p over the same p, float64, >= 0


def _order_desc(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Indices of `values` sorted descending, ties to the lower id."""
    return np.lexsort((ids, -values))


def logprob_entropy(z, x0: int) -> tuple[float, float]:
    """(log p[x0], H) for p = softmax(z), z a float32 row (l / T in float32, or l when T == 0).

    Computed from the log-softmax in float64, the engine's formulas:
        m = max z,  d_i = float64(z_i) - m,  S = sum_i exp(d_i)
        logprob = d[x0] - log S
        H       = max(0, log S - sum_i d_i exp(d_i) / S)
    (a term with exp(d_i) == 0, e.g. z_i = -inf, contributes 0 to the second sum).
    """
    z = np.asarray(z, dtype=np.float32).astype(np.float64)
    d = z - z.max()
    e = np.exp(d)
    S = e.sum()
    log_s = math.log(S)
    weighted = (np.where(e > 0, d, 0.0) * e).sum()
    return float(d[x0] - log_s), max(0.0, float(log_s - weighted / S))


def sample_position_full(logits_row: torch.Tensor, *, temperature: float, topk: int, topp: float,
                         seed: int, step: int, position: int,
                         strategy: str = "low_confidence_static") -> PositionSample:
    """x0, the strategy's confidence, log p[x0] and the entropy for one position's float32
    logits row at block step `step`, absolute position `position`."""
    l = logits_row.to(torch.float32)
    V = l.shape[0]
    if temperature == 0:
        # greedy: argmax (torch.argmax returns the first maximum = lowest id), p = softmax(l)
        x0 = int(torch.argmax(l))
        z = l.numpy()
        c = float(torch.softmax(l, dim=-1)[x0])
    else:
        scaled = l / temperature  # float32
        z = scaled.numpy()
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
        score = z.astype(np.float64) + token_gumbel(seed, step, position, V)
        score[~keep] = -np.inf
        x0 = int(np.argmax(score))  # first maximum = lowest id
        c = float(p[x0])  # c = tempered, UNFILTERED probability
    if strategy == "low_confidence":
        # LLaDA: the UNTEMPERED probability softmax(l)[x0] (for T == 0 the same as above)
        c = float(torch.softmax(l, dim=-1)[x0])
    elif strategy == "random":
        # LLaDA: a uniform of the request's RNG, counter (0, position, step, 1); held as a
        # float32 like every confidence
        c = float(np.float32(position_uniform(seed, step, position)))
    logprob, entropy = logprob_entropy(z, x0)
    return PositionSample(x0, c, logprob, entropy)


def sample_position(logits_row: torch.Tensor, *, temperature: float, topk: int, topp: float,
                    seed: int, step: int, position: int,
                    strategy: str = "low_confidence_static") -> tuple[int, float]:
    """-> (x0, confidence) for one position's float32 logits row."""
    s = sample_position_full(logits_row, temperature=temperature, topk=topk, topp=topp,
                             seed=seed, step=step, position=position, strategy=strategy)
    return s.x0, s.confidence


# ----------------------------------------------------------------------------------------
# Remasking strategies (SEMANTICS §3)
# ----------------------------------------------------------------------------------------

def _f32(v: float) -> float:
    """A float rounded to the nearest float32 (returned as a Python float64)."""
    return float(np.float32(v))


def choose_positions(masked: list[int], conf: dict[int, float], n_t: int, strategy: str,
                     dynamic_threshold: float, *, entropy: dict[int, float] | None = None,
                     eb_threshold: float = 0.35, factor: float = 1.0,
                     last_step: bool = False) -> list[int]:
    """Positions (absolute) of the still-masked set `masked` (in position order) to unmask at
    this step.  `conf` / `entropy` map each masked position to its c / H.

    Numerics of the strategies added for issue 3 (the engine's): c and H are float32 numbers
    (values given here are rounded to float32); `entropy_bounded` sums H in float64 against
    float64(float32(eb_threshold)); `confidence_threshold` compares float32 c >= float32
    threshold; `confidence_factor` compares float64(c) >= 1.0 - float64(factor) / (n + 1).
    """
    if strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"remasking_strategy {strategy!r} not in the reference")
    if last_step:  # t == S - 1: everything still masked is committed (all strategies)
        return list(masked)
    k = min(n_t, len(masked))
    # highest confidence first, ties to the lower position
    by_conf = sorted(masked, key=lambda i: (-conf[i], i))
    if strategy == "sequential":
        chosen = sorted(masked)[:k]
    elif strategy in ("low_confidence_static", "low_confidence", "random"):
        chosen = by_conf[:k]
    elif strategy == "low_confidence_dynamic":
        G = [i for i in masked if conf[i] > dynamic_threshold]  # strict
        chosen = G if len(G) >= n_t else by_conf[:k]
    elif strategy == "entropy_bounded":
        if entropy is None:
            raise ValueError("entropy_bounded needs the entropies")
        H = {i: _f32(entropy[i]) for i in masked}
        order = sorted(masked, key=lambda i: (H[i], i))  # ascending, ties to the lower position
        bound = _f32(eb_threshold)
        total, n = 0.0, 0
        for i in order:  # the number of prefixes whose float64 sum is < the bound (strict)
            total += H[i]
            if total < bound:
                n += 1
        chosen = order[:max(n, 1)]  # H >= 0: the qualifying prefixes are the first n
    elif strategy == "confidence_threshold":
        tau = _f32(dynamic_threshold)
        chosen = by_conf[:1] + [i for i in by_conf[1:] if _f32(conf[i]) >= tau]  # non-strict
    elif strategy == "confidence_factor":
        chosen = by_conf[:1]
        for n, i in enumerate(by_conf[1:], start=2):  # 1-based rank n
            if _f32(conf[i]) >= 1.0 - float(factor) / (n + 1):
                chosen.append(i)
            else:
                break
    if not chosen and masked:  # §3: at least one position per step while M is non-empty
        chosen = by_conf[:1]
    return chosen


# ----------------------------------------------------------------------------------------
# Block decoding (SEMANTICS §4)
# ----------------------------------------------------------------------------------------

def end_of_completion(completion: list[int], max_tokens: int, stops) -> tuple[list[int], str] | None:
    """SEMANTICS §4's end rules once a block is committed: the first stop token ends the
    completion (and is kept), else max_tokens truncates it; None while neither applies."""
    kept = completion[:max_tokens]
    for n, tok in enumerate(kept):
        if tok in stops:
            return kept[: n + 1], "stop"
    if len(completion) >= max_tokens:
        return kept, "length"
    return None


def generate(ref: SDARReference, prompt_ids: list[int], *, mask_id: int, block_length: int,
             denoising_steps: int | None = None,
             remasking_strategy: str = "low_confidence_static", temperature: float = 1.0,
             topk: int = 0, topp: float = 1.0, dynamic_threshold: float = 0.9,
             eb_threshold: float = 0.35, factor: float = 1.0,
             max_tokens: int = 64, stop_token_ids=(), seed: int = 0, logprobs: bool = False):
    """-> (completion token ids, finish_reason 'stop' | 'length'), and with logprobs=True a
    third element: one (step, logprob, entropy) per completion token, the block step at which
    its position was unmasked and the values of PositionSample at that step."""
    if remasking_strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"remasking_strategy {remasking_strategy!r} not in the reference")
    B = block_length
    S = denoising_steps or B
    P = len(prompt_ids)
    stops = set(int(s) for s in stop_token_ids)
    x = [int(t) for t in prompt_ids]
    info: dict[int, tuple[int, float, float]] = {}  # position -> (step, logprob, entropy)

    def result(tokens, reason):
        if not logprobs:
            return tokens, reason
        return tokens, reason, [info[P + n] for n in range(len(tokens))]

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
            sampled = {pos: sample_position_full(
                logits[pos - block_start], temperature=temperature, topk=topk, topp=topp,
                seed=seed, step=t, position=pos, strategy=remasking_strategy)
                for pos in masked}
            chosen = choose_positions(
                masked, {pos: s.confidence for pos, s in sampled.items()}, n_t,
                remasking_strategy, dynamic_threshold,
                entropy={pos: s.entropy for pos, s in sampled.items()},
                eb_threshold=eb_threshold, factor=factor, last_step=(t == S - 1))
            for pos in chosen:  # only masked positions ever change
                x[pos] = sampled[pos].x0
                is_masked[pos - block_start] = False
                info[pos] = (t, sampled[pos].logprob, sampled[pos].entropy)
        # the block is committed: apply the stop rule, then the length rule
        done = end_of_completion(x[P:], max_tokens, stops)
        if done:
            return result(*done)
        block_start = block_end
