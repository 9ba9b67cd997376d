"""The synthetic task suite of the tiny models that ship with BlockInfer (issue 6).

Four tasks with checkable answers, asked in a chat-like prompt:

    <|user|>{question}<|assistant|>{answer}<|endoftext|>

| task      | question               | answer      |
| --------- | ---------------------- | ----------- |
| `add`     | `4821+397=`            | `5218`      |
| `sort`    | `sort 42 7 19`         | `7 19 42`   |
| `reverse` | `reverse kqzom`        | `mozqk`     |
| `count`   | `count a in banana`    | `3`         |

Answers are plain decimal or plain words; a completion is correct when its text (special
tokens skipped) equals the answer exactly.  Operands of `add` have 1 to 4 digits; `sort` takes
3 to 6 numbers in 0..99; `reverse` takes a random lowercase word of 3 to 8 letters; `count`
asks how many times a letter occurs (0 to 4) in a random word of 4 to 10 letters.

Held-out split: a problem is a test problem iff the first 8 hex digits of
sha256("{task}|{question}") taken mod 100 are < 10 (10% of every task's problem space).
Training never sees a test problem (`is_test`); `test_problems(task, n)` lists the first n test
problems of a fixed random stream, the same on every machine.

The tokenizer is character-level (every character one token, 64 ids):
    0 <|endoftext|> (EOS, also pad)   1 <|user|>   2 <|assistant|>   3 <|mask|>   4 <|unk|>
    then the characters of CHARS, then reserved ids up to 63.

Pure standard library (the tokenizer writer imports `tokenizers`): the training script loads
this file by path, without importing blockinfer's compiled engine.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

TASKS = ("add", "sort", "reverse", "count")

EOS_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, MASK_TOKEN, UNK_TOKEN = (
    "<|endoftext|>", "<|user|>", "<|assistant|>", "<|mask|>", "<|unk|>")
EOS_ID, USER_ID, ASSISTANT_ID, MASK_ID, UNK_ID = 0, 1, 2, 3, 4
SPECIALS = (EOS_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, MASK_TOKEN, UNK_TOKEN)
CHARS = " +=?,:.-0123456789abcdefghijklmnopqrstuvwxyz"
VOCAB_SIZE = 64
CHAR_IDS = {c: len(SPECIALS) + i for i, c in enumerate(CHARS)}
ID_CHARS = {i: c for c, i in CHAR_IDS.items()}
assert len(SPECIALS) + len(CHARS) <= VOCAB_SIZE

CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
                 "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|endoftext|>"
                 "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")

# The longest prompt is a 6-number sort (24 tokens), the longest answer 17 characters + EOS:
# 24 max_tokens hold every answer with its EOS.
MAX_TOKENS = 24
TEST_PERCENT = 10
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Problem:
    task: str
    question: str
    answer: str

    @property
    def prompt(self) -> str:
        """The chat-formatted prompt text (the tokenizer reads the role markers as one token)."""
        return format_prompt(self.question)

    def prompt_ids(self) -> list[int]:
        return [USER_ID] + encode(self.question) + [ASSISTANT_ID]

    def answer_ids(self) -> list[int]:
        """The answer's tokens followed by EOS."""
        return encode(self.answer) + [EOS_ID]

    def is_correct(self, completion: str | None) -> bool:
        return completion is not None and completion.strip() == self.answer


def format_prompt(question: str) -> str:
    return f"{USER_TOKEN}{question}{ASSISTANT_TOKEN}"


def encode(text: str) -> list[int]:
    return [CHAR_IDS.get(c, UNK_ID) for c in text]


def decode(ids) -> str:
    """Characters of the ids, stopping at the first EOS; other special ids are skipped."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        out.append(ID_CHARS.get(int(i), ""))
    return "".join(out)


def is_test(task: str, question: str) -> bool:
    """The held-out split: a deterministic hash of the problem decides it."""
    h = hashlib.sha256(f"{task}|{question}".encode()).hexdigest()
    return int(h[:8], 16) % 100 < TEST_PERCENT


# ------------------------------------------------------------------------------ generators
def _number(rng: random.Random, max_digits: int) -> int:
    digits = rng.randint(1, max_digits)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(lo, hi)))


def make_problem(task: str, rng: random.Random) -> Problem:
    """A random problem of `task` from either split."""
    if task == "add":
        a, b = _number(rng, 4), _number(rng, 4)
        return Problem(task, f"{a}+{b}=", str(a + b))
    if task == "sort":
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
        return Problem(task, "sort " + " ".join(map(str, nums)),
                       " ".join(map(str, sorted(nums))))
    if task == "reverse":
        w = _word(rng, 3, 8)
        return Problem(task, f"reverse {w}", w[::-1])
    if task == "count":
        n = rng.randint(4, 10)
        letter = rng.choice(_LETTERS)
        k = rng.randint(0, 4)
        others = _LETTERS.replace(letter, "")
        word = [rng.choice(others) for _ in range(n)]
        for pos in rng.sample(range(n), k):
            word[pos] = letter
        return Problem(task, f"count {letter} in {''.join(word)}", str(k))
    raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")


def train_problem(task: str, rng: random.Random) -> Problem:
    """A random training problem (never one of the held-out split)."""
    while True:
        p = make_problem(task, rng)
        if not is_test(p.task, p.question):
            return p


def test_problems(task: str, n: int) -> list[Problem]:
    """The first n distinct held-out problems of `task` (deterministic)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    rng = random.Random(f"blockinfer-tiny-test-{task}")
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < n:
        p = make_problem(task, rng)
        if p.question not in seen and is_test(p.task, p.question):
            seen.add(p.question)
            out.append(p)
    return out


# ------------------------------------------------------------------------------ tokenizer
def write_tokenizer(path) -> None:
    """tokenizer.json (a `tokenizers` BPE with no merges: one token per character, the role
    markers and EOS/mask as special tokens), tokenizer_config.json and special_tokens_map.json,
    loadable by transformers.AutoTokenizer offline."""
    from tokenizers import Tokenizer, decoders, models

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update(CHAR_IDS)
    reserved = [f"<|reserved_{k}|>" for k in range(VOCAB_SIZE - len(vocab))]
    for tok in reserved:
        vocab[tok] = len(vocab)
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([EOS_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, MASK_TOKEN, UNK_TOKEN] + reserved)
    for name, want in zip(SPECIALS, range(len(SPECIALS))):
        assert tok.token_to_id(name) == want, (name, tok.token_to_id(name), want)
    tok.save(str(path / "tokenizer.json"))

    added = {str(vocab[t]): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
             for t in list(SPECIALS) + reserved}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN,
        "mask_token": MASK_TOKEN,
        "additional_special_tokens": [USER_TOKEN, ASSISTANT_TOKEN],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "chat_template": CHAT_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "unk_token": UNK_TOKEN,
                   "mask_token": MASK_TOKEN,
                   "additional_special_tokens": [USER_TOKEN, ASSISTANT_TOKEN]}
    (path / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
