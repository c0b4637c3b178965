"""``python -m text``: sequence labelling with self-attention, against BiLSTM and CNN baselines.

    python -m text compare --dataset conll2000 --task chunk            # attention vs BiLSTM vs CNN
    python -m text compare --dataset conll2000 --task pos --models attention
    python -m text compare --train a.conll --dev b.conll --test c.conll --format conll --label-column -1
    python -m text tag --checkpoint runs/text/conll2000-chunk/attention-seed0.pt "He reckons ... ."

``compare`` trains every model with one protocol (same data, word representation, optimiser, schedule,
epochs and early stopping on the development set) and writes metrics.json, report.md, learning curves
and the attention map of a test sentence to ``--out``. ``tag`` prints word/label pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from core.capture import capture_attention
from core.lab.datasets import DatasetNotFoundError, require_dataset, resolve_data_root
from core.lab.experiment import (
    ModelResult,
    add_common_args,
    apply_common_args,
    count_parameters,
    summarize_runs,
    write_metrics,
    write_report,
)
from core.lab.harness import History, fit, load_checkpoint, save_checkpoint, seed_everything
from core.lab.plots import plot_attention, plot_learning_curves
from text.data import (
    Sentence,
    TaggingDataError,
    TaggingDataset,
    Vocabularies,
    collate,
    count_unseen_labels,
    make_loader,
    read_conll,
    read_conllu,
    split_off_dev,
)
from text.metrics import conlleval, token_accuracy
from text.models import MODELS, POSITIONS, Tagger, TaggerConfig, build_tagger

DEFAULT_OUT = "runs/text/<dataset>-<task>"
CONLL2000_URL = "https://www.clips.uantwerpen.be/conll2000/chunking/ (also in the NLTK data collection)"
# CoNLL-2000 columns: word POS chunk. The POS tags come from the Brill tagger (not hand-corrected),
# in train and test alike, so using them as input for chunking is what the shared task intended.
CONLL2000_TASKS = {"chunk": {"label_column": 2, "feature_columns": [1]}, "pos": {"label_column": 1, "feature_columns": []}}
ROLE = {"attention": "attention", "bilstm": "baseline", "cnn": "baseline"}
# the attention tagger with one ingredient taken away (or swapped) at a time
ABLATIONS = {
    "attention -relative +sinusoidal": {"positions": "sinusoidal"},
    "attention -positions": {"positions": "none"},
    "attention -crf": {"crf": False},
    "attention -chars": {"char_channels": 0},
    "attention -local init": {"local_init": False},
    "attention 2 layers": {"layers": 2},
}


@dataclass
class TrainConfig:
    """How every model is trained (the same for all of them in one ``compare``)."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to 0 over the remaining epochs
    grad_clip: float = 5.0
    patience: int = 4  # evaluations without dev improvement before stopping
    position_lr_scale: float = 10.0  # the relative position biases learn this much faster (few, scalar parameters)
    # a safety net per model and seed, for busy machines: the learning rate anneals to 0 by then and
    # training stops after the epoch that crosses it, so three models fit in 30 minutes. On an idle
    # CPU thread 12 epochs of any of the three models take less, and the epochs decide.
    time_budget_min: float | None = 8.5


@dataclass
class TaskData:
    """The three splits and what they mean."""

    name: str  # e.g. "conll2000-chunk"
    train: list[Sentence]
    dev: list[Sentence]
    test: list[Sentence]
    metric: str  # "f1" (chunk labels) or "accuracy"
    columns: dict  # word/label/feature columns or the CoNLL-U tag, for the checkpoint
    dev_note: str


# ----------------------------------------------------------------------------------------------
# data


def looks_like_chunks(sentences: Sequence[Sentence]) -> bool:
    """True when the labels are BIO/IOB1 chunk tags (``B-X``, ``I-X``, ``O``), so span F1 applies."""
    labels = {label for s in sentences for label in s.labels}
    prefixed = {label for label in labels if label[:2] in ("B-", "I-", "E-", "S-")}
    return bool(prefixed) and labels <= prefixed | {"O"}


