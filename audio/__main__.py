"""Command line of the audio demo.

    python -m audio compare --task digits [--attention full window truncated] [--split speaker:theo]
    python -m audio compare --split loso --attention window --baselines cnn   # every speaker held out in turn
    python -m audio compare --quick
    python -m audio compare --task connected --seeds 1
    python -m audio stream --checkpoint runs/audio/connected/truncated-c-32-l-2/seed0/best.pt FILE.wav
    python -m audio synth --seconds 30 OUT.wav

``compare`` trains the attention variants and the baselines through the experiment runner
(``core.lab.runner``) and writes ``metrics.json``, ``report.md`` and the figures to ``--out``. ``stream``
runs a truncated-attention checkpoint over a wav file chunk by chunk (``AttentionModel.infer``),
printing labels as the chunks arrive. ``synth`` writes a connected-digit utterance to try it on.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import replace

import torch

from audio.connected import write_utterance
from audio.data import SAMPLE_RATE, AudioError, read_wav
from audio.models import ATTENTIONS, FEATURE_NORMS, POOLINGS, STEMS, AudioConfig
from audio.plots import comparison_figures, loso_figures
from audio.streaming import load_streaming_model, stream_lines
from audio.train import (CONTRACTS, INTROS, TrainConfig, compare_notes, fold_specs, load_tasks, loso_summary,
                         summarize, train_one)
from core.lab.cli import (UsageError, add_common_args, apply_common_args, apply_profile, check_common_args,
                          cli_main, non_negative_float, number_list, positive_int)
from core.lab.runner import Experiment, ModelSpec, RunnerOptions, run_experiment

#: --quick: windowed attention and the CNN on every other FSDD training clip (every speaker and digit), batches
#: of 800 frames (about 10 clips: more steps for the same work), the full validation and test sets; floor:
#: windowed attention >= 90% test accuracy. 7 epochs: validation accuracy (windowed attention / CNN) was
#: 89.63% / 94.07% at 6 epochs, 90.37% / 95.56% at 7 and 90.00% / 95.93% at 8, the same mean at 7 and 8, and 7
#: costs less (8 had run 124 s inside the tour on a loaded host, over the two minutes).
QUICK = dict(attention=["window"], baselines=["cnn"], window_sweep=[], epochs=7, train_every=2, max_frames=800)
QUICK_FLOOR = 0.90

#: Defaults that depend on the split. A voice never heard in training (``--split loso``) gets the recipe
#: leave-one-speaker-out validation chose (mean validation accuracy over the folds, a sixth speaker per fold;
#: the ablation table in docs/audio.md): per-utterance normalisation, the CNN's blocks with their batch
#: normalisation as the attention stem, lighter SpecAugment, two attention layers. The other splits keep the settings their figures were measured with (the standard
#: split's 3-seed record); per-utterance normalisation would also stop a truncated model from streaming.
#: A flag given explicitly wins.
SPLIT_DEFAULTS = {
    "loso": dict(feature_norm="utterance", stem="cnn-bn", spec_augment=[1, 1], layers=2),
    "other": dict(feature_norm="global", stem="strided", spec_augment=[2, 2], layers=4),
}


def resolve_split_defaults(args: argparse.Namespace) -> None:
    """Fill the flags left unset (None) with the defaults of ``args.split`` (``SPLIT_DEFAULTS``)."""
    for key, value in SPLIT_DEFAULTS["loso" if args.split == "loso" else "other"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _split_default(key: str) -> str:
    show = lambda value: ",".join(map(str, value)) if isinstance(value, list) else str(value)  # noqa: E731
    return f"default: {show(SPLIT_DEFAULTS['other'][key])}; {show(SPLIT_DEFAULTS['loso'][key])} with --split loso"



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m audio", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="train attention variants and baselines under one protocol; write metrics, report, plots",
        description="Train the attention variants (full / window / truncated) and the CNN and BiGRU baselines "
                    "with one protocol, then write metrics.json, report.md and figures. Every choice (kept "
                    "epoch, headline variant, window sweep) is made on validation; test is scored once.")
    compare.add_argument("--task", choices=["digits", "connected"], default="digits",
                         help="digits: one FSDD clip, one digit (accuracy); connected: long utterances labelled "
                              "per frame (frame accuracy, digit error rate) (default: digits)")
    compare.add_argument("--quick", action="store_true",
                         help="a tour in under two minutes on 2 CPU cores: digits, windowed attention and the CNN, "
                              f"{QUICK['epochs']} epochs on every {QUICK['train_every']}nd training clip (every "
                              f"speaker and digit) in batches of {QUICK['max_frames']} frames, full validation and "
                              f"test sets. Floor: windowed attention >= "
                              f"{QUICK_FLOOR:.0%}% test accuracy (a flag given explicitly wins; the report says so)")
    compare.add_argument("--attention", nargs="+", choices=ATTENTIONS, default=list(ATTENTIONS),
                         help="attention variants to train (default: all three)")
    compare.add_argument("--baselines", nargs="*", choices=["cnn", "gru"], default=["cnn", "gru"],
                         help="baselines to train; give the flag alone for none (default: cnn gru)")
    compare.add_argument("--split", default="standard",
                         help="'standard' (index 0-4 test), 'speaker:NAME' (hold speaker NAME out) or 'loso' (digits: "
                              "one fold per speaker, each held out in turn; per-speaker and mean ± spread reported) "
                              "(default: standard)")
    compare.add_argument("--loso-validation", choices=["speaker", "recordings"], default="speaker",
                         help="--split loso: validate each fold on one more held-out speaker (the next in name order; "
                              "validation then measures new voices, as test does) or on 10%% of the training "
                              "speakers' clips (default: speaker)")
    compare.add_argument("--window-sweep", nargs="*", type=positive_int, default=None,
                         help="extra window sizes w (first seed only) for the validation-accuracy-vs-window plot "
                              "(default: 2 32 for digits, none for connected)")
    model = compare.add_argument_group("model")
    model.add_argument("--dim", type=positive_int, default=64, help="model width D; feed-forward 2D (default: 64)")
    model.add_argument("--layers", type=positive_int, default=None,
                       help=f"encoder layers ({_split_default('layers')})")
    model.add_argument("--heads", type=positive_int, default=4, help="attention heads (default: 4)")
    model.add_argument("--window", type=positive_int,
                       help="window: frames seen on each side (default: 8 digits, 16 connected)")
    model.add_argument("--chunk", type=positive_int,
                       help="truncated: frames per chunk c (default: 16 digits, 32 connected)")
    model.add_argument("--left-chunks", type=int, default=2, help="truncated: chunks of left context L (default: 2)")
    model.add_argument("--lookahead", type=int, default=0,
                       help="truncated: frames of look-ahead r past each chunk; streaming needs 0 (default: 0)")
    model.add_argument("--feature-norm", choices=FEATURE_NORMS, default=None,
                       help="log-mel normalisation, every model: global (training-set mean and std per mel bin), "
                            "utterance (each clip's own mean and std: removes a voice's or microphone's fixed "
                            "colouring; cannot stream) or speaker (digits: the mean and std of all the clips of the "
                            "clip's speaker, labels unused; a held-out voice is normalised with its own recordings, "
                            f"an adaptation to it; cannot stream) ({_split_default('feature_norm')})")
    model.add_argument("--cepstra", type=int, default=0, metavar="K",
                       help="every model: smooth each log-mel frame to its spectral envelope by keeping its first K "
                            "cepstral (DCT) coefficients, which removes the ripple of the voice's pitch harmonics "
                            "and keeps the formants; 0 keeps the frames as they are (default: 0)")
    model.add_argument("--stem", choices=STEMS, default=None,
                       help="the attention model's causal convolution front-end: strided (two 3x3 convolutions, "
                            "stride 2 along frequency) or cnn (the CNN baseline's four 3x3 blocks, each with a 2x "
                            "max pool along frequency) or cnn-bn (those blocks with the CNN's batch normalisation "
                            f"too) ({_split_default('stem')})")
    model.add_argument("--pooling", choices=POOLINGS, default="mean",
                       help="how a clip's frame vectors become one vector, every model: their mean over the real "
                            "frames, or attention: a learned score per frame, softmax, the weighted sum "
                            "(default: mean)")
    model.add_argument("--dropout", type=non_negative_float, default=0.1,
                       help="dropout in the encoder, the CNN and before the head, every model (default: 0.1)")
    model.add_argument("--spec-augment", type=number_list(int, minimum=0), default=None, metavar="F,T",
                       help="SpecAugment while training, every model: F frequency masks per clip (each up to 8 mel "
                            "bins) and T time masks per second (each up to 8 frames; at least one per clip when T > "
                            f"0); 0,0 turns it off ({_split_default('spec_augment')})")
    model.add_argument("--vtlp", type=non_negative_float, default=0.0, metavar="V",
                       help="vocal tract length perturbation while training, every model: each clip's frequency "
                            "axis warped by a factor drawn from [1-V, 1+V] (a longer or shorter vocal tract, same "
                            "timing); 0 turns it off (default: 0; Jaitly & Hinton 2013 used 0.1)")
    training = compare.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, help="most epochs (default: 20 digits, 15 connected)")
    training.add_argument("--time-budget", type=non_negative_float, metavar="MIN",
                          help="minutes per model and seed, for an equal-time comparison (reported; results then "
                               "depend on the machine) (default: none, the schedule is counted in epochs)")
    training.add_argument("--patience", type=positive_int, default=6,
                          help="early-stopping patience in epochs (default: 6)")
    training.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    training.add_argument("--mixup", type=non_negative_float, default=0.0, metavar="ALPHA",
                          help="digits: mixup (Zhang et al. 2018): every training batch mixed with a shuffled copy of "
                               "itself, log-mel features and loss, by one weight drawn from Beta(ALPHA, ALPHA) per "
                               "batch; they found 0.1 to 0.4 best on ImageNet (default: 0, off)")
    training.add_argument("--max-frames", type=positive_int,
                          help="frames per padded batch (default: 2400 digits, 3000 connected)")
    long_form = compare.add_argument_group("connected digits")
    long_form.add_argument("--train-utterances", type=positive_int, default=200,
                           help="training utterances (default: 200)")
    long_form.add_argument("--train-seconds", type=float, nargs=2, default=[3.0, 12.0], metavar=("MIN", "MAX"),
                           help="length range of training and validation utterances (default: 3 12)")
    long_form.add_argument("--test-utterances", type=positive_int, default=20, help="test utterances (default: 20)")
    long_form.add_argument("--test-seconds", type=float, nargs=2, default=[30.0, 60.0], metavar=("MIN", "MAX"),
                           help="length range of test utterances (default: 30 60)")
    compare.add_argument("--speed-perturb", type=number_list(float), default=(), metavar="S1,S2",
                         help="digits: speed perturbation: every training clip also played at these speeds (e.g. "
                              "0.9,1.1: pitch, formants and tempo scaled, as by a shorter or longer vocal tract), one "
                              "version drawn per clip and batch; epochs keep their steps (default: none)")
    compare.add_argument("--speaker-clips", type=positive_int, default=None, metavar="N",
                         help="with --feature-norm speaker: each speaker's statistics from only N of its clips, drawn "
                              "by --data-seed, as an enrolment of N recordings of a new voice would give; every clip "
                              "is still normalised and scored (default: all of the speaker's clips)")
    compare.add_argument("--train-every", type=positive_int, default=1, metavar="N",
                         help="train on every N-th training clip in name order (less data; validation and test "
                              "stay whole) (default: 1, all)")
    compare.add_argument("--data-seed", type=int, default=0,
                         help="seed of the validation carve-out and of utterance generation (default: 0)")
    add_common_args(compare, default_out="runs/audio/<task>")

    stream = commands.add_parser("stream", help="run a truncated-attention checkpoint over a wav file chunk by chunk",
                                 description="Feed FILE.wav to a truncated-attention model one chunk of audio at a "
                                             "time (as a microphone would) and print the labels each chunk settles, "
                                             "then the latency and real-time factor.")
    stream.add_argument("--checkpoint", required=True, help="best.pt written by 'compare'")
    stream.add_argument("file", help="a wav file (any rate: resampled to 8 kHz; stereo: averaged)")
    stream.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's)")
    synth = commands.add_parser("synth", help="write a connected-digit utterance made from the FSDD test recordings",
                                description="Write one connected-digit utterance (test-split recordings, pauses, "
                                            "low noise) as an 8 kHz wav and print its digit string.")
    synth.add_argument("file", help="output wav path")
    synth.add_argument("--seconds", type=float, default=30.0, help="approximate length (default: 30)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--split", default="standard", help="which split's test recordings to use (default: standard)")
    synth.add_argument("--data-dir", default=None, help="folder holding the datasets (default: $ATTNLAB_DATA)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser(), argv, lambda args: COMMANDS[args.command](args), errors=(AudioError,))


def model_specs(args: argparse.Namespace, base: AudioConfig) -> list[ModelSpec]:
    """The rows, in table order: attention variants, the window sweep's extra sizes (first seed only: they
    feed a plot), baselines."""
    specs = [ModelSpec(c.describe(), "attention", c) for c in (replace(base, attention=a) for a in args.attention)]
    for w in args.window_sweep:
        if w != base.window or "window" not in args.attention:
            config = replace(base, attention="window", window=w)
            specs.append(ModelSpec(config.describe(), "attention", config, seeds=1))
    return specs + [ModelSpec(b, "baseline", replace(base, model=b)) for b in args.baselines]


def run_compare(args: argparse.Namespace) -> int:
    if args.quick:
        if args.task != "digits":
            raise UsageError("--quick runs the digits task; drop --task connected")
    kept = apply_profile(args, build_parser().parse_args(["compare"]), QUICK) if args.quick else []
    digits = args.task == "digits"
    out = args.out.replace("<task>", args.task + ("-quick" if args.quick else ""))
    check_common_args(args, out)
    apply_common_args(args)
    resolve_split_defaults(args)
    if args.window_sweep is None:
        args.window_sweep = [2, 32] if digits else []
    loso = args.split == "loso"
    if len(args.spec_augment) != 2:
        raise UsageError(f"--spec-augment takes two counts F,T; got {','.join(map(str, args.spec_augment))}")
    if loso and not digits:
        raise UsageError("--split loso runs the digits task; drop --task connected")
    if not 0 <= args.cepstra <= AudioConfig.n_mels:
        raise UsageError(f"--cepstra takes 0 (off) to {AudioConfig.n_mels} (the mel bins); got {args.cepstra}")
    if args.vtlp >= 0.5:
        raise UsageError(f"--vtlp takes 0 (off) up to 0.5 (warp factors in [1-V, 1+V]); got {args.vtlp}")
    if args.feature_norm == "speaker" and not digits:
        raise UsageError("--feature-norm speaker normalises each clip with its speaker's clips: it is for the digits "
                         "task; drop it or --task connected")
    if args.speaker_clips is not None and args.feature_norm != "speaker":
        raise UsageError(f"--speaker-clips sets how many clips give each speaker's statistics: it needs "
                         f"--feature-norm speaker (got {args.feature_norm})")
    if args.mixup and not digits:
        raise UsageError("--mixup mixes clips of one digit each: it is for the digits task; drop it or --task connected")
    if args.speed_perturb and (not digits or any(not 0.5 <= v <= 2 or v == 1 for v in args.speed_perturb)):
        raise UsageError("--speed-perturb takes speeds in [0.5, 2] other than 1, for the digits task; got "
                         f"{','.join(map(str, args.speed_perturb))} with --task {args.task}")
    low, high = args.train_seconds
    tasks = load_tasks(args.task, args.split, data_dir=args.data_dir, loso_validation=args.loso_validation,
                       train_every=args.train_every, data_seed=args.data_seed, speeds=tuple(args.speed_perturb),
                       speaker_norm=args.feature_norm == "speaker", speaker_clips=args.speaker_clips,
                       progress=not args.no_progress,
                       connected={"train": (args.train_utterances, low, high),
                                  "val": (max(8, args.train_utterances // 8), low, high),
                                  "test": (args.test_utterances, *args.test_seconds)})
    data = next(iter(tasks.values()))
    base = AudioConfig(task=data.task, num_classes=data.num_classes, dim=args.dim, ffn_dim=2 * args.dim,
                       layers=args.layers, heads=args.heads, window=args.window or (8 if digits else 16),
                       chunk=args.chunk or (16 if digits else 32), left_chunks=args.left_chunks,
                       lookahead=args.lookahead, feature_norm=args.feature_norm, dropout=args.dropout,
                       freq_masks=args.spec_augment[0], time_masks=args.spec_augment[1], pooling=args.pooling,
                       stem=args.stem, cepstra=args.cepstra, vtlp=args.vtlp, nyquist=SAMPLE_RATE / 2)
    train = TrainConfig(epochs=args.epochs or (20 if digits else 15), patience=args.patience, lr=args.lr,
                        max_frames=args.max_frames or (2400 if digits else 3000), mixup=args.mixup)
    if loso:
        args.window_sweep = []  # a sweep per fold would multiply the runs; LOSO compares the models
    specs, folds = model_specs(args, base), {}  # LOSO: row name -> (model, held-out speaker)
    if loso:
        specs, folds = fold_specs(specs, tasks)
    configs = {s.name: s.config for s in specs}
    contract = CONTRACTS[args.task]
    notes = compare_notes(tasks, base, train, contract, loso_validation=args.loso_validation if loso else None,
                          train_every=args.train_every)
    if args.quick:
        notes += [f"--quick floor: windowed attention >= {QUICK_FLOOR:.0%} {contract.headline}", *kept]
    figures = functools.partial(comparison_figures, configs=configs, test=data.datasets["test"], select=contract.select,
                                lengths=[250, 500, 1000] if args.quick else ([500, 1000, 2000, 4000] if digits
                                                                               else [1000, 2000, 4000, 6000]))
    summary = functools.partial(summarize, task=args.task, configs=configs, test=data.datasets["test"])
    if loso:
        figures, summary = (functools.partial(loso_figures, folds=folds), functools.partial(loso_summary, folds=folds))
    experiment = Experiment(
        domain="audio", dataset=f"FSDD ({args.task}, split {args.split})", title=f"Audio: FSDD {args.task} "
        f"(split {args.split}){' — quick' if args.quick else ''}", contract=contract, specs=specs,
        train_one=lambda spec, seed, ctx: train_one(spec, seed, ctx, datasets=tasks[folds[spec.name][1] if loso
                                                                                    else args.split].datasets),
        config=train, intro=INTROS[args.task], notes=notes, table=[] if digits else ["test_frame_accuracy", "val_der"],
        data_identity=data.identity if not loso else {name: t.identity for name, t in tasks.items()},
        bookkeeping_table=["best_epoch", "epochs", "seconds", "test_seconds"], figures=figures, summary=summary,
        extra={"command_name": "compare", "quick": args.quick})
    run_experiment(experiment, RunnerOptions.from_args(args, out=out))
    return 0


def run_stream(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_streaming_model(args.checkpoint)  # refuses a model that cannot stream, before any audio is read
    except ValueError as error:
        raise UsageError(str(error)) from None
    for line in stream_lines(model, read_wav(args.file), name=args.file):
        print(line, flush=True)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    print(write_utterance(args.file, args.seconds, seed=args.seed, split=args.split, data_dir=args.data_dir))
    return 0


COMMANDS = {"compare": run_compare, "stream": run_stream, "synth": run_synth}

if __name__ == "__main__":
    sys.exit(main())
