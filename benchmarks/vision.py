"""Training throughput of the vision models: images per second, forward + backward + optimizer step.

    python benchmarks/vision.py [--models attention,cnn,resnet] [--batch-size 128] [--out FILE]

Random images of the CIFAR-10 shape by default; each model is timed over ``--steps`` steps after
``--warmup`` untimed ones, with its own training recipe (optimizer, channels-last for the ResNet).
Writes a JSON file with images/s, parameters and forward FLOPs per image.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lab.experiment import count_parameters, versions  # noqa: E402
from core.lab.harness import select_device, set_num_threads_from_env, to_plain  # noqa: E402
from vision.models import MODEL_NAMES, build_model, default_config, flops_per_image  # noqa: E402
from vision.train import classification_step, make_optimizer, timed_steps, train_config_for  # noqa: E402


def images_per_second(name: str, batch_size: int, shape: tuple[int, int, int], steps: int, warmup: int,
                      device: torch.device) -> dict:
    torch.manual_seed(0)
    config = default_config(name, *shape, num_classes=10)
    model = build_model(name, to_plain(config)).to(device).train()
    train_config = train_config_for(name, batch_size=batch_size)
    optimizer = make_optimizer(model, train_config)
    step = classification_step(device, train_config.label_smoothing)
    images = torch.randn(batch_size, *shape, device=device)
    if train_config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    batch = (images, torch.randint(0, 10, (batch_size,), device=device))
    seconds = timed_steps(model, optimizer, step, itertools.repeat(batch, warmup + steps), warmup, device)
    return {
        "model": name, "images_per_second": steps * batch_size / seconds, "seconds_per_step": seconds / steps,
        "batch_size": batch_size, "params": count_parameters(model),
        "mflops_per_image_forward": flops_per_image(model, shape) / 1e6, "config": to_plain(config),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help=f"comma-separated models (default: {','.join(MODEL_NAMES)})")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default: 128)")
    parser.add_argument("--shape", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"),
                        help="image shape (default: 3 32 32, CIFAR-10)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: auto)")
    parser.add_argument("--reference", default="cnn",
                        help="model whose images/s the others are divided by, in the same run (default: cnn)")
    parser.add_argument("--out", default="runs/benchmarks/vision.json", help="JSON output file")
    args = parser.parse_args(argv)

    threads = set_num_threads_from_env()
    device = select_device(args.device)
    results = []
    for name in args.models.split(","):
        row = images_per_second(name, args.batch_size, tuple(args.shape), args.steps, args.warmup, device)
        results.append(row)
        print(f"{name:>10}: {row['images_per_second']:8.1f} images/s  ({row['params']:,} params, "
              f"{row['mflops_per_image_forward']:.0f} MFLOPs/image forward)", flush=True)
    reference = next((r for r in results if r["model"] == args.reference), None)
    if reference is not None:
        for row in results:
            row[f"speed_vs_{args.reference}"] = row["images_per_second"] / reference["images_per_second"]
            print(f"{row['model']:>10}: {row[f'speed_vs_{args.reference}']:.2f}x the images/s of {args.reference}")
    report = {"benchmark": "vision training throughput (forward + backward + step)", "device": str(device),
              "threads": threads, "reference": args.reference if reference is not None else None, "versions": versions(), "command": sys.argv, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
