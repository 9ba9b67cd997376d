"""A plain float32 PyTorch reference of Dream (Qwen2-shaped, bidirectional, shifted logits) and of
BlockInfer's decoding of it (docs SEMANTICS.md §5, §6): `generate` in every decode mode (canvas,
Fast-dLLM's prefix_cache / dual_cache, block_causal) with Dream's algorithms or the block
strategies, and `generate_canvas`, Dream's `diffusion_generate` (canvas mode, one block).
Written to be read, not to be fast: the caches are separate K/V tensors, block decode a full
recompute under a mask.

Model (Dream-org/Dream-v0-Instruct-7B, `modeling_dream.py`): Qwen2 with full bidirectional
attention (no mask), q/k/v projections with biases (no key in config.json says so), GQA
(query head h reads kv head h // (H / KV)), head_dim = hidden_size / num_attention_heads,
rotate-half RoPE with rope_theta, RMSNorm x * rsqrt(mean(x^2) + eps) * w, SiLU gated MLP,
final model.norm, untied lm_head.  The logits are SHIFTED: position j is predicted from the
hidden state at j - 1; row 0 keeps the model's row 0 (Dream's
`logits = cat([logits[:, :1], logits[:, :-1]], dim=1)`).

Choices SEMANTICS leaves open, and how this file resolves them (for `diffusion_generate`; the
other modes are described at `generate`):
- Canvas: prompt + max_tokens masks (Dream's max_new_tokens; no rounding to a block); the whole
  generation is one block of S = `denoising_steps` steps (None = max_tokens).  The Philox step
  is the global step i (0..S-1), the position is the absolute canvas position.
- Timesteps t_i = torch.linspace(1, eps, S + 1) in float32 as CUDA computes it:
  step = float32(float32(eps) - 1) / float32(S); i < (S+1)//2: t_i = fma(step, i, 1), else
  t_i = fma(-step, S - i, float32(eps)), each a single float32 rounding (nvcc contracts
  `start + step * i` into an FMA; torch's AVX512 CPU kernel gives the same values, which
  test_reference_bidirectional checks).
- k = int(float32(|M|) * float32(1 - float32(s / t))) for i < S-1, else |M| (Dream's
  `int(num_mask_token * (1 - s / t))` on float32 tensors); |M| counts the masked flags of
  the whole canvas.
- Per-position sampling (Dream's `sample_tokens`): z = float32(l / T) if T > 0 else l; Dream's
  filters on z in Dream's order, top-p THEN top-k (not §2's top-k then top-p):
    top-p (topp < 1): rank ids by z descending (ties to the lower id); p = softmax(z) in
      float32; keep rank r iff the float64 sum of p over ranks < r is <= topp (Dream removes a
      rank when the cumulative sum before it exceeds top_p; rank 0 always kept; Dream sums in
      float32);
    top-k (topk > 0): keep the top-p survivors whose z >= the topk-th largest surviving z
      (Dream's `logits < topk(...)[-1]` rule: ties at the threshold are all kept).
  q = softmax(z with the removed ids at -inf), float32.  x0: T == 0: argmax l (lowest id on
  ties; Dream takes argmax q, which is the same token except where float32 rounding makes two
  different logits equal probabilities); T > 0: argmax over kept ids of float64(z) +
  token_gumbel(seed, i, position, V), ties to the lower id (a draw from q; Dream uses
  torch.distributions.Categorical).
  c (float32): origin / maskgit_plus q[x0]; topk_margin q_top1 - q_top2 (the two largest q, not
  q[x0]; q_top2 = 0 if one id survives); entropy sum over kept ids of q log q computed in float64
  from the float32 q, then rounded to float32 (Dream adds 1e-10 inside the log; 0 log 0 = 0
  here, exactly the contract's c).
- maskgit_plus / topk_margin / entropy with alg_temp == 0: the k highest c, ties to the lower
  position.  alg_temp > 0: the k highest float64(float32(c) / float32(alg_temp)) +
  position_gumbel(seed, i, position, stream=2), ties to the lower position: Gumbel-top-k, i.e. k
  draws without replacement from softmax(c / alg_temp) (Dream's torch.multinomial); the
  log-softmax normaliser is a constant of the step and is left out.
- origin: position transfers iff position_uniform(seed, i, position) (float64) <
  float64(float32(1 - float32(s / t))) for i < S-1; on the last step p = 1 and every masked
  position transfers (the uniform is < 1).  Its token is x0 as above.
- Masked positions are tracked by flags: prompt positions are never changed, and a committed x0
  equal to mask_id is final (Dream recomputes `x == mask_token_id` and would resample it).
- A step with no masked position left (only `origin` can empty the canvas before the last step)
  is skipped, forward included: Dream's loop would run it and change nothing.
- Stop: applied once, after the loop (the whole canvas is one block): the first stop token of
  the completion -> 'stop', cut after it; else 'length' (max_tokens tokens).  Stop ids are
  exactly `stop_token_ids` (the caller adds EOS ids).
"""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

