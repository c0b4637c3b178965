"""Full vs windowed vs truncated attention on long audio: time and memory of forward + backward.

    python benchmarks/audio_attention.py --threads 1 --seconds 5 10 20 30 60 --model-seconds 10 30 \
        --out runs/audio/benchmark.json

For each input length (100 frames per second of audio) and each variant this measures, with the same
model settings as ``python -m audio compare --task connected`` and the same random input for every variant:

- ``attention``: one core attention call (``core.attention.scaled_dot_product_attention``) on
  ``(1, H, T, Dh)`` queries, keys and values under the variant's mask with the relative position bias:
  median seconds of forward + backward, MB saved for backward, and peak memory growth (fresh subprocess);
- ``model``: the whole attention model (stem, layers, head) the same way (``--model-seconds``).

The three variants of one length are timed in interleaved rounds with alternating order
(``core.lab.bench``), and each speed-up is the median of the per-round ratios, so background load on a
shared CPU hits both sides of a ratio alike. It ends by checking the targets at the longest length:
windowed attention at least 5x faster and using at least 10x less attention memory than full attention.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audio.cost import make_pass, measure_peak, saved_bytes  # noqa: E402
from audio.models import ATTENTIONS, AudioConfig  # noqa: E402
from core.lab.bench import interleaved_rounds, load_average, paired_ratio, summarize  # noqa: E402
from core.lab.experiment import versions  # noqa: E402
from core.lab.harness import atomic_open, set_num_threads_from_env  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 10, 20, 30, 60],
                        help="audio lengths for the attention measurements (default: 5 10 20 30 60)")
    parser.add_argument("--model-seconds", type=float, nargs="*", default=[10, 30],
                        help="audio lengths for whole-model measurements; none to skip (default: 10 30)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved timed rounds per length, after a warm-up round (default: 5)")
    parser.add_argument("--dim", type=int, default=64, help="model width D; feed-forward width 2D (default: 64)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--layers", type=int, default=4, help="encoder layers of the whole model (default: 4)")
    parser.add_argument("--window", type=int, default=16, help="window: frames seen on each side (default: 16)")
    parser.add_argument("--chunk", type=int, default=32, help="truncated: frames per chunk (default: 32)")
    parser.add_argument("--left-chunks", type=int, default=2, help="truncated: chunks of left context (default: 2)")
    parser.add_argument("--no-peak", action="store_true", help="skip the subprocess peak-memory measurements")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: $ATTNLAB_THREADS, else torch's default)")
    parser.add_argument("--out", default="runs/audio/benchmark.json", help="JSON output (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        set_num_threads_from_env()
    torch.manual_seed(0)
    base = AudioConfig(task="frame", num_classes=11, dim=args.dim, ffn_dim=2 * args.dim, heads=args.heads, layers=args.layers,
                       window=args.window, chunk=args.chunk, left_chunks=args.left_chunks)
    rows, ratios = [], []
    load_start = load_average()
    for scope, lengths in (("attention", args.seconds), ("model", args.model_seconds)):
        for seconds in lengths:
            T = round(seconds * 100)
            configs = {a: AudioConfig(**{**asdict(base), "attention": a}) for a in ATTENTIONS}
            calls, saved = {}, {}
            for attention, config in configs.items():
                torch.manual_seed(0)  # the same random input (and weights) for every variant
                _, run_pass = make_pass(config, T, scope=scope)
                saved[attention] = saved_bytes(run_pass)[1] / 2**20
                calls[attention] = lambda run_pass=run_pass: run_pass().sum().backward()
            rounds = interleaved_rounds(calls, args.repeats)
            timing = summarize(rounds)
            for attention, config in configs.items():
                row = {"scope": scope, "attention": config.describe(), "variant": attention, "audio_seconds": seconds,
                       "frames": T, "seconds": timing[attention]["median_ms"] / 1000, "rounds": len(rounds),
                       "saved_mb": saved[attention]}
                if not args.no_peak:
                    row["peak_mb"] = measure_peak(config, T, scope=scope)
                rows.append(row)
                print(f"{scope:9s} {seconds:5.0f} s {row['attention']:22s} {row['seconds']:8.3f} s  "
                      f"saved {row['saved_mb']:9.1f} MB" + (f"  peak {row['peak_mb']:9.1f} MB" if "peak_mb" in row else ""),
                      flush=True)
            ratios.append({"scope": scope, "audio_seconds": seconds, "rounds": len(rounds),
                           "full_over_window": paired_ratio(rounds, "full", "window"),
                           "full_over_truncated": paired_ratio(rounds, "full", "truncated")})

    longest = max(args.seconds)
    at = {r["variant"]: r for r in rows if r["scope"] == "attention" and r["audio_seconds"] == longest}
    paired = next(r for r in ratios if r["scope"] == "attention" and r["audio_seconds"] == longest)
    targets = {
        "audio_seconds": longest,
        "window_speedup": paired["full_over_window"],  # median of per-round ratios
        "window_saved_memory_ratio": at["full"]["saved_mb"] / at["window"]["saved_mb"],
        "truncated_speedup": paired["full_over_truncated"],
        "truncated_saved_memory_ratio": at["full"]["saved_mb"] / at["truncated"]["saved_mb"],
    }
    if "peak_mb" in at["full"]:
        targets["window_peak_memory_ratio"] = at["full"]["peak_mb"] / max(at["window"]["peak_mb"], 1e-3)
    targets["pass"] = targets["window_speedup"] >= 5 and targets["window_saved_memory_ratio"] >= 10
    print(json.dumps(targets, indent=2))
    path = Path(args.out)
    with atomic_open(path, "w") as f:
        json.dump({"config": asdict(base), "threads": torch.get_num_threads(), "versions": versions(),
                   "command": sys.argv, "timing": "interleaved rounds, alternating order; ratios: median of per-round "
                   "ratios (core.lab.bench)", "load_average_start": load_start, "load_average_end": load_average(),
                   "rows": rows, "ratios": ratios, "targets": targets}, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
