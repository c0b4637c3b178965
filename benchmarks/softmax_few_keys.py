"""Softmax over few keys on the CPU: `torch.softmax` against the same rows padded to one vector's length.

On the CPU, `torch.softmax(x, dim=-1)` over a last dim shorter than one 64-byte vector (16 float32 numbers, 32
bfloat16 or float16) takes a slow path: per number it costs several times what a row one vector long does.
Attention in this project meets such rows all the time: a dictionary word's letters, a decoder's short prefix,
one query's few keys. `core.attention.softmax_last` pads them with `-inf` to the vector's length (weights
exactly 0) and cuts the padding off again, from the shortest row `core.attention.CPU_SOFTMAX_PAD` names; this
benchmark is the evidence for that rule and its bounds. For each dtype and S = 1 ... 32 keys, with the work held
about constant (rows × S = 2¹⁸ numbers), it times on the same scores `torch.softmax` and the padded softmax,
forward alone (evaluation, decoding) and forward + backward (training), and says which one `softmax_last` takes.
Interleaved rounds in alternating order (`core.lab.bench`); each speed-up is the median of the per-round
ratios plain / padded (> 1: padding is faster).

    python benchmarks/softmax_few_keys.py --threads 2 --out benchmarks/results/softmax_few_keys.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.attention import CPU_SOFTMAX_PAD, softmax_last  # noqa: E402
from core.lab.bench import interleaved_rounds, machine, paired_ratio, summarize, write_result  # noqa: E402

LENGTHS = (1, 2, 3, 4, 6, 8, 9, 12, 15, 16, 17, 24, 31, 32)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
WORK = 2**18  # rows × S at every point


def vector_length(dtype: torch.dtype) -> int:
    """Numbers of `dtype` in one 64-byte (AVX-512) vector."""
    return 64 // torch.empty((), dtype=dtype).element_size()


def padded_softmax(x: torch.Tensor, width: int) -> torch.Tensor:
    """Softmax over the last dim with the rows padded by `-inf` to `width` entries first."""
    return torch.softmax(F.pad(x, (0, width - x.shape[-1]), value=float("-inf")), dim=-1)[..., :x.shape[-1]]


def rule_pads(dtype: torch.dtype, S: int) -> bool:
    """Whether `core.attention.softmax_last` pads rows of S entries of this dtype on the CPU (asked of it: a
    padded result keeps the padded row stride)."""
    return softmax_last(torch.zeros(2, S, dtype=dtype)).stride(0) != S


def point(dtype_name: str, S: int, rounds: int, seed: int) -> dict:
    """Both softmaxes at S keys, forward alone and forward + backward, on the same scores."""
    dtype = DTYPES[dtype_name]
    width = vector_length(dtype)
    x = torch.randn(max(1, WORK // S), S, generator=torch.Generator().manual_seed(seed)).to(dtype)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    xg = x.clone().requires_grad_()

    def train(fn):
        def call():
            fn(xg).backward(grad)
            xg.grad = None
        return call

    out = {"dtype": dtype_name, "S": S, "rows": x.shape[0], "padded_to": width if S < width else None,
           "softmax_last_pads": rule_pads(dtype, S)}
    if S >= width:  # nothing to pad: the plain softmax alone, for its cost per number
        timed = interleaved_rounds({"plain": lambda: torch.softmax(x, dim=-1),
                                    "plain_train": train(lambda t: torch.softmax(t, dim=-1))}, rounds)
        summary = summarize(timed)
        out["plain_ns_per_number_eval"] = 1e6 * summary["plain"]["median_ms"] / x.numel()
        out["plain_ns_per_number_train"] = 1e6 * summary["plain_train"]["median_ms"] / x.numel()
        return out
    torch.testing.assert_close(padded_softmax(x, width), torch.softmax(x, dim=-1))
    pad = lambda t: padded_softmax(t, width)  # noqa: E731
    for mode, fns in (("eval", {"plain": lambda: torch.softmax(x, dim=-1), "padded": lambda: pad(x)}),
                      ("train", {"plain": train(lambda t: torch.softmax(t, dim=-1)), "padded": train(pad)})):
        timed = interleaved_rounds(fns, rounds)
        summary = summarize(timed)
        out[f"plain_ns_per_number_{mode}"] = 1e6 * summary["plain"]["median_ms"] / x.numel()
        out[f"padded_ns_per_number_{mode}"] = 1e6 * summary["padded"]["median_ms"] / x.numel()
        out[f"speedup_{mode}"] = paired_ratio(timed, "plain", "padded")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds per point (default: 7)")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16,float64",
                        help="comma-separated dtypes to time (default: %(default)s)")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)),
                        help="comma-separated key counts S (default: %(default)s)")
    parser.add_argument("--out", default="runs/softmax_few_keys.json", help="JSON output (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be >= 1")
    try:
        lengths = [int(s) for s in args.lengths.split(",")]
    except ValueError:
        parser.error(f"--lengths {args.lengths!r}: expected comma-separated integers")
    if not lengths or min(lengths) < 1:
        parser.error("--lengths: every S must be >= 1")
    dtypes = args.dtypes.split(",")
    unknown = sorted(set(dtypes) - set(DTYPES))
    if unknown:
        parser.error(f"--dtypes: unknown {', '.join(unknown)}; choose from {', '.join(DTYPES)}")
    torch.set_num_threads(args.threads)
    points = []
    for dtype_name in dtypes:
        for S in lengths:
            p = point(dtype_name, S, args.rounds, seed=len(points))
            points.append(p)
            line = f"{dtype_name:8s} S={S:3d}: plain {p['plain_ns_per_number_eval']:6.2f} ns/number"
            if "speedup_eval" in p:
                line += (f", padded to {p['padded_to']} {p['padded_ns_per_number_eval']:6.2f}: "
                         f"{p['speedup_eval']:.2f}x forward, {p['speedup_train']:.2f}x forward + backward")
            print(line + (" (softmax_last pads)" if p["softmax_last_pads"] else ""), file=sys.stderr, flush=True)
    result = {
        "benchmark": "softmax over the last dim on the CPU: torch.softmax against the rows padded with -inf to one "
                     "64-byte vector (core.attention.softmax_last's rule)",
        **machine(), "command": sys.argv, "rounds": args.rounds, "work_numbers_per_point": WORK,
        "rule": {str(dtype).removeprefix("torch."): {"shortest_padded": shortest, "padded_to": width}
                 for dtype, (shortest, width) in CPU_SOFTMAX_PAD.items()},
        "timing": "interleaved rounds, alternating order; ns per number from the median round; speed-ups: median of "
                  "per-round ratios time(plain) / time(padded) (core.lab.bench)",
        "points": points,
    }
    print(f"wrote {write_result(args.out, result)}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
