"""The lessons of the notes as programs: each prints its numbers, draws where a picture helps, and checks
its claim against the attention library.

Teaching code, not part of the attention library API: lessons import core's attention modules and
`core.lab.plots`, never a domain. `python -m core` runs them; `run_lessons` is the same for callers that
build a page from the results (the tour).

    worked      q = (1, 2) against keys (1, 1), (0, 1), by hand            worked_example.py
    matrix      Q = Wq·I, K = Wk·I, V = Wv·I, A = Kᵀ·Q, Â, O = V·Â           matrix_form.py
    multihead   zero-block heads, split → attend → concat → Wo             multi_head.py
    scaling     softmax saturation without ÷√d                             scaling.py
    order       permutation equivariance without positions                 order.py
    causal      a decoder position cannot see the tokens after it          causal.py
    sinusoidal  PE(p + k) = M_k · PE(p)                                    sinusoidal.py
    norms       LayerNorm vs BatchNorm on a padded batch                   norms.py
    rnn         LSTM vs attention: sequential steps and time               rnn_vs_attention.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from core.lessons import (
    causal,
    matrix_form,
    multi_head,
    norms,
    order,
    rnn_vs_attention,
    scaling,
    sinusoidal,
    worked_example,
)
from core.lessons.base import LessonResult, Log, Table

__all__ = ["LESSONS", "LessonResult", "Table", "run_lessons", "write_report"]

#: `--lesson` name -> (module, one-line summary), in teaching order.
LESSONS = {
    "worked": (worked_example, "one query against two keys, by hand"),
    "matrix": (matrix_form, "the matrix form Q = Wq·I … O = V·Â on four tokens"),
    "multihead": (multi_head, "two zero-block heads: split, attend, concat, Wo"),
    "scaling": (scaling, "why the scores are divided by √d"),
    "order": (order, "without positions, permuting the inputs permutes the outputs"),
    "causal": (causal, "the decoder's causal mask: no position sees the tokens after it"),
    "sinusoidal": (sinusoidal, "a shift of the sinusoidal encoding is a fixed rotation"),
    "norms": (norms, "LayerNorm vs BatchNorm on a padded batch"),
    "rnn": (rnn_vs_attention, "LSTM vs attention: sequential steps and time"),
}


def run_lessons(
    out: str | Path | None,
    quick: bool = True,
    progress: bool = False,
    *,
    names: list[str] | None = None,
    plots: bool = True,
    lengths: tuple[int, ...] | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] | None = None,
    command: str = "python -m core",
) -> list[LessonResult]:
    """Run lessons in teaching order and write `report.md` (and the figures) into `out`.

    Args:
        out (str or Path, optional): folder for figures and report.md; None writes nothing.
        quick (bool, optional): the RNN-vs-attention timing on short lengths (16 … 1024) only. (default: True)
        progress (bool, optional): one line per finished lesson on stderr. (default: False)
        names (list[str], optional): lessons to run, from `LESSONS`. (default: all)
        plots (bool, optional): draw figures (needs `out`). (default: True)
        lengths (tuple[int], optional): sequence lengths for the timing lesson; overrides `quick`.
        device (str, optional): device for the timing lesson. (default: "cpu")
        echo (callable, optional): called with every printed line as it comes (the CLI passes `print`).
        command (str, optional): the command named at the top of report.md. (default: "python -m core")

    Returns:
        one `LessonResult` per lesson run, in order.
    """
    names = list(LESSONS) if names is None else names
    unknown = [n for n in names if n not in LESSONS]
    if unknown:
        raise ValueError(f"unknown lesson(s) {unknown}; choose from {list(LESSONS)}")
    out = None if out is None else Path(out)
    fig_dir = out if plots and out is not None else None
    results = []
    for i, name in enumerate(names, 1):
        module = LESSONS[name][0]
        kwargs = {"lengths": lengths, "device": device} if module is rnn_vs_attention else {}
        log, start = Log(echo), time.perf_counter()
        result = module.lesson(log, fig_dir, quick, **kwargs)
        lines = log.lines[2:] if log.lines[:1] == [""] and log.lines[1].startswith("== ") else log.lines
        result.log, result.seconds = "\n".join(lines).strip("\n"), time.perf_counter() - start  # title is separate
        results.append(result)
        if progress:
            print(f"[{i}/{len(names)}] {result.title} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)
    if out is not None:
        write_report(results, out / "report.md", command)
    return results


def write_report(results: list[LessonResult], path: str | Path, command: str = "python -m core") -> Path:
    """`report.md`: each lesson's title, text, tables, figures (relative links) and printed output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["# The lessons of the notes, run", "", f"`{command}`", ""]
    for r in results:
        parts += [f"## {r.title}", "", r.text, ""]
        for table in r.tables:
            parts += [table.to_markdown(), ""]
        for fig in r.figures:
            rel = fig.relative_to(path.parent) if fig.is_relative_to(path.parent) else fig
            parts += [f"![{fig.stem}]({rel.as_posix()})", ""]
        parts += ["Printed:", "", "```text", r.log, "```", "", f"*{r.seconds:.1f} s*", ""]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
