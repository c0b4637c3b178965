import pytest
import torch

from core.lab.datasets import resolve_data_root
from text.data import (
    IGNORE_INDEX,
    TaggingDataError,
    TaggingDataset,
    Vocabularies,
    collate,
    count_unseen_labels,
    normalize_word,
    read_conll,
    read_conllu,
    split_off_dev,
    word_shape,
    SHAPES,
)

CONLL = """-DOCSTART- -X- O

He PRP B-NP
reckons VBZ B-VP
the DT B-NP
deficit NN I-NP
. . O

Rockwell NNP B-NP
said VBD B-VP
"""


def write(tmp_path, text, name="f.txt", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_read_conll_skips_docstart_and_splits_sentences(tmp_path):
    path = write(tmp_path, CONLL)
    sentences = read_conll(path, feature_columns=[1])
    assert [s.words for s in sentences] == [["He", "reckons", "the", "deficit", "."], ["Rockwell", "said"]]
    assert sentences[0].labels == ["B-NP", "B-VP", "B-NP", "I-NP", "O"]  # default: last column
    assert sentences[0].features == [["PRP", "VBZ", "DT", "NN", "."]]
    assert sentences[1].lines == [9, 10]
    pos = read_conll(path, label_column=1)
    assert pos[1].labels == ["NNP", "VBD"] and pos[1].features == []


def test_wrong_number_of_columns_names_file_and_line(tmp_path):
    path = write(tmp_path, CONLL.replace("the DT B-NP", "the B-NP"))
    with pytest.raises(TaggingDataError, match=r"f\.txt:5: expected 3 columns.*found 2"):
        read_conll(path)


def test_empty_file_and_missing_column_are_errors(tmp_path):
    with pytest.raises(TaggingDataError, match=r"empty\.txt: no sentences"):
        read_conll(write(tmp_path, "\n\n-DOCSTART- -X- O\n\n", "empty.txt"))
    with pytest.raises(TaggingDataError, match=r"f\.txt:3: column 5"):
        read_conll(write(tmp_path, CONLL), label_column=5)


def test_latin1_fallback(tmp_path):
    path = write(tmp_path, "café NN B-NP\nnaïve JJ I-NP\n", encoding="latin-1")
    assert read_conll(path)[0].words == ["café", "naïve"]


def test_read_conllu_upos_xpos_skips_ranges_and_empty_nodes(tmp_path):
    rows = [
        "# text = Don't go",
        "1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_",
        "1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_",
        "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_",
        "2.1\tghost\t_\tX\tXX\t_\t_\t_\t_\t_",
        "3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_",
        "",
    ]
    path = write(tmp_path, "\n".join(rows) + "\n", "a.conllu")
    (sentence,) = read_conllu(path)
    assert sentence.words == ["Do", "n't", "go"] and sentence.labels == ["AUX", "PART", "VERB"]
    assert read_conllu(path, tag="xpos")[0].labels == ["VBP", "RB", "VB"]
    bad = write(tmp_path, "1\tDo\tdo\tAUX\n", "bad.conllu")
    with pytest.raises(TaggingDataError, match=r"bad\.conllu:1: .*10 tab-separated"):
        read_conllu(bad)


def test_vocab_from_training_only_and_unknown_words_keep_characters(tmp_path):
    train = read_conll(write(tmp_path, CONLL))
    vocabs = Vocabularies.build(train)
    assert "deficit" in vocabs.words and "surplus" not in vocabs.words
    assert vocabs.labels.itos[0] != "<pad>" and set(vocabs.labels.itos) == {"B-NP", "I-NP", "B-VP", "O"}
    test = read_conll(write(tmp_path, "Refined JJ B-NP\nsoared VBD B-VP\n", "t.txt"))
    encoded = TaggingDataset(test, vocabs).encoded[0]
    assert encoded.words == [1, 1]  # both unknown
    assert all(c != 1 for c in encoded.chars[0])  # every character of "Refined" was seen in training
    assert encoded.shapes[0] == SHAPES.index("title")
    restored = Vocabularies.from_dict(vocabs.to_dict())
    assert restored.words.itos == vocabs.words.itos and restored.labels.itos == vocabs.labels.itos


def test_word_normalisation_and_shapes():
    assert normalize_word("Price1.5") == "price0.0"
    assert [SHAPES[word_shape(w)] for w in ["the", "IBM", "A", "Boeing", "iPhone", "1.8"]] == [
        "lower", "upper", "title", "title", "mixed", "no-letters"]


def test_unseen_label_is_a_counted_warning_naming_file_and_line(tmp_path):
    vocabs = Vocabularies.build(read_conll(write(tmp_path, CONLL)))
    test = read_conll(write(tmp_path, "He PRP B-NP\nleft VBD B-XYZ\nit PRP B-XYZ\n", "test.txt"))
    with pytest.warns(UserWarning, match=r"test: 2 gold labels never seen.*B-XYZ.*test\.txt:2"):
        assert count_unseen_labels(test, vocabs.labels, "test") == 2
    encoded = TaggingDataset(test, vocabs).encoded[0]
    assert encoded.labels[1] == IGNORE_INDEX and encoded.labels[0] == vocabs.labels.index("B-NP")


def test_batches_pad_and_mask():
    from text.data import Sentence

    train = [Sentence(["a", "bb", "c"], ["X", "Y", "X"]), Sentence(["dd"], ["Y"])]
    dataset = TaggingDataset(train, Vocabularies.build(train))
    batch = collate([dataset[0], dataset[1]])
    assert batch.words.shape == (2, 3) and batch.chars.shape == (2, 3, 2) and batch.features.shape == (2, 3, 0)
    assert batch.mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.labels[1, 1:].eq(IGNORE_INDEX).all() and batch.words[1, 1:].eq(0).all()


def test_dev_split_is_seeded_and_disjoint():
    from text.data import Sentence

    sentences = [Sentence([str(i)], ["X"]) for i in range(50)]
    train, dev = split_off_dev(sentences, 0.1, seed=3)
    again, dev_again = split_off_dev(sentences, 0.1, seed=3)
    assert len(dev) == 5 and len(train) == 45
    assert [s.words for s in dev] == [s.words for s in dev_again]
    assert not {s.words[0] for s in train} & {s.words[0] for s in dev}
    assert [s.words for s in split_off_dev(sentences, 0.1, seed=4)[1]] != [s.words for s in dev]


def test_conll2000_as_shipped():
    root = resolve_data_root() / "conll2000"  # CI points $ATTNLAB_DATA at ../shared/data
    train = read_conll(root / "train.txt", feature_columns=[1])
    test = read_conll(root / "test.txt")
    assert (len(train), sum(map(len, train))) == (8936, 211727)
    assert (len(test), sum(map(len, test))) == (2012, 47377)
    # the test set has two I-LST words (a list marker spanning two tokens); training has no I-LST
    with pytest.warns(UserWarning, match=r"I-LST.*test\.txt:\d+"):
        assert count_unseen_labels(test, Vocabularies.build(train).labels, "test") == 2


def test_bucket_sampler_set_epoch_replays_an_epoch_and_ranks_split_each_global_batch():
    from text.data import BucketBatchSampler

    lengths = [3, 7, 5, 9, 2, 4, 8, 6, 1, 10, 5, 3, 7]
    fresh = BucketBatchSampler(lengths, 4, seed=3)
    fresh.set_epoch(1)
    epochs = [list(fresh), list(fresh), list(fresh)]  # epochs 1, 2, 3
    assert epochs[0] != epochs[1]
    resumed = BucketBatchSampler(lengths, 4, seed=3)
    resumed.set_epoch(3)  # what fit does on resuming before epoch 3
    assert list(resumed) == epochs[2]
    shards = []
    for rank in (0, 1):
        sampler = BucketBatchSampler(lengths, 4, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    for whole, part0, part1 in zip(epochs[0], *shards):
        assert sorted(part0 + part1) == sorted(whole) and not set(part0) & set(part1) or len(whole) < 2
    assert len(shards[0]) == len(shards[1]) == len(epochs[0])  # equal step counts: DDP never waits forever
