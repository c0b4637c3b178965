"""Training throughput of the vision models: images per second, forward + backward + optimizer step.

    python benchmarks/vision.py [--models attention,cnn,resnet] [--batch-size 128] [--rounds 5] [--out FILE]
    python benchmarks/vision.py --conv-stages 1 --global-tokens 64 --out FILE   # the attention model reshaped
    python benchmarks/vision.py --precisions fp32,bf16 --out FILE               # each model in both arithmetics

Random images of the CIFAR-10 shape by default, the same batch for every model, each with its own training
recipe (optimizer, channels-last for the ResNet). Interleaved rounds (``core.lab.bench``): every round runs
``--steps`` training steps of each model, in an order that alternates between rounds, so a change in the
machine's load lands on all of them; images/s is the median over rounds, and each model's speed against
``--reference`` is the median of the per-round ratios. With several ``--precisions`` every model runs in each
(named ``model@precision``, the forward pass under ``core.lab.harness.autocast``), each row's ratio to the
reference is taken in its own precision, and ``speed_vs_<first precision>`` is each model against itself.
Writes a JSON file with images/s, the ratios, parameters and forward FLOPs per image.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lab.bench import interleaved_rounds, load_average, paired_ratio, write_result  # noqa: E402
from core.lab.experiment import count_parameters, versions  # noqa: E402
from core.lab.harness import (PRECISIONS, resolve_precision, select_device,  # noqa: E402
                              set_num_threads_from_env, to_plain)
from vision.models import MODEL_NAMES, PixelModelConfig, default_config, flops_per_image  # noqa: E402
from vision.train import train_config_for, training_contender  # noqa: E402


def contender(name: str, batch_size: int, shape: tuple[int, int, int], steps: int, device: torch.device,
              attention: dict, precision: str = "fp32", resnet_width: int | None = None
              ) -> tuple[dict, Callable[[], float]]:
    """Model ``name`` with its recipe: its row (config, size) and a call that runs ``steps`` training steps."""
    sizes = attention if name == "attention" else {"resnet_width": resnet_width} if name == "resnet" else {}
    config = default_config(name, *shape, num_classes=10, **sizes)
    train_config = train_config_for(name, batch_size=batch_size, precision=precision)
    model, call = training_contender(config, train_config, shape, 10, steps, device)
    row = {"model": name, "precision": precision, "batch_size": batch_size, "steps_per_round": steps,
           "params": count_parameters(model), "mflops_per_image_forward": flops_per_image(model, shape) / 1e6,
           "config": to_plain(config)}
    return row, call


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help=f"comma-separated models (default: {','.join(MODEL_NAMES)})")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--shape", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"),
                        help="image shape (default: 3 32 32, CIFAR-10)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per model per round (default: 4)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls of each model first (default: 1)")
    parser.add_argument("--conv-stages", type=int, default=0, metavar="K",
                        help="the attention model's first K stages convolutional, as `vision compare --conv-stages` "
                             "(default: 0)")
    parser.add_argument("--global-tokens", type=int, default=PixelModelConfig.global_max_tokens, metavar="N",
                        help="attention stages of at most N pixels global, as `vision compare --global-tokens` "
                             f"(default: {PixelModelConfig.global_max_tokens})")
    parser.add_argument("--resnet-width", type=int, default=None, metavar="W",
                        help="the ResNet's first-layer channels, as `vision compare --resnet-width` (default: 16)")
    parser.add_argument("--precisions", default="fp32",
                        help="comma-separated from fp32, bf16: the training forward pass's arithmetic; with more "
                             "than one, every model runs in each, as model@precision (default: fp32)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)")
    parser.add_argument("--reference", default="cnn",
                        help="model whose images/s the others are divided by, in the same run (default: cnn)")
    parser.add_argument("--out", default="runs/benchmarks/vision.json", help="JSON output file")
    args = parser.parse_args(argv)

    threads = set_num_threads_from_env()
    device = select_device(args.device)
    names = args.models.split(",")
    precisions = args.precisions.split(",")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise SystemExit(f"error: --precisions: {precision!r} is not one of {', '.join(PRECISIONS)}")
        try:
            resolve_precision(device, precision)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
    attention = {"conv_stages": args.conv_stages, "global_max_tokens": args.global_tokens}
    rows, calls = {}, {}
    for name, precision in itertools.product(names, precisions):
        key = name if len(precisions) == 1 else f"{name}@{precision}"
        rows[key], calls[key] = contender(name, args.batch_size, tuple(args.shape), args.steps, device, attention,
                                          precision, args.resnet_width)
        for _ in range(args.warmup):
            calls[key]()
    started_load = load_average()
    rounds = interleaved_rounds(calls, args.rounds, warmup=0)
    for key, row in rows.items():
        seconds = statistics.median(r[key] for r in rounds)
        row.update(images_per_second=args.steps * args.batch_size / seconds, seconds_per_step=seconds / args.steps,
                   round_seconds=[r[key] for r in rounds])
        print(f"{key:>14}: {row['images_per_second']:8.1f} images/s  ({row['params']:,} params, "
              f"{row['mflops_per_image_forward']:.0f} MFLOPs/image forward)", flush=True)
    # each model against the reference model in the same arithmetic; with several precisions, also against
    # itself in the first one (median of per-round ratios t_other / t_this)
    reference = args.reference if args.reference in {row["model"] for row in rows.values()} else None
    if reference is not None:
        for key, row in rows.items():
            other = reference if len(precisions) == 1 else f"{reference}@{row['precision']}"
            row[f"speed_vs_{reference}"] = paired_ratio(rounds, other, key)
            print(f"{key:>14}: {row[f'speed_vs_{reference}']:.2f}x the images/s of {other}")
    if len(precisions) > 1:
        for key, row in rows.items():
            row[f"speed_vs_{precisions[0]}"] = paired_ratio(rounds, f"{row['model']}@{precisions[0]}", key)
            print(f"{key:>14}: {row[f'speed_vs_{precisions[0]}']:.2f}x its images/s in {precisions[0]}")
    report = {"benchmark": "vision training throughput (forward + backward + step), interleaved rounds",
              "device": str(device), "threads": threads, "reference": reference, "rounds": args.rounds,
              "attention": attention, "precisions": precisions, "resnet_width": args.resnet_width,
              "load_average": {"start": started_load, "end": load_average()},
              "versions": versions(), "command": sys.argv, "results": list(rows.values())}
    print(f"wrote {write_result(args.out, report)}")
    return report


if __name__ == "__main__":
    main()
