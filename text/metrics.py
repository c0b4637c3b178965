"""Token accuracy and chunk (span) precision / recall / F1 with the semantics of CoNLL's ``conlleval``.

``conlleval.pl`` (the CoNLL-2000 shared-task scorer, used unchanged for CoNLL-2003) does not compare
sets of spans built by some tidy decoder: it walks the tokens once with a small state machine, and
its notion of where a chunk starts and ends is what makes IOB1 (``I-NP I-NP B-NP``), BIO and stray
``I-`` tags after ``O`` all work. :func:`conlleval` reproduces that walk line for line (the original
Perl is quoted in the comments), so scores here equal the script's scores, quirks included:

- a label ``X-TYPE`` splits at the first ``-`` into the tag ``X`` and the type ``TYPE``; a label
  without ``-`` is a tag with the empty type (``O`` is the "outside" tag);
- a chunk counts as correct only if gold and guess start it at the same token, end it at the same
  token and give it the same type;
- a sentence boundary acts as an ``O`` token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


def split_label(label: str) -> tuple[str, str]:
    """``"B-NP"`` -> ``("B", "NP")``; ``"O"`` -> ``("O", "")``; ``"I-A-B"`` -> ``("I", "A-B")``."""
    tag, sep, kind = label.partition("-")
    return (tag, kind) if sep else (label, "")


def chunk_end(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's ``endOfChunk``: does a chunk end between the previous token and this one?"""
    if (prev_tag, tag) in {("B", "B"), ("B", "O"), ("I", "B"), ("I", "O"), ("E", "E"), ("E", "I"), ("E", "O")}:
        return True
    if prev_tag not in ("O", ".") and prev_type != type_:
        return True
    return prev_tag in ("]", "[")  # bracket chunks have length 1


