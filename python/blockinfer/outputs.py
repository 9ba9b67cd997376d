from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    """One finished request (SEMANTICS §1)."""

    index: int                      # position of the prompt in the generate() call
    prompt: str | None
    prompt_token_ids: list[int]
    text: str | None                # completion text, special tokens skipped (None without a tokenizer)
    token_ids: list[int] = field(default_factory=list)  # completion ids; ends with the stop token if one stopped it
    finish_reason: str | None = None  # "stop" or "length"
    num_forwards: int = 0           # forward passes this request took part in
