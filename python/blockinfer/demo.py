"""Answers a few held-out problems with a tiny trained model that ships with BlockInfer.

    python -m blockinfer.demo                          # tiny-sdar on the CPU, 3 problems per task
    python -m blockinfer.demo --model tiny-llada -n 5
    python -m blockinfer.demo --question "4821+397=" --question "sort 42 7 19"

The models were trained on four synthetic tasks (addition, sorting numbers, reversing a word,
counting a letter; see blockinfer/assets/tasks.py); the problems shown are from the held-out
split, which training never saw.  Decoding is greedy with the model's default block length.
"""
from __future__ import annotations

import argparse
import time

from blockinfer import LLM, SamplingParams
from blockinfer.assets import MODELS, model_path, tasks


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-sdar", choices=MODELS)
    ap.add_argument("-n", type=int, default=3, help="held-out problems per task")
    ap.add_argument("--question", action="append", default=None,
                    help="ask this instead (repeatable), e.g. '123+45=' or 'reverse hello'")
    ap.add_argument("--strategy", default="low_confidence_static",
                    help="remasking strategy (default low_confidence_static)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    llm = LLM(model_path(args.model), device=args.device)
    loaded = time.perf_counter() - start
    if args.question:
        problems = [tasks.Problem("?", q, None) for q in args.question]
    else:
        problems = [p for task in tasks.TASKS for p in tasks.test_problems(task, args.n)]
    params = SamplingParams(temperature=0.0, max_tokens=tasks.MAX_TOKENS,
                            remasking_strategy=args.strategy)
    start = time.perf_counter()
    outs = llm.generate([p.prompt for p in problems], params, use_tqdm=False)
    elapsed = time.perf_counter() - start

    mode = f", decode_mode {llm.info.decode_mode}" if args.model != "tiny-sdar" else ""
    print(f"{args.model}: loaded in {loaded:.1f} s; greedy, {args.strategy}, block length "
          f"{llm.info.block_length}{mode}\n")
    correct = 0
    for p, o in zip(problems, outs):
        if p.answer is None:
            print(f"  {p.question:<28} -> {o.text}")
            continue
        ok = p.is_correct(o.text)
        correct += ok
        print(f"  {p.question:<28} -> {o.text:<20} {'ok' if ok else 'WRONG (expected ' + p.answer + ')'}")
    forwards = sum(o.num_forwards for o in outs)
    tokens = sum(len(o.token_ids) for o in outs)
    if problems[0].answer is not None:
        print(f"\n{correct}/{len(problems)} correct", end="; ")
    else:
        print()
    print(f"{len(problems)} prompts decoded together in {elapsed:.2f} s "
          f"({tokens} tokens, {forwards} forwards summed over the requests)")


if __name__ == "__main__":
    main()
