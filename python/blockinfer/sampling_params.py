from __future__ import annotations

import math
from dataclasses import dataclass, fields

from blockinfer import _C


def _check_type(name: str, value, kinds, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    # bool is an int subclass: reject it where a number is expected, and vice versa.
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        want = " or ".join(k.__name__ for k in kinds) + (" or None" if allow_none else "")
        raise ValueError(f"SamplingParams.{name} must be {want}, got {value!r}")


@dataclass
class SamplingParams:
    """Per-request decoding parameters. Every field of SEMANTICS §1; defaults as documented there.

    Values are checked when the object is made: an invalid value raises ValueError naming the
    field; a valid value that this build cannot serve yet raises NotImplementedError.
    """

    temperature: float = 1.0
    topk: int = 0
    topp: float = 1.0
    max_tokens: int = 64
    remasking_strategy: str = "low_confidence_static"
    block_length: int | None = None
    denoising_steps: int | None = None
    dynamic_threshold: float = 0.9
    eb_threshold: float = 0.35
    factor: float = 1.0
    alg_temp: float = 0.0
    cfg_scale: float = 0.0
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    seed: int | None = None
    logprobs: bool = False
    top_k: int | None = None  # alias of topk
    top_p: float | None = None  # alias of topp

    def __post_init__(self) -> None:
        for alias, name in (("top_k", "topk"), ("top_p", "topp")):
            value = getattr(self, alias)
            if value is not None:
                default = next(f.default for f in fields(self) if f.name == name)
                if getattr(self, name) != default and getattr(self, name) != value:
                    raise ValueError(f"SamplingParams: both {name} and its alias {alias} given")
                setattr(self, name, value)
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.to_cpp().validate()  # the range rules live in libblockinfer (sampling_params.cc)

    def _check_types(self) -> None:
        """Type checks; re-run by to_cpp() so fields changed after construction are caught too."""
        num = (int, float)
        for name in ("temperature", "topp", "dynamic_threshold", "eb_threshold", "factor",
                     "alg_temp", "cfg_scale"):
            _check_type(name, getattr(self, name), num)
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"SamplingParams.{name} must be finite, got {getattr(self, name)}")
        for name in ("topk", "max_tokens"):
            _check_type(name, getattr(self, name), (int,))
        for name in ("block_length", "denoising_steps", "seed"):
            _check_type(name, getattr(self, name), (int,), allow_none=True)
        _check_type("remasking_strategy", self.remasking_strategy, (str,))
        for name in ("ignore_eos", "logprobs"):
            _check_type(name, getattr(self, name), (bool,))
        if self.stop is not None:
            _check_type("stop", self.stop, (list, tuple))
            for s in self.stop:
                if not isinstance(s, str):
                    raise ValueError(f"SamplingParams.stop must hold strings, got {s!r}")
        if self.stop_token_ids is not None:
            _check_type("stop_token_ids", self.stop_token_ids, (list, tuple))
            for t in self.stop_token_ids:
                _check_type("stop_token_ids[...]", t, (int,))
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"SamplingParams.seed must be in [0, 2**64), got {self.seed}")
        for name in ("topk", "max_tokens", "block_length", "denoising_steps"):
            v = getattr(self, name)
            if v is not None and not -(2**31) <= v < 2**31:
                raise ValueError(f"SamplingParams.{name} is out of range: {v}")

    def to_cpp(self) -> _C.SamplingParams:
        self._check_types()
        p = _C.SamplingParams()
        for name in ("temperature", "topk", "topp", "max_tokens", "remasking_strategy",
                     "block_length", "denoising_steps", "dynamic_threshold", "eb_threshold",
                     "factor", "alg_temp", "cfg_scale", "ignore_eos", "seed", "logprobs"):
            setattr(p, name, getattr(self, name))
        p.stop = list(self.stop or [])
        p.stop_token_ids = list(self.stop_token_ids or [])
        return p
