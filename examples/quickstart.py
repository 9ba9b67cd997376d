"""BlockInfer quick start: writes a tiny random-weight SDAR checkpoint (real Hugging Face format,
with an offline-built tokenizer) and decodes a batch of prompts with it on the CPU.

    python examples/quickstart.py [--model DIR]

With --model, any SDAR checkpoint directory is used instead (e.g. a downloaded SDAR-1.7B-Chat).
A random model writes nonsense: this shows the engine working, not a trained model's answers.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from blockinfer import LLM, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an SDAR checkpoint directory (default: a tiny random one)")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    model = args.model
    if model is None:
        from blockinfer.tiny import write_random_sdar

        model = tempfile.mkdtemp(prefix="blockinfer-tiny-sdar-")
        write_random_sdar(model)
        print(f"wrote a tiny random SDAR checkpoint to {model}")

    llm = LLM(model)
    prompts = ["Hello, world!", "The quick brown fox", "Numbers: 1 2 3", "In the beginning"] * 4
    settings = [
        ("greedy, low_confidence_static", SamplingParams(temperature=0.0, max_tokens=args.max_tokens)),
        ("sampled, low_confidence_dynamic", SamplingParams(
            temperature=1.0, topp=0.9, max_tokens=args.max_tokens,
            remasking_strategy="low_confidence_dynamic", dynamic_threshold=0.5, seed=0)),
    ]
    for name, params in settings:
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        n_tokens = sum(len(o.token_ids) for o in outs)
        print(f"\n== {name}: {len(outs)} prompts, {n_tokens} tokens in {elapsed:.3f} s "
              f"({n_tokens / elapsed:.0f} tokens/s on this CPU)")
        for o in outs[:4]:
            print(f"{o.prompt!r} -> {o.text!r}  [{o.finish_reason}, {len(o.token_ids)} tokens, "
                  f"{o.num_forwards} forwards]")


if __name__ == "__main__":
    main()
