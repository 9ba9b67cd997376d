#!/usr/bin/env python
"""Decoding quality of every strategy on the tiny trained models (issue 6).

    python benchmarks/quality.py                          # the three shipped models, every setting
    python benchmarks/quality.py --models tiny-sdar --problems 50 --settings "B4 S4"
    python benchmarks/quality.py --check-reference        # greedy settings also through tests/reference

Runs the held-out problems of the task suite (blockinfer/assets/tasks.py) through `LLM.generate`
for each strategy and setting (block length, steps, low_confidence_dynamic thresholds 0.5/0.7/0.9,
entropy_bounded, confidence_threshold, ...; for LLaDA and Dream dual_cache (their default),
canvas, prefix_cache and block_causal, and Dream's own algorithms) and prints a
markdown table of exact-match accuracy per task, tokens per forward (completion tokens over the
forwards each request took part in) and tokens/s (completion tokens over the wall time of one
batched generate call holding every problem).

--check-reference: for each greedy setting, the same problems also go through the PyTorch
references (tests/reference/sdar.py, llada.py, dream.py; float32 on the CPU) and the accuracies
must be equal (assertion).  On the CPU backend, which matches the references token for token, the
completions must be identical too; on a GPU in bfloat16 a token-level difference is reported, not
asserted.

--models takes the shipped names (tiny-sdar, tiny-llada, tiny-dream) or checkpoint directories.
This module is also imported (by path, without the engine) by training/train_tiny.py for its
settings and reference runner.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TASKS_MODULE = "blockinfer_tiny_tasks"


def _load_by_path(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tasks_module():
    """blockinfer/assets/tasks.py, loaded by path: it needs neither the engine nor torch."""
    return _load_by_path(_TASKS_MODULE, REPO / "python" / "blockinfer" / "assets" / "tasks.py")


T = tasks_module()
FAMILIES = {"sdar": "sdar", "llada": "llada", "Dream": "dream"}
DEFAULT_MODE = {"sdar": None, "llada": "dual_cache", "dream": "dual_cache"}
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


# ----------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    strategy: str = "low_confidence_static"
    block_length: int | None = None   # None: the model's default (config.json block_size)
    steps: int | None = None          # None: the engine's default (block length; Dream's algs: max_tokens)
    temperature: float = 0.0
    dynamic_threshold: float = 0.9
    eb_threshold: float = 0.35
    decode_mode: str | None = None    # LLaDA / Dream only; None: the model's default
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def describe(self) -> str:
        parts = [self.strategy]
        if self.strategy in ("low_confidence_dynamic", "confidence_threshold"):
            parts.append(f"τ={self.dynamic_threshold}")
        if self.strategy == "entropy_bounded":
            parts.append(f"γ={self.eb_threshold}")
        if self.strategy in DREAM_ALGS:  # Dream's algorithms: one block of max_tokens
            parts.append(f"S{self.steps}" if self.steps else "S=max_tokens")
        else:
            parts.append(f"B{self.block_length}" if self.block_length else "B=default")
            parts.append(f"S{self.steps}" if self.steps else "S=B")
        parts.append("greedy" if self.greedy else f"T={self.temperature} seed {self.seed}")
        if self.decode_mode:
            parts.append(self.decode_mode)
        return " ".join(parts)

    def sampling_kwargs(self, max_tokens: int) -> dict:
        return dict(temperature=self.temperature, max_tokens=max_tokens,
                    remasking_strategy=self.strategy, block_length=self.block_length,
                    denoising_steps=self.steps, dynamic_threshold=self.dynamic_threshold,
                    eb_threshold=self.eb_threshold, seed=self.seed)


def _block_grid(mode: str | None, blocks=(4, 8)) -> list[Setting]:
    """The block strategies over block lengths and step counts."""
    out = []
    for B in blocks:
        s = Setting(block_length=B, steps=B, decode_mode=mode)
        out += [s, replace(s, steps=B // 2)]
        out += [replace(s, strategy="low_confidence_dynamic", dynamic_threshold=t) for t in (0.5, 0.7, 0.9)]
        out += [replace(s, strategy="entropy_bounded"), replace(s, strategy="confidence_threshold")]
    return out


def settings_for(family: str) -> list[Setting]:
    if family == "sdar":
        grid = _block_grid(None, (4, 8))
        grid += [Setting(strategy="sequential", block_length=4, steps=4),
                 Setting(block_length=16, steps=16),
                 Setting(block_length=4, steps=4, temperature=1.0)]
        return grid
    # LLaDA and Dream: every decode mode; dual_cache (the default) over the whole grid
    grid = _block_grid("dual_cache", (8, 32))
    grid += _block_grid("canvas", (8,))
    grid += [Setting(block_length=8, steps=8, decode_mode="prefix_cache"),
             Setting(block_length=8, steps=8, decode_mode="block_causal"),
             Setting(block_length=8, steps=8, temperature=1.0, decode_mode="dual_cache")]
    if family == "llada":
        grid += [Setting(strategy="low_confidence", block_length=8, steps=8, decode_mode="canvas")]
    else:  # Dream's own algorithms: diffusion_generate in canvas mode, per block in the caches
        grid += [Setting(strategy=alg, decode_mode="canvas") for alg in ("maskgit_plus", "entropy", "topk_margin")]
        grid += [Setting(strategy="maskgit_plus", steps=12, decode_mode="canvas"),
                 Setting(strategy="maskgit_plus", block_length=8, steps=8, decode_mode="dual_cache")]
    return grid


# The settings each model's README reports, the first its default decode mode (greedy).
README_SETTINGS = {
    "sdar": [Setting(block_length=4, steps=4)],
    "llada": [Setting(block_length=8, steps=8, decode_mode="dual_cache"),
              Setting(block_length=8, steps=8, decode_mode="canvas")],
    "dream": [Setting(block_length=8, steps=8, decode_mode="dual_cache"),
              Setting(block_length=8, steps=8, decode_mode="canvas")],
}
HEADLINE = {family: settings[0] for family, settings in README_SETTINGS.items()}


# ----------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------

def resolve_model(name_or_dir: str) -> Path:
    p = Path(name_or_dir)
    if (p / "config.json").is_file():
        return p
    from blockinfer.assets import model_path

    return Path(model_path(name_or_dir))


def family_of(model_dir: Path) -> str:
    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    return FAMILIES[model_type]


def engine_available() -> bool:
    try:
        import blockinfer._C  # noqa: F401
        return True
    except ImportError:
        return False


def make_llm(model_dir, setting: Setting, device: str = "cpu"):
    from blockinfer import LLM

    family = family_of(Path(model_dir))
    mode = setting.decode_mode if family != "sdar" else None
    return LLM(str(model_dir), device=device, decode_mode=mode)


def run_engine(llm, problems, setting: Setting, max_tokens: int = T.MAX_TOKENS) -> dict:
    """One batched generate over `problems`: accuracy, completions and speed."""
    from blockinfer import SamplingParams

    params = SamplingParams(**setting.sampling_kwargs(max_tokens))
    start = time.perf_counter()
    outs = llm.generate([p.prompt for p in problems], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outs)
    forwards = sum(o.num_forwards for o in outs)
    correct = [p.is_correct(o.text) for p, o in zip(problems, outs)]
    return {"accuracy": sum(correct) / max(1, len(problems)), "correct": correct,
            "token_ids": [list(o.token_ids) for o in outs], "texts": [o.text for o in outs],
            "tokens": tokens, "forwards": forwards, "seconds": seconds}


# ----------------------------------------------------------------------------------------
# References (tests/reference), float32 on the CPU
# ----------------------------------------------------------------------------------------

_REF_CACHE: dict = {}


def _reference_modules():
    ref_dir = str(REPO / "tests" / "reference")
    if ref_dir not in sys.path:
        sys.path.insert(0, ref_dir)
    import dream
    import llada
    import sdar

    return sdar, llada, dream


def _reference_model(model_dir: str):
    if model_dir not in _REF_CACHE:
        import torch

        torch.set_num_threads(1)
        sdar, llada, dream = _reference_modules()
        family = family_of(Path(model_dir))
        load = {"sdar": sdar.load_sdar, "llada": llada.load_llada, "dream": dream.load_dream}[family]
        config = json.loads((Path(model_dir) / "config.json").read_text())
        gen_path = Path(model_dir) / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        eos = gen.get("eos_token_id", config.get("eos_token_id"))
        stops = set(eos if isinstance(eos, list) else [eos]) | {T.EOS_ID}  # + the tokenizer's EOS
        block = config.get("block_size") or (4 if family == "sdar" else 32)
        _REF_CACHE[model_dir] = (family, load(model_dir), config["mask_token_id"], tuple(sorted(stops)), block)
    return _REF_CACHE[model_dir]


def reference_completion(model_dir: str, prompt_ids: list[int], setting: Setting,
                         max_tokens: int = T.MAX_TOKENS) -> list[int]:
    """The completion token ids the references give for one prompt and setting."""
    sdar, llada, dream = _reference_modules()
    family, ref, mask_id, stops, default_block = _reference_model(str(model_dir))
    B = setting.block_length or default_block
    common = dict(temperature=setting.temperature, max_tokens=max_tokens, stop_token_ids=stops,
                  seed=setting.seed)
    block = dict(block_length=B, denoising_steps=setting.steps,
                 remasking_strategy=setting.strategy, dynamic_threshold=setting.dynamic_threshold,
                 eb_threshold=setting.eb_threshold)
    if family == "sdar":
        tokens, _ = sdar.generate(ref, prompt_ids, mask_id=mask_id, **block, **common)
    elif family == "llada":
        mode = setting.decode_mode or DEFAULT_MODE["llada"]
        if mode == "block_causal":
            tokens, _ = llada.generate_block_causal(ref, prompt_ids, mask_id=mask_id, **block, **common)
        else:
            tokens, _ = llada.generate_canvas(ref, prompt_ids, mask_id=mask_id, decode_mode=mode,
                                              **block, **common)
    else:  # Dream: every mode and strategy (Dream's algorithms ignore B in canvas mode)
        mode = setting.decode_mode or DEFAULT_MODE["dream"]
        tokens, _ = dream.generate(ref, prompt_ids, mask_id=mask_id, decode_mode=mode, **block, **common)[:2]
    return list(tokens)


def _reference_job(job):
    model_dir, prompt_ids, setting = job
    return reference_completion(model_dir, prompt_ids, setting)


def run_reference(model_dir, family: str, problems, setting: Setting, workers: int = 1) -> list[list[int]]:
    """Completion token ids of every problem through the reference; `workers` processes."""
    del family  # read from the checkpoint
    jobs = [(str(model_dir), p.prompt_ids(), setting) for p in problems]
    if workers <= 1 or len(jobs) < 8:
        return [_reference_job(j) for j in jobs]
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                initializer=_worker_init) as pool:
        return list(pool.map(_reference_job, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def _worker_init():
    tasks_module()


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny-sdar", "tiny-llada", "tiny-dream"],
                    help="shipped model names or checkpoint directories")
    ap.add_argument("--problems", type=int, default=100, help="held-out problems per task")
    ap.add_argument("--tasks", nargs="+", default=list(T.TASKS), choices=list(T.TASKS))
    ap.add_argument("--settings", default=None,
                    help="only settings whose description contains this text (e.g. 'B4 S4')")
    ap.add_argument("--headline", action="store_true", help="only the settings of each model's README")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the references")
    ap.add_argument("--check-reference", action="store_true",
                    help="greedy settings: also run tests/reference and assert equal accuracy")
    ap.add_argument("--reference-workers", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    problems = [p for task in args.tasks for p in T.test_problems(task, args.problems)]
    rows, failures = [], []
    header = ("| model | setting | " + " | ".join(args.tasks) + " | all | tokens/forward | tokens/s |"
              + (" reference |" if args.check_reference else ""))
    print(f"{len(problems)} held-out problems ({args.problems} per task), max_tokens {T.MAX_TOKENS}, "
          f"device {args.device}\n")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name in args.models:
        model_dir = resolve_model(name)
        family = family_of(model_dir)
        grid = list(README_SETTINGS[family]) if args.headline else settings_for(family)
        if args.settings:
            grid = [s for s in grid if args.settings in s.describe()]
        llms = {}
        for setting in grid:
            mode = setting.decode_mode
            try:
                if mode not in llms:
                    llms[mode] = make_llm(model_dir, setting, args.device)
                res = run_engine(llms[mode], problems, setting)
            except NotImplementedError as e:
                print(f"| {Path(name).name} | {setting.describe()} | n/a: {e} |")
                continue
            by_task = {}
            for p, ok in zip(problems, res["correct"]):
                by_task.setdefault(p.task, []).append(ok)
            accs = [sum(by_task[t]) / len(by_task[t]) for t in args.tasks]
            row = {"model": Path(name).name, "setting": setting.describe(), "setting_fields": asdict(setting),
                   "accuracy": dict(zip(args.tasks, accs)), "overall": res["accuracy"],
                   "tokens_per_forward": res["tokens"] / max(1, res["forwards"]),
                   "tokens_per_second": res["tokens"] / res["seconds"]}
            ref_cell = ""
            if args.check_reference and setting.greedy:
                comps = run_reference(model_dir, family, problems, setting, workers=args.reference_workers)
                ref_ok = [p.is_correct(T.decode(c)) for p, c in zip(problems, comps)]
                ref_acc = sum(ref_ok) / len(problems)
                token_diffs = sum(a != b for a, b in zip(res["token_ids"], comps))
                row["reference_accuracy"], row["reference_token_diffs"] = ref_acc, token_diffs
                ref_cell = f" {100 * ref_acc:.1f}% ({token_diffs} diffs) |"
                exact_backend = args.device == "cpu"
                if ref_acc != res["accuracy"] or (exact_backend and token_diffs):
                    failures.append(f"{name} {setting.describe()}: engine {res['accuracy']:.4f} vs "
                                    f"reference {ref_acc:.4f}, {token_diffs} completions differ")
            elif args.check_reference:
                ref_cell = " (sampled) |"
            rows.append(row)
            cells = " | ".join(f"{100 * a:.1f}%" for a in accs)
            print(f"| {row['model']} | {row['setting']} | {cells} | {100 * res['accuracy']:.1f}% | "
                  f"{row['tokens_per_forward']:.2f} | {row['tokens_per_second']:.0f} |{ref_cell}", flush=True)
        for llm in llms.values():
            del llm
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if failures:
        raise AssertionError("engine and reference disagree:\n  " + "\n  ".join(failures))
    if args.check_reference:
        print("\nreference check passed: equal accuracy on every greedy setting")


if __name__ == "__main__":
    main()
