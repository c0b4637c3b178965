"""Reading tagged text, building vocabularies from training data, and batching.

A sentence is a list of words with one label per word (a POS tag, a chunk tag, an entity tag) and,
optionally, extra per-word feature columns (CoNLL-2000 ships a POS column beside the chunk column).

Readers:
    - CoNLL column files: one token per line, whitespace-separated columns, a blank line between
      sentences, ``-DOCSTART-`` lines skipped; UTF-8 with a latin-1 fallback.
    - CoNLL-U: ten tab-separated columns, ``#`` comments, multi-word-token and empty-node lines skipped;
      the label is UPOS or XPOS.

Every malformed input raises :class:`TaggingDataError` naming the file and the line.

Symbol legend: B batch, T sentence length (words), L word length (characters), F feature columns.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from core.masks import valid_positions

DOCSTART = "-DOCSTART-"
PAD = "<pad>"
UNK = "<unk>"
IGNORE_INDEX = -100  # label id of padding and of labels never seen in training: the loss skips them
MAX_WORD_CHARS = 20  # the char encoder sees at most this many characters of a word


class TaggingDataError(ValueError):
    """A data file that cannot be read as tagged text; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


@dataclass
class Sentence:
    """One sentence: words, their labels, extra feature columns and where each word came from.

    Attributes:
        words: the word forms, as in the file.
        labels: one label per word.
        features: one list per extra feature column, each as long as ``words``.
        path: the file the sentence came from ("" for raw text).
        lines: the 1-based line number of every word in ``path``.
    """

    words: list[str]
    labels: list[str]
    features: list[list[str]] = field(default_factory=list)
    path: str = ""
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.words)


def read_text(path: str | Path) -> list[str]:
    """The file's lines, decoded as UTF-8, or as latin-1 when it is not valid UTF-8."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.splitlines()


def read_conll(
    path: str | Path,
    *,
    label_column: int = -1,
    word_column: int = 0,
    feature_columns: Sequence[int] = (),
) -> list[Sentence]:
    """Read a CoNLL column file.

    Args:
        path (str | Path): the file.
        label_column (int, optional): column holding the label; negative counts from the end.
            (default: ``-1``, the last column)
        word_column (int, optional): column holding the word. (default: ``0``)
        feature_columns (Sequence[int], optional): extra columns fed to the model as features,
            e.g. ``(1,)`` for the POS column of CoNLL-2000 when tagging chunks. (default: ``()``)

    Every token line must have as many columns as the file's first token line.
    """
    lines = read_text(path)
    sentences: list[Sentence] = []
    rows: list[tuple[int, list[str]]] = []
    num_columns: int | None = None
    resolved: list[int] = []

    def flush() -> None:
        if rows:
            sentences.append(
                Sentence(
                    words=[cols[resolved[0]] for _, cols in rows],
                    labels=[cols[resolved[1]] for _, cols in rows],
                    features=[[cols[c] for _, cols in rows] for c in resolved[2:]],
                    path=str(path),
                    lines=[n for n, _ in rows],
                )
            )
            rows.clear()

    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if not columns:
            flush()
            continue
        if columns[0] == DOCSTART:
            flush()
            continue
        if num_columns is None:
            num_columns = len(columns)
            wanted = [word_column, label_column, *feature_columns]
            for c in wanted:
                if not -num_columns <= c < num_columns:
                    raise TaggingDataError(
                        path, number, f"column {c} asked for, but the file has {num_columns} columns"
                    )
            resolved = [c % num_columns for c in wanted]
        elif len(columns) != num_columns:
            raise TaggingDataError(
                path, number, f"expected {num_columns} columns like the first token line, found {len(columns)}: {line!r}"
            )
        rows.append((number, columns))
    flush()
    if not sentences:
        raise TaggingDataError(path, None, "no sentences found (empty file?)")
    return sentences


CONLLU_COLUMNS = {"upos": 3, "xpos": 4}


def read_conllu(path: str | Path, *, tag: str = "upos") -> list[Sentence]:
    """Read a CoNLL-U file; the label is the UPOS (default) or XPOS column.

    Args:
        path (str | Path): the file.
        tag (str, optional): ``"upos"`` or ``"xpos"``. (default: ``"upos"``)
    """
    if tag not in CONLLU_COLUMNS:
        raise ValueError(f"CoNLL-U tag must be one of {sorted(CONLLU_COLUMNS)}, got {tag!r}")
    label_index = CONLLU_COLUMNS[tag]
    sentences: list[Sentence] = []
    words: list[str] = []
    labels: list[str] = []
    numbers: list[int] = []

    def flush() -> None:
        if words:
            sentences.append(Sentence(list(words), list(labels), [], str(path), list(numbers)))
            words.clear(), labels.clear(), numbers.clear()

    for number, line in enumerate(read_text(path), start=1):
        if not line.strip():
            flush()
            continue
        if line.startswith("#"):
            continue
        columns = line.rstrip("\n").split("\t")
        if len(columns) != 10:
            raise TaggingDataError(path, number, f"CoNLL-U token lines have 10 tab-separated columns, found {len(columns)}")
        token_id = columns[0]
        if "-" in token_id or "." in token_id:  # multi-word token range or empty node: not a word to tag
            continue
        if not token_id.isdigit():
            raise TaggingDataError(path, number, f"token id {token_id!r} is not a number")
        words.append(columns[1])
        labels.append(columns[label_index])
        numbers.append(number)
    flush()
    if not sentences:
        raise TaggingDataError(path, None, "no sentences found (empty file?)")
    return sentences


def split_off_dev(sentences: list[Sentence], fraction: float, seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """Split a seeded random ``fraction`` of ``sentences`` off as a development set: (train, dev)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction}")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    num_dev = max(1, round(fraction * len(sentences)))
    dev_ids = set(order[:num_dev])
    train = [s for i, s in enumerate(sentences) if i not in dev_ids]
    dev = [s for i, s in enumerate(sentences) if i in dev_ids]
    if not train:
        raise ValueError("too few sentences to split off a development set")
    return train, dev


