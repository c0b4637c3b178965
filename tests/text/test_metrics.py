"""conlleval equivalence on hand-worked examples (counts worked out on paper from conlleval.pl's rules)."""

import random

import pytest

from text.metrics import chunks, conlleval, split_label, token_accuracy


def counts(gold, guessed):
    s = conlleval(gold, guessed)
    return s.gold_chunks, s.guessed_chunks, s.correct_chunks, s.correct_tokens, s.tokens


def test_split_label_keeps_hyphens_in_the_type():
    assert split_label("B-NP") == ("B", "NP")
    assert split_label("I-B-X") == ("I", "B-X")
    assert split_label("O") == ("O", "")


def test_bio_wrong_type_is_a_wrong_chunk():
    gold = [["B-NP", "I-NP", "O", "B-VP"]]
    guess = [["B-NP", "I-NP", "O", "B-PP"]]
    assert counts(gold, guess) == (2, 2, 1, 3, 4)
    s = conlleval(gold, guess)
    assert s.precision == pytest.approx(50.0) and s.recall == pytest.approx(50.0) and s.f1 == pytest.approx(50.0)
    assert s.accuracy == pytest.approx(75.0)


def test_iob1_b_splits_adjacent_chunks_of_one_type():
    # IOB1: I-NP I-NP B-NP I-NP is two NPs; all-I is one long NP, which matches neither
    assert chunks(["I-NP", "I-NP", "B-NP", "I-NP"]) == [("NP", 0, 1), ("NP", 2, 3)]
    assert counts([["I-NP", "I-NP", "B-NP", "I-NP"]], [["I-NP"] * 4]) == (2, 1, 0, 3, 4)


def test_stray_i_after_o_starts_a_chunk():
    assert counts([["O", "I-VP", "I-VP"]], [["O", "B-VP", "I-VP"]]) == (1, 1, 1, 2, 3)


def test_type_change_without_b_ends_the_chunk():
    # gold is NP then VP (I-VP after B-NP starts a new chunk); the guess is one two-word NP
    assert chunks(["B-NP", "I-VP"]) == [("NP", 0, 0), ("VP", 1, 1)]
    assert counts([["B-NP", "I-VP"]], [["B-NP", "I-NP"]]) == (2, 1, 0, 1, 2)


def test_split_chunk_and_boundary_chunks():
    # a guess that splits a chunk in two gets neither half
    assert counts([["B-NP", "I-NP"]], [["B-NP", "B-NP"]]) == (1, 2, 0, 1, 2)
    # a sentence boundary ends a chunk, and I- at the start of the next sentence begins one
    gold = [["B-NP", "I-NP"], ["I-NP", "O"]]
    assert counts(gold, gold) == (2, 2, 2, 4, 4)
    assert conlleval(gold, gold).f1 == pytest.approx(100.0)


def test_chunk_ends_must_match_not_only_starts():
    gold = [["B-NP", "I-NP", "I-NP", "O"]]
    guess = [["B-NP", "I-NP", "O", "O"]]
    assert counts(gold, guess) == (1, 1, 0, 3, 4)
    assert conlleval(gold, guess).per_type == {"NP": (1, 1, 0)}


def test_state_machine_equals_span_set_matching_on_random_bio_and_iob1():
    labels = ["O", "B-NP", "I-NP", "B-VP", "I-VP", "I-PP"]
    rng = random.Random(0)
    for _ in range(300):
        gold = [[rng.choice(labels) for _ in range(rng.randint(1, 6))] for _ in range(3)]
        guess = [[rng.choice(labels) for _ in g] for g in gold]
        gold_spans = {(i, *c) for i, g in enumerate(gold) for c in chunks(g)}
        guess_spans = {(i, *c) for i, g in enumerate(guess) for c in chunks(g)}
        assert counts(gold, guess)[:3] == (len(gold_spans), len(guess_spans), len(gold_spans & guess_spans))


def test_token_accuracy_and_length_checks():
    assert token_accuracy([["NN", "VB"], ["DT"]], [["NN", "NN"], ["DT"]]) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        conlleval([["O"]], [["O", "O"]])
