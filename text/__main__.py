"""``python -m text``: sequence labelling with self-attention, against BiLSTM and CNN baselines.

    python -m text compare --dataset conll2000 --task chunk            # attention vs BiLSTM vs CNN
    python -m text compare --dataset conll2000 --task pos --models attention
    python -m text compare --quick                                      # chunking on 2000 sentences, 3 epochs
    python -m text compare --train a.conll --dev b.conll --test c.conll --format conll --label-column -1
    torchrun --nproc-per-node 2 -m text compare --dataset conll2000    # data-parallel, same global batch
    python -m text tag --checkpoint runs/text/conll2000-chunk/attention/seed0/best.pt "He reckons ... ."

``compare`` trains every model with one protocol (:mod:`text.train`) through the experiment runner, which
writes metrics.json, report.md, figures and one folder per model and seed to ``--out``. ``tag`` prints
word/label pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from typing import Sequence

from core.lab.cli import (UsageError, add_common_args, add_schedule_args, apply_common_args, apply_profile,
                          check_common_args, cli_main, number_list, positive_int, subset_of)
from core.lab.runner import Experiment, ModelSpec, RunnerOptions, run_experiment
from text.data import CONLL2000_TASKS, TaggingDataError, TaggingDataset, Vocabularies, count_unseen_labels, load_task
from text.models import MODELS, POSITIONS, TaggerConfig
from text.plots import comparison_figures
from text.train import (ABLATIONS, TrainConfig, contract_for, load_tagger, protocol_note, report_intro, tag_lines,
                        train_one)

DEFAULT_OUT = "runs/text/<dataset>-<task>"
ROLE = {"attention": "attention", "bilstm": "baseline", "cnn": "baseline"}
#: --quick: CoNLL-2000 chunking, the attention tagger against the BiLSTM on the first 2000 training sentences
#: (the full validation and test sets), 3 epochs, one seed.
QUICK = dict(dataset="conll2000", task="chunk", models=["attention", "bilstm"], train_sentences=2000, epochs=3)


def run_compare(args: argparse.Namespace):
    if args.quick:
        if args.train or args.test:
            raise UsageError("--quick runs CoNLL-2000 chunking; drop --train/--dev/--test")
    kept = apply_profile(args, build_parser().parse_args(["compare"]), QUICK) if args.quick else []
    check_common_args(args)
    apply_common_args(args)
    try:
        task = load_task(dataset=args.dataset, task=args.task, data_dir=args.data_dir, train=args.train, dev=args.dev,
                         test=args.test, format=args.format, label_column=args.label_column,
                         feature_columns=args.feature_columns, dev_fraction=args.dev_fraction, seed=args.seed,
                         metric=args.metric)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.train_sentences is not None:
        task.train = task.train[: args.train_sentences]
        task.identity["train_sentences"] = args.train_sentences
        task.val_note += f"; training on the first {len(task.train)} of the training sentences (--train-sentences)"
    out = args.out if args.out != DEFAULT_OUT else f"runs/text/{task.name}" + ("-quick" if args.quick else "")
    check_common_args(args, out)
    vocabs = Vocabularies.build(task.train, min_word_count=args.min_word_count)
    unseen = {split: count_unseen_labels(s, vocabs.labels, split) for split, s in (("val", task.val), ("test", task.test))}
    data = {split: TaggingDataset(getattr(task, split), vocabs) for split in ("train", "val", "test")}
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience)
    base = TaggerConfig(num_words=len(vocabs.words), num_chars=len(vocabs.chars), num_labels=len(vocabs.labels),
                        feature_vocab_sizes=[len(v) for v in vocabs.features],
                        char_channels=0 if args.no_chars else TaggerConfig.char_channels, crf=not args.no_crf,
                        dropout=args.dropout, layer_dropout=args.layer_dropout, word_dropout=args.word_dropout, dim=args.dim, heads=args.heads,
                        layers=args.layers, ffn_dim=args.ffn_dim, positions=args.positions,
                        max_distance=args.max_distance, hidden=args.hidden)
    specs = [ModelSpec(m, ROLE[m], dataclasses.replace(base, model=m)) for m in args.models]
    notes = [*kept, task.val_note, protocol_note(train, task.metric, crf=not args.no_crf),
             f"gold labels never seen in training: {unseen}"]
    if args.ablations:
        short = dataclasses.replace(train, epochs=args.ablation_epochs)
        if short != train or "attention" not in args.models:  # the reference the ablations are read against
            specs.append(ModelSpec("attention (short)", "attention", dataclasses.replace(base, model="attention"),
                                   train=short, seeds=1))
        specs += [ModelSpec(name, "attention", dataclasses.replace(base, model="attention", **change), train=short,
                            seeds=1) for name, change in ABLATIONS.items()]
        notes.append(f"ablation rows ('attention -X', 'attention 2 layers') train for {args.ablation_epochs} epochs, "
                     "one seed; read them against the attention row trained the same way ('attention (short)' when "
                     "the main rows train longer)")
    features = task.columns.get("feature_columns")
    experiment = Experiment(
        domain="text", dataset=task.name, title=f"Sequence labelling on {task.name}: self-attention vs BiLSTM vs CNN",
        contract=contract_for(task.metric), specs=specs,
        train_one=functools.partial(train_one, data=data, vocabs=vocabs, task=task), config=train,
        data_identity=task.identity, notes=notes, table=["test_accuracy"],
        bookkeeping_table=["best_epoch", "epochs", "test_sentences_per_s"],
        intro=report_intro(args.positions, features),
        figures=functools.partial(comparison_figures, test=data["test"], monitor=f"val_{task.metric}", title=task.name),
        extra={"metric": task.metric, "columns": task.columns, "unseen_labels": unseen},
    )
    return run_experiment(experiment, RunnerOptions.from_args(args, out=out))


def run_tag(args: argparse.Namespace) -> list[list[tuple[str, str]]]:
    lines = args.sentences or [line for line in sys.stdin.read().splitlines() if line.strip()]
    tokens = [line.split() for line in lines]
    if not tokens or not all(tokens):
        raise UsageError("nothing to tag: give sentences as arguments or on stdin")
    try:
        model, vocabs, columns = load_tagger(args.checkpoint)
        helper = load_tagger(args.feature_tagger)[:2] if args.feature_tagger and vocabs.features else None
        tagged = tag_lines(model, vocabs, tokens, feature_tagger=helper, columns=columns.get("feature_columns"))
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    for pairs in tagged:
        print(" ".join(f"{w}/{label}" for w, label in pairs))
    return tagged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m text", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="train the attention tagger and the BiLSTM and CNN baselines, write a report",
        description="Train the attention tagger, the BiLSTM and the CNN tagger on one dataset with one protocol and "
                    "write metrics.json, report.md and figures to --out.")
    add_common_args(compare, default_out=DEFAULT_OUT)
    data = compare.add_argument_group("data")
    data.add_argument("--dataset", choices=["conll2000"], default=None,
                      help="a dataset under the data root (CoNLL-2000: WSJ chunks and POS tags)")
    data.add_argument("--task", choices=sorted(CONLL2000_TASKS), default="chunk",
                      help="with --dataset conll2000: chunk (label column 3, POS column as input) or pos (label "
                           "column 2) (default: chunk)")
    data.add_argument("--train", help="training file (instead of --dataset)")
    data.add_argument("--dev", help="validation file for early stopping and selection (default: split off "
                                    "--dev-fraction of the training file, seeded by --seed)")
    data.add_argument("--test", help="test file")
    data.add_argument("--format", choices=["conll", "conllu"], default="conll",
                      help="file format of --train/--dev/--test (default: conll)")
    data.add_argument("--label-column", default=None,
                      help="conll: the label's column number, negative from the end (default: -1, the last); "
                           "conllu: upos or xpos (default: upos)")
    data.add_argument("--feature-columns", type=number_list(int, minimum=0), default=None,
                      help="conll: comma-separated extra input columns, e.g. 1 for a POS column (default: 1 for "
                           "conll2000 chunk, none otherwise)")
    data.add_argument("--train-sentences", type=positive_int, default=None, metavar="N",
                      help="train on the first N training sentences only (default: all)")
    data.add_argument("--quick", action="store_true",
                      help="a short profile: CoNLL-2000 chunk, attention and BiLSTM, the first 2000 training "
                           "sentences, 3 epochs (a flag given explicitly wins; the report says so)")
    data.add_argument("--dev-fraction", type=float, default=0.1,
                      help="fraction of the training sentences held out when there is no dev file (default: 0.1)")
    data.add_argument("--min-word-count", type=positive_int, default=2,
                      help="training words seen fewer times share the <unk> embedding (their characters still "
                           "reach the model) (default: 2)")
    data.add_argument("--metric", choices=["auto", "f1", "accuracy"], default="auto",
                      help="selection and headline metric: span F1 (conlleval) or token accuracy; auto picks F1 "
                           "when the labels are B-/I-/O chunk tags (default: auto)")
    models = compare.add_argument_group("models")
    models.add_argument("--models", type=subset_of(MODELS), default=list(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    models.add_argument("--no-crf", action="store_true", help="per-word softmax instead of a CRF output layer")
    models.add_argument("--no-chars", action="store_true", help="turn the character CNN off")
    models.add_argument("--positions", choices=POSITIONS, default="relative",
                        help="attention tagger: relative (learned direction-aware bias per layer), sinusoidal or "
                             "learned (absolute, added to the input), both (relative + sinusoidal), or none "
                             "(default: relative)")
    for flag, kind, help_text in [
        ("dropout", float, "dropout on the word vectors and before the classifier, all models"),
        ("word-dropout", float, "training only: a word id becomes <unk> with this probability, all models"),
        ("layer-dropout", float, "dropout inside the attention layers and CNN blocks"),
        ("dim", positive_int, "attention model dim"), ("heads", positive_int, "attention heads"),
        ("layers", positive_int, "attention layers"), ("ffn-dim", positive_int, "attention feed-forward width"),
        ("max-distance", positive_int, "relative offsets beyond this share one bias"),
        ("hidden", positive_int, "BiLSTM hidden size per direction")]:
        default = getattr(TaggerConfig, flag.replace("-", "_"))
        models.add_argument(f"--{flag}", type=kind, default=default, help=f"{help_text} (default: {default})")
    training = compare.add_argument_group("training")
    add_schedule_args(training, epochs=TrainConfig.epochs)
    training.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size,
                          help=f"sentences per global batch (default: {TrainConfig.batch_size})")
    training.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"peak learning rate (default: {TrainConfig.lr})")
    training.add_argument("--patience", type=positive_int, default=TrainConfig.patience,
                          help=f"epochs without a validation improvement before stopping (default: {TrainConfig.patience})")
    training.add_argument("--ablations", action="store_true",
                          help="also train the attention tagger without each ingredient (relative positions, CRF, "
                               "characters), shorter: --ablation-epochs, one seed")
    training.add_argument("--ablation-epochs", type=positive_int, default=5, help="epochs of each ablation run (default: 5)")
    compare.set_defaults(run=run_compare)

    tag = commands.add_parser("tag", help="tag raw sentences with a trained checkpoint",
                              description="Print word/label pairs, one sentence per line. Sentences are split on "
                                          "whitespace, so separate punctuation: \"He left .\"")
    tag.add_argument("--checkpoint", required=True, help="a <out>/<model>/seed<k>/best.pt written by compare")
    tag.add_argument("--feature-tagger", default=None,
                     help="for a model that reads a POS column (conll2000 chunk): a POS checkpoint whose labels fill "
                          "that column; otherwise write tokens as word|POS")
    tag.add_argument("sentences", nargs="*", help="sentences to tag (default: one per line from stdin)")
    tag.set_defaults(run=run_tag)
    return parser


def main(argv: Sequence[str] | None = None):
    return cli_main(build_parser(), argv, lambda args: args.run(args), errors=(TaggingDataError,))


if __name__ == "__main__":
    if sys.argv[1:2] == ["g2p"]:  # grapheme-to-phoneme has its own command line (text/g2p/__main__.py)
        from text.g2p.__main__ import main as g2p_main

        sys.exit(g2p_main(sys.argv[2:]))
    main()