try:  # imported as the package tests.reference
    from .llada import full_attention, prompt_block_mask, rms_norm, rope, splice_kv
    from .philox import position_gumbel, position_uniform, token_gumbel
    from .sdar import (BLOCK_STRATEGIES, _load_tensors, choose_positions, end_of_completion, logprob_entropy,
                       sample_position_full, swiglu)
except ImportError:  # tests/reference on sys.path
    from llada import full_attention, prompt_block_mask, rms_norm, rope, splice_kv
    from philox import position_gumbel, position_uniform, token_gumbel
    from sdar import (BLOCK_STRATEGIES, _load_tensors, choose_positions, end_of_completion, logprob_entropy,
                      sample_position_full, swiglu)

DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


# ----------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------

class DreamReference:
    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        self.config = config
        self.w = weights
        self.num_layers = config["num_hidden_layers"]
        self.num_heads = config["num_attention_heads"]
        self.num_kv_heads = config.get("num_key_value_heads") or self.num_heads
        self.hidden = config["hidden_size"]
        self.head_dim = self.hidden // self.num_heads
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.theta = config.get("rope_theta", 10000.0)
        self.vocab_size = config["vocab_size"]
        if "lm_head.weight" not in weights:
            assert config.get("tie_word_embeddings", False), "lm_head.weight missing"
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]

    def _qkv(self, i: int, x: torch.Tensor, positions: torch.Tensor):
        """q [H, L, D] and k, v [KV, L, D] of layer i for the normed rows x at `positions`,
        biases added, RoPE applied to q and k."""
        p = f"model.layers.{i}.self_attn."
        L, H, KV, D = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q = x @ self.w[p + "q_proj.weight"].T + self.w[p + "q_proj.bias"]
        k = x @ self.w[p + "k_proj.weight"].T + self.w[p + "k_proj.bias"]
        v = x @ self.w[p + "v_proj.weight"].T + self.w[p + "v_proj.bias"]
        q = q.view(L, H, D).transpose(0, 1)  # [H, L, D]
        k = k.view(L, KV, D).transpose(0, 1)  # [KV, L, D]
        v = v.view(L, KV, D).transpose(0, 1)
        return rope(q, positions, self.theta), rope(k, positions, self.theta), v

    def _mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = f"model.layers.{i}.mlp."
        return swiglu(x, self.w[p + "gate_proj.weight"], self.w[p + "up_proj.weight"],
                      self.w[p + "down_proj.weight"])

    @torch.no_grad()
    def forward(self, input_ids, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own logits [L, vocab] (float32), full bidirectional attention (or only
        where `allowed` [L, L] (query, key) is true), no cache, NOT shifted: row j is computed
        from the hidden state at j (and predicts token j + 1)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        positions = torch.arange(ids.shape[0])
        h = self.w["model.embed_tokens.weight"][ids]
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            a = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
            q, k, v = self._qkv(i, a, positions)
            h = h + full_attention(q, k, v, allowed) @ self.w[p + "self_attn.o_proj.weight"].T
            f = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
            h = h + self._mlp(i, f)
        h = rms_norm(h, self.w["model.norm.weight"], self.eps)
        return h @ self.w["lm_head.weight"].T

    @torch.no_grad()
    def forward_cached(self, input_ids, q_start: int, q_end: int, cache=None):
        """Fast-dLLM's cached forward (as llada.py's `forward_cached`): only positions
        [q_start, q_end) are computed, through every layer; their queries attend to keys/values
        at ALL positions [0, L): their own fresh K/V, and for every other position the K/V held
        in `cache` (per layer, post-RoPE, as the last full forward left them).  With cache=None
        and the full range it is `forward`.  Returns (the model's own rows [q_end - q_start, V],
        NOT shifted: row r is computed from the hidden state at q_start + r; the K/V of this
        forward per layer over all positions, stale outside the queries)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        qpos = torch.arange(ids.shape[0])[q_start:q_end]
        h = self.w["model.embed_tokens.weight"][ids[q_start:q_end]]
        new_cache = []
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            a = rms_norm(h, self.w[p + "input_layernorm.weight"], self.eps)
            q, k, v = self._qkv(i, a, qpos)
            k_all, v_all = splice_kv(None if cache is None else cache[i], k, v, q_start, q_end)
            new_cache.append((k_all, v_all))
            group = self.num_heads // self.num_kv_heads
            kk = k_all.repeat_interleave(group, dim=0)
            vv = v_all.repeat_interleave(group, dim=0)
            scores = (q @ kk.transpose(1, 2)) / math.sqrt(self.head_dim)  # every key, no mask
            attn = (torch.softmax(scores, dim=-1) @ vv).transpose(0, 1).reshape(q.shape[1], -1)
            h = h + attn @ self.w[p + "self_attn.o_proj.weight"].T
            f = rms_norm(h, self.w[p + "post_attention_layernorm.weight"], self.eps)
            h = h + self._mlp(i, f)
        h = rms_norm(h, self.w["model.norm.weight"], self.eps)
        return h @ self.w["lm_head.weight"].T, new_cache

    __call__ = forward

    def shifted_logits(self, input_ids) -> torch.Tensor:
        """Dream's decoding logits [L, vocab]: row j is the model's row j - 1 (the prediction of
        token j), row 0 the model's row 0."""
        raw = self.forward(input_ids)
        return torch.cat([raw[:1], raw[:-1]], dim=0)


def load_dream(model_dir) -> DreamReference:
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    return DreamReference(config, _load_tensors(model_dir))


# ----------------------------------------------------------------------------------------
# Schedule (SEMANTICS §6)
# ----------------------------------------------------------------------------------------

def _round_f32(exact: Fraction) -> np.float32:
    """The float32 nearest to an exact rational (ties to even): one rounding, as an FMA."""
    guess = np.float32(float(exact))  # float(Fraction) is correctly rounded; the float32 cast
    # may round a second time, so pick the nearest of the guess and its two neighbours
    cands = [np.nextafter(guess, np.float32(-np.inf)), guess,
             np.nextafter(guess, np.float32(np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - exact),
                                     int(np.array(c, dtype=np.float32).view(np.uint32)) & 1))
    return np.float32(best)


def _fma_f32(a, b, c) -> np.float32:
    """float32 a * b + c with a single rounding."""
    return _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def dream_timesteps(steps: int, eps: float = 1e-3) -> list[np.float32]:
    """t_0..t_S = torch.linspace(1, eps, S + 1) in float32 as the CUDA kernel computes it."""
    if steps < 1:
        raise ValueError("denoising_steps must be >= 1")
    n = steps + 1
    start, end = np.float32(1.0), np.float32(eps)
    step = np.float32(np.float32(end - start) / np.float32(n - 1))
    halfway = n // 2
    return [_fma_f32(step, i, start) if i < halfway else _fma_f32(-step, n - i - 1, end)
            for i in range(n)]


def transfer_fraction(t: np.float32, s: np.float32) -> np.float32:
    """float32(1 - float32(s / t)): the expected fraction of masks unmasked from t to s."""
    return np.float32(np.float32(1.0) - np.float32(np.float32(s) / np.float32(t)))


def num_transfer_tokens(num_masked: int, i: int, timesteps) -> int:
    """k at step i of S = len(timesteps) - 1:
    int(float32(|M|) * float32(1 - s/t)) for i < S-1, else |M|."""
    S = len(timesteps) - 1
    if i == S - 1:
        return num_masked
    frac = transfer_fraction(timesteps[i], timesteps[i + 1])
    return int(np.float32(np.float32(num_masked) * frac))


def transfer_schedule(num_masks: int, steps: int, eps: float = 1e-3) -> list[int]:
    """k for every step of maskgit_plus / topk_margin / entropy when the canvas starts with
    num_masks masks (|M| only shrinks by k, so the schedule does not depend on the tokens)."""
    ts = dream_timesteps(steps, eps)
    out, m = [], num_masks
    for i in range(steps):
        k = num_transfer_tokens(m, i, ts)
        out.append(k)
        m -= k
    return out


# ----------------------------------------------------------------------------------------
# Per-position sampling (Dream's sample_tokens)
# ----------------------------------------------------------------------------------------

class DreamSample(NamedTuple):
    x0: int
    confidence: float  # the algorithm's c, a float32 value


def dream_filter(z: np.ndarray, topk: int, topp: float) -> np.ndarray:
    """Dream's filters on the float32 row z: top-p, then top-k.  -> bool keep mask [V]."""
    V = z.shape[0]
    keep = np.ones(V, dtype=bool)
    if topp < 1.0:
        order = np.lexsort((np.arange(V), -z.astype(np.float64)))  # z descending, ties lower id
        p = torch.softmax(torch.from_numpy(z), dim=-1).numpy()  # float32
        cum = np.cumsum(p[order].astype(np.float64))
        before = np.concatenate([[0.0], cum[:-1]])  # mass of the ranks before each rank
        keep[:] = False
        keep[order[before <= topp]] = True  # rank 0 has before = 0: always kept
    if topk > 0 and keep.sum() > topk:
        threshold = np.sort(z[keep])[::-1][topk - 1]
        keep &= z >= threshold  # ties at the threshold stay (Dream's rule)
    return keep


def sample_position_dream(logits_row: torch.Tensor, *, alg: str, temperature: float, topk: int,
                          topp: float, seed: int, step: int, position: int) -> DreamSample:
    """x0 and the algorithm's confidence for one position's (shifted) float32 logits row at
    global step `step`, absolute position `position`."""
    l = logits_row.to(torch.float32)
    V = l.shape[0]
    z = (l / temperature if temperature > 0 else l).numpy()  # float32
    keep = dream_filter(z, topk, topp)
    filtered = torch.from_numpy(np.where(keep, z, np.float32(-np.inf)).astype(np.float32))
    q = torch.softmax(filtered, dim=-1).numpy()  # float32, exactly 0 where removed
    if temperature == 0:
        x0 = int(torch.argmax(l))  # first maximum = lowest id
    else:
        score = z.astype(np.float64) + token_gumbel(seed, step, position, V)
        score[~keep] = -np.inf
        x0 = int(np.argmax(score))  # first maximum = lowest id
    if alg in ("origin", "maskgit_plus"):
        c = np.float32(q[x0])
    elif alg == "topk_margin":
        top = np.sort(q)[::-1]
        c = np.float32(top[0] - (top[1] if V > 1 else np.float32(0)))
    elif alg == "entropy":
        qk = q[keep & (q > 0)].astype(np.float64)
        c = np.float32((qk * np.log(qk)).sum())
    else:
        raise ValueError(f"alg {alg!r} not in {DREAM_ALGS}")
    return DreamSample(x0, float(c))


# ----------------------------------------------------------------------------------------
# Decoding: diffusion_generate (canvas), Fast-dLLM's caches, block decode (SEMANTICS §5, §6)
# ----------------------------------------------------------------------------------------

DECODE_MODES = ("canvas", "prefix_cache", "dual_cache", "block_causal")


def _choose_dream(alg: str, masked: list[int], sampled: dict, *, step: int, timesteps,
                  alg_temp: float, seed: int) -> list[int]:
    """The positions of `masked` that Dream's algorithm `alg` transfers at step `step` of
    S = len(timesteps) - 1 (origin: a Philox coin per position; the others: k by the schedule,
    the top-k by c or, with alg_temp > 0, by c / alg_temp + stream-2 Gumbel noise)."""
    S = len(timesteps) - 1
    if alg == "origin":
        p = 1.0 if step == S - 1 else float(transfer_fraction(timesteps[step], timesteps[step + 1]))
        return [pos for pos in masked if position_uniform(seed, step, pos) < p]
    k = num_transfer_tokens(len(masked), step, timesteps)
    if alg_temp == 0:
        score = {pos: sampled[pos].confidence for pos in masked}
    else:
        tempered = {pos: np.float32(sampled[pos].confidence) / np.float32(alg_temp)
                    for pos in masked}  # float32 division
        score = {pos: float(tempered[pos]) + position_gumbel(seed, step, pos, 2) for pos in masked}
    return sorted(masked, key=lambda pos: (-score[pos], pos))[:k]  # ties: lower position


def generate(ref: DreamReference, prompt_ids: list[int], *, mask_id: int, decode_mode: str = "dual_cache",
             remasking_strategy: str = "low_confidence_static", block_length: int | None = None,
             denoising_steps: int | None = None, temperature: float = 0.0, topk: int = 0,
             topp: float = 1.0, alg_temp: float = 0.0, dynamic_threshold: float = 0.9,
             eb_threshold: float = 0.35, factor: float = 1.0, max_tokens: int = 64,
             stop_token_ids=(), seed: int = 0, eps: float = 1e-3, logprobs: bool = False,
             trace: bool = False):
    """Dream in any decode mode with any strategy: Dream's algorithms (DREAM_ALGS) or the block
    strategies of §3 (sdar.py's sampling and `choose_positions`, on the shifted logits).

    -> (completion token ids, finish_reason 'stop' | 'length'), then with logprobs=True one
    (step, logprob, entropy) per completion token (the step inside its block at which the
    position was unmasked; log p[x0] and H of the unfiltered tempered distribution, sdar.py's
    `logprob_entropy`, for Dream's algorithms too), then with trace=True one list per forward
    (in order) of the absolute positions that step unmasked.

    Layout: blocks of B = `block_length` start at the end of the prompt.  canvas / prefix_cache
    / dual_cache: the canvas is the prompt + G masks, G = max_tokens rounded up to B, except
    Dream's algorithms in canvas mode, which are `diffusion_generate`: one block of
    B = max_tokens (block_length is ignored).  block_causal: blocks are appended one at a time.
    S = `denoising_steps` per block (None = B); Dream's timesteps are linspace(1, eps, S + 1)
    per block and the Philox step is the step inside the block.

    Logits: position p is predicted from the hidden state at p - 1 (the shift), from
      canvas        every step a full forward of the canvas;
      block_causal  every step a full recompute of the canvas so far under
                    `prompt_block_mask` (the prompt one bidirectional block, then blocks of B
                    that see no later block); the position before the block belongs to the
                    previous block or the prompt and is final, so the shift is exact;
      prefix_cache / dual_cache (Fast-dLLM's Dream loop, dream/model/generation_utils_block.py):
                    step 0 of a block forwards the whole canvas and keeps every position's K/V
                    as the cache; a later step forwards [block_start, end of canvas) (prefix)
                    or [block_start, block_end) (dual) against the cached K/V of every other
                    position, and shifts inside that window.  Position block_start would need
                    the hidden state at block_start - 1, which such a forward does not compute,
                    so, as in Fast-dLLM, step 0 unmasks exactly the block's first position (its
                    x0 from the full forward) and nothing else, whatever the strategy; steps
                    1..S-1 run the strategy on the rest (n_t and the timesteps of their own
                    step index; the last step takes everything).  With S = 1, step 0 is the
                    last step and unmasks the whole block from the full forward.
    Stop: after each block as llada.py (for diffusion_generate's single block: once at the
    end); stop ids are exactly `stop_token_ids`."""
    dream_alg = remasking_strategy in DREAM_ALGS
    if not dream_alg and remasking_strategy not in BLOCK_STRATEGIES:
        raise ValueError(f"remasking_strategy {remasking_strategy!r} not in {DREAM_ALGS + BLOCK_STRATEGIES}")
    if decode_mode not in DECODE_MODES:
        raise ValueError(f"decode_mode {decode_mode!r} not in {DECODE_MODES}")
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    P = len(prompt_ids)
    if P < 1:
        raise ValueError("the prompt must not be empty (position 0 has no predecessor)")
    B = max_tokens if (dream_alg and decode_mode == "canvas") else block_length
    if not B or B < 1:
        raise ValueError("block_length must be >= 1")
    S = denoising_steps or B
    cached = decode_mode in ("prefix_cache", "dual_cache")
    stops = set(int(s) for s in stop_token_ids)
    G = -(-max_tokens // B) * B
    if decode_mode == "block_causal":
        x, is_masked = [int(t) for t in prompt_ids], [False] * P
    else:
        x, is_masked = [int(t) for t in prompt_ids] + [mask_id] * G, [False] * P + [True] * G
    ts = dream_timesteps(S, eps) if dream_alg else None
    info: dict[int, tuple[int, float, float]] = {}  # position -> (step, logprob, entropy)
    steps_log: list[list[int]] = []

    def result(tokens, reason):
        out = (tokens, reason)
        if logprobs:
            out += ([info[P + n] for n in range(len(tokens))],)
        return out + (steps_log,) if trace else out

    def sample(row, pos, t):
        """(x0, c, logprob, entropy) of one position from its (shifted) logits row."""
        if dream_alg:
            s = sample_position_dream(row, alg=remasking_strategy, temperature=temperature,
                                      topk=topk, topp=topp, seed=seed, step=t, position=pos)
            z = (row / temperature if temperature > 0 else row).to(torch.float32).numpy()
            return (s.x0, s.confidence) + logprob_entropy(z, s.x0)
        s = sample_position_full(row, temperature=temperature, topk=topk, topp=topp, seed=seed,
                                 step=t, position=pos, strategy=remasking_strategy)
        return s.x0, s.confidence, s.logprob, s.entropy

    block_start = P
    while True:
        block_end = block_start + B
        if decode_mode == "block_causal":
            x += [mask_id] * B
            is_masked += [True] * B
        cache = None
        for t in range(S):
            masked = [pos for pos in range(block_start, block_end) if is_masked[pos]]
            if not masked:  # no masks left before the last step: the block is finished
                break
            last = t == S - 1
            # rows[pos] = the logits row that predicts position pos
            if decode_mode == "canvas":
                raw, first = ref.forward(x), 0
            elif decode_mode == "block_causal":
                raw, first = ref.forward(x, prompt_block_mask(len(x), P, B)), 0
            elif t == 0:
                raw, cache = ref.forward_cached(x, 0, len(x))
                first = 0
            else:
                q_end = len(x) if decode_mode == "prefix_cache" else block_end
                raw, _ = ref.forward_cached(x, block_start, q_end, cache)
                first = block_start
            first_only = cached and t == 0 and not last
            candidates = [block_start] if first_only else masked
            sampled = {}
            for pos in candidates:
                assert pos - 1 >= first, "a cached step never needs the row before its window"
                sampled[pos] = sample(raw[pos - 1 - first], pos, t)
            if first_only:
                chosen = [block_start]  # Fast-dLLM: step 0 commits the block's first position
            elif dream_alg:
                chosen = _choose_dream(remasking_strategy,
                                       masked, {pos: DreamSample(*sampled[pos][:2]) for pos in masked},
                                       step=t, timesteps=ts, alg_temp=alg_temp, seed=seed)
            else:
                n_t = B // S + (1 if t < B % S else 0)
                chosen = choose_positions(
                    masked, {pos: sampled[pos][1] for pos in masked}, n_t, remasking_strategy,
                    dynamic_threshold, entropy={pos: sampled[pos][3] for pos in masked},
                    eb_threshold=eb_threshold, factor=factor, last_step=last)
            for pos in chosen:
                x[pos] = sampled[pos][0]
                is_masked[pos] = False
                info[pos] = (t, sampled[pos][2], sampled[pos][3])
            steps_log.append(sorted(chosen))
        # the block is committed: the stop rule, then the length rule
        done = end_of_completion(x[P:block_end], max_tokens, stops)
        if done:
            return result(*done)
        block_start = block_end


def generate_canvas(ref: DreamReference, prompt_ids: list[int], *, mask_id: int, max_tokens: int,
                    denoising_steps: int | None, alg: str = "maskgit_plus",
                    temperature: float = 0.0, topk: int = 0, topp: float = 1.0,
                    alg_temp: float = 0.0, eps: float = 1e-3, stop_token_ids=(), seed: int = 0,
                    trace: bool = False):
    """Dream's `diffusion_generate` (decode_mode canvas with one of Dream's algorithms): the whole
    canvas of max_tokens masks is one block of S steps.  -> (completion token ids,
    finish_reason 'stop' | 'length'); with trace=True a third element: one list per forward (in
    order) of the absolute positions unmasked by that step, so len(trace) is the number of
    forwards."""
    if alg not in DREAM_ALGS:
        raise ValueError(f"alg {alg!r} not in {DREAM_ALGS}")
    return generate(ref, prompt_ids, mask_id=mask_id, decode_mode="canvas", remasking_strategy=alg,
                    denoising_steps=denoising_steps, temperature=temperature, topk=topk, topp=topp,
                    alg_temp=alg_temp, eps=eps, max_tokens=max_tokens, stop_token_ids=stop_token_ids,
                    seed=seed, trace=trace)