# ----------------------------------------------------------------------------------------------
# Vocabularies


class Vocab:
    """A string <-> index table, built from training data only and saved as plain data.

    Args:
        itos (list[str]): the strings, index order. With ``unk=True`` index 0 is ``<pad>`` and 1 is
            ``<unk>``, and unknown strings map to 1; label vocabularies have neither.
        unk (bool): whether the vocabulary has pad/unk entries.
    """

    def __init__(self, itos: Sequence[str], unk: bool = True):
        self.itos = list(itos)
        self.unk = unk
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary entries must be unique")

    @classmethod
    def build(cls, counts: Counter, *, min_count: int = 1, unk: bool = True) -> "Vocab":
        """Entries with at least ``min_count`` occurrences, most frequent first (ties alphabetical)."""
        kept = sorted((s for s, c in counts.items() if c >= min_count), key=lambda s: (-counts[s], s))
        return cls(([PAD, UNK] if unk else []) + kept, unk=unk)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, item: str) -> bool:
        return item in self.stoi

    def index(self, item: str) -> int:
        """The index of ``item``; ``<unk>`` for unseen items (``KeyError`` when the vocab has none)."""
        if self.unk:
            return self.stoi.get(item, 1)
        return self.stoi[item]

    def to_dict(self) -> dict:
        return {"itos": list(self.itos), "unk": self.unk}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocab":
        return cls(data["itos"], unk=data["unk"])


def normalize_word(word: str) -> str:
    """The key of the word-embedding table: lowercased, every digit as 0 (capitalisation and the
    exact digits reach the model through the shape feature and the character encoder)."""
    return "".join("0" if ch.isdigit() else ch for ch in word.lower())


# word shapes; 0 is padding
SHAPES = ("<pad>", "no-letters", "lower", "upper", "title", "mixed")


def word_shape(word: str) -> int:
    """Capitalisation class of a word: an index into :data:`SHAPES`."""
    letters = [ch for ch in word if ch.isalpha()]
    if not letters:
        return 1
    if all(ch.islower() for ch in letters):
        return 2
    if all(ch.isupper() for ch in letters):
        return 3 if len(letters) > 1 else 4
    if letters[0].isupper() and all(ch.islower() for ch in letters[1:]):
        return 4
    return 5