def chunk_start(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """conlleval's ``startOfChunk``: does a chunk start at this token?"""
    if (prev_tag, tag) in {("B", "B"), ("I", "B"), ("O", "B"), ("O", "I"), ("E", "E"), ("E", "I"), ("O", "E")}:
        return True
    if tag not in ("O", ".") and prev_type != type_:
        return True
    return tag in ("[", "]")


def chunks(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """The chunks of one sentence as ``(type, first, last)`` (inclusive), by conlleval's rules."""
    found = []
    prev_tag, prev_type, start = "O", "", None
    for i, label in enumerate([*labels, "O"]):
        tag, type_ = split_label(label)
        if start is not None and chunk_end(prev_tag, tag, prev_type, type_):
            found.append((prev_type, start, i - 1))
            start = None
        if chunk_start(prev_tag, tag, prev_type, type_):
            start = i
        prev_tag, prev_type = tag, type_
    return found


@dataclass
class ChunkScores:
    """What conlleval reports. Precision, recall and F1 are percentages (0 when undefined)."""

    tokens: int = 0
    correct_tokens: int = 0
    gold_chunks: int = 0
    guessed_chunks: int = 0
    correct_chunks: int = 0
    per_type: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # type -> (gold, guessed, correct)

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct_tokens / self.tokens if self.tokens else 0.0

    @property
    def precision(self) -> float:
        return 100.0 * self.correct_chunks / self.guessed_chunks if self.guessed_chunks else 0.0

    @property
    def recall(self) -> float:
        return 100.0 * self.correct_chunks / self.gold_chunks if self.gold_chunks else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def type_f1(self, kind: str) -> float:
        gold, guessed, correct = self.per_type.get(kind, (0, 0, 0))
        p = correct / guessed if guessed else 0.0
        r = correct / gold if gold else 0.0
        return 200.0 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {
            "token_accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tokens": self.tokens,
            "gold_chunks": self.gold_chunks,
            "guessed_chunks": self.guessed_chunks,
            "correct_chunks": self.correct_chunks,
        }


def conlleval(gold: Sequence[Sequence[str]], guessed: Sequence[Sequence[str]]) -> ChunkScores:
    """Score guessed label sequences against gold ones exactly as ``conlleval.pl`` does.

    Args:
        gold (Sequence[Sequence[str]]): gold labels, one sequence per sentence.
        guessed (Sequence[Sequence[str]]): guessed labels, same shape.
    """
    if len(gold) != len(guessed):
        raise ValueError(f"{len(gold)} gold sentences but {len(guessed)} guessed")
    scores = ScoreCounter()
    for g_sentence, p_sentence in zip(gold, guessed):
        if len(g_sentence) != len(p_sentence):
            raise ValueError(f"sentence of {len(g_sentence)} gold labels got {len(p_sentence)} guesses")
        for g, p in zip(g_sentence, p_sentence):
            scores.token(g, p)
        scores.boundary()
    return scores.finish()


@dataclass
class _WalkState:
    """conlleval's variables carried from one token to the next."""

    in_correct: bool = False
    last_correct: str = "O"
    last_guessed: str = "O"
    last_correct_type: str = ""
    last_guessed_type: str = ""


class ScoreCounter:
    """conlleval's main loop, fed one token (or sentence boundary) at a time."""

    def __init__(self):
        self.s = _WalkState()
        self.scores = ChunkScores()

    def _type_count(self, kind: str, slot: int) -> None:
        counts = list(self.scores.per_type.get(kind, (0, 0, 0)))
        counts[slot] += 1
        self.scores.per_type[kind] = tuple(counts)

    def _step(self, correct_label: str, guessed_label: str, is_boundary: bool) -> None:
        s = self.s
        correct, correct_type = split_label(correct_label)
        guessed, guessed_type = split_label(guessed_label)
        correct_end = chunk_end(s.last_correct, correct, s.last_correct_type, correct_type)
        guessed_end = chunk_end(s.last_guessed, guessed, s.last_guessed_type, guessed_type)
        correct_start = chunk_start(s.last_correct, correct, s.last_correct_type, correct_type)
        guessed_start = chunk_start(s.last_guessed, guessed, s.last_guessed_type, guessed_type)

        if s.in_correct:
            # if ($correctEnd and $guessedEnd and $lastGuessedType eq $lastCorrectType)
            if correct_end and guessed_end and s.last_guessed_type == s.last_correct_type:
                s.in_correct = False
                self.scores.correct_chunks += 1
                self._type_count(s.last_correct_type, 2)
            # elsif ($correctEnd != $guessedEnd or $guessedType ne $correctType)
            elif correct_end != guessed_end or guessed_type != correct_type:
                s.in_correct = False
        if correct_start and guessed_start and guessed_type == correct_type:
            s.in_correct = True
        if correct_start:
            self.scores.gold_chunks += 1
            self._type_count(correct_type, 0)
        if guessed_start:
            self.scores.guessed_chunks += 1
            self._type_count(guessed_type, 1)
        if not is_boundary:
            # if ($correct eq $guessed and $guessedType eq $correctType): i.e. the whole label matches
            if correct == guessed and guessed_type == correct_type:
                self.scores.correct_tokens += 1
            self.scores.tokens += 1
        s.last_guessed, s.last_correct = guessed, correct
        s.last_guessed_type, s.last_correct_type = guessed_type, correct_type

    def token(self, correct_label: str, guessed_label: str) -> None:
        self._step(correct_label, guessed_label, is_boundary=False)

    def boundary(self) -> None:
        """A sentence boundary: conlleval reads it as a token tagged ``O`` by both, not counted."""
        self._step("O", "O", is_boundary=True)

    def finish(self) -> ChunkScores:
        if self.s.in_correct:
            self.scores.correct_chunks += 1
            self._type_count(self.s.last_correct_type, 2)
            self.s.in_correct = False
        return self.scores


def token_accuracy(gold: Sequence[Sequence[str]], guessed: Sequence[Sequence[str]]) -> float:
    """Percentage of words whose guessed label equals the gold label."""
    total = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, guessed) for a, b in zip(g, p))
    return 100.0 * right / total if total else 0.0
