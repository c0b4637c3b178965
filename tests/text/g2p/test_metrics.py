"""WER and PER against several references per word, worked by hand."""

from __future__ import annotations

import pytest

from text.g2p.metrics import best_reference, edit_distance, error_rates_by_length, score


@pytest.mark.parametrize("a, b, d", [
    ("kitten", "sitting", 3),  # k->s, e->i, +g
    ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0),
    (("K", "AE", "T"), ("K", "AH", "T", "S"), 2),  # AE->AH, +S
    (("AH",), ("B", "AH"), 1),
])
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_best_reference_prefers_the_closest_then_the_longest():
    assert best_reference(("A", "B", "C"), [("A", "B", "D", "E"), ("A", "X", "C")]) == (1, 3)
    assert best_reference(("A",), [("B",), ("A", "C")]) == (1, 2)  # equally close: the longer one
    with pytest.raises(ValueError, match="at least one reference"):
        best_reference(("A",), [])


def test_scores_by_hand():
    references = {
        "either": [("IY", "DH", "ER"), ("AY", "DH", "ER")],
        "cat": [("K", "AE", "T")],
        "dogs": [("D", "AO", "G", "Z")],
    }
    predictions = {
        "either": ("AY", "DH", "ER"),  # equals the second reference: right, distance 0 (length 3)
        "cat": ("K", "AH", "T", "S"),  # wrong: AE->AH, +S: distance 2 (length 3)
        "dogs": ("D", "AO", "G"),  # wrong: -Z: distance 1 (length 4)
    }
    s = score(predictions, references)
    assert (s.words, s.word_errors, s.phoneme_errors, s.reference_phonemes) == (3, 2, 3, 10)
    assert s.wer == pytest.approx(2 / 3)
    assert s.per == pytest.approx(3 / 10)  # summed distances over summed reference lengths, not a mean of ratios


def test_score_needs_a_prediction_for_every_word():
    with pytest.raises(KeyError, match="no prediction"):
        score({}, {"cat": [("K", "AE", "T")]})


def test_error_rates_by_length_bins():
    references = {"a": [("EY",)], "ab": [("AE", "B")], "abcde": [("X",)], "abcdefgh": [("Y",)]}
    predictions = {"a": ("EY",), "ab": ("AA",), "abcde": ("X",), "abcdefgh": ("Z",)}
    rows = error_rates_by_length(predictions, references, [1, 3, 8])
    assert [(r["lo"], r["hi"], r["words"]) for r in rows] == [(1, 3, 2), (3, 8, 1), (8, None, 1)]
    assert [r["wer"] for r in rows] == [0.5, 0.0, 1.0]
    assert rows[0]["per"] == pytest.approx(2 / 3)  # "ab": AE B vs AA: distance 2 over length 2; "a": 0 over 1