def load_task(args: argparse.Namespace) -> TaskData:
    """Read the splits named on the command line (``--dataset`` or ``--train/--dev/--test``)."""
    if args.dataset is not None:
        if args.train or args.dev or args.test:
            raise SystemExit("give either --dataset or --train/--dev/--test, not both")
        root = require_dataset(
            resolve_data_root(args.data_dir),
            name="CoNLL-2000 chunking",
            subdir="conll2000",
            expected=["train.txt", "test.txt"],
            layout="train.txt, test.txt: one token per line 'word POS chunk', blank line between sentences",
            url=CONLL2000_URL,
        )
        task = CONLL2000_TASKS[args.task]
        features = task["feature_columns"] if args.feature_columns is None else args.feature_columns
        columns = {"format": "conll", "word_column": 0, "label_column": task["label_column"], "feature_columns": features}
        read = lambda path: read_conll(path, label_column=task["label_column"], feature_columns=features)  # noqa: E731
        train, test = read(root / "train.txt"), read(root / "test.txt")
        name, train_path, dev_path = f"conll2000-{args.task}", root / "train.txt", None
    else:
        if not (args.train and args.test):
            raise SystemExit("give --dataset conll2000, or --train and --test (and optionally --dev)")
        if args.format == "conllu":
            if args.feature_columns:
                raise SystemExit("--feature-columns applies to --format conll only")
            tag = args.label_column or "upos"
            columns = {"format": "conllu", "tag": tag}
            read = lambda path: read_conllu(path, tag=tag)  # noqa: E731
        else:
            try:
                label_column = int(args.label_column) if args.label_column is not None else -1
            except ValueError:
                raise SystemExit(f"--label-column for --format conll is a column number, got {args.label_column!r}")
            features = args.feature_columns or []
            columns = {"format": "conll", "word_column": 0, "label_column": label_column, "feature_columns": features}
            read = lambda path: read_conll(path, label_column=label_column, feature_columns=features)  # noqa: E731
        train, test = read(args.train), read(args.test)
        dev_path = args.dev
        name, train_path = Path(args.train).stem, args.train
    if dev_path is not None:
        dev = read(dev_path)
        dev_note = f"development set: {dev_path}"
    else:
        train, dev = split_off_dev(train, args.dev_fraction, seed=args.seed)
        dev_note = (
            f"no development file: {args.dev_fraction:.0%} of {Path(train_path).name} ({len(dev)} sentences, "
            f"seed {args.seed}) held out for early stopping; the models train on the other {len(train)}"
        )
    metric = args.metric if args.metric != "auto" else ("f1" if looks_like_chunks(train) else "accuracy")
    return TaskData(name, train, dev, test, metric, columns, dev_note)


# ----------------------------------------------------------------------------------------------
# training and evaluation


def predict_labels(model: Tagger, dataset: TaggingDataset, vocabs: Vocabularies, device: torch.device,
                   batch_size: int = 128) -> list[list[str]]:
    """The model's labels for every sentence of ``dataset``, in dataset order."""
    model.eval()
    guessed: list[list[str]] = [[] for _ in range(len(dataset))]
    with torch.no_grad():
        for batch in make_loader(dataset, batch_size, shuffle=False):
            ids = model.predict(batch.to(device)).cpu()
            for row, i, n in zip(ids, batch.index, batch.lengths.tolist()):
                guessed[i] = [vocabs.labels.itos[k] for k in row[:n].tolist()]
    return guessed


def score(model: Tagger, dataset: TaggingDataset, vocabs: Vocabularies, device: torch.device,
          metric: str) -> dict[str, float]:
    """Token accuracy and, for chunk labels (``metric == "f1"``), span precision/recall/F1 (conlleval),
    as fractions."""
    gold = [s.labels for s in dataset.sentences]
    chunks = conlleval(gold, predict_labels(model, dataset, vocabs, device))
    if metric != "f1":  # POS tags have no spans: conlleval would report 0
        return {"accuracy": chunks.accuracy / 100}
    return {"f1": chunks.f1 / 100, "precision": chunks.precision / 100, "recall": chunks.recall / 100,
            "accuracy": chunks.accuracy / 100}


