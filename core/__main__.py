"""`python -m core`: the lessons of the notes, each with its numbers, its figure and its check.

Starts from the textbook example worked by hand (q = (1, 2) against keys (1, 1) and (0, 1)), then the
matrix form, multi-head attention, the √d scaling, order and positions, the sinusoidal shift, LayerNorm
vs BatchNorm, and an LSTM timed against attention on this machine. Figures and report.md go to --out.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from core.lab.cli import number_list
from core.lab.harness import set_num_threads_from_env
from core.lessons import LESSONS, run_lessons
from core.lessons.rnn_vs_attention import FULL_LENGTHS, QUICK_LENGTHS
from core.lessons.worked_example import worked_example

__all__ = ["build_parser", "main", "run", "worked_example"]


def build_parser() -> argparse.ArgumentParser:
    lesson_list = "\n".join(f"  {name:<11} {summary}" for name, (_, summary) in LESSONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m core",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the lessons of the notes: each prints its numbers, checks them against core's "
        "attention code, and draws a figure where one helps. All lessons take about a minute on 2 CPU "
        "cores; --full times the LSTM against attention up to length 4096 (minutes).",
        epilog=f"lessons (in order):\n{lesson_list}\n\n"
        "examples:\n  python -m core\n  python -m core --lesson matrix --lesson multihead --no-plots\n"
        "  python -m core --lesson rnn --lengths 16,256,4096",
    )
    parser.add_argument("--lesson", action="append", choices=list(LESSONS), metavar="NAME",
                        help="run only this lesson (repeatable; default: all, in order)")
    parser.add_argument("--out", default="runs/core", help="folder for figures and report.md (default: runs/core)")
    parser.add_argument("--no-plots", action="store_true", help="print and write report.md, draw no figures")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="full", action="store_false", default=False,
                      help=f"time the LSTM vs attention at lengths {','.join(map(str, QUICK_LENGTHS))} (default)")
    size.add_argument("--full", action="store_true",
                      help=f"time at lengths {','.join(map(str, FULL_LENGTHS))} (several minutes on 2 cores)")
    size.add_argument("--lengths", type=number_list(int, minimum=1), metavar="T1,T2,...",
                      help="time at these sequence lengths instead")
    parser.add_argument("--device", default="cpu", help="device for the timing lesson, e.g. cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: $ATTNLAB_THREADS, else torch's default)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the report's first line
    run(args)


def run(args: argparse.Namespace) -> None:
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    else:
        set_num_threads_from_env()
    start = time.perf_counter()
    results = run_lessons(
        Path(args.out), quick=not args.full, names=args.lesson, plots=not args.no_plots,
        lengths=tuple(args.lengths) if args.lengths else None,
        device=args.device, echo=print, command=shlex.join(["python", "-m", "core", *getattr(args, "argv", [])]),
    )
    print(f"\n{len(results)} lesson(s) in {time.perf_counter() - start:.0f} s; wrote {Path(args.out) / 'report.md'}")
    for figure in (f for r in results for f in r.figures):
        print(f"  {figure}")


if __name__ == "__main__":
    main()
