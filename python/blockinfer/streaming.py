"""Per-request bookkeeping between engine steps and the caller: accumulates committed tokens,
matches stop strings on the decoded text (across block boundaries), and computes text deltas
that never have to be retracted."""
from __future__ import annotations

from blockinfer.outputs import RequestOutput, StreamEvent, TokenLogprob

_REPLACEMENT = "\ufffd"  # what a tokenizer decodes an incomplete UTF-8 sequence to


class RequestStream:
    def __init__(self, index: int, prompt: str | None, prompt_ids: list[int], stop: list[str],
                 tokenizer, logprobs: bool):
        self.out = RequestOutput(index=index, prompt=prompt, prompt_token_ids=prompt_ids, text=None,
                                 logprobs=[] if logprobs else None)
        self.stop = stop
        self.tokenizer = tokenizer
        self.sent = ""  # text already delivered in events
        self.finished = False
        self.cpp_params = None  # the validated _C.SamplingParams, set by LLM

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _find_stop(self, text: str, search_from: int) -> int:
        """Index of the earliest stop string in text[search_from - ...:], or -1."""
        best = -1
        for s in self.stop:
            i = text.find(s, max(0, search_from - len(s) + 1))
            if i >= 0 and (best < 0 or i < best):
                best = i
        return best

    def _safe_length(self, text: str) -> int:
        """How much of an unfinished request's text can be delivered without retraction: not an
        incomplete UTF-8 character at the end, and not a tail that could be the start of a stop
        string that the next block completes."""
        safe = len(text.rstrip(_REPLACEMENT))
        for s in self.stop:
            for n in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:n]):
                    safe -= n
                    break
        return safe

    def update(self, new_ids: list[int], new_logprobs, finished: bool, finish_reason: str | None,
               num_forwards: int) -> tuple[StreamEvent, bool]:
        """Applies one engine output. Returns the event and whether a stop string ended the
        request here (the caller then aborts it in the engine)."""
        out = self.out
        out.num_forwards = num_forwards
        stopped_by_string = False
        added = list(new_ids)
        added_lp = [TokenLogprob(*t) for t in new_logprobs] if out.logprobs is not None else None
        text = None
        if self.tokenizer is not None and self.stop:
            # Token by token, so that the stop string's last token ends the completion.
            checked = len(self._decode(out.token_ids))
            for k, tok in enumerate(added):
                out.token_ids.append(tok)
                text = self._decode(out.token_ids)
                cut = self._find_stop(text, checked)
                checked = len(text)
                if cut >= 0:
                    text = text[:cut]
                    added, stopped_by_string = added[:k + 1], True
                    if added_lp is not None:
                        added_lp = added_lp[:k + 1]
                    finished, finish_reason = True, "stop"
                    break
        else:
            out.token_ids.extend(added)
            if self.tokenizer is not None:
                text = self._decode(out.token_ids)
        if added_lp is not None:
            out.logprobs.extend(added_lp)

        delta = None
        if text is not None:
            safe = len(text) if finished else self._safe_length(text)
            # Deltas concatenate to the final text for tokenizers whose decode of a longer id list
            # extends the decode of a shorter one (byte-level BPE does).
            delta = text[len(self.sent):safe] if safe > len(self.sent) else ""
            self.sent += delta
            out.text = text if finished else self.sent
        if finished:
            out.finish_reason = finish_reason
            self.finished = True
        event = StreamEvent(index=out.index, token_ids=added, text=delta, finished=finished,
                            finish_reason=finish_reason if finished else None,
                            num_forwards=num_forwards, logprobs=added_lp)
        return event, stopped_by_string