@dataclass
class Vocabularies:
    """Everything that maps text to indices, fitted on the training sentences only."""

    words: Vocab
    chars: Vocab
    labels: Vocab
    features: list[Vocab]

    @classmethod
    def build(cls, train: Sequence[Sentence], *, min_word_count: int = 1) -> "Vocabularies":
        num_features = len(train[0].features)
        words, chars, labels = Counter(), Counter(), Counter()
        features = [Counter() for _ in range(num_features)]
        for s in train:
            words.update(normalize_word(w) for w in s.words)
            for w in s.words:
                chars.update(w[:MAX_WORD_CHARS])
            labels.update(s.labels)
            for counter, column in zip(features, s.features):
                counter.update(column)
        return cls(
            words=Vocab.build(words, min_count=min_word_count),
            chars=Vocab.build(chars),
            labels=Vocab.build(labels, unk=False),
            features=[Vocab.build(c) for c in features],
        )

    def to_dict(self) -> dict:
        return {
            "words": self.words.to_dict(),
            "chars": self.chars.to_dict(),
            "labels": self.labels.to_dict(),
            "features": [v.to_dict() for v in self.features],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabularies":
        return cls(
            words=Vocab.from_dict(data["words"]),
            chars=Vocab.from_dict(data["chars"]),
            labels=Vocab.from_dict(data["labels"]),
            features=[Vocab.from_dict(v) for v in data["features"]],
        )


# ----------------------------------------------------------------------------------------------
# Encoding and batching


@dataclass
class EncodedSentence:
    """Index form of a :class:`Sentence` (labels unseen in training are ``IGNORE_INDEX``)."""

    words: list[int]
    chars: list[list[int]]
    shapes: list[int]
    features: list[list[int]]  # (T, F)
    labels: list[int]


def encode(sentence: Sentence, vocabs: Vocabularies) -> EncodedSentence:
    labels = [vocabs.labels.stoi.get(label, IGNORE_INDEX) for label in sentence.labels]
    if len(sentence.features) != len(vocabs.features):
        raise ValueError(
            f"{sentence.path}:{sentence.lines[0] if sentence.lines else '?'}: sentence has "
            f"{len(sentence.features)} feature columns, the model expects {len(vocabs.features)}"
        )
    return EncodedSentence(
        words=[vocabs.words.index(normalize_word(w)) for w in sentence.words],
        chars=[[vocabs.chars.index(ch) for ch in w[:MAX_WORD_CHARS]] or [1] for w in sentence.words],
        shapes=[word_shape(w) for w in sentence.words],
        features=[[v.index(column[t]) for v, column in zip(vocabs.features, sentence.features)] for t in range(len(sentence))],
        labels=labels,
    )


def count_unseen_labels(sentences: Sequence[Sentence], labels: Vocab, split: str) -> int:
    """Warn (once, with a count and the first file:line) about gold labels never seen in training.

    Such words are still tagged and scored: they can only be counted wrong.
    """
    unseen = [(s.path, line, label) for s in sentences for label, line in zip(s.labels, s.lines) if label not in labels]
    if unseen:
        path, line, label = unseen[0]
        kinds = sorted({label for _, _, label in unseen})
        warnings.warn(
            f"{split}: {len(unseen)} gold labels never seen in training ({', '.join(kinds[:10])}); "
            f"first at {path}:{line} ({label!r}); they can only be tagged wrong",
            stacklevel=2,
        )
    return len(unseen)


@dataclass
class Batch:
    """A padded batch of sentences.

    Attributes:
        words (B, T), shapes (B, T), chars (B, T, L), features (B, T, F), labels (B, T): long tensors,
            padded with 0 (labels with ``IGNORE_INDEX``).
        lengths (B,): the true sentence lengths.
        index: the position of each sentence in the dataset it came from.
    """

    words: torch.Tensor
    shapes: torch.Tensor
    chars: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    index: list[int]

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool, True on real words, from :func:`core.masks.valid_positions`."""
        return valid_positions(self.lengths, self.words.shape[1]).to(self.words.device)

    def to(self, device: torch.device | str) -> "Batch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Batch(**moved)

    def __len__(self) -> int:
        return len(self.index)


def collate(items: Sequence[tuple[int, EncodedSentence]]) -> Batch:
    """Pad a list of ``(dataset index, EncodedSentence)`` into a :class:`Batch`."""
    B = len(items)
    T = max(len(e.words) for _, e in items)
    L = max(len(c) for _, e in items for c in e.chars)
    F = len(items[0][1].features[0]) if items[0][1].features else 0
    words = torch.zeros(B, T, dtype=torch.long)
    shapes = torch.zeros(B, T, dtype=torch.long)
    chars = torch.zeros(B, T, L, dtype=torch.long)
    features = torch.zeros(B, T, F, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    lengths = torch.zeros(B, dtype=torch.long)
    for b, (_, e) in enumerate(items):
        n = len(e.words)
        lengths[b] = n
        words[b, :n] = torch.tensor(e.words)
        shapes[b, :n] = torch.tensor(e.shapes)
        labels[b, :n] = torch.tensor(e.labels)
        if F:
            features[b, :n] = torch.tensor(e.features)
        for t, c in enumerate(e.chars):
            chars[b, t, : len(c)] = torch.tensor(c)
    return Batch(words, shapes, chars, features, labels, lengths, [i for i, _ in items])


class TaggingDataset(torch.utils.data.Dataset):
    """Sentences encoded once with the training vocabularies; items are ``(index, EncodedSentence)``."""

    def __init__(self, sentences: Sequence[Sentence], vocabs: Vocabularies):
        self.sentences = list(sentences)
        self.encoded = [encode(s, vocabs) for s in self.sentences]

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> tuple[int, EncodedSentence]:
        return i, self.encoded[i]


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of sentences of similar length (little padding), in a seeded random order per epoch.

    Under ``torchrun`` every rank builds the same global batches and takes its own share of each
    (``batch[rank::world_size]``), so ``world_size`` processes together train on the same global batches as
    one process does, and the ranks' shards are disjoint.

    Args:
        lengths (Sequence[int]): the sentence lengths.
        batch_size (int): sentences per global batch.
        shuffle (bool, optional): shuffle within length buckets and the batch order. (default: ``True``)
        seed (int, optional): base seed; epoch ``e`` uses ``seed + e``. (default: ``0``)
        rank (int, optional): this process's rank. (default: ``0``)
        world_size (int, optional): number of processes. (default: ``1``)
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if batch_size < world_size:
            raise ValueError(f"a global batch of {batch_size} cannot be shared by {world_size} processes")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw epoch ``epoch``'s order (``fit`` calls this, so a resumed run draws
        the order an uninterrupted one would)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
            # sort by length with a little noise, so batches are tight but not the same every epoch
            order.sort(key=lambda i: self.lengths[i] + rng.uniform(-2, 2))
        else:
            order.sort(key=lambda i: self.lengths[i])
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        if self.world_size > 1:
            # a last batch smaller than the world repeats its sentences, so every rank gets at least one
            batches = [(b * self.world_size)[: max(len(b), self.world_size)][self.rank :: self.world_size]
                       for b in batches]
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def make_loader(dataset: TaggingDataset, batch_size: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                world_size: int = 1) -> torch.utils.data.DataLoader:
    """A loader of :class:`Batch` es from a :class:`BucketBatchSampler` (``rank``/``world_size``: this
    process's share of every global batch of ``batch_size`` sentences)."""
    sampler = BucketBatchSampler([len(e.words) for e in dataset.encoded], batch_size, shuffle=shuffle, seed=seed,
                                 rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


# ----------------------------------------------------------------------------------------------
# A task: the three splits named on the command line


CONLL2000_URL = "https://www.clips.uantwerpen.be/conll2000/chunking/ (also in the NLTK data collection)"
# CoNLL-2000 columns: word POS chunk. The POS tags come from the Brill tagger (not hand-corrected),
# in train and test alike, so using them as input for chunking is what the shared task intended.
CONLL2000_TASKS = {"chunk": {"label_column": 2, "feature_columns": [1]}, "pos": {"label_column": 1, "feature_columns": []}}


@dataclass
class TaskData:
    """The three splits and what they mean.

    Attributes:
        name (str): e.g. ``"conll2000-chunk"``.
        train, val, test (list[Sentence]): the splits (``val`` from ``--dev`` or split off the training file).
        metric (str): ``"f1"`` (chunk labels: span F1) or ``"accuracy"`` (token accuracy).
        columns (dict): word/label/feature columns or the CoNLL-U tag, saved with the checkpoint.
        val_note (str): where the validation split came from, for the report.
        identity (dict): the files (name, size, SHA-256) and the split's fraction and seed, for resume checks.
    """

    name: str
    train: list[Sentence]
    val: list[Sentence]
    test: list[Sentence]
    metric: str
    columns: dict
    val_note: str
    identity: dict


def looks_like_chunks(sentences: Sequence[Sentence]) -> bool:
    """True when the labels are BIO/IOB1 chunk tags (``B-X``, ``I-X``, ``O``), so span F1 applies."""
    labels = {label for s in sentences for label in s.labels}
    prefixed = {label for label in labels if label[:2] in ("B-", "I-", "E-", "S-")}
    return bool(prefixed) and labels <= prefixed | {"O"}


def file_identity(path: str | Path) -> dict:
    """``{"name", "bytes", "sha256"}`` of a data file: what a run was trained on."""
    import hashlib

    data = Path(path).read_bytes()
    return {"name": Path(path).name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def load_task(*, dataset: str | None, task: str = "chunk", data_dir: str | None = None, train: str | None = None,
              dev: str | None = None, test: str | None = None, format: str = "conll", label_column: str | None = None,
              feature_columns: list[int] | None = None, dev_fraction: float = 0.1, seed: int = 0,
              metric: str = "auto") -> TaskData:
    """Read the splits named on the command line: ``dataset="conll2000"`` (with ``task``) or ``train``/``dev``/
    ``test`` files. Without a dev file a seeded ``dev_fraction`` of the training file becomes the validation split.

    Raises:
        ValueError: a contradictory or incomplete choice of files and columns (naming the flags).
        TaggingDataError: a malformed file (naming file and line).
        core.lab.datasets.DatasetNotFoundError: CoNLL-2000 is not under the data root.
    """
    from core.lab.datasets import require_dataset, resolve_data_root

    if dataset is not None:
        if train or dev or test:
            raise ValueError("give either --dataset or --train/--dev/--test, not both")
        root = require_dataset(
            resolve_data_root(data_dir), name="CoNLL-2000 chunking", subdir="conll2000",
            expected=["train.txt", "test.txt"],
            layout="train.txt, test.txt: one token per line 'word POS chunk', blank line between sentences",
            url=CONLL2000_URL,
        )
        spec = CONLL2000_TASKS[task]
        features = spec["feature_columns"] if feature_columns is None else feature_columns
        columns = {"format": "conll", "word_column": 0, "label_column": spec["label_column"], "feature_columns": features}
        read = lambda path: read_conll(path, label_column=spec["label_column"], feature_columns=features)  # noqa: E731
        name, train_path, dev_path, test_path = f"conll2000-{task}", root / "train.txt", None, root / "test.txt"
    else:
        if not (train and test):
            raise ValueError("give --dataset conll2000, or --train and --test (and optionally --dev)")
        if format == "conllu":
            if feature_columns:
                raise ValueError("--feature-columns applies to --format conll only")
            tag = label_column or "upos"
            columns = {"format": "conllu", "tag": tag}
            read = lambda path: read_conllu(path, tag=tag)  # noqa: E731
        else:
            try:
                label = int(label_column) if label_column is not None else -1
            except ValueError:
                raise ValueError(f"--label-column for --format conll is a column number, got {label_column!r}") from None
            features = feature_columns or []
            columns = {"format": "conll", "word_column": 0, "label_column": label, "feature_columns": features}
            read = lambda path: read_conll(path, label_column=label, feature_columns=features)  # noqa: E731
        name, train_path, dev_path, test_path = Path(train).stem, Path(train), dev, Path(test)
    train_sentences, test_sentences = read(train_path), read(test_path)
    identity = {"train": file_identity(train_path), "test": file_identity(test_path), "columns": columns}
    if dev_path is not None:
        val = read(dev_path)
        identity["val"] = file_identity(dev_path)
        val_note = f"validation split: {dev_path}"
    else:
        train_sentences, val = split_off_dev(train_sentences, dev_fraction, seed=seed)
        identity["val"] = {"split_off": dev_fraction, "seed": seed}
        val_note = (f"no development file: {dev_fraction:.0%} of {Path(train_path).name} ({len(val)} sentences, seed "
                    f"{seed}) held out as the validation split; the models train on the other {len(train_sentences)}")
    metric = metric if metric != "auto" else ("f1" if looks_like_chunks(train_sentences) else "accuracy")
    return TaskData(name, train_sentences, val, test_sentences, metric, columns, val_note, identity)
