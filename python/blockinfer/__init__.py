"""BlockInfer: fast, faithful inference for block-diffusion language models."""

from blockinfer.llm import LLM
from blockinfer.outputs import RequestOutput
from blockinfer.sampling_params import SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
__version__ = "0.1.0"
