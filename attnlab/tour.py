"""The tour's steps: the core lessons, then each domain's quick compare, each resumable on its own.

A domain step runs ``python -m <domain> compare --quick --out <tour>/<domain>`` in a child process (so one
domain's failure or thread settings cannot touch the next) and reads back what every compare writes:
``metrics.json`` for the table and ``report.md`` for the figures and their captions. A step that finished
leaves ``.tour-done`` beside its outputs, holding the command it ran; a rerun skips it when the command is
the same, so an interrupted tour resumes where it stopped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from attnlab.page import Figure, Section, Table

__all__ = ["DOMAINS", "DomainStep", "domain_section", "run_domain", "lesson_sections", "figures_from_report"]

DONE = ".tour-done"


@dataclass(frozen=True)
class DomainStep:
    """What the tour says about one domain; the numbers come from its quick run."""

    key: str
    title: str
    paragraphs: tuple[str, ...]


DOMAINS = {
    "text": DomainStep("text", "Text: a sentence is a set of word vectors", (
        "Chunking on CoNLL-2000 (a subset): each word's vector attends to the others in its sentence, with a "
        "position bias so order counts, and a BiLSTM reads the same words left to right and back. The table "
        "gives span F1 (conlleval) on the test sentences; the validation sentences chose the epoch.",
        "The attention map shows, for one test sentence, how much each word (row) draws on every other word "
        "(column): most weight falls near the diagonal, on the words that open and close a phrase.",
    )),
    "audio": DomainStep("audio", "Audio: speech at about 100 frames per second", (
        "Spoken digits (FSDD): a recording becomes about 100 log-mel frames a second. Windowed attention lets "
        "each frame see only its neighbours (±w frames, a band mask from core), because the sound that "
        "decides a frame is close to it, and it keeps the cost linear in the length of the recording.",
        "The figures show the band of weights a frame spreads over its window, and how the models learned.",
    )),
    "vision": DomainStep("vision", "Vision: pixels as tokens, against a CNN", (
        "CIFAR-10 (a subset, shrunk to 16×16 pixels): every pixel (a vector of channels) is a token, and attention within a local "
        "neighbourhood plays the part a convolution's kernel plays. The CNN beside it has the same layout "
        "with a convolution in place of attention: a convolution is a special case of self-attention, with "
        "fixed weights per relative position, and that built-in prior is why it needs less data.",
    )),
    "graph": DomainStep("graph", "Graph: the adjacency matrix is the mask", (
        "Cora: each paper is a node vector; attention runs over all nodes, and the adjacency matrix masks "
        "the score matrix so a node attends only to its neighbours (GAT). The baseline has no attention.",
        "The figures show one node's neighbours weighted by attention, and the mask with the attention "
        "that falls under it.",
    )),
}

_FIGURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def figures_from_report(report: Path) -> list[Figure]:
    """The PNG figures a ``report.md`` shows, with their captions, in order; missing files are skipped."""
    if not report.exists():
        return []
    figures = []
    for caption, target in _FIGURE.findall(report.read_text(encoding="utf-8")):
        path = (report.parent / target).resolve()
        if path.suffix.lower() == ".png" and path.is_file():
            figures.append(Figure(caption, path))
    return figures


def _cell(mean: float, std: float | None, seeds: int, name: str) -> str:
    percent = any(w in name for w in ("acc", "f1", "wer", "per", "error")) and 0.0 <= mean <= 1.0
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{mean * scale:.1f}{unit}" if percent else f"{mean:.4g}"
    if seeds > 1 and std is not None:
        text += f" ± {std * scale:.1f}"
    return text


def metrics_table(metrics: dict) -> Table:
    """One row per model: the headline metric and the validation metric that selected, else every test_ metric."""
    results = metrics.get("results", [])
    contract = metrics.get("contract") or {}
    headline, selects = contract.get("headline"), contract.get("select")
    names = [n for n in (headline, selects) if n]
    if not names:
        seen: list[str] = []
        for r in results:
            seen += [k for k in r.get("metrics", {}) if k.startswith("test_") and k not in seen]
        names = seen or sorted({k for r in results for k in r.get("metrics", {})})
    rows = []
    for r in results:
        m, s, seeds = r.get("metrics", {}), r.get("std", {}), len(r.get("runs", [])) or 1
        rows.append([r.get("model", "?"), r.get("role", "")]
                    + [_cell(m[n], s.get(n), seeds, n) if n in m else "—" for n in names])
    return Table(["model", "role", *names], rows)


def run_domain(key: str, out: Path, *, device: str, progress: bool, extra: list[str] = ()) -> tuple[bool, str, float]:
    """Run one domain's quick compare into ``out`` unless a finished run with the same command is there.

    Returns:
        (ok, message, seconds): whether it succeeded (or was already done), the failure's last lines, and
        how long it took now (0 when skipped).
    """
    command = [sys.executable, "-m", key, "compare", "--quick", "--out", str(out), "--device", device, *extra]
    if not progress:
        command.append("--no-progress")
    marker = out / DONE
    if marker.exists() and json.loads(marker.read_text()).get("command") == command[1:]:
        return True, "", 0.0
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.txt").write_text(done.stdout)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.strip().splitlines()[-6:])
        return False, f"`python -m {key} compare --quick` exited {done.returncode}: {tail}", seconds
    marker.write_text(json.dumps({"command": command[1:], "seconds": seconds}))
    return True, "", seconds


def domain_section(key: str, out: Path, error: str = "") -> Section:
    """The section for one domain, from what its quick compare wrote to ``out``."""
    step = DOMAINS[key]
    section = Section(key, step.title, list(step.paragraphs), error=error)
    metrics_file = out / "metrics.json"
    if metrics_file.exists():
        metrics = json.loads(metrics_file.read_text())
        table = metrics_table(metrics)
        table.caption = f"{metrics.get('dataset', '')}: quick profile".strip(": ")
        section.tables.append(table)
        selection = metrics.get("selection_note") or metrics.get("report_note")
        if selection:
            selection = str(selection)
            section.paragraphs.append(selection[:1].upper() + selection[1:])
    elif not error:
        section.error = f"{metrics_file} is missing"
    section.figures = figures_from_report(out / "report.md")
    seconds = ""
    marker = out / DONE
    if marker.exists():
        seconds = f" in {json.loads(marker.read_text()).get('seconds', 0.0):.0f} s"
    section.meta = f"python -m {key} compare --quick{seconds}; full outputs in {out}"
    return section


def lesson_sections(results: list, out: Path) -> list[Section]:
    """One section per core lesson: its paragraph, tables, printed numbers and figures."""
    sections = []
    for lesson in results:
        section = Section(f"lesson-{lesson.name}", lesson.title, [lesson.text])
        section.tables = [Table(list(t.columns), [list(r) for r in t.rows], t.caption) for t in lesson.tables]
        if lesson.log:
            section.blocks.append(lesson.log.rstrip())
        section.figures = [Figure(f"{lesson.title}: {Path(f).stem.replace('_', ' ')}", Path(f)) for f in lesson.figures]
        section.meta = f"python -m core --lesson {lesson.name} ({lesson.seconds:.1f} s); outputs in {out}"
        sections.append(section)
    return sections
