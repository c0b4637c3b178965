"""How one tagger is trained with one seed, scored, saved and loaded again.

The loop is :func:`core.lab.harness.fit`, run through the experiment runner (:mod:`core.lab.runner`): this
module supplies the training configuration, the tagger's train step, the validation score that selects the
weights, the test score, and the checkpoint format ``python -m text tag`` reads.

Protocol (the same for every model of one ``compare``): AdamW, a linear warm-up then cosine decay counted in
steps (:func:`core.lab.schedule.warmup_cosine_scheduler`), gradient clipping, early stopping on the
validation metric, the weights of the best validation epoch kept. Under ``torchrun`` each rank trains on its
share of every global batch (:class:`text.data.BucketBatchSampler`), rank 0 scores validation and test.

Symbol legend: B batch, T sentence length.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from core.lab.harness import EarlyStopping, load_checkpoint
from core.lab.runner import MetricsContract, ModelSpec, RunContext, RunRecord
from core.lab.schedule import warmup_cosine_scheduler
from text.data import Sentence, TaggingDataset, TaskData, Vocabularies, make_loader
from text.metrics import conlleval
from text.models import Tagger, TaggerConfig, build_tagger

__all__ = ["TrainConfig", "ABLATIONS", "contract_for", "protocol_note", "report_intro", "predict_labels", "score",
           "train_one", "load_tagger", "tag_sentences", "tag_lines"]

#: ``compare --ablations``: the attention tagger with one ingredient taken away (or swapped) at a time.
ABLATIONS = {
    "attention -relative +sinusoidal": {"positions": "sinusoidal"},
    "attention -relative +learned": {"positions": "learned"},
    "attention -positions": {"positions": "none"},
    "attention -crf": {"crf": False},
    "attention -chars": {"char_channels": 0},
    "attention -local init": {"local_init": False},
    "attention 2 layers": {"layers": 2},
}

#: How the attention tagger learns where words are, per ``TaggerConfig.positions``, for the report.
POSITION_WORDS = {
    "relative": "with a learned direction-aware relative position bias",
    "sinusoidal": "with sinusoidal position encodings added to the word vectors",
    "learned": "with learned absolute position vectors added to the word vectors",
    "both": "with a learned direction-aware relative position bias and sinusoidal position encodings",
    "none": "with no position information at all (it sees the sentence as a bag of words)",
}


def report_intro(positions: str, feature_columns: list[int] | None) -> str:
    """The report's first paragraph: what every model reads and how they differ."""
    features = f" + embedding of input column(s) {feature_columns}" if feature_columns else ""
    return ("Every model reads each word as the same vector (lowercased word embedding + capitalisation embedding + "
            f"character CNN{features}) and is trained with one protocol; they differ only in how a word learns about "
            "the rest of the sentence: self-attention (every word reads every other word in one step, "
            f"{POSITION_WORDS[positions]}), a BiLSTM (word by word, both directions) or stacked convolutions "
            "(a fixed window per layer). Span scores follow conlleval.")


def protocol_note(train: "TrainConfig", metric: str, crf: bool) -> str:
    """One line of the report: the training protocol every model shared."""
    return (f"protocol: AdamW lr {train.lr}, weight decay {train.weight_decay}, batch {train.batch_size} sentences, "
            f"{train.warmup_epochs:g} epoch warm-up then cosine decay to 0 over {train.epochs} epochs, counted in steps "
            f"(relative position biases at {train.position_lr_scale:g}x the learning rate), grad clip {train.grad_clip}, "
            f"early stopping on val_{metric} (patience {train.patience}); CRF output layer: {crf}")


