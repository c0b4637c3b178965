"""Render the tour's sections as one self-contained HTML page and as Markdown.

The page carries its figures inside it (``data:image/png;base64``), its style inline and no scripts, so it
can be mailed, opened offline or archived as one file and never asks the network for anything.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Figure", "Table", "Section", "render_html", "render_markdown"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem;
       color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.4rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .85rem; }
.failed { color: #a00; font-weight: bold; }
.meta { color: #555; font-size: .9rem; }
"""


@dataclass
class Figure:
    """A PNG on disk and what it shows."""

    caption: str
    path: Path


@dataclass
class Table:
    """A small table: a header row and rows of already formatted cells."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """One part of the tour: a lesson group or a domain's quick compare.

    Attributes:
        key (str): a short id used for the anchor, e.g. ``"text"``.
        title (str): the heading.
        paragraphs (list[str]): what the section shows, in plain sentences.
        tables (list[Table]): result tables.
        figures (list[Figure]): PNG files, embedded into the page.
        blocks (list[str]): preformatted text (printed numbers).
        meta (str): one line of provenance: the command, its time, where the full outputs are.
        error (str): why the step failed, if it did ("" when it ran).
    """

    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    meta: str = ""
    error: str = ""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table_html(table: Table) -> list[str]:
    e = html.escape
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{e(table.caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table.rows]
    out.append("</table>")
    return out


def render_html(title: str, intro: str, sections: list[Section]) -> str:
    """The whole page as one string; every figure is read from disk and embedded.

    Raises:
        ValueError: a figure is not a PNG file (the page embeds PNGs only).
    """
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{e(title)}</h1>", f"<p>{e(intro)}</p>",
           "<nav>" + "".join(f'<a href="#{e(s.key)}">{e(s.title)}</a>' for s in sections) + "</nav>"]
    for s in sections:
        out.append(f'<section id="{e(s.key)}"><h2>{e(s.title)}</h2>')
        if s.error:
            out.append(f'<p class="failed">This step failed: {e(s.error)}</p>')
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        for table in s.tables:
            out += _table_html(table)
        out += [f"<pre>{e(b)}</pre>" for b in s.blocks]
        for fig in s.figures:
            if Path(fig.path).suffix.lower() != ".png":
                raise ValueError(f"{fig.path}: the tour page embeds PNG figures only")
            out.append(f'<figure><img src="{_data_uri(fig.path)}" alt="{e(fig.caption)}">'
                       f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        if s.meta:
            out.append(f'<p class="meta">{e(s.meta)}</p>')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(title: str, intro: str, sections: list[Section], relative_to: Path) -> str:
    """The same content as Markdown, figures linked relative to ``relative_to`` (the report's folder)."""
    lines = [f"# {title}", "", intro, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.error:
            lines += [f"**This step failed:** {s.error}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        for table in s.tables:
            if table.caption:
                lines += [f"*{table.caption}*", ""]
            lines += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
            lines += ["| " + " | ".join(row) + " |" for row in table.rows] + [""]
        for b in s.blocks:
            lines += ["```", b, "```", ""]
        for fig in s.figures:
            rel = Path(fig.path).resolve().relative_to(relative_to.resolve()) \
                if Path(fig.path).resolve().is_relative_to(relative_to.resolve()) else Path(fig.path).resolve()
            lines += [f"![{fig.caption}]({rel.as_posix()})", "", f"*{fig.caption}*", ""]
        if s.meta:
            lines += [f"<sub>{s.meta}</sub>", ""]
    return "\n".join(lines)
