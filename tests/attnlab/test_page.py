import re

import matplotlib

matplotlib.use("Agg")
import pytest
from matplotlib.figure import Figure as MplFigure

from attnlab.page import Figure, Section, Table, render_html, render_markdown
from attnlab.tour import figures_from_report, metrics_table
from tests.attnlab.browser import open_in_chromium


def _png(path):
    fig = MplFigure(figsize=(2, 1.5))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def _sections(tmp_path):
    return [Section("text", "Text <words>", ["a & b"], [Table(["model", "acc"], [["attention", "91.0%"]])],
                    [Figure("curve", _png(tmp_path / "a.png"))]),
            Section("graph", "Graph", ["adjacency"], figures=[Figure("mask", _png(tmp_path / "b.png"))],
                    error="exited 1")]


def test_page_is_self_contained_and_escaped(tmp_path):
    page = render_html("tour", "intro", _sections(tmp_path))
    assert page.count('src="data:image/png;base64,') == 2
    assert "<script" not in page and "http" not in page
    assert "Text &lt;words&gt;" in page and "a &amp; b" in page
    assert re.search(r"This step failed: exited 1", page)


def test_page_refuses_a_figure_that_is_not_png(tmp_path):
    (tmp_path / "x.svg").write_text("<svg/>")
    with pytest.raises(ValueError, match="PNG"):
        render_html("t", "i", [Section("s", "S", figures=[Figure("c", tmp_path / "x.svg")])])


def test_markdown_links_figures_relative_to_the_report(tmp_path):
    text = render_markdown("tour", "intro", _sections(tmp_path), tmp_path)
    assert "![curve](a.png)" in text and "| attention | 91.0% |" in text


def test_figures_come_from_the_report_in_order(tmp_path):
    _png(tmp_path / "one.png")
    _png(tmp_path / "two.png")
    (tmp_path / "report.md").write_text("# r\n![Second](two.png)\n![First](one.png)\n![gone](missing.png)\n")
    figs = figures_from_report(tmp_path / "report.md")
    assert [(f.caption, f.path.name) for f in figs] == [("Second", "two.png"), ("First", "one.png")]


def test_metrics_table_shows_headline_and_selecting_metric():
    metrics = {"contract": {"headline": "test_accuracy", "select": "val_accuracy"}, "results": [
        {"model": "gat", "role": "attention", "metrics": {"test_accuracy": 0.8, "val_accuracy": 0.79,
                                                         "train_loss": 0.1},
         "std": {"test_accuracy": 0.01}, "runs": [{}, {}]}]}
    table = metrics_table(metrics)
    assert table.header == ["model", "role", "test_accuracy", "val_accuracy"]
    assert table.rows == [["gat", "attention", "80.0% ± 1.0", "79.0%"]]


def test_the_page_renders_in_chromium(tmp_path):
    page = tmp_path / "index.html"
    page.write_text(render_html("tour", "intro", _sections(tmp_path)))
    seen = open_in_chromium(page, tmp_path / "index.png")
    assert seen["widths"] and all(w > 0 for w in seen["widths"])
    assert seen["sections"] == ["text", "graph"]
    assert seen["requested"] == []
    assert (tmp_path / "index.png").stat().st_size > 1000
