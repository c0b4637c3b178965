"""CMUdict parsing (bad entries counted, never kept), the split by word, vocabularies and batches."""

from __future__ import annotations

import pytest
import torch

from text.g2p.data import (BOS, EOS, PAD, BucketBatches, Entry, G2PDataError, Vocab, check_word, collate, entries,
                           read_cmudict, split_words, strip_stress)

SAMPLE = """\
;;; a whole-line comment
abbey AE1 B IY0
abbey(2) AE1 B EY0
'bout B AW1 T
x-ray EH1 K S R EY2
a.m. EY2 EH1 M
aalborg AO1 L B AO0 R G # place, danish

abc1 EY1 B IY1 S IY1
caf\u00e9 K AE0 F EY1
foo F XX1
bar
foo(2 F UW1
ABBOT AE1 B AH0 T
abbey(3) AE1 B IY0
# a hash comment line
"""


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.dict"
    path.write_text(SAMPLE, encoding="utf-8")
    return read_cmudict(path)


def test_sample_keeps_only_good_entries(sample):
    lexicon, report = sample
    assert lexicon == {
        "abbey": [("AE1", "B", "IY0"), ("AE1", "B", "EY0")],
        "'bout": [("B", "AW1", "T")],
        "x-ray": [("EH1", "K", "S", "R", "EY2")],
        "a.m.": [("EY2", "EH1", "M")],
        "aalborg": [("AO1", "L", "B", "AO0", "R", "G")],
    }
    assert report.lines == 16 and report.entries == 6 and report.words == 5
    assert report.comments_stripped == 1
    alphabet = next(k for k in report.dropped if k.startswith("characters outside"))
    assert report.dropped[alphabet] == 3  # abc1, café, ABBOT (upper case is not folded in the dictionary)
    assert report.dropped["empty line"] == 1
    assert report.dropped["comment line"] == 2
    assert report.dropped["unknown phoneme (not in cmudict.symbols)"] == 1
    assert report.dropped["no phonemes"] == 1
    assert report.dropped["malformed head (expected word or word(N))"] == 1
    assert report.dropped["repeated pronunciation of the same word"] == 1
    # every line is accounted for: kept, or dropped with a reason
    assert report.entries + sum(report.dropped.values()) == report.lines
    assert "line 8" in report.examples["empty line"][0]


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(G2PDataError, match="no dictionary file"):
        read_cmudict(tmp_path / "nope.dict")
    (tmp_path / "bad.dict").write_text("\n# nothing\n")
    with pytest.raises(G2PDataError, match="no usable entries"):
        read_cmudict(tmp_path / "bad.dict")


def test_pinned_dictionary_counts():
    lexicon, report = read_cmudict()
    assert report.words == len(lexicon) == 126_052
    assert report.entries == 135_164
    assert report.comments_stripped == 22
    assert dict(report.dropped) == {"repeated pronunciation of the same word": 2}
    assert report.entries + sum(report.dropped.values()) == report.lines


def _lexicon(n: int) -> dict:
    words = [f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}" for i in range(n)]
    return {w: [("W",), ("W", "AH0")] if i % 3 == 0 else [("W",)] for i, w in enumerate(words)}


