from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TokenLogprob(NamedTuple):
    """When and how confidently one completion token was decided (SamplingParams.logprobs)."""

    step: int        # denoise step inside its block at which the position was unmasked
    logprob: float   # log p(token) under the tempered, unfiltered distribution at that step
    entropy: float   # entropy of that distribution (nats, >= 0)


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
    logprobs: list[TokenLogprob] | None = None  # one per token of token_ids, with logprobs=True


@dataclass
class StreamEvent:
    """Newly committed tokens of one request (generate_streaming). Committed tokens are final:
    an event never retracts or changes what an earlier event delivered."""

    index: int                      # position of the prompt in the generate_streaming() call
    token_ids: list[int]            # completion tokens committed since the request's last event
    text: str | None                # the text they add (None without a tokenizer)
    finished: bool = False
    finish_reason: str | None = None  # set on the request's last event
    num_forwards: int = 0
    logprobs: list[TokenLogprob] | None = None  # one per token of token_ids, with logprobs=True
