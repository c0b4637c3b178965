"""What a lesson hands back, and the small printing helpers every lesson shares.

A lesson is a function `lesson(log, fig_dir, quick) -> LessonResult`. It prints through `log` (so the
command line can stream it and a web page can show the same text), draws into `fig_dir` (None: no
figures) and returns its headline numbers, tables and figure paths.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from torch import Tensor

__all__ = ["LessonResult", "Table", "Log", "print_options", "fmt", "header"]


@dataclass
class Table:
    """A small table: `columns` names, `rows` of already formatted cells."""

    caption: str
    columns: list[str]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [line(self.columns), f"|{'|'.join(' --- ' for _ in self.columns)}|"] + [line(r) for r in self.rows]
        return f"*{self.caption}*\n\n" + "\n".join(lines)

    def to_text(self) -> str:
        cells = [self.columns] + self.rows
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
        return "\n".join([fmt.format(*self.columns)] + [fmt.format(*row) for row in self.rows])


@dataclass
class LessonResult:
    """One lesson's outcome, enough to print it, test it or build a page from it.

    Attributes:
        name (str): the `--lesson` name, e.g. ``"matrix"``.
        title (str): a one-line heading.
        text (str): what the lesson shows, in a short paragraph (plain text).
        log (str): everything the lesson printed (matrices, steps), for a `<pre>` block.
        numbers (dict[str, float]): the headline numbers, by name (tests read these).
        tables (list[Table]): the lesson's tables.
        figures (list[Path]): PNG files written (empty with no figure folder).
        seconds (float): wall time the lesson took.
    """

    name: str
    title: str
    text: str
    log: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0


class Log:
    """Collects a lesson's printed lines and, when given `echo`, passes each one on as it comes."""

    def __init__(self, echo: Callable[[str], None] | None = None):
        self.lines: list[str] = []
        self.echo = echo

    def __call__(self, *parts: object) -> None:
        for line in " ".join(str(p) for p in parts).split("\n"):
            self.lines.append(line)
            if self.echo is not None:
                self.echo(line)

    def matrix(self, name: str, m: Tensor | np.ndarray, note: str = "") -> None:
        """Print `name` (and a note) over the matrix, indented, with the lesson print options."""
        a = m.detach().cpu().numpy() if isinstance(m, Tensor) else np.asarray(m)
        if np.all(a == np.round(a)):  # integer matrices print as integers
            a = a.astype(np.int64)
        with print_options():
            body = np.array2string(a, separator=" ")
        self(f"  {name}{'   ' + note if note else ''}")
        self("\n".join("    " + line for line in body.split("\n")))

    def table(self, table: Table) -> None:
        self(table.to_text())

    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def print_options(precision: int = 3) -> Iterator[None]:
    """numpy print options for the lessons: fixed precision, no scientific notation for small values."""
    with np.printoptions(precision=precision, suppress=True, linewidth=110, floatmode="fixed"):
        yield


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table cell: fixed digits, or scientific when tiny but non-zero."""
    if x == 0:
        return "0"
    if abs(x) < 10 ** -digits:
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def header(log: Log, title: str) -> None:
    log("")
    log(f"== {title} ==")