def test_split_is_by_word_seeded_and_sized():
    lexicon = _lexicon(1000)
    s = split_words(lexicon, val_fraction=0.05, test_fraction=0.1, seed=3)
    train, val, test = set(s.train), set(s.val), set(s.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(lexicon)
    assert (len(train), len(val), len(test)) == (850, 50, 100)
    for part in (s.train, s.val, s.test):  # every pronunciation travels with its word
        assert all(part[w] == lexicon[w] for w in part)
    again = split_words(lexicon, val_fraction=0.05, test_fraction=0.1, seed=3)
    assert (again.train, again.val, again.test) == (s.train, s.val, s.test)
    other = split_words(lexicon, val_fraction=0.05, test_fraction=0.1, seed=4)
    assert set(other.test) != test


def test_split_limit_and_bad_fractions():
    lexicon = _lexicon(1000)
    s = split_words(lexicon, limit_words=300, seed=0)
    assert sum(s.sizes()[k]["words"] for k in ("train", "val", "test")) == 300
    with pytest.raises(G2PDataError, match="val_fraction"):
        split_words(lexicon, val_fraction=1.5)
    with pytest.raises(G2PDataError, match="leave none"):
        split_words(lexicon, val_fraction=0.6, test_fraction=0.45)


def test_vocabularies():
    plain, stressed = Vocab.build(stress=False), Vocab.build(stress=True)
    assert len(plain.phonemes) == 3 + 39 and len(stressed.phonemes) == 3 + 84
    assert plain.phonemes[:3] == ["<pad>", "<s>", "</s>"] and (PAD, BOS, EOS) == (0, 1, 2)
    assert plain.convert(("AH0", "B", "AW1", "T")) == strip_stress(("AH0", "B", "AW1", "T")) == ("AH", "B", "AW", "T")
    assert stressed.convert(("AH0",)) == ("AH0",)
    ids = plain.encode_phonemes(("AH", "B"))
    assert plain.decode_phonemes([BOS, *ids, EOS, ids[0]]) == ("AH", "B")
    assert Vocab.from_dict(plain.to_dict()).phonemes == plain.phonemes


def test_entries_merge_variants_that_differ_only_in_stress():
    lexicon = {"abbey": [("AE1", "B", "IY0"), ("AE1", "B", "IY2"), ("AE1", "B", "EY0")]}
    assert len(entries(lexicon, Vocab.build(stress=False))) == 2
    assert len(entries(lexicon, Vocab.build(stress=True))) == 3


def test_collate_shapes_and_teacher_forcing():
    vocab = Vocab.build(stress=False)
    batch = collate([Entry("ab", ("AE", "B")), Entry("abcde", ("EY",))], vocab)
    assert batch.letters.shape == (2, 5) and batch.target_in.shape == (2, 3)
    assert batch.lengths.tolist() == [2, 5]
    ae, b, ey = vocab.encode_phonemes(("AE", "B", "EY"))
    assert batch.target_in.tolist() == [[BOS, ae, b], [BOS, ey, PAD]]
    assert batch.target_out.tolist() == [[ae, b, EOS], [ey, EOS, PAD]]
    assert batch.letters[0, 2:].eq(PAD).all()


def test_bucket_batches_cover_every_entry_once_and_resume_from_the_generator():
    vocab = Vocab.build(stress=False)
    items = [Entry("a" * (1 + i % 9), ("AH",) * (1 + i % 5)) for i in range(130)]
    batches = BucketBatches(items, vocab, batch_size=16, seed=1)
    assert len(batches) == 9
    state = batches.generator.get_state()
    first = [b.words for b in batches]
    assert sorted(w for ws in first for w in ws) == sorted(e.word for e in items)
    batches.generator.set_state(state)
    assert [b.words for b in batches] == first  # same generator state, same batches
    assert [b.words for b in batches] != first  # the next pass reshuffles


@pytest.mark.parametrize("word, message", [
    ("", "empty word"), ("   ", "empty word"), ("abc123", "outside a-z"), ("r2d2", "outside a-z"),
    ("#$%", "outside a-z"), ("na\u00efve", "outside a-z"), ("--", "no letters"), ("a" * 60, "at most 32"),
])
def test_check_word_refuses_with_a_reason(word, message):
    with pytest.raises(G2PDataError, match=message):
        check_word(word, max_letters=32)


def test_check_word_folds_case_and_keeps_the_dictionary_alphabet():
    assert check_word("  Hello ", max_letters=32) == "hello"
    assert check_word("X-Ray", max_letters=32) == "x-ray"
    assert check_word("o'clock", max_letters=32) == "o'clock"
    assert torch.tensor(Vocab.build(False).encode_word("x-ray")).min() > PAD


def test_prepared_references_follow_the_stress_convention():
    from text.g2p.data import ParseReport
    from text.g2p.train import prepare

    lexicon = {"abbey": [("AE1", "B", "IY0"), ("AE1", "B", "IY2")], "cat": [("K", "AE1", "T")],
               "dog": [("D", "AO1", "G")]}
    splits = split_words(lexicon, val_fraction=0.34, test_fraction=0.34, seed=0)
    assert list(splits.test) == ["abbey"]
    plain, stressed = prepare(splits, ParseReport(), stress=False), prepare(splits, ParseReport(), stress=True)
    for data in (plain, stressed):
        assert len(data.val) == len(data.test) == 1 and {e.word for e in data.train} == set(splits.train)
    everything = {**plain.val, **plain.test, **{e.word: [e.phonemes] for e in plain.train}}
    assert all(not any(c.isdigit() for p in prons for ph in p for c in ph) for prons in everything.values())
    assert stressed.test["abbey"] == [("AE1", "B", "IY0"), ("AE1", "B", "IY2")]
    assert plain.test["abbey"] == [("AE", "B", "IY")]  # equal once stress is gone: one reference


def test_distil_replaces_the_training_targets_one_per_word_and_counts_the_departures():
    from text.g2p.data import ParseReport
    from text.g2p.train import distil, prepare

    lexicon = {"abbey": [("AE1", "B", "IY0")], "read": [("R", "IY1", "D"), ("R", "EH1", "D")],
               "cat": [("K", "AE1", "T")], "dog": [("D", "AO1", "G")], "egg": [("EH1", "G")]}
    splits = split_words(lexicon, val_fraction=0.2, test_fraction=0.2, seed=0)
    data = prepare(splits, ParseReport(), stress=False)
    train = list(splits.train)
    assert len(data.train) == len(train) + ("read" in train)  # the dictionary's: every pronunciation
    teacher = {w: data.vocab.convert(splits.train[w][-1]) for w in train}
    teacher[train[0]] = ("Z",)  # one word the teacher pronounces unlike every reference
    before = (dict(data.val), dict(data.test))
    assert distil(data, teacher) == 1
    assert [(e.word, e.phonemes) for e in data.train] == [(w, teacher[w]) for w in train]
    assert (data.val, data.test) == before  # validation and test keep the dictionary's references
    with pytest.raises(ValueError, match="1 missing"):
        distil(data, {w: p for w, p in teacher.items() if w != train[0]})
    with pytest.raises(ValueError, match="1 others"):
        distil(data, {**teacher, "zebra": ("Z",)})
