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


def _random_corpus(rng, scheme, sentences):
    """Gold in IOB1 or IOB2 (with stray I- tags, "." tags, O and empty sentences), and a corrupted guess."""
    types = ["NP", "VP", "PP"]
    gold = []
    for _ in range(sentences):
        sentence, previous = [], "O"
        for _ in range(rng.randint(0, 8)):
            roll = rng.random()
            if roll < 0.3:
                label = rng.choice(["O", "O", "O", "."])
            elif roll < 0.6 and previous not in ("O", "."):
                label = "I-" + previous[2:]  # continue the chunk
            elif scheme == "IOB2" or rng.random() < 0.3:
                label = "B-" + rng.choice(types)  # IOB1 uses B- mainly between chunks of one type
            else:
                label = "I-" + rng.choice(types)  # IOB1 start, or a stray I- in IOB2
            sentence.append(label)
            previous = label
        gold.append(sentence)
    labels = ["O", "."] + [f"{t}-{k}" for t in "BI" for k in types]
    guess = [[rng.choice(labels) if rng.random() < 0.25 else label for label in sentence] for sentence in gold]
    return gold, guess


def test_conlleval_port_agrees_with_seqeval_on_random_iob1_and_iob2():
    """seqeval's default mode is conlleval-compatible: same span counts, precision, recall, F1 per type."""
    import warnings

    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(11)
    sentences = 0
    for trial in range(100):
        gold, guess = _random_corpus(rng, "IOB2" if trial % 2 else "IOB1", sentences=rng.randint(8, 13))
        sentences += len(gold)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "." and all-O corpora: seqeval warns, scores stay defined
            theirs_gold, theirs_guess = set(get_entities(gold)), set(get_entities(guess))
            p, r, f = (score(gold, guess, zero_division=0) for score in (precision_score, recall_score, f1_score))
            report = classification_report(gold, guess, output_dict=True, zero_division=0)
        ours = conlleval(gold, guess)
        assert (ours.gold_chunks, ours.guessed_chunks, ours.correct_chunks) == (
            len(theirs_gold), len(theirs_guess), len(theirs_gold & theirs_guess)), (gold, guess)
        assert (ours.precision, ours.recall, ours.f1) == pytest.approx((100 * p, 100 * r, 100 * f)), (gold, guess)
        for kind, (n_gold, _, _) in ours.per_type.items():
            if n_gold:
                assert ours.type_f1(kind) == pytest.approx(100 * report[kind]["f1-score"]), (kind, gold, guess)
                assert n_gold == report[kind]["support"]
    assert sentences >= 1000
