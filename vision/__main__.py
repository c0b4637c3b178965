"""Command line of the vision demo: self-attention over pixel vectors against convolutions.

    python -m vision compare [--dataset cifar10] [--models attention,cnn,resnet] [--time-budget MIN]
    python -m vision sweep [--fractions 0.01,0.05,0.2,1.0] [--models attention,cnn]
    python -m vision attention-map --checkpoint CKPT IMAGE [--pixel ROW COL]
    python -m vision conv-check

``compare`` trains each model for the same wall-clock budget and reports test accuracy, parameters, FLOPs
per image and training time, with accuracy against training time as a figure. ``sweep`` trains on growing
fractions of the training set with one protocol. ``attention-map`` shows, for one query pixel of an image,
where each attention layer of a trained model looks. ``conv-check`` builds the self-attention layer that
reproduces a convolution and prints the largest difference.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from core.lab.experiment import (
    ModelResult, add_common_args, apply_common_args, count_parameters, summarize_runs, write_metrics, write_report,
)
from core.lab.harness import load_checkpoint, seed_everything, to_plain
from vision.data import ImageDataset, channel_stats, load_dataset
from vision.models import MODEL_NAMES, build_model, default_config, flops_per_image
from vision.training import train_classifier, train_config_for

ROLE = {"attention": "attention", "cnn": "baseline", "resnet": "baseline"}
DESCRIPTION = {
    "attention": "pixel self-attention (local windows, then global)",
    "cnn": "same hierarchy, 3×3 convolution as the operator",
    "resnet": "ResNet-9 (Page's DAWNBench net, width-scaled)",
}


def parse_list(text: str, kind=str) -> list:
    return [kind(item) for item in text.split(",") if item.strip()]


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagefolder"],
                        help="cifar10: <data root>/cifar10-jpg (ImageFolder copy) or torchvision's download; "
                             "imagefolder: any tree --data-dir ROOT with ROOT/train/<class>/* and ROOT/test/<class>/*")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize ImageFolder images to this square size (default: the dataset's own "
                             "size, which must then be the same for every image)")


def add_training_args(parser: argparse.ArgumentParser, default_models: str, default_budget: float) -> None:
    parser.add_argument("--models", default=default_models,
                        help=f"comma-separated models from {', '.join(MODEL_NAMES)} (default: {default_models})")
    parser.add_argument("--time-budget", type=float, default=default_budget,
                        help="wall-clock minutes of training per model and run, evaluations included; the "
                             "run times a few steps, then trains for as many steps as fit, with a schedule "
                             f"that ends at learning rate 0 (default: {default_budget:g})")
    parser.add_argument("--steps", type=int, default=0,
                        help="train for exactly this many optimizer steps instead of a time budget "
                             "(default: 0, use --time-budget)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (default: 128 for the pixel models, 256 for the ResNet)")
    parser.add_argument("--relative-bias", action=argparse.BooleanOptionalAction, default=False,
                        help="give the attention model a learned relative 2-D position bias in every layer "
                             "(Cordonnier et al.'s setting; about 1.4x slower per step on CPU) (default: off)")
    parser.add_argument("--dims", default=None,
                        help="width D of each stage of the attention and cnn hierarchies, comma-separated "
                             "(default: 16,48,96, sized for a CPU budget; a GPU run can afford e.g. 64,128,256)")
    parser.add_argument("--depths", default=None,
                        help="blocks per stage, comma-separated, one per --dims entry (default: 1,1,2)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="test-subset evaluations spread over each run, for accuracy vs time (default: 8)")
    parser.add_argument("--eval-images", type=int, default=2000,
                        help="size of the evenly spaced test subset scored after each round; the final "
                             "accuracy is always on the full test set (default: 2000)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vision",
        description="Self-attention over pixel vectors against a CNN: accuracy at equal training time, "
                    "a data-size sweep, attention maps, and a convolution rebuilt as attention.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare", help="train every model for the same time budget and compare test accuracy",
        description="Train the attention model, the same hierarchy with a convolution, and a ResNet for the "
                    "same wall-clock budget each; write metrics.json, report.md and accuracy-vs-time.",
    )
    add_data_args(compare)
    add_training_args(compare, "attention,cnn,resnet", 18.0)
    compare.add_argument("--epochs", type=float, default=0,
                         help="train for this many passes over the training set instead of a time budget, "
                              "e.g. a full-length GPU run (default: 0, use --steps or --time-budget)")
    add_common_args(compare, default_out="runs/vision/compare")

    sweep = commands.add_parser(
        "sweep", help="train on fractions of the training set: test accuracy vs training-set size",
        description="Train each model on stratified fractions of the training set. One protocol for every "
                    "run: the same number of optimizer steps per model (from --steps, or from --time-budget "
                    "timed once per model), so only the amount of data changes.",
    )
    add_data_args(sweep)
    sweep.add_argument("--fractions", default="0.01,0.05,0.2,1.0",
                       help="comma-separated fractions of the training set (default: 0.01,0.05,0.2,1.0)")
    add_training_args(sweep, "attention,cnn", 4.0)
    add_common_args(sweep, default_out="runs/vision/sweep")

    attention_map = commands.add_parser(
        "attention-map", help="where each attention layer looks from one query pixel of an image",
        description="Load a checkpoint of the attention model (best.pt under a compare/sweep run folder), run "
                    "it on IMAGE and draw, per attention layer, the attention of the query pixel over the image.",
    )
    attention_map.add_argument("image", help="an image file (resized to the model's input size if needed)")
    attention_map.add_argument("--checkpoint", required=True, help="best.pt of a trained attention model")
    attention_map.add_argument("--pixel", type=int, nargs=2, metavar=("ROW", "COL"), default=None,
                               help="query pixel (default: the image centre)")
    attention_map.add_argument("--out", default="runs/vision/attention-map",
                               help="output folder for attention_map.png (default: runs/vision/attention-map)")

    conv_check = commands.add_parser(
        "conv-check", help="rebuild a random convolution as multi-head self-attention and compare outputs",
        description="Build the K²-head self-attention layer that reproduces a random K×K Conv2d "
                    "(Cordonnier et al., 2020) and print the largest output difference in float64.",
    )
    conv_check.add_argument("--kernel-size", type=int, default=3, help="K (odd; default: 3)")
    conv_check.add_argument("--channels", type=int, nargs=2, default=(3, 8), metavar=("CIN", "COUT"),
                            help="input and output channels (default: 3 8)")
    conv_check.add_argument("--image-size", type=int, default=16, help="side of the random images (default: 16)")
    conv_check.add_argument("--out", default="runs/vision/conv-check",
                            help="output folder for conv_check.json (default: runs/vision/conv-check)")
    return parser


# --------------------------------------------------------------------------- shared by compare and sweep


def dataset_info(data: ImageDataset, mean: torch.Tensor, std: torch.Tensor) -> dict:
    return {"name": data.name, "classes": list(data.train.classes), "shape": list(data.shape),
            "mean": mean.tolist(), "std": std.tolist(), "train_images": len(data.train),
            "test_images": len(data.test)}


def hierarchy_size(args) -> dict:
    """``--dims`` / ``--depths`` as ``default_config`` keywords, checked before any data is read."""
    sizes = {}
    for key in ("dims", "depths"):
        text = getattr(args, key)
        if text is None:
            continue
        try:
            values = tuple(parse_list(text, int))
        except ValueError:
            raise SystemExit(f"--{key} must be comma-separated whole numbers, got {text!r}") from None
        if not values or min(values) < 1:
            raise SystemExit(f"--{key} must be positive whole numbers, got {text!r}")
        sizes[key] = values
    try:
        default_config("attention", 3, 32, 32, 10, **sizes)
    except ValueError as error:
        raise SystemExit(f"--dims/--depths: {error}") from None
    return sizes


def check_models(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise SystemExit(f"--models: unknown {unknown or 'empty list'}; choose from {', '.join(MODEL_NAMES)}")
    return names


def check_training_args(args) -> list[str]:
    """The model names of ``--models``; a bad ``--models``, ``--dims`` or ``--depths`` fails here, before any
    data is read."""
    names = check_models(parse_list(args.models))
    hierarchy_size(args)
    return names


def train_one(args, name: str, data: ImageDataset, train_split, seed: int, run_dir: Path, device,
              mean, std, steps: int, time_budget_s: float | None):
    """Build model ``name`` with seed ``seed`` and train it; returns (model, RunResult)."""
    C, H, W = data.shape
    seed_everything(seed)
    model_config = default_config(name, C, H, W, data.num_classes, relative_bias=args.relative_bias,
                                  **hierarchy_size(args))
    model = build_model(name, to_plain(model_config)).to(device)
    train_config = train_config_for(name, args.batch_size)
    train_config.rounds = args.rounds
    train_config.steps = steps
    result = train_classifier(
        name, model, model_config, train_config, train=train_split, test=data.test, mean=mean, std=std,
        device=device, time_budget_s=time_budget_s, run_dir=run_dir, seed=seed,
        eval_images=args.eval_images, resume=args.resume, progress=not args.no_progress,
        dataset_info=dataset_info(data, mean, std),
    )
    return model, result


def threads_note(device) -> str:
    return f"device {device}, {torch.get_num_threads()} torch thread(s)"


# --------------------------------------------------------------------------- compare


def plot_accuracy_vs_time(curves: dict[str, list[dict]], path: Path) -> None:
    """One line per model: test-subset accuracy against cumulative training seconds."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, curve in curves.items():
        ax.plot([row["seconds"] / 60 for row in curve], [100 * row["test_subset_accuracy"] for row in curve],
                marker="o", label=name)
    ax.set_xlabel("training time (minutes, evaluations included)")
    ax.set_ylabel("test accuracy (%, evaluation subset)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy against training time")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def run_compare(args) -> list[ModelResult]:
    device = apply_common_args(args)
    names = check_training_args(args)
    out = Path(args.out)
    data = load_dataset(args.dataset, args.data_dir, args.image_size, progress=not args.no_progress)
    mean, std = channel_stats(data.train.images)
    results, curves = [], {}
    for name in names:
        steps = args.steps
        if args.epochs > 0:
            batch_size = train_config_for(name, args.batch_size).batch_size
            steps = math.ceil(args.epochs * math.ceil(len(data.train) / batch_size))
        budget = None if steps > 0 else 60.0 * args.time_budget
        runs, seconds, extra = [], [], {"curves": [], "steps": [], "checkpoints": []}
        for seed in range(args.seed, args.seed + args.seeds):
            model, run = train_one(args, name, data, data.train, seed, out / name / f"seed{seed}", device,
                                   mean, std, steps, budget)
            flops = flops_per_image(model, data.shape)
            runs.append({**run.metrics, "mflops_per_image": flops / 1e6})
            seconds.append(run.train_seconds)
            extra["curves"].append(run.curve)
            extra["steps"].append(run.steps)
            extra["checkpoints"].append(run.checkpoint)
            curves[f"{name} (seed {seed})" if args.seeds > 1 else name] = run.curve
        extra["description"] = DESCRIPTION[name]
        results.append(summarize_runs(name, ROLE[name], runs, count_parameters(model), seconds, extra))
        plot_accuracy_vs_time(curves, out / "accuracy_vs_time.png")

    condition = threads_note(device)
    if args.epochs > 0:
        budget_text = f"{args.epochs:g} epochs per run"
    elif args.steps > 0:
        budget_text = f"{args.steps} steps per run"
    else:
        budget_text = f"{args.time_budget:g} min per model per run"
    write_metrics(out, domain="vision", dataset=data.name, device=device, config=vars(args), results=results,
                  extra={"condition": f"{condition}; {budget_text}"})
    notes = [
        f"Condition: {condition}; budget {budget_text}. Targets (issue #6, full 2-core CPU, 60 min for "
        "the whole command): CNN baseline >= 88%, attention >= 80%.",
        "Test accuracy is that of the weights after the last step (no selection on test data); the "
        "curve is scored on an evenly spaced test subset after each round. test_accuracy_flip scores the "
        "same weights with horizontal-flip test-time augmentation (mean logits of the image and its mirror).",
        *[f"{r.model}: {DESCRIPTION[r.model]}; {r.metrics['epochs']:.1f} epochs, "
          f"{r.metrics['mflops_per_image']:.0f} MFLOPs per image (forward)" for r in results],
    ]
    write_report(out, title=f"Vision: pixel self-attention vs convolution on {data.name}", results=results,
                 metric_names=["test_accuracy", "test_accuracy_flip", "test_loss", "epochs", "mflops_per_image"],
                 intro="Every pixel is a token holding its channel values. The attention model lets each pixel "
                       "weigh other pixels by content (local windows at full resolution, every pixel where "
                       "the grid is small); the CNN applies the same fixed weights to a 3×3 neighbourhood. "
                       "All models get the same wall-clock training budget.",
                 notes=notes, figures=[("Test accuracy against training time", "accuracy_vs_time.png")])
    for r in results:
        print(f"{r.model:>10}: test accuracy {100 * r.metrics['test_accuracy']:.2f}%  params {r.params:,}  "
              f"{r.metrics['mflops_per_image']:.0f} MFLOPs/image  train {r.train_seconds / 60:.1f} min")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return results


