"""generate_streaming, stop strings and text deltas."""
from __future__ import annotations

import pytest

from blockinfer import LLM, SamplingParams, StreamEvent

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def tok_llm(tokenizer_checkpoint):
    return LLM(tokenizer_checkpoint)


def collect(events):
    per: dict[int, list[StreamEvent]] = {}
    for ev in events:
        per.setdefault(ev.index, []).append(ev)
    return per


PROMPTS = ["Hello, world!", "The quick brown fox", "Numbers: 1 2 3", "In the beginning there was",
           "a", "It said nothing useful, but it said it quickly"]


@pytest.mark.parametrize("block", [1, 4, 8])
def test_stream_deltas_concatenate_to_generate_output(tok_llm, block):
    params = [SamplingParams(max_tokens=10 + 7 * i, block_length=block, seed=i,
                             temperature=0.0 if i % 2 else 1.0, ignore_eos=i % 3 == 0)
              for i in range(len(PROMPTS))]
    outs = tok_llm.generate(PROMPTS, params, use_tqdm=False)
    per = collect(tok_llm.generate_streaming(PROMPTS, params))
    assert sorted(per) == list(range(len(PROMPTS)))
    for i, out in enumerate(outs):
        events = per[i]
        assert [e.finished for e in events] == [False] * (len(events) - 1) + [True]
        assert all(e.finish_reason is None for e in events[:-1])
        assert events[-1].finish_reason == out.finish_reason
        assert sum((e.token_ids for e in events), []) == out.token_ids
        assert "".join(e.text for e in events) == out.text
        assert events[-1].num_forwards == out.num_forwards


def test_first_event_arrives_before_the_last_request_is_admitted(checkpoints):
    llm = LLM(checkpoints["gqa"], max_num_seqs=4)
    prompts = [[1 + i, 2, 3, 4, 5] for i in range(64)]
    stream = llm.generate_streaming(prompts, SamplingParams(max_tokens=12, **GREEDY))
    first = next(stream)
    assert isinstance(first, StreamEvent) and first.token_ids
    assert llm.engine.num_waiting() > 0  # most of the 64 are still queued
    rest = list(stream)
    assert sum(e.finished for e in [first] + rest) == 64


def test_closing_a_stream_early_aborts_its_requests(checkpoints):
    llm = LLM(checkpoints["gqa"], max_num_seqs=4)
    stream = llm.generate_streaming([[1, 2, 3]] * 10, SamplingParams(max_tokens=40, **GREEDY))
    next(stream)
    stream.close()
    assert not llm.engine.has_unfinished()
    assert llm.num_free_kv_pages == llm.num_kv_pages


def test_stream_validates_before_running(checkpoints):
    llm = LLM(checkpoints["gqa"])
    with pytest.raises(ValueError, match="prompt 1"):
        llm.generate_streaming([[1, 2], [383]], SamplingParams(max_tokens=4))
    assert not llm.engine.has_unfinished()


# ---------------------------------------------------------------------------- stop strings
def _greedy(llm, prompt, block, max_tokens=40):
    return llm.generate([prompt], SamplingParams(max_tokens=max_tokens, block_length=block, **GREEDY),
                        use_tqdm=False)[0]


@pytest.mark.parametrize("block", [4, 8])
def test_stop_string_across_a_block_boundary(tok_llm, block):
    prompt = "Hello, world!"
    full = _greedy(tok_llm, prompt, block)
    tok = tok_llm.tokenizer
    # A stop string made of the end of the first block's text and the start of the second's.
    first_block_text = tok.decode(full.token_ids[:block - len(tok.encode(prompt)) % block or block],
                                  skip_special_tokens=True)
    assert len(first_block_text) >= 2 and len(full.text) > len(first_block_text) + 2
    stop = full.text[len(first_block_text) - 2:len(first_block_text) + 2]
    cut = full.text.find(stop)
    params = SamplingParams(max_tokens=40, block_length=block, stop=[stop], **GREEDY)
    out = tok_llm.generate([prompt], params, use_tqdm=False)[0]
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    # The token ids end with the token that completed the stop string.
    n = len(out.token_ids)
    assert out.token_ids == full.token_ids[:n]
    assert stop in tok.decode(full.token_ids[:n], skip_special_tokens=True)
    assert stop not in tok.decode(full.token_ids[:n - 1], skip_special_tokens=True)
    # Streaming never delivered the stop string or anything after it.
    events = collect(tok_llm.generate_streaming([prompt], params))[0]
    assert "".join(e.text for e in events) == out.text
    assert events[-1].finish_reason == "stop"
    assert tok_llm.num_free_kv_pages == tok_llm.num_kv_pages


def test_earliest_of_several_stop_strings_wins(tok_llm):
    full = _greedy(tok_llm, "The quick brown fox", 4)
    late, early = full.text[-4:], full.text[3:6]
    out = tok_llm.generate(["The quick brown fox"], SamplingParams(
        max_tokens=40, block_length=4, stop=[late, early], **GREEDY), use_tqdm=False)[0]
    assert out.text == full.text[:full.text.find(early)]


def test_stop_string_not_in_output_runs_to_length(tok_llm):
    out = tok_llm.generate(["a"], SamplingParams(max_tokens=12, stop=["\u2603never"], **GREEDY),
                           use_tqdm=False)[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 12


@pytest.mark.parametrize("stop", [5, [3], [""], [None]])
def test_bad_stop_values(stop):
    with pytest.raises(ValueError, match="stop"):
        SamplingParams(stop=stop)


def test_stop_strings_need_a_tokenizer(checkpoints):
    llm = LLM(checkpoints["gqa"])
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        llm.generate([[1, 2, 3]], SamplingParams(stop=["x"]), use_tqdm=False)