def warmup_cosine(total_steps: int, warmup_steps: int, time_budget_s: float | None = None):
    """LR factor: linear warm-up to 1, then cosine decay to 0.

    Progress through the decay is the larger of the share of ``total_steps`` done and, with a time
    budget, the share of ``time_budget_s`` spent (the clock starts when the scheduler is built). On a
    shared, busy CPU an epoch can take three times as long as on an idle one; this way the learning
    rate still reaches 0 when the budget runs out instead of training being cut off at full speed.
    Without a budget the schedule depends on the step count alone and runs are reproducible.
    """
    started = time.perf_counter()

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if time_budget_s:
            progress = max(progress, (time.perf_counter() - started) / time_budget_s)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class RunOutcome:
    metrics: dict[str, float]
    params: int
    train_seconds: float
    history: History
    model: Tagger


def train_and_test(name: str, config: TaggerConfig, train: TrainConfig, data: dict[str, TaggingDataset],
                   vocabs: Vocabularies, task: TaskData, seed: int, device: torch.device, out: Path,
                   args: argparse.Namespace) -> RunOutcome:
    """Train one tagger with one seed; early-stop on the dev metric; score dev and test."""
    seed_everything(seed)
    model = build_tagger(config).to(device)
    loader = make_loader(data["train"], train.batch_size, shuffle=True, seed=seed)
    # the fused kernel: on a CPU the default AdamW spends more time on the word-embedding table than the model does on a batch
    positional = [p for n, p in model.named_parameters() if n.startswith("relative.")]
    others = [p for n, p in model.named_parameters() if not n.startswith("relative.")]
    groups = [{"params": others}] + ([{"params": positional, "lr": train.lr * train.position_lr_scale}] if positional else [])
    optimizer = torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay, fused=True)
    steps = train.epochs * len(loader)
    budget_s = train.time_budget_min * 60 if train.time_budget_min else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps, max(1, round(train.warmup_epochs * len(loader))), budget_s)
    )
    run_dir = out / "checkpoints" / f"{slug(name)}-seed{seed}"

    def evaluate(module: Tagger) -> dict[str, float]:
        return {f"dev_{k}": v for k, v in score(module, data["dev"], vocabs, device, task.metric).items()}

    history = fit(
        model, optimizer,
        train_data=loader,
        train_step=lambda m, batch: m.loss(batch.to(device)),
        evaluate=evaluate,
        epochs=train.epochs,
        monitor=f"dev_{task.metric}",
        patience=train.patience,
        scheduler=scheduler,
        scheduler_per_batch=True,
        grad_clip=train.grad_clip,
        checkpoint_dir=run_dir,
        resume=args.resume,
        config={"model": asdict(config), "train": asdict(train), "seed": seed},
        progress=not args.no_progress,
        desc=f"{name} seed {seed}",
        time_budget_s=budget_s,
    )
    started = time.perf_counter()
    test = score(model, data["test"], vocabs, device, task.metric)
    test_seconds = time.perf_counter() - started
    metrics = {f"test_{k}": v for k, v in test.items()}
    metrics.update({k: v for k, v in history.best_metrics.items()})
    metrics["best_epoch"] = float(history.best_epoch or 0)
    metrics["epochs_run"] = float(len(history.epochs))
    metrics["test_sentences_per_s"] = len(data["test"]) / test_seconds
    save_checkpoint(out / f"{slug(name)}-seed{seed}.pt", {
        "config": asdict(config), "vocabs": vocabs.to_dict(), "model": model.state_dict(),
        "columns": task.columns, "metric": task.metric,
    })
    return RunOutcome(metrics, count_parameters(model), history.train_seconds, history, model)


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").replace("--", "-")


