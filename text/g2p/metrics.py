"""Word and phoneme error rates for grapheme-to-phoneme conversion, against several references per word.

- **WER** (word error rate): the share of words whose predicted pronunciation equals *none* of the word's
  reference pronunciations.
- **PER** (phoneme error rate): for each word, the Levenshtein distance (substitutions, insertions,
  deletions, each cost 1) between the prediction and the *closest* reference (ties: the longer reference);
  PER = Σ distances / Σ lengths of those chosen references, over all words (a corpus-level rate, as
  Sequitur and most CMUdict papers report it, not a mean of per-word rates).

Both are fractions in [0, 1] here (PER can exceed 1 for very long wrong predictions); reports show percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["edit_distance", "best_reference", "G2PScores", "score", "error_rates_by_length"]


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def best_reference(prediction: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[int, int]:
    """``(distance, reference length)`` of the reference closest to ``prediction``; among equally close
    references, the longest (the smaller error rate).

    Raises:
        ValueError: when there is no reference.
    """
    if not references:
        raise ValueError("a word needs at least one reference pronunciation")
    distance, negative_length = min((edit_distance(prediction, r), -len(r)) for r in references)
    return distance, -negative_length


@dataclass
class G2PScores:
    """Error counts over a set of words."""

    words: int
    word_errors: int
    phoneme_errors: int
    reference_phonemes: int

    @property
    def wer(self) -> float:
        return self.word_errors / self.words if self.words else 0.0

    @property
    def per(self) -> float:
        return self.phoneme_errors / self.reference_phonemes if self.reference_phonemes else 0.0


def score(predictions: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[Sequence[str]]]) -> G2PScores:
    """WER and PER of ``predictions`` (word -> phonemes) against ``references`` (word -> pronunciations).

    Raises:
        KeyError: when a referenced word has no prediction.
    """
    missing = [w for w in references if w not in predictions]
    if missing:
        raise KeyError(f"{len(missing)} words have no prediction, e.g. {missing[:3]}")
    word_errors = phoneme_errors = ref_len = 0
    for word, refs in references.items():
        pred = tuple(predictions[word])
        refs = [tuple(r) for r in refs]
        word_errors += pred not in refs
        distance, length = best_reference(pred, refs)
        phoneme_errors += distance
        ref_len += length
    return G2PScores(len(references), word_errors, phoneme_errors, ref_len)


def error_rates_by_length(predictions: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[Sequence[str]]],
                          bins: Sequence[int]) -> list[dict]:
    """WER per word-length bin: ``bins = [1, 5, 8]`` gives lengths 1–4, 5–7 and 8 or more.

    Returns:
        list[dict]: ``{"lo", "hi" (None: open), "words", "wer", "per"}`` per bin.
    """
    rows = []
    for k, lo in enumerate(bins):
        hi = bins[k + 1] if k + 1 < len(bins) else None
        chosen = {w: r for w, r in references.items() if len(w) >= lo and (hi is None or len(w) < hi)}
        s = score({w: predictions[w] for w in chosen}, chosen)
        rows.append({"lo": lo, "hi": hi, "words": s.words, "wer": s.wer, "per": s.per})
    return rows
