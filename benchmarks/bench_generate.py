"""Generation throughput through LLM.generate, printed as one table.

    python benchmarks/bench_generate.py --config ../shared/models/sdar-1.7b/config.json \
        --batch 1 8 --block 4 --max-tokens 64 [--temperature 1 --top-p 0.9 --top-k 50] [--stream]

With --stream the batch runs through LLM.generate_streaming instead, and the table adds the mean
time from the call to each request's first streamed (committed) tokens.

With --config, the model is built from that config.json with random weights of the real shape
(load_format="dummy", e.g. benchmarks/configs/sdar-8b.json); without it, a tiny SDAR shape is used.
The device is LLM's "auto" (a GPU when one is visible) unless --device says otherwise.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from blockinfer import LLM, SamplingParams

TINY = {"architectures": ["SDARForCausalLM"], "model_type": "sdar", "hidden_size": 256,
        "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 32, "intermediate_size": 768, "vocab_size": 4096, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 4096, "tie_word_embeddings": False,
        "hidden_act": "silu", "mask_token_id": 4095}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", help="a config.json of a real shape (default: a tiny shape)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--block", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--strategy", default="low_confidence_static")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (top-k/top-p then unused)")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--async-scheduling", type=int, choices=(0, 1), default=1,
                    help="LLM(async_scheduling=...): 1 (the default) launches each forward before the last step's "
                         "decisions are applied, 0 steps synchronously")
    ap.add_argument("--prefill-first", type=int, choices=(0, 1), default=1,
                    help="LLM(prefill_first=...): 1 (the default) holds the requests already denoising back while "
                         "a waiting one can be admitted (a batch denoises in lockstep), 0 mixes them")
    ap.add_argument("--stream", action="store_true",
                    help="run through generate_streaming and report the mean time to first tokens")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="blockinfer-bench-"))
    try:
        config = json.loads(Path(args.config).read_text()) if args.config else dict(TINY)
        (tmp / "config.json").write_text(json.dumps(config))
        # A model folder's config.json names the shape by its folder, benchmarks/configs/NAME.json by its file.
        cfg = Path(args.config) if args.config else None
        shape = "tiny" if cfg is None else cfg.parent.name if cfg.name == "config.json" else cfg.stem
        vocab = config["vocab_size"]
        rows = []
        for block in args.block:
            llm = LLM(tmp, load_format="dummy", block_length=block, device=args.device,
                      mask_token_id=config.get("mask_token_id", vocab - 1),
                      max_model_len=args.prompt_len + args.max_tokens + 2 * block,
                      async_scheduling=bool(args.async_scheduling), prefill_first=bool(args.prefill_first))
            for batch in args.batch:
                prompts = [[(7 * i + j) % (vocab - 2) for j in range(args.prompt_len)] for i in range(batch)]
                params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                        max_tokens=args.max_tokens, block_length=block,
                                        denoising_steps=block, remasking_strategy=args.strategy,
                                        ignore_eos=True, seed=0)
                llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=block, ignore_eos=True),
                             use_tqdm=False)  # warm-up
                start = time.perf_counter()
                first_ms = None
                if args.stream:
                    counts, forwards, first = [0] * batch, 0, {}
                    for ev in llm.generate_streaming(prompts, params):
                        counts[ev.index] += len(ev.token_ids)
                        forwards = max(forwards, ev.num_forwards)
                        if ev.token_ids and ev.index not in first:
                            first[ev.index] = time.perf_counter() - start
                    elapsed = time.perf_counter() - start
                    tokens = sum(counts)
                    assert all(c == args.max_tokens for c in counts)
                    first_ms = 1e3 * sum(first.values()) / len(first)
                else:
                    outs = llm.generate(prompts, params, use_tqdm=False)
                    elapsed = time.perf_counter() - start
                    tokens = sum(len(o.token_ids) for o in outs)
                    forwards = max(o.num_forwards for o in outs)
                    assert all(len(o.token_ids) == args.max_tokens for o in outs)
                rows.append((shape, f"{llm.info.device} {llm.info.dtype}", batch, block, forwards,
                             1e3 * elapsed / forwards, tokens / elapsed, first_ms))
        sampling = "greedy" if args.temperature == 0 else (
            f"T {args.temperature:g}" + (f", top-k {args.top_k}" if args.top_k else "")
            + (f", top-p {args.top_p:g}" if args.top_p < 1 else ""))
        first_col = " first tokens ms |" if args.stream else ""
        print(f"| shape | device | sampling | batch | block | forwards | ms/forward | tokens/s |{first_col}")
        print("|---|---|---|---|---|---|---|---|" + ("---|" if args.stream else ""))
        for shape_, dev, b, blk, fw, ms, tps, first_ms in rows:
            first_cell = f" {first_ms:.1f} |" if args.stream else ""
            print(f"| {shape_} | {dev} | {sampling} | {b} | {blk} | {fw} | {ms:.2f} | {tps:.1f} |{first_cell}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