def model_config(args: argparse.Namespace, model: str, vocabs: Vocabularies) -> TaggerConfig:
    """The command line's model options, with the vocabulary sizes filled in."""
    return TaggerConfig(
        model=model,
        num_words=len(vocabs.words), num_chars=len(vocabs.chars), num_labels=len(vocabs.labels),
        feature_vocab_sizes=[len(v) for v in vocabs.features],
        char_channels=0 if args.no_chars else TaggerConfig.char_channels,
        crf=not args.no_crf,
        dropout=args.dropout, layer_dropout=args.layer_dropout, dim=args.dim, heads=args.heads, layers=args.layers, ffn_dim=args.ffn_dim,
        positions=args.positions,
        max_distance=args.max_distance, hidden=args.hidden,
    )


def attention_figure(model: Tagger, data: TaggingDataset, device: torch.device, out: Path) -> list[tuple[str, str]]:
    """Heatmaps (head average per layer) of the attention tagger on one test sentence, words on both axes."""
    candidates = [i for i, s in enumerate(data.sentences) if 10 <= len(s) <= 16] or [0]
    i = candidates[0]
    batch = collate([data[i]]).to(device)
    words = data.sentences[i].words
    model.eval()
    with torch.no_grad(), capture_attention(model) as maps:
        model.predict(batch)
    figures = []
    if getattr(model, "relative", None) is not None:
        span = min(model.config.max_distance, 8)
        for layer, bias in enumerate(model.relative):
            M = bias.max_distance
            table = bias.bias.detach()[M - span : M + span + 1].T  # (H, 2*span+1): head x offset
            file = f"relative_bias_layer{layer + 1}.png"
            plot_attention(table - table.amin(), x_labels=[f"{o:+d}" for o in range(-span, span + 1)],
                           y_labels=[f"head {h}" for h in range(table.shape[0])], annotate=False,
                           title=f"layer {layer + 1}: learned bias by offset (key - query), shifted to min 0",
                           path=out / file)
            figures.append((f"Layer {layer + 1} relative position bias per head: where each head looks, "
                            "left (-) or right (+) of the word", file))
    for layer, amap in enumerate(maps):
        file = f"attention_layer{layer + 1}.png"
        plot_attention(amap.weights[0].mean(0), x_labels=words, y_labels=words,
                       title=f"attention tagger, layer {layer + 1} (mean over heads)", path=out / file)
        figures.append((f"Layer {layer + 1} attention on a test sentence (rows: each word; columns: the words it reads)", file))
    return figures


# ----------------------------------------------------------------------------------------------
# commands