# --------------------------------------------------------------------------- sweep


def run_sweep(args) -> list[ModelResult]:
    device = apply_common_args(args)
    names = check_training_args(args)
    fractions = parse_list(args.fractions, float)
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise SystemExit(f"--fractions must be numbers in (0, 1], got {args.fractions!r}")
    out = Path(args.out)
    data = load_dataset(args.dataset, args.data_dir, args.image_size, progress=not args.no_progress)
    mean, std = channel_stats(data.train.images)
    results, series = [], {}
    for name in names:
        # One protocol: every fraction gets the steps the budget allows the full set (timed once per model).
        steps = args.steps
        for fraction in sorted(fractions, reverse=True):
            runs, seconds = [], []
            for seed in range(args.seed, args.seed + args.seeds):
                subset = data.train.subset(fraction, seed=seed)
                run_dir = out / name / f"fraction{fraction:g}" / f"seed{seed}"
                budget = None if steps > 0 else 60.0 * args.time_budget
                model, run = train_one(args, name, data, subset, seed, run_dir, device, mean, std, steps, budget)
                steps = run.steps  # later fractions and seeds reuse the first run's step count
                runs.append({"test_accuracy": run.metrics["test_accuracy"], "train_images": len(subset),
                             "steps": run.steps})
                seconds.append(run.train_seconds)
            result = summarize_runs(f"{name} @ {100 * fraction:g}%", ROLE[name], runs, count_parameters(model),
                                    seconds, {"fraction": fraction, "model_name": name})
            results.append(result)
        ordered = sorted((r for r in results if r.extra["model_name"] == name), key=lambda r: r.extra["fraction"])
        series[name] = [100 * r.metrics["test_accuracy"] for r in ordered]
    sizes = [round(f * len(data.train)) for f in sorted(fractions)]
    from core.lab.plots import plot_series

    plot_series(sizes, series, xlabel="training images", ylabel="test accuracy (%)", logx=True,
                title=f"Test accuracy vs training-set size ({data.name})", path=out / "sweep.png")
    condition = threads_note(device)
    budget_text = (f"{args.steps} steps per run" if args.steps > 0
                   else f"steps fitting {args.time_budget:g} min on the full set, timed once per model")
    write_metrics(out, domain="vision", dataset=data.name, device=device, config=vars(args), results=results,
                  extra={"condition": f"{condition}; {budget_text}", "fractions": sorted(fractions)})
    gaps = []
    if {"attention", "cnn"} <= set(series):
        for fraction, a, c in zip(sorted(fractions), series["attention"], series["cnn"]):
            gaps.append(f"{100 * fraction:g}%: CNN − attention = {c - a:+.2f} points")
    write_report(out, title=f"Vision: accuracy vs training-set size on {data.name}", results=results,
                 metric_names=["test_accuracy", "train_images", "steps"],
                 intro="Each model is trained on stratified fractions of the training set with one protocol "
                       "(same number of optimizer steps and schedule for every fraction, augmentation on).",
                 notes=[f"Condition: {condition}; {budget_text}.", *gaps],
                 figures=[("Test accuracy against training-set size", "sweep.png")])
    for line in gaps:
        print(line)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return results


