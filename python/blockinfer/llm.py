from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence

from blockinfer import _C
from blockinfer.outputs import RequestOutput, StreamEvent
from blockinfer.sampling_params import SamplingParams
from blockinfer.streaming import RequestStream

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_BIDIRECTIONAL = ("llada", "Dream")


def _check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    """ValueError naming `name` unless value is an int (not a bool) >= minimum, or None if allowed."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        want = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {want}{' or None' if allow_none else ''}, got {value!r}")


def _load_tokenizer(model_dir: str):
    # Imported lazily: transformers is slow to import and unneeded for token-id prompts.
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # AutoTokenizer also reads config.json, whose model_type ("sdar", ...) transformers does not
    # know; it warns about that although only the tokenizer is loaded.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    finally:
        hf_logging.set_verbosity(previous)


class LLM:
    """A block-diffusion language model served by libblockinfer.

    `model` is a Hugging Face model directory (config.json, *.safetensors, optionally a tokenizer).
    See SEMANTICS §1 for every argument. Extra keyword arguments size the engine:
    `max_num_batched_tokens` (positions per forward), `kv_page_size` (tokens per KV page),
    `num_kv_pages` / `kv_cache_memory_bytes` (the KV cache) and `lm_head_chunk_rows` (rows of
    float32 logits computed at once: a step sampling more rows runs the LM head and sampling in
    passes, bounding the logits at this many rows x vocab x 4 bytes) and `max_cuda_graphs` (CUDA
    graphs kept at once; past it a new forward shape replaces the graph used least recently, once
    that one has gone unused for this many forwards, or 4 x as many if it has not replayed yet).
    `async_scheduling` (on by default) launches each step's forward before the host has applied
    the last step's decisions (for requests whose strategy unmasks a fixed count per step; others
    step synchronously): the same tokens, with outputs one step() later; False steps synchronously.
    `prefill_first` (on by default): while a batch is being admitted, the requests already
    denoising sit the step out, so a batch given together prefills in whole forwards and then
    denoises in lockstep (the same tokens; not where the lockstep would overflow
    max_num_batched_tokens); False lets them denoise in the forwards that prefill the new ones.
    """

    def __init__(self, model: str | os.PathLike, mask_token_id: int | None = None,
                 block_length: int | None = None, dtype: str = "auto", device: str = "auto",
                 tensor_parallel_size: int = 1, max_num_seqs: int = 256,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 enforce_eager: bool = False, load_format: str = "auto",
                 decode_mode: str | None = None, seed: int = 0, *,
                 max_num_batched_tokens: int | None = None, kv_page_size: int = 16,
                 num_kv_pages: int | None = None, kv_cache_memory_bytes: int | None = None,
                 lm_head_chunk_rows: int = 512, max_cuda_graphs: int = 64,
                 async_scheduling: bool = True, prefill_first: bool = True):
        model = os.fspath(model)
        if not os.path.isdir(model):
            raise ValueError(f"model directory '{model}' does not exist")
        config_path = os.path.join(model, "config.json")
        if not os.path.isfile(config_path):
            raise ValueError(f"model directory '{model}' has no config.json")
        if tensor_parallel_size != 1:
            raise NotImplementedError("tensor_parallel_size > 1 is not implemented yet")
        for name, value in (("device", device), ("dtype", dtype)):
            if not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")
        for name, value in (("enforce_eager", enforce_eager), ("async_scheduling", async_scheduling),
                            ("prefill_first", prefill_first)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        if not (isinstance(gpu_memory_utilization, (int, float)) and not isinstance(gpu_memory_utilization, bool)
                and 0.0 < gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        if load_format not in ("auto", "safetensors", "dummy"):
            raise ValueError(f"load_format must be one of auto, safetensors, dummy; got {load_format!r}")
        for name, value in (("max_num_seqs", max_num_seqs), ("kv_page_size", kv_page_size),
                            ("max_cuda_graphs", max_cuda_graphs)):
            _check_int(name, value, 1)
        _check_int("lm_head_chunk_rows", lm_head_chunk_rows, 2)
        for name, value in (("max_model_len", max_model_len), ("block_length", block_length),
                            ("max_num_batched_tokens", max_num_batched_tokens),
                            ("num_kv_pages", num_kv_pages), ("mask_token_id", mask_token_id)):
            _check_int(name, value, 0, allow_none=True)
        _check_int("kv_cache_memory_bytes", kv_cache_memory_bytes, 1, allow_none=True)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        try:
            with open(config_path) as f:
                hf_config = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{config_path} is not valid JSON: {e}") from None
        if not isinstance(hf_config, dict):
            raise ValueError(f"{config_path} must hold a JSON object, got {type(hf_config).__name__}")
        model_type = hf_config.get("model_type")
        if decode_mode is not None and model_type not in _BIDIRECTIONAL:
            raise ValueError(f"decode_mode applies to the bidirectional models ({', '.join(_BIDIRECTIONAL)}); "
                             f"'{model_type}' is block-causal and takes no decode_mode")

        self.model_dir = model
        self.enforce_eager = enforce_eager
        self.tokenizer = None
        if load_format != "dummy" and any(os.path.exists(os.path.join(model, f)) for f in _TOKENIZER_FILES):
            self.tokenizer = _load_tokenizer(model)
        if (mask_token_id is None and hf_config.get("mask_token_id") is None
                and self.tokenizer is not None and self.tokenizer.mask_token_id is not None):
            mask_token_id = int(self.tokenizer.mask_token_id)

        cfg = _C.EngineConfig()
        cfg.model_dir = model
        cfg.load_format = load_format
        cfg.device = device
        cfg.dtype = dtype
        cfg.gpu_memory_utilization = float(gpu_memory_utilization)
        cfg.mask_token_id = mask_token_id
        cfg.decode_mode = decode_mode or ""
        cfg.block_length = block_length
        cfg.max_model_len = max_model_len
        cfg.max_num_seqs = max_num_seqs
        cfg.max_num_batched_tokens = max_num_batched_tokens
        cfg.kv_page_size = kv_page_size
        cfg.num_kv_pages = num_kv_pages
        if kv_cache_memory_bytes is not None:
            cfg.kv_cache_memory_bytes = kv_cache_memory_bytes
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            cfg.extra_eos_token_ids = [int(self.tokenizer.eos_token_id)]
        cfg.seed = seed
        cfg.enforce_eager = enforce_eager
        cfg.max_cuda_graphs = max_cuda_graphs
        cfg.lm_head_chunk_rows = lm_head_chunk_rows
        cfg.async_scheduling = async_scheduling
        cfg.prefill_first = prefill_first
        self.engine = _C.Engine(cfg)
        self.info = self.engine.model_info

    # ------------------------------------------------------------------ prompts and params
    def _to_token_ids(self, prompts) -> tuple[list[list[int]], list[str | None]]:
        # bytes and bytearray are sequences of ints, but a byte string is not a list of token ids
        # (and not text either until decoded): refused rather than read as ids 0-255.
        if isinstance(prompts, (bytes, bytearray)):
            raise ValueError(f"prompts must be a list of strings or of token-id lists, got {type(prompts).__name__}")
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                        and all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]  # a single prompt
        if not isinstance(prompts, Iterable):
            raise ValueError(f"prompts must be a list of strings or of token-id lists, got {type(prompts).__name__}")
        ids, texts = [], []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                if self.tokenizer is None:
                    raise ValueError(f"prompt {i} is text but '{self.model_dir}' has no tokenizer; pass token ids")
                if not p:
                    raise ValueError(f"prompt {i} is empty")
                ids.append(list(self.tokenizer.encode(p, add_special_tokens=False)))
                texts.append(p)
            elif (isinstance(p, Sequence) and not isinstance(p, (bytes, bytearray))
                  and all(isinstance(t, int) and not isinstance(t, bool) for t in p)):
                vocab = self.info.vocab_size
                for j, t in enumerate(p):
                    if not 0 <= t < vocab:
                        raise ValueError(f"prompt {i}: prompt token id {t} at index {j} is outside the vocabulary [0, {vocab})")
                ids.append(list(p))
                texts.append(None)
            else:
                raise ValueError(f"prompt {i} must be a string or a list of int token ids, got {p!r:.80}")
            if not ids[-1]:
                raise ValueError(f"prompt {i} is empty")
        return ids, texts

    @staticmethod
    def _params_list(params, n: int) -> list[SamplingParams]:
        if params is None:
            params = SamplingParams()
        if isinstance(params, SamplingParams):
            return [params] * n
        params = list(params)
        if len(params) != n:
            raise ValueError(f"got {len(params)} SamplingParams for {n} prompts")
        for i, p in enumerate(params):
            if not isinstance(p, SamplingParams):
                raise ValueError(f"params[{i}] is not a SamplingParams")
        return params

    # ------------------------------------------------------------------ generation
    def generate(self, prompts, params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Decodes every prompt; returns one RequestOutput per prompt, in prompt order.

        Every request is validated before any is queued: a bad one raises ValueError naming
        the prompt index, and nothing runs.
        """
        streams = self._start(prompts, params)
        bar = None
        if use_tqdm and streams:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(streams), desc="Generating", unit="req")
        for event in self._run(streams):
            if event.finished and bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return [s.out for s in streams]

    def generate_streaming(self, prompts, params: SamplingParams | Sequence[SamplingParams] | None = None,
                           ) -> Iterator[StreamEvent]:
        """Yields a StreamEvent each time a block of a request commits: the request's index, its
        new token ids and text delta, and on its last event the finish reason.

        Streamed tokens are committed tokens only: a block is streamed when it is final, so an
        event never retracts or changes anything an earlier event delivered. Text that could
        still become part of a stop string (or an incomplete UTF-8 character) is held back until
        the next block decides it. Requests are admitted as KV memory and max_num_seqs allow, so
        the first events arrive long before the last request finishes. Validation happens when
        this is called, before anything is queued; closing the generator early aborts the
        requests still running.
        """
        return self._run(self._start(prompts, params))

    def _start(self, prompts, params) -> list[RequestStream]:
        ids, texts = self._to_token_ids(prompts)
        plist = self._params_list(params, len(ids))
        cpp_params = []
        for i, (p_ids, p) in enumerate(zip(ids, plist)):
            try:
                cpp_params.append(p.to_cpp())
                self.engine.validate_request(p_ids, cpp_params[-1])
            except (ValueError, NotImplementedError) as e:
                raise type(e)(f"prompt {i}: {e}") from None
            if p.stop and self.tokenizer is None:
                raise ValueError(f"prompt {i}: stop strings need a tokenizer, and '{self.model_dir}' has none")
        streams = []
        for i in range(len(ids)):
            stream = RequestStream(i, texts[i], ids[i], list(plist[i].stop or []), self.tokenizer,
                                   plist[i].logprobs)
            stream.cpp_params = cpp_params[i]
            streams.append(stream)
        return streams

    def _run(self, streams: list[RequestStream]) -> Iterator[StreamEvent]:
        by_request: dict[int, RequestStream] = {}
        try:
            for s in streams:
                by_request[self.engine.add_request(s.out.prompt_token_ids, s.cpp_params)] = s
            while by_request:
                for ev in self.engine.step():
                    stream = by_request.get(ev.request_id)
                    if stream is None:
                        continue
                    event, stopped_by_string = stream.update(
                        ev.new_token_ids, ev.new_logprobs, ev.finished, ev.finish_reason, ev.num_forwards)
                    if stopped_by_string and not ev.finished:
                        self.engine.abort(ev.request_id)
                    if stream.finished:
                        del by_request[ev.request_id]
                    yield event
        finally:
            for rid in by_request:  # an error, an interrupt or an abandoned stream: free the rest
                self.engine.abort(rid)

    # ------------------------------------------------------------------ introspection
    @property
    def num_free_kv_pages(self) -> int:
        return self.engine.num_free_kv_pages()

    @property
    def num_kv_pages(self) -> int:
        return self.info.num_kv_pages

    @property
    def num_cuda_graphs(self) -> int:
        """CUDA graphs alive: forward shapes captured, less those evicted past max_cuda_graphs (0 on
        the CPU or with enforce_eager)."""
        return self.engine.num_cuda_graphs()

    @property
    def num_cuda_graph_evictions(self) -> int:
        """CUDA graphs destroyed to make room for new forward shapes (see max_cuda_graphs)."""
        return self.engine.num_cuda_graph_evictions()

    @property
    def num_cuda_graph_replays(self) -> int:
        """Forwards that replayed a captured CUDA graph instead of launching kernels one by one."""
        return self.engine.num_cuda_graph_replays()

    @property
    def num_forwards_launched_ahead(self) -> int:
        """Forwards launched before the previous step's decisions reached the host (0 with
        async_scheduling=False)."""
        return self.engine.num_forwards_launched_ahead()

    @property
    def num_logit_rows_discarded(self) -> int:
        """Rows whose final hidden states a forward computed and no step sampled (a forward
        launched ahead whose request ended on a stop token, or whose decisions in flight fill
        positions in a count not known ahead)."""
        return self.engine.num_logit_rows_discarded()