def run_compare(args: argparse.Namespace) -> dict:
    device = apply_common_args(args)
    task = load_task(args)
    out = Path(args.out if args.out != DEFAULT_OUT else f"runs/text/{task.name}")
    out.mkdir(parents=True, exist_ok=True)
    vocabs = Vocabularies.build(task.train, min_word_count=args.min_word_count)
    unseen = {split: count_unseen_labels(s, vocabs.labels, split) for split, s in (("dev", task.dev), ("test", task.test))}
    data = {split: TaggingDataset(s, vocabs) for split, s in (("train", task.train), ("dev", task.dev), ("test", task.test))}
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                        time_budget_min=args.time_budget or None)
    print(f"{task.name}: {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test sentences, "
          f"{len(vocabs.labels)} labels, {len(vocabs.words)} words; metric {task.metric}; device {device}", file=sys.stderr)

    plan = [(m, m, {}, train) for m in args.models]
    if args.ablations:
        short = dataclasses.replace(train, epochs=args.ablation_epochs, time_budget_min=args.ablation_budget or None)
        if short != train or "attention" not in args.models:  # the reference the ablations are read against
            plan += [("attention (short)", "attention", {}, short)]
        plan += [(name, "attention", change, short) for name, change in ABLATIONS.items()]
    results, histories, figures, configs, started = [], {}, [], {}, time.perf_counter()
    for name, model, change, schedule in plan:
        config = dataclasses.replace(model_config(args, model, vocabs), **change)
        seeds = range(args.seed, args.seed + (args.seeds if name in args.models else 1))
        outcomes = [train_and_test(name, config, schedule, data, vocabs, task, s, device, out, args) for s in seeds]
        results.append(summarize_runs(
            name, ROLE[model], [o.metrics for o in outcomes], outcomes[0].params, [o.train_seconds for o in outcomes],
            extra={"epochs": schedule.epochs, "config": asdict(config)},
        ))
        configs[name] = asdict(config)
        histories[name] = outcomes[0].history.epochs
        if name == "attention":
            figures += attention_figure(outcomes[0].model, data["test"], device, out)
        print(f"  {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[-1].metrics.items() if k.startswith("test_")),
              file=sys.stderr)

    monitor = f"dev_{task.metric}"
    plot_learning_curves(histories, monitor, title=f"{task.name}: {monitor} per epoch", path=out / "learning_curves.png")
    figures.insert(0, (f"Learning curves: {monitor} per epoch (first seed)", "learning_curves.png"))
    total_minutes = (time.perf_counter() - started) / 60
    write_metrics(out, domain="text", dataset=task.name, device=device,
                  config={"train": asdict(train), "models": configs, "columns": task.columns,
                          "ablation_epochs": args.ablation_epochs if args.ablations else None},
                  results=results,
                  extra={"metric": task.metric, "unseen_labels": unseen, "total_minutes": total_minutes,
                         "threads": torch.get_num_threads()})
    headline = "test_f1" if task.metric == "f1" else "test_accuracy"
    columns = [headline, "test_accuracy", f"dev_{task.metric}", "best_epoch", "test_sentences_per_s"]
    write_report(
        out, title=f"Sequence labelling on {task.name}: self-attention vs BiLSTM vs CNN",
        results=results, metric_names=list(dict.fromkeys(columns)), figures=figures,
        intro=(
            "Every model reads each word as the same vector (lowercased word embedding + capitalisation "
            "embedding + character CNN" + (" + embedding of input column(s) "
            f"{task.columns.get('feature_columns')}" if task.columns.get("feature_columns") else "") + ") and "
            "is trained with one protocol; they differ only in how a word learns about the rest of the "
            "sentence: self-attention (every word reads every other word in one step, with a learned "
            "direction-aware relative position bias), a BiLSTM (word by word, both directions) or stacked "
            "convolutions (a fixed window per layer). Span scores follow conlleval."
        ),
        notes=[
            task.dev_note,
            f"protocol: AdamW lr {train.lr}, weight decay {train.weight_decay}, batch {train.batch_size} sentences, "
            f"{train.warmup_epochs:g} epoch warm-up then cosine decay over {train.epochs} epochs or the time budget, whichever "
            f"ends first (relative position "
            f"biases at {train.position_lr_scale:g}x the learning rate), grad clip "
            f"{train.grad_clip}, early stopping on {monitor} (patience {train.patience}), time budget "
            f"{train.time_budget_min} min per run; CRF output layer: {not args.no_crf}",
            *([f"ablation rows ('attention -X' and 'attention 2 layers') train for at most {args.ablation_epochs} "
               f"epochs or {args.ablation_budget:g} min, one seed; read them against the attention row trained the "
               "same way ('attention (short)' when the main rows train longer)"] if args.ablations else []),
            f"gold labels never seen in training: {unseen}",
            f"wall time of all runs: {total_minutes:.1f} min on {torch.get_num_threads()} CPU thread(s)"
            if device.type == "cpu" else f"wall time of all runs: {total_minutes:.1f} min on {device}",
        ],
    )
    print(f"wrote {out / 'report.md'} and {out / 'metrics.json'} ({total_minutes:.1f} min)", file=sys.stderr)
    return {"out": str(out), "results": results}


def load_tagger(path: str | Path, device: torch.device | str = "cpu") -> tuple[Tagger, Vocabularies, dict]:
    """Rebuild a tagger saved by ``compare`` (weights-only load): (model, vocabularies, columns)."""
    state = load_checkpoint(path, map_location=device)
    model = build_tagger(TaggerConfig(**state["config"])).to(device)
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


