"""BlockInfer: fast, faithful inference for block-diffusion language models."""

from blockinfer.llm import LLM
from blockinfer.outputs import RequestOutput, StreamEvent, TokenLogprob
from blockinfer.sampling_params import SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams", "StreamEvent", "TokenLogprob"]
__version__ = "0.1.0"