@dataclass
class TrainConfig:
    """How every model is trained (the same for all of them in one ``compare``)."""

    # 12 epochs: on CoNLL-2000 chunk every model's validation F1 is still rising slowly at 10-11 and the
    # cosine schedule has annealed by 12 (about 4-5 min per model on one idle CPU thread)
    epochs: int = 12
    batch_size: int = 32  # sentences per global batch (shared by the ranks under torchrun)
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0 at the last step
    grad_clip: float = 5.0
    patience: int = 4  # evaluations without a validation improvement before stopping
    position_lr_scale: float = 10.0  # the relative position biases learn this much faster (few, scalar parameters)


def contract_for(metric: str) -> MetricsContract:
    """Span F1 (chunk labels) or token accuracy: the headline on test and the selection on validation."""
    return MetricsContract(headline=f"test_{metric}", select=f"val_{metric}", mode="max")


def predict_labels(model: Tagger, dataset: TaggingDataset, vocabs: Vocabularies, device: torch.device,
                   batch_size: int = 128) -> list[list[str]]:
    """The model's labels for every sentence of ``dataset``, in dataset order."""
    model.eval()
    guessed: list[list[str]] = [[] for _ in range(len(dataset))]
    with torch.no_grad():
        for batch in make_loader(dataset, batch_size, shuffle=False):
            ids = model.predict(batch.to(device)).cpu()  # (B, T)
            for row, i, n in zip(ids, batch.index, batch.lengths.tolist()):
                guessed[i] = [vocabs.labels.itos[k] for k in row[:n].tolist()]
    return guessed


def score(model: Tagger, dataset: TaggingDataset, vocabs: Vocabularies, device: torch.device,
          metric: str) -> dict[str, float]:
    """Token accuracy and, for chunk labels (``metric == "f1"``), span precision/recall/F1 (conlleval),
    as fractions, without a split prefix."""
    gold = [s.labels for s in dataset.sentences]
    chunks = conlleval(gold, predict_labels(model, dataset, vocabs, device))
    if metric != "f1":  # POS tags have no spans: conlleval would report 0
        return {"accuracy": chunks.accuracy / 100}
    return {"f1": chunks.f1 / 100, "precision": chunks.precision / 100, "recall": chunks.recall / 100,
            "accuracy": chunks.accuracy / 100}


def train_one(spec: ModelSpec, seed: int, ctx: RunContext, *, data: dict[str, TaggingDataset], vocabs: Vocabularies,
              task: TaskData) -> RunRecord:
    """Train ``spec.config`` (a :class:`TaggerConfig`) with one seed; keep the best validation epoch; score test.

    Args:
        spec (ModelSpec): the tagger.
        seed (int): the seed (the runner has seeded every generator).
        ctx (RunContext): run folder, device, ranks; ``ctx.train`` is a :class:`TrainConfig`.
        data (dict[str, TaggingDataset]): ``"train"``, ``"val"``, ``"test"``.
        vocabs (Vocabularies): the training vocabularies (saved in ``best.pt`` for ``tag``).
        task (TaskData): the task (metric, columns).

    Returns:
        RunRecord: ``val_*`` and ``test_*`` metrics (rank 0; empty elsewhere), bookkeeping, history, model.
    """
    train: TrainConfig = ctx.train
    config: TaggerConfig = spec.config
    module = build_tagger(config).to(ctx.device)
    model = ctx.wrap(module)
    loader = make_loader(data["train"], train.batch_size, shuffle=True, seed=seed, rank=ctx.dist.rank,
                         world_size=ctx.dist.world_size)
    positional = [p for n, p in module.named_parameters() if n.startswith("relative.")]
    others = [p for n, p in module.named_parameters() if not n.startswith("relative.")]
    groups = [{"params": others}] + ([{"params": positional, "lr": train.lr * train.position_lr_scale}] if positional else [])
    # the fused kernel: on a CPU the default AdamW spends more time on the word-embedding table than the model on a batch
    optimizer = torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    scheduler = warmup_cosine_scheduler(optimizer, train.epochs * len(loader),
                                        max(1, round(train.warmup_epochs * len(loader))))

    def evaluate(m: Tagger) -> dict[str, float]:
        return {f"val_{k}": v for k, v in score(m, data["val"], vocabs, ctx.device, task.metric).items()}

    history = ctx.fit(
        model, optimizer, train_data=loader, train_step=lambda m, batch: m(batch.to(ctx.device)), evaluate=evaluate,
        epochs=train.epochs, keep="best", stopper=EarlyStopping(train.patience, f"val_{task.metric}", "max"),
        scheduler=scheduler, scheduler_per_batch=True, grad_clip=train.grad_clip,
        best_extra={"tagger": asdict(config), "vocabs": vocabs.to_dict(), "columns": task.columns,
                    "metric": task.metric},
    )
    metrics, more = {}, {}
    if ctx.is_main:
        started = time.perf_counter()
        test = score(module, data["test"], vocabs, ctx.device, task.metric)
        more["test_sentences_per_s"] = len(data["test"]) / (time.perf_counter() - started)
        metrics = {**history.best_metrics, **{f"test_{k}": v for k, v in test.items()}}
    return RunRecord(metrics=metrics, bookkeeping=ctx.bookkeeping(history, module, **more), history=history.epochs,
                     model=module)