# --------------------------------------------------------------------------- attention map


def read_image(path: str, channels: int, height: int, width: int) -> torch.Tensor:
    """An image file as uint8 (C, H, W), converted and resized to the model's input."""
    from PIL import Image

    from vision.data import open_image

    image = open_image(Path(path)).convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, channels).permute(2, 0, 1)  # (C, H, W)


def run_attention_map(args) -> Path:
    from core.capture import capture_attention
    from vision.models import PixelHierarchy

    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint["config"]
    model = build_model(config["model"], config["model_config"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    if not isinstance(model, PixelHierarchy) or not model.attention_layers():
        raise SystemExit(f"{args.checkpoint} holds a {config['model']} model, which has no attention layers")
    C, H, W = config["dataset"]["shape"]
    image = read_image(args.image, C, H, W)
    mean = torch.tensor(config["dataset"]["mean"]).view(-1, 1, 1)
    std = torch.tensor(config["dataset"]["std"]).view(-1, 1, 1)
    row, col = args.pixel if args.pixel is not None else (H // 2, W // 2)
    if not (0 <= row < H and 0 <= col < W):
        raise SystemExit(f"--pixel {row} {col} lies outside the {H}x{W} image")

    with torch.no_grad(), capture_attention(model) as maps:
        logits = model(((image.float() / 255.0 - mean) / std).unsqueeze(0))
    layers = model.attention_layers()
    if len(maps) != len(layers):
        raise RuntimeError(f"captured {len(maps)} attention maps for {len(layers)} attention layers")
    classes = config["dataset"]["classes"]
    predicted = classes[int(logits.argmax())]

    fig = Figure(figsize=(2.6 * (len(layers) + 1), 3.0))
    ax = fig.add_subplot(1, len(layers) + 1, 1)
    ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if C == 1 else None)
    ax.scatter([col], [row], c="red", marker="x")
    ax.set_title(f"query pixel ({row}, {col})\npredicted: {predicted}", fontsize=9)
    ax.axis("off")
    for i, ((name, operator, stride), captured) in enumerate(zip(layers, maps)):
        grid = operator.attention_map(captured.weights, row // stride, col // stride)  # (h, w)
        h, w = grid.shape
        upsampled = grid.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:H, :W]  # (H, W)
        ax = fig.add_subplot(1, len(layers) + 1, i + 2)
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if C == 1 else None)
        ax.imshow(upsampled.numpy(), cmap="inferno", alpha=0.7)
        ax.scatter([col], [row], c="cyan", marker="x")
        kind = "window" if type(operator).__name__ == "WindowAttention" else "global"
        ax.set_title(f"{name}\n{kind}, {h}x{w} grid", fontsize=9)
        ax.axis("off")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "attention_map.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"predicted {predicted}; wrote {path}")
    return path


# --------------------------------------------------------------------------- conv check


def run_conv_check(args) -> float:
    from torch import nn

    from vision.conv_as_attention import conv_as_attention

    torch.manual_seed(0)
    cin, cout = args.channels
    K, size = args.kernel_size, args.image_size
    conv = nn.Conv2d(cin, cout, K, padding=K // 2).double()
    layer = conv_as_attention(conv, size, size)
    images = torch.randn(4, cin, size, size, dtype=torch.float64)
    with torch.no_grad():
        error = float((layer(images) - conv(images)).abs().max())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"kernel_size": K, "in_channels": cin, "out_channels": cout, "image_size": size,
              "heads": K * K, "dtype": "float64", "max_abs_error": error}
    (out / "conv_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{K}x{K} conv ({cin}->{cout}) as {K * K}-head self-attention: max |difference| = {error:.3g}")
    return error


def run(args: argparse.Namespace):
    if args.command == "compare":
        return run_compare(args)
    if args.command == "sweep":
        return run_sweep(args)
    if args.command == "attention-map":
        return run_attention_map(args)
    return run_conv_check(args)


def main(argv: list[str] | None = None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