def run_tag(args: argparse.Namespace) -> list[list[tuple[str, str]]]:
    model, vocabs, columns = load_tagger(args.checkpoint)
    lines = args.sentences or [line for line in sys.stdin.read().splitlines() if line.strip()]
    tokens = [line.split() for line in lines]
    if not all(tokens):
        raise SystemExit("nothing to tag: give sentences as arguments or on stdin")
    features = None
    wanted = len(vocabs.features)
    if wanted:
        if args.feature_tagger:
            helper, helper_vocabs, _ = load_tagger(args.feature_tagger)
            if wanted != 1 or helper_vocabs.features:
                raise SystemExit("--feature-tagger fills exactly one feature column and must need none itself")
            features = [[column] for column in tag_sentences(helper, helper_vocabs, tokens)]
        else:
            parts = [[t.split("|") for t in sentence] for sentence in tokens]
            bad = [t for sentence in parts for t in sentence if len(t) != wanted + 1]
            if bad:
                raise SystemExit(
                    f"this model reads {wanted} extra column(s) {columns.get('feature_columns')} besides the word: "
                    f"write tokens as word|feature (e.g. He|PRP), or pass --feature-tagger CKPT (a POS tagger)"
                )
            tokens = [[t[0] for t in sentence] for sentence in parts]
            features = [[[t[f + 1] for t in sentence] for f in range(wanted)] for sentence in parts]
    tagged = []
    for words, labels in zip(tokens, tag_sentences(model, vocabs, tokens, features)):
        tagged.append(list(zip(words, labels)))
        print(" ".join(f"{w}/{label}" for w, label in zip(words, labels)))
    return tagged


def positive_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated column numbers, got {text!r}")