def load_tagger(path: str | Path, device: torch.device | str = "cpu") -> tuple[Tagger, Vocabularies, dict]:
    """Rebuild a tagger from a run's ``best.pt`` (weights-only load): (model, vocabularies, columns)."""
    state = load_checkpoint(path, map_location=device)
    if "tagger" not in state:
        raise ValueError(f"{path}: not a tagger checkpoint (expected <out>/<model>/seed<k>/best.pt from text compare)")
    model = build_tagger(TaggerConfig(**state["tagger"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, Vocabularies.from_dict(state["vocabs"]), state["columns"]


def tag_sentences(model: Tagger, vocabs: Vocabularies, token_lists: list[list[str]],
                  features: list[list[list[str]]] | None = None) -> list[list[str]]:
    """Labels for raw (already tokenised) sentences; ``features``: per sentence, one list per column."""
    sentences = [Sentence(words, ["O"] * len(words), features[i] if features else []) for i, words in enumerate(token_lists)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = TaggingDataset(sentences, vocabs)
    return predict_labels(model, dataset, vocabs, next(model.parameters()).device)


def tag_lines(model: Tagger, vocabs: Vocabularies, tokens: list[list[str]], *,
              feature_tagger: tuple[Tagger, Vocabularies] | None = None,
              columns: list[int] | None = None) -> list[list[tuple[str, str]]]:
    """``python -m text tag``: (word, label) pairs per sentence. A model that reads extra input columns
    (chunking reads POS) gets them from ``feature_tagger`` (a POS tagger's checkpoint) or from tokens
    written ``word|feature``.

    Raises:
        ValueError: the tokens do not carry the columns the model reads, or the feature tagger cannot
            fill them (the message says what to write instead).
    """
    wanted, features = len(vocabs.features), None
    if wanted and feature_tagger is not None:
        helper, helper_vocabs = feature_tagger
        if wanted != 1 or helper_vocabs.features:
            raise ValueError("--feature-tagger fills exactly one feature column and must need none itself")
        features = [[column] for column in tag_sentences(helper, helper_vocabs, tokens)]
    elif wanted:
        parts = [[t.split("|") for t in sentence] for sentence in tokens]
        if any(len(t) != wanted + 1 for sentence in parts for t in sentence):
            raise ValueError(f"this model reads {wanted} extra column(s) {columns} besides the word: write tokens "
                             "as word|feature (e.g. He|PRP), or pass --feature-tagger CKPT (a POS tagger)")
        tokens = [[t[0] for t in sentence] for sentence in parts]
        features = [[[t[f + 1] for t in sentence] for f in range(wanted)] for sentence in parts]
    return [list(zip(words, labels)) for words, labels in zip(tokens, tag_sentences(model, vocabs, tokens, features))]
