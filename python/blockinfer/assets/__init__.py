"""Tiny trained models that ship inside the package (issue 6).

    from blockinfer import LLM
    from blockinfer.assets import model_path
    llm = LLM(model_path("tiny-sdar"), device="cpu")

Each directory is a complete Hugging Face checkpoint (config.json, generation_config.json,
model.safetensors in bfloat16, a character-level tokenizer) and a README.md with the prompt and
answer format, the training command and the measured held-out accuracy.  The task suite they were
trained on, with its held-out split, is `blockinfer.assets.tasks`.
"""
from __future__ import annotations

from pathlib import Path

MODELS = ("tiny-sdar", "tiny-llada", "tiny-dream")
_ROOT = Path(__file__).resolve().parent


def model_path(name: str) -> str:
    """The directory of the shipped model `name` (one of MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown tiny model {name!r}; valid names: {', '.join(MODELS)}")
    path = _ROOT / name
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the {name} checkpoint is missing from {path}: this installation was built without "
            "the model files (train them with training/train_tiny.py)")
    return str(path)


def available_models() -> list[str]:
    """The names of the shipped models whose files are present."""
    return [n for n in MODELS if (_ROOT / n / "model.safetensors").is_file()]


__all__ = ["MODELS", "available_models", "model_path"]