def model_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"models are a comma-separated subset of {','.join(MODELS)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare", help="train the attention tagger and the BiLSTM and CNN baselines, write a report",
        description="Train the attention tagger, the BiLSTM and the CNN tagger on one dataset with one "
                    "protocol and write metrics.json, report.md and figures to --out.")
    add_common_args(compare, default_out=DEFAULT_OUT)
    data = compare.add_argument_group("data")
    data.add_argument("--dataset", choices=["conll2000"], default=None,
                      help="a dataset under the data root (CoNLL-2000: WSJ chunks and POS tags)")
    data.add_argument("--task", choices=sorted(CONLL2000_TASKS), default="chunk",
                      help="with --dataset conll2000: chunk (label column 3, POS column as input) or pos "
                           "(label column 2) (default: chunk)")
    data.add_argument("--train", help="training file (instead of --dataset)")
    data.add_argument("--dev", help="development file for early stopping (default: split off --dev-fraction "
                                    "of the training file, seeded by --seed)")
    data.add_argument("--test", help="test file")
    data.add_argument("--format", choices=["conll", "conllu"], default="conll",
                      help="file format of --train/--dev/--test (default: conll)")
    data.add_argument("--label-column", default=None,
                      help="conll: the label's column number, negative from the end (default: -1, the last); "
                           "conllu: upos or xpos (default: upos)")
    data.add_argument("--feature-columns", type=positive_int_list, default=None,
                      help="conll: comma-separated extra input columns, e.g. 1 for a POS column "
                           "(default: 1 for conll2000 chunk, none otherwise)")
    data.add_argument("--dev-fraction", type=float, default=0.1,
                      help="fraction of the training sentences held out when there is no dev file (default: 0.1)")
    data.add_argument("--min-word-count", type=int, default=2,
                      help="training words seen fewer times share the <unk> embedding, so it is trained on real "
                           "rare words (their characters still reach the model) (default: 2)")
    data.add_argument("--metric", choices=["auto", "f1", "accuracy"], default="auto",
                      help="model selection and headline metric: span F1 (conlleval) or token accuracy; auto "
                           "picks F1 when the labels are B-/I-/O chunk tags (default: auto)")
    models = compare.add_argument_group("models")
    models.add_argument("--models", type=model_list, default=list(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    models.add_argument("--no-crf", action="store_true", help="per-word softmax instead of a CRF output layer")
    models.add_argument("--no-chars", action="store_true", help="turn the character CNN off")
    models.add_argument("--positions", choices=POSITIONS, default="relative",
                        help="attention tagger: relative (learned direction-aware bias per layer), sinusoidal "
                             "(absolute, added to the input), both, or none (default: relative)")
    models.add_argument("--dropout", type=float, default=TaggerConfig.dropout,
                        help=f"dropout on the word vectors and before the classifier, all models (default: {TaggerConfig.dropout})")
    models.add_argument("--layer-dropout", type=float, default=TaggerConfig.layer_dropout,
                        help=f"dropout inside the attention layers and CNN blocks (default: {TaggerConfig.layer_dropout})")
    models.add_argument("--dim", type=int, default=TaggerConfig.dim, help=f"attention model dim (default: {TaggerConfig.dim})")
    models.add_argument("--heads", type=int, default=TaggerConfig.heads, help=f"attention heads (default: {TaggerConfig.heads})")
    models.add_argument("--layers", type=int, default=TaggerConfig.layers, help=f"attention layers (default: {TaggerConfig.layers})")
    models.add_argument("--ffn-dim", type=int, default=TaggerConfig.ffn_dim,
                        help=f"attention feed-forward width (default: {TaggerConfig.ffn_dim})")
    models.add_argument("--max-distance", type=int, default=TaggerConfig.max_distance,
                        help=f"relative offsets beyond this share one bias (default: {TaggerConfig.max_distance})")
    models.add_argument("--hidden", type=int, default=TaggerConfig.hidden,
                        help=f"BiLSTM hidden size per direction (default: {TaggerConfig.hidden})")
    training = compare.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=f"(default: {TrainConfig.epochs})")
    training.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                          help=f"sentences per batch (default: {TrainConfig.batch_size})")
    training.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"peak learning rate (default: {TrainConfig.lr})")
    training.add_argument("--patience", type=int, default=TrainConfig.patience,
                          help=f"epochs without dev improvement before stopping (default: {TrainConfig.patience})")
    training.add_argument("--time-budget", type=float, default=TrainConfig.time_budget_min,
                          help="minutes per model and seed: the learning rate decays to 0 by then (or by --epochs, "
                               "whichever comes first) and training stops after the epoch that crosses it; 0 for "
                               f"none, which makes the schedule depend on steps alone (default: {TrainConfig.time_budget_min})")
    training.add_argument("--ablations", action="store_true",
                          help="also train the attention tagger without each ingredient (relative positions, CRF, "
                               "characters), shorter: --ablation-epochs, one seed")
    training.add_argument("--ablation-epochs", type=int, default=5, help="epochs of each ablation run (default: 5)")
    training.add_argument("--ablation-budget", type=float, default=3.0,
                          help="minutes per ablation run, as --time-budget (default: 3)")
    compare.set_defaults(run=run_compare)

    tag = commands.add_parser("tag", help="tag raw sentences with a trained checkpoint",
                              description="Print word/label pairs, one sentence per line. Sentences are split "
                                          "on whitespace, so separate punctuation: \"He left .\"")
    tag.add_argument("--checkpoint", required=True, help="a <model>-seed<k>.pt file written by compare")
    tag.add_argument("--feature-tagger", default=None,
                     help="for a model that reads a POS column (conll2000 chunk): a POS checkpoint whose labels "
                          "fill that column; otherwise write tokens as word|POS")
    tag.add_argument("sentences", nargs="*", help="sentences to tag (default: one per line from stdin)")
    tag.set_defaults(run=run_tag)
    return parser


def main(argv: Sequence[str] | None = None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # fit's one line per epoch
    try:
        return args.run(args)
    except (TaggingDataError, DatasetNotFoundError) as error:
        raise SystemExit(f"error: {error}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["g2p"]:  # grapheme-to-phoneme has its own command line (text/g2p/__main__.py)
        from text.g2p.__main__ import main as g2p_main

        sys.exit(g2p_main(sys.argv[2:]))
    main()
