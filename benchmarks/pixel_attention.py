"""Benchmark attention over pixels (the core paths vision uses); prints a table and writes JSON.

1. **2-D windows.** A K×K neighbourhood around every pixel of a side×side image (`core.masks.window2d_mask`),
   served by the blocked path (`core.local.local_attention_2d`: only each tile's neighbourhood is scored)
   against the dense masked path (the fused kernel with the same (T, T) bool mask), forward+backward,
   side 32 and 64, K = 3, 5, 7. Target: the blocked path >= 3x faster at 32x32 and 64x64.
2. **Relative 2-D position bias.** Global attention over a side×side image with a relative 2-D bias against
   the same attention without it, forward+backward (training: the bias needs a gradient) and forward alone
   (no gradient: evaluation), T = 1024 and 4096, for two biases: a learned table
   (`core.positional.RelativePositionBias2d`, random values: built as a (H, T, S) tensor) and Cordonnier's
   quadratic encoding (`core.positional.QuadraticPositionBias2d`, random centres and sharpness: run on the
   fused kernel as four extra query/key channels). Target: with the bias <= 1.25x the time without it,
   forward+backward.

Both sides of every ratio get the same q, k, v; the contenders run interleaved, round by round
(`core.lab.bench`), and a ratio is the median of the per-round ratios.

    python benchmarks/pixel_attention.py --threads 2 [--out benchmarks/results/pixel_attention.json] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.attention import fused_attention, scaled_dot_product_attention  # noqa: E402
from core.lab.bench import interleaved_rounds, machine, paired_ratio, summarize, write_result  # noqa: E402
from core.local import local_attention_2d, tile_for_radius  # noqa: E402
from core.masks import window2d_mask  # noqa: E402
from core.positional import QuadraticPositionBias2d, RelativePositionBias2d  # noqa: E402

BATCH, HEADS, HEAD_DIM = 4, 2, 32  # a pixel stage of width 64: two heads of 32


def _inputs(T: int, requires_grad: bool = True, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, HEADS, T, HEAD_DIM, generator=g).requires_grad_(requires_grad) for _ in range(3)]


def _backward(out: torch.Tensor) -> None:
    out.sum().backward()


def bench_windows(sides, sizes, rounds: int) -> list[dict]:
    rows = []
    for side in sides:
        for size in sizes:
            T = side * side
            q, k, v = _inputs(T)
            mask = window2d_mask(side, side, size)
            dense = mask.dense()
            scale = HEAD_DIM**-0.5
            times = interleaved_rounds({
                "dense": lambda: _backward(fused_attention(q, k, v, dense, None, dropout=0.0, scale=scale)),
                "blocked": lambda: _backward(local_attention_2d(q, k, v, mask, scale=scale)),
            }, rounds)
            row = {"side": side, "K": size, "T": T, **{f"{n}_ms": s["median_ms"] for n, s in summarize(times).items()},
                   "speedup": paired_ratio(times, "dense", "blocked")}
            t = tile_for_radius(size // 2, size // 2)
            row["scored_fraction"] = (t + size - 1) ** 2 / T  # keys scored per query by the blocked path, of T
            rows.append(row)
            print(f"  window {side}x{side} K={size}: dense {row['dense_ms']:8.1f} ms  blocked {row['blocked_ms']:7.1f} ms"
                  f"  speed-up {row['speedup']:5.2f}x", flush=True)
    return rows


def make_bias(kind: str, side: int) -> torch.nn.Module:
    """A relative 2-D bias over a side×side grid with random values (seeded): ``table`` or ``quadratic``."""
    g = torch.Generator().manual_seed(1)
    if kind == "table":
        bias = RelativePositionBias2d(HEADS, side - 1, side)
        with torch.no_grad():
            bias.bias.normal_(generator=g)
        return bias
    bias = QuadraticPositionBias2d(HEADS, side)
    with torch.no_grad():  # centres within a few pixels, sharpness 0.002 to 0.02 (float32 keeps the factors)
        bias.centre.normal_(0.0, 3.0, generator=g)
        bias.log_sharpness.uniform_(math.log(0.002), math.log(0.02), generator=g)
    return bias


def bench_bias(sides, rounds: int, kind: str) -> list[dict]:
    rows = []
    for side in sides:
        T = side * side
        bias = make_bias(kind, side)
        index = torch.arange(T)
        factored = hasattr(bias, "factors") and bias.factors(index, index, torch.float32) is not None
        row: dict = {"side": side, "T": T, "kind": kind, "factored": factored}
        for mode in ("train", "eval"):
            grad = mode == "train"
            q, k, v = _inputs(T, requires_grad=grad)
            bias.requires_grad_(grad)

            def run(with_bias: bool):
                with torch.set_grad_enabled(grad):
                    out = scaled_dot_product_attention(q, k, v, position_bias=bias if with_bias else None)
                    if grad:
                        _backward(out)

            reps = rounds if T <= 1024 else max(3, rounds // 3)
            times = interleaved_rounds({"plain": lambda: run(False), "bias": lambda: run(True)}, reps)
            stats = summarize(times)
            row[mode] = {"plain_ms": stats["plain"]["median_ms"], "bias_ms": stats["bias"]["median_ms"],
                         "ratio": paired_ratio(times, "bias", "plain"), "rounds": reps}
            print(f"  {kind:9s} bias {side}x{side} {'forward+backward' if grad else 'forward, no grad':17s}: without "
                  f"{row[mode]['plain_ms']:8.1f} ms  with {row[mode]['bias_ms']:8.1f} ms  ratio {row[mode]['ratio']:5.2f}x",
                  flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/benchmarks/pixel_attention.json", help="JSON output path")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per point (default: 9)")
    parser.add_argument("--quick", action="store_true", help="32x32 only, 3 rounds (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sides = (32,) if args.quick else (32, 64)
    rounds = 3 if args.quick else args.rounds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B={BATCH}, H={HEADS}, Dh={HEAD_DIM}")
    print("1. 2-D window: blocked path vs the dense masked fused kernel, forward+backward")
    windows = bench_windows(sides, (3, 5, 7), rounds)
    print("2. relative 2-D position bias vs none, global attention")
    bias = bench_bias(sides, rounds, "table")
    quadratic = bench_bias(sides, rounds, "quadratic")
    result = {
        "benchmark": "pixel_attention", **machine(), "batch": BATCH, "heads": HEADS, "head_dim": HEAD_DIM,
        "windows": windows, "bias": bias, "quadratic_bias": quadratic,
        "targets": {"window_speedup_min": 3.0, "bias_train_ratio_max": 1.25},
        "summary": {
            "window_speedup_min": {f"{s}x{s}": min(r["speedup"] for r in windows if r["side"] == s) for s in sides},
            **{f"{name}_{mode}_ratio": {f"{r['side']}x{r['side']}": r[mode]["ratio"] for r in rows}
               for name, rows in (("bias", bias), ("quadratic_bias", quadratic)) for mode in ("train", "eval")},
        },
    }
    print(f"wrote {write_result(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
