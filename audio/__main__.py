"""Command line of the audio demo.

    python -m audio compare --task digits [--attention full window truncated] [--split speaker:theo]
    python -m audio compare --task connected --seeds 1
    python -m audio stream --checkpoint runs/audio/connected/checkpoints/truncated-c16-L2/seed0/best.pt FILE.wav
    python -m audio synth --seconds 30 OUT.wav

``compare`` trains the chosen attention variants and both baselines under one protocol and writes
``metrics.json``, ``report.md`` and the figures to ``--out``. ``stream`` runs a truncated-attention
checkpoint over a wav file chunk by chunk, printing labels as the chunks arrive. ``synth`` writes a
connected-digit utterance (from the test recordings) to try ``stream`` on.

Legend: T frames, F mel bins, K classes.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import asdict, replace
from pathlib import Path

import soundfile
import torch

from audio.connected import ConnectedConfig, decode_frames, make_connected_set, synthesize
from audio.cost import measure
from audio.data import (NUM_DIGITS, SAMPLE_RATE, SILENCE, AudioError, ClipDataset, FrameDataset, LogMel,
                        clip_features, list_recordings, read_wav, split_recordings)
from audio.models import ATTENTIONS, AudioConfig, build_model
from audio.streaming import StreamingEncoder, check_streaming, stream_waveform
from audio.train import TrainConfig, TrainedModel, train_model
from core.capture import capture_attention
from core.lab.experiment import add_common_args, apply_common_args, summarize_runs, write_metrics, write_report
from core.lab.harness import load_checkpoint
from core.lab.plots import plot_attention, plot_series


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m audio", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare", help="train attention variants and baselines under one protocol; write metrics, report, plots",
        description="Train the attention variants (full / window / truncated) and the CNN and BiGRU "
                    "baselines with one protocol, then write metrics.json, report.md and figures.")
    compare.add_argument("--task", choices=["digits", "connected"], default="digits",
                         help="digits: one FSDD clip, one digit (accuracy); connected: long utterances "
                              "labelled per frame (frame accuracy, digit error rate) (default: digits)")
    compare.add_argument("--attention", nargs="+", choices=ATTENTIONS, default=list(ATTENTIONS),
                         help="attention variants to train (default: all three)")
    compare.add_argument("--baselines", nargs="*", choices=["cnn", "gru"], default=["cnn", "gru"],
                         help="baselines to train; give the flag alone for none (default: cnn gru)")
    compare.add_argument("--split", default="standard",
                         help="'standard' (index 0-4 test) or 'speaker:NAME' (hold speaker NAME out "
                              "entirely) (default: standard)")
    compare.add_argument("--window-sweep", nargs="*", type=int, default=None,
                         help="extra window sizes w to train (first seed only) for the accuracy-vs-window "
                              "plot (default: 2 32 for digits, none for connected)")
    model = compare.add_argument_group("model")
    model.add_argument("--dim", type=int, default=64, help="model width D; feed-forward width 2D (default: 64)")
    model.add_argument("--layers", type=int, default=4, help="encoder layers (default: 4)")
    model.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    model.add_argument("--window", type=int, default=None,
                       help="window: frames seen on each side (default: 8 digits, 16 connected)")
    model.add_argument("--chunk", type=int, default=None,
                       help="truncated: frames per chunk c (default: 16 digits, 32 connected)")
    model.add_argument("--left-chunks", type=int, default=2, help="truncated: chunks of left context L (default: 2)")
    model.add_argument("--lookahead", type=int, default=0,
                       help="truncated: frames of look-ahead r past each chunk; streaming needs 0 (default: 0)")
    training = compare.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=None, help="most epochs (default: 20 digits, 15 connected)")
    training.add_argument("--patience", type=int, default=6, help="early-stopping patience in epochs (default: 6)")
    training.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    training.add_argument("--max-frames", type=int, default=None,
                          help="frames per padded batch (default: 2400 digits, 3000 connected)")
    long_form = compare.add_argument_group("connected digits")
    long_form.add_argument("--train-utterances", type=int, default=200, help="training utterances (default: 200)")
    long_form.add_argument("--train-seconds", type=float, nargs=2, default=[3.0, 12.0], metavar=("MIN", "MAX"),
                           help="length range of training and validation utterances (default: 3 12)")
    long_form.add_argument("--test-utterances", type=int, default=20, help="test utterances (default: 20)")
    long_form.add_argument("--test-seconds", type=float, nargs=2, default=[30.0, 60.0], metavar=("MIN", "MAX"),
                           help="length range of test utterances (default: 30 60)")
    long_form.add_argument("--data-seed", type=int, default=0,
                           help="seed of the validation carve-out and of utterance generation (default: 0)")
    add_common_args(compare, default_out="runs/audio/<task>")

    stream = commands.add_parser(
        "stream", help="run a truncated-attention checkpoint over a wav file chunk by chunk",
        description="Feed FILE.wav to a truncated-attention model one chunk of audio at a time (as a "
                    "microphone would) and print the labels each chunk settles, then the latency and "
                    "real-time factor.")
    stream.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by 'compare'")
    stream.add_argument("file", help="a wav file (any rate: resampled to 8 kHz; stereo: averaged)")
    stream.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")

    synth = commands.add_parser(
        "synth", help="write a connected-digit utterance made from the FSDD test recordings",
        description="Write one connected-digit utterance (test-split recordings, pauses, low noise) as an "
                    "8 kHz wav and print its digit string.")
    synth.add_argument("file", help="output wav path")
    synth.add_argument("--seconds", type=float, default=30.0, help="approximate length (default: 30)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--split", default="standard", help="which split's test recordings to use (default: standard)")
    synth.add_argument("--data-dir", default=None, help="folder holding the datasets (default: $ATTNLAB_DATA)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"compare": run_compare, "stream": run_stream, "synth": run_synth}[args.command](args)


# --- compare ------------------------------------------------------------------------------------


def model_configs(args: argparse.Namespace, base: AudioConfig) -> list[tuple[str, AudioConfig, str, int]]:
    """(name, config, role, seeds) of every model to train, in table order. The extra window sizes of
    the sweep train with the first seed only: they feed a plot, not the headline numbers."""
    models = []
    for attention in args.attention:
        config = replace(base, attention=attention)
        models.append((config.describe(), config, "attention", args.seeds))
    for w in args.window_sweep:
        if w != base.window or "window" not in args.attention:
            config = replace(base, attention="window", window=w)
            models.append((config.describe(), config, "attention", 1))
    for baseline in args.baselines:
        models.append((baseline, replace(base, model=baseline), "baseline", args.seeds))
    return models


def load_task(args: argparse.Namespace, logmel: LogMel):
    """Datasets (``train``, ``val``, ``test``) and the model's task settings for ``--task``."""
    recordings = list_recordings(args.data_dir)
    split = split_recordings(recordings, args.split, seed=args.data_seed)
    if args.task == "digits":
        features = clip_features(recordings, logmel)
        by_name = {r.path.name: f for r, f in zip(recordings, features)}
        datasets = {name: ClipDataset([by_name[r.path.name] for r in part], [r.digit for r in part])
                    for name, part in split.items()}
        return datasets, {"task": "clip", "num_classes": NUM_DIGITS}
    low, high = args.train_seconds
    sizes = {"train": (args.train_utterances, low, high), "val": (max(8, args.train_utterances // 8), low, high),
             "test": (args.test_utterances, *args.test_seconds)}
    datasets = {}
    for offset, (name, (count, low, high)) in enumerate(sizes.items()):
        config = ConnectedConfig(count=count, min_seconds=low, max_seconds=high, seed=args.data_seed * 10 + offset)
        generated = make_connected_set(split[name], config, logmel, name=f"{args.split.replace(':', '-')}-{name}")
        datasets[name] = FrameDataset(generated["features"], generated["labels"])
    return datasets, {"task": "frame", "num_classes": NUM_DIGITS + 1}


def run_compare(args: argparse.Namespace) -> int:
    device = apply_common_args(args)
    digits = args.task == "digits"
    out = Path(args.out.replace("<task>", args.task))
    if args.window_sweep is None:
        args.window_sweep = [2, 32] if digits else []
    logmel = LogMel()
    datasets, task = load_task(args, logmel)
    base = AudioConfig(
        **task, dim=args.dim, ffn_dim=2 * args.dim, layers=args.layers, heads=args.heads,
        window=args.window or (8 if digits else 16), chunk=args.chunk or (16 if digits else 32),
        left_chunks=args.left_chunks, lookahead=args.lookahead,
    )
    train = TrainConfig(epochs=args.epochs or (20 if digits else 15), patience=args.patience, lr=args.lr,
                        max_frames=args.max_frames or (2400 if digits else 3000))

    results, trained, histories = [], {}, {}
    for name, config, role, seeds in model_configs(args, base):
        runs, seconds, validation = [], [], []
        for seed in range(args.seed, args.seed + seeds):
            checkpoint_dir = out / "checkpoints" / _slug(name) / f"seed{seed}"
            result = train_model(config, train, datasets, seed=seed, checkpoint_dir=checkpoint_dir,
                                 resume=args.resume, progress=not args.no_progress, device=device)
            runs.append(result.metrics)
            seconds.append(result.train_seconds)
            best_row = result.history[int(result.metrics["best_epoch"]) - 1]
            validation.append({k: v for k, v in best_row.items() if k.startswith("val_")})
            trained.setdefault(name, result)
            histories[f"{name} seed {seed}"] = result.history
            print(f"{name} seed {seed}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
                  + f" ({result.train_seconds:.0f} s)", flush=True)
        val_means = {k: sum(v[k] for v in validation) / len(validation) for k in validation[0]}
        results.append(summarize_runs(name, role, runs, result.params, seconds,
                                      extra={"config": asdict(config), "best_epochs": [r["best_epoch"] for r in runs],
                                             "validation": val_means}))

    figures, cost = make_figures(args, out, base, results, trained, datasets)
    metric_names = ["accuracy"] if digits else ["frame_accuracy", "der"]
    notes = report_notes(args, base, train, datasets)
    if not digits:
        notes.append(length_note(results, args))
    streaming = None
    truncated = replace(base, attention="truncated").describe()
    if truncated in trained and base.lookahead == 0:
        longest = max(range(len(datasets["test"])), key=lambda i: datasets["test"][i][0].shape[0])
        streaming = check_streaming(trained[truncated].model, datasets["test"][longest][0])
        notes.append(f"streaming {truncated} chunk by chunk over the longest test item "
                     f"({streaming['audio_seconds']:.1f} s): max |streamed - offline| = {streaming['max_abs_diff']:.2e}; "
                     f"{streaming['chunk_ms_mean']:.1f} ms per {base.chunk * 10} ms chunk on average "
                     f"(max {streaming['chunk_ms_max']:.1f}), real-time factor {streaming['real_time_factor']:.3f} "
                     f"(model only; `python -m audio stream` includes the features)")
    write_metrics(out, domain="audio", dataset=f"FSDD ({args.task}, split {args.split})", device=device,
                  config={"args": vars(args), "model": asdict(base), "train": asdict(train)}, results=results,
                  extra={"attention_cost": cost, "streaming": streaming})
    write_report(out, title=f"Audio: FSDD {args.task} (split {args.split})", results=results,
                 metric_names=metric_names + ["test_seconds"], intro=INTRO[args.task], notes=notes,
                 figures=figures)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


INTRO = {
    "digits": "Free Spoken Digit Dataset, one clip one digit (log-mel frames, 100 per second). Attention "
              "variants differ only in which frames each frame may see; the baselines share the front-end, "
              "SpecAugment, optimiser, schedule and early stopping.",
    "connected": "Connected digits: FSDD recordings of the split joined with pauses and low noise into long "
                 "utterances, labelled per frame (digit or silence). Models train on short utterances and are "
                 "tested on long ones; DER is the edit distance between decoded and true digit strings over "
                 "the number of true digits.",
}


def report_notes(args, base: AudioConfig, train: TrainConfig, datasets) -> list[str]:
    seconds = {name: sum(len(d[i][0]) for i in range(len(d))) / 100 for name, d in datasets.items()}
    notes = [f"{len(datasets[n])} {n} items ({seconds[n] / 60:.1f} min of audio)" for n in ("train", "val", "test")]
    notes.append(f"attention model: D={base.dim}, {base.layers} layers, {base.heads} heads, causal conv stem, "
                 f"relative position bias; window w={base.window}, truncated c={base.chunk}, L={base.left_chunks}, "
                 f"r={base.lookahead}")
    notes.append(f"protocol: AdamW lr {train.lr}, one-cycle, up to {train.epochs} epochs, patience {train.patience}, "
                 f"{train.max_frames} frames per batch; seeds {args.seed}..{args.seed + args.seeds - 1}; "
                 f"torch threads {torch.get_num_threads()}")
    if args.task == "connected":
        notes.append(f"digit strings decoded from frame labels, runs shorter than {train.min_run} frames dropped")
    return notes


def length_note(results, args) -> str:
    """How each model's DER moves from validation utterances (as long as training ones) to the long test."""
    low, high = args.train_seconds
    moves = ", ".join(f"{r.model} {r.extra['validation']['val_der']:.3f} -> {r.metrics['der']:.3f}" for r in results)
    return (f"DER on the {low:g}-{high:g} s validation utterances (the training lengths) -> on the "
            f"{args.test_seconds[0]:g}-{args.test_seconds[1]:g} s test utterances: {moves}")


def make_figures(args, out: Path, base: AudioConfig, results, trained: dict[str, TrainedModel],
                 datasets) -> tuple[list[tuple[str, str]], dict]:
    """The plots of ``compare`` as ``(caption, file)`` pairs, and the attention cost measured for them."""
    figures = []
    metric = "accuracy" if args.task == "digits" else "frame_accuracy"
    windows = sorted((r.extra["config"]["window"], r.metrics[metric]) for r in results
                     if r.extra["config"]["model"] == "attention" and r.extra["config"]["attention"] == "window")
    full = [r.metrics[metric] for r in results if r.model == replace(base, attention="full").describe()]
    if len(windows) > 1:
        series = {"window attention": [m for _, m in windows]}
        if full:
            series["full attention (reference)"] = full * len(windows)
        plot_series([w for w, _ in windows], series,
                    xlabel="window w (frames on each side)", ylabel=f"test {metric}", logx=True,
                    title="Accuracy against window size", path=out / "accuracy_vs_window.png")
        figures.append(("Test accuracy against window size", "accuracy_vs_window.png"))

    lengths = [500, 1000, 2000, 4000] if args.task == "digits" else [1000, 2000, 4000, 6000]
    cost = {}
    for attention in ATTENTIONS:
        config = replace(base, attention=attention)
        cost[attention] = [measure(config, T, scope="attention", repeats=1) for T in lengths]
    seconds = [T / 100 for T in lengths]
    plot_series(seconds, {a: [c["seconds"] for c in rows] for a, rows in cost.items()}, xlabel="audio (s)",
                ylabel="forward+backward time (s)", logx=True, logy=True,
                title="Attention time against input length", path=out / "time_vs_length.png")
    plot_series(seconds, {a: [c["saved_mb"] for c in rows] for a, rows in cost.items()}, xlabel="audio (s)",
                ylabel="memory saved for backward (MB)", logx=True, logy=True,
                title="Attention memory against input length", path=out / "memory_vs_length.png")
    figures.append(("Attention time (forward+backward of one core attention call) against input length",
                    "time_vs_length.png"))
    figures.append(("Attention memory (saved for backward) against input length", "memory_vs_length.png"))

    shown = {replace(base, attention=a).describe() for a in args.attention}
    test = datasets["test"]
    longest = max(range(min(len(test), 50)), key=lambda i: test[i][0].shape[0])
    features = test[longest][0][:300]  # (T, F): 3 s at most is enough to see the band
    for name, result in trained.items():
        if name in shown:
            with capture_attention(result.model) as maps:
                result.model(features.unsqueeze(0), torch.tensor([features.shape[0]]))
            weights = maps[0].weights[0].mean(0)  # (T, T): first layer, heads averaged
            file = f"attention_{_slug(name)}.png"
            plot_attention(weights, title=f"{name}: layer 1, mean over heads", path=out / file)
            figures.append((f"Attention map of one test utterance, {name}", file))
    return figures, cost


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").replace("--", "-")


# --- stream -------------------------------------------------------------------------------------


def run_stream(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(args.checkpoint)
    config = AudioConfig(**checkpoint["config"]["model"])
    model = build_model(config)
    model.load_state_dict(checkpoint["model"])
    StreamingEncoder(model)  # rejects a model that cannot stream, before any audio is read
    waveform = read_wav(args.file)
    logmel = LogMel(config.n_mels)
    if logmel.num_frames(waveform.numel()) < 1:
        raise AudioError(f"{args.file}: {waveform.numel() / SAMPLE_RATE * 1000:.1f} ms is shorter than one window")
    chunk_ms = config.chunk * logmel.hop * 1000 // SAMPLE_RATE
    print(f"{args.file}: {waveform.numel() / SAMPLE_RATE:.2f} s; {config.describe()}, chunks of {chunk_ms} ms")
    stream = stream_waveform(model, waveform, logmel, SAMPLE_RATE)
    labels = []
    while True:
        try:
            first, logits = next(stream)
        except StopIteration as done:
            timing = done.value
            break
        start = first * logmel.hop / SAMPLE_RATE
        if config.task == "frame":
            chunk_labels = logits.argmax(-1)
            labels.append(chunk_labels)
            shown = "".join("_" if l == SILENCE else str(l) for l in chunk_labels.tolist())
            so_far = "".join(map(str, decode_frames(torch.cat(labels))))
            print(f"{start:7.2f} s  {shown}  digits so far: {so_far}", flush=True)
        else:
            probs = logits.softmax(-1)
            print(f"{start:7.2f} s  best guess {int(probs.argmax())} (p={float(probs.max()):.2f})", flush=True)
    summary = timing.summary()
    print(f"per chunk: mean {summary['chunk_ms_mean']:.1f} ms, max {summary['chunk_ms_max']:.1f} ms "
          f"(audio per chunk {chunk_ms} ms); real-time factor {summary['real_time_factor']:.3f} "
          f"on {torch.get_num_threads()} thread(s)")
    return 0


# --- synth --------------------------------------------------------------------------------------


def run_synth(args: argparse.Namespace) -> int:
    recordings = split_recordings(list_recordings(args.data_dir), args.split)["test"]
    rng = random.Random(args.seed)
    utterance = synthesize(recordings, args.seconds, rng, ConnectedConfig(count=1, min_seconds=args.seconds,
                                                                          max_seconds=args.seconds, seed=args.seed))
    Path(args.file).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(args.file, utterance.waveform.clamp(-1, 1).numpy(), SAMPLE_RATE)
    print(f"{args.file}: {utterance.waveform.numel() / SAMPLE_RATE:.2f} s, digits {''.join(map(str, utterance.digits))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
