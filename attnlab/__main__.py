"""``python -m attnlab``: the tour. The notes' lessons, then attention on text, audio, images and graphs, in minutes.

    python -m attnlab                          # everything: lessons + the four quick demos (minutes on 2 cores)
    python -m attnlab --domains graph,text     # the lessons and two domains
    python -m attnlab --domains none           # the lessons alone

Writes ``<out>/index.html`` (one self-contained page: figures embedded, no scripts, nothing fetched) and
``<out>/report.md``. Each step keeps its outputs under ``<out>``; an interrupted tour resumes where it stopped
(``--no-resume`` starts afresh).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from attnlab.page import Section, render_html, render_markdown
from attnlab.tour import DOMAINS, domain_section, lesson_sections, run_domain

TITLE = "attnlab: a tour of self-attention"
INTRO = ("Self-attention turns every token into a query, a key and a value, scores each query against every "
         "key (q·k/√d), turns the scores into weights with a softmax and returns the weighted sum of the "
         "values. The lessons below compute each step of that in the open; the four sections after them train "
         "attention beside a CNN, RNN or GNN baseline on real data, in quick profiles of the full demos "
         "(fewer examples and epochs: the figures show the method, the full runs in docs/results give the "
         "numbers to quote).")


def domain_list(text: str) -> list[str]:
    """``--domains``: a comma list of text, audio, vision, graph; ``all`` or ``none``."""
    if text == "all":
        return list(DOMAINS)
    if text == "none":
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown domain(s) {unknown or text!r}; choose from {', '.join(DOMAINS)}, "
                                         f"'all' or 'none'")
    return names


def lesson_list(text: str) -> list[str]:
    """``--lessons``: a comma list of the names `python -m core --lesson` takes."""
    from core.lessons import LESSONS

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LESSONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown lesson(s) {unknown or text!r}; choose from {', '.join(LESSONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m attnlab", description=__doc__.split("\n")[0].removeprefix("``python -m attnlab``: "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each domain step is `python -m <domain> compare --quick`: real data (a subset), the same code path "
               "and outputs as the full demo. Data is found through $ATTNLAB_DATA (see README).")
    parser.add_argument("--out", default="runs/tour", help="folder for index.html, report.md and every step's "
                                                           "outputs (default: runs/tour)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the datasets, passed to every domain (default: $ATTNLAB_DATA, "
                             "else ~/.cache/attnlab)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the quick demos train (default: auto)")
    parser.add_argument("--domains", type=domain_list, default=list(DOMAINS),
                        help="which domains to run, comma-separated, or all / none (default: all)")
    parser.add_argument("--lessons", type=lesson_list, default=None,
                        help="which core lessons to show, comma-separated (default: all; see python -m core --help)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="skip steps that already finished in --out (default: resume)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from core.lessons import run_lessons

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a folder")
    if not args.resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = ["lessons", *args.domains]
    sections: list[Section] = []
    failed = []
    bar = tqdm(steps, desc="tour", unit="step", disable=True if args.no_progress else None)
    for step in bar:
        bar.set_postfix_str(step)
        started = time.perf_counter()
        if step == "lessons":
            sections += lesson_sections(run_lessons(out / "lessons", quick=True, progress=False, names=args.lessons), out / "lessons")
        else:
            extra = ["--data-dir", args.data_dir] if args.data_dir else []
            ok, error, _ = run_domain(step, out / step, device=args.device, progress=False, extra=extra)
            if not ok:
                failed.append(step)
            sections.append(domain_section(step, out / step, error))
        tqdm.write(f"{step}: {'done' if step not in failed else 'FAILED'} ({time.perf_counter() - started:.0f} s)",
                   file=sys.stderr)
    bar.close()
    page = out / "index.html"
    page.write_text(render_html(TITLE, INTRO, sections), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(TITLE, INTRO, sections, out), encoding="utf-8")
    print(f"wrote {page} and {out / 'report.md'}")
    if failed:
        print(f"error: step(s) failed: {', '.join(failed)} (see their sections and {out}/<step>/log.txt)",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
