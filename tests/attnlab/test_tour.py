"""The tour end to end, shortened for CI: two lessons and the graph quick demo, opened in a real browser."""

import json

import pytest

from attnlab.__main__ import build_parser, main
from tests.attnlab.browser import open_in_chromium


def test_bad_options_are_refused_naming_them(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--domains", "text,sound"])
    assert "unknown domain(s) ['sound']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--lessons", "nope"])
    assert "unknown lesson(s) ['nope']" in capsys.readouterr().err


def test_short_tour_writes_a_page_that_a_browser_shows_whole(tmp_path, monkeypatch):
    out = tmp_path / "tour"
    args = ["--out", str(out), "--domains", "graph", "--lessons", "worked,matrix", "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    page = out / "index.html"
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    seen = open_in_chromium(page, out / "index.png")
    assert seen["sections"] == ["lesson-worked", "lesson-matrix", "graph"]
    assert len(seen["widths"]) >= 3 and all(w > 0 for w in seen["widths"])  # graph's three figures decode
    assert seen["requested"] == []
    assert "| gat | attention |" in (out / "report.md").read_text()

    # a second run resumes: the finished graph step is not run again
    marker = json.loads((out / "graph" / ".tour-done").read_text())
    monkeypatch.setattr("attnlab.tour.subprocess.run", lambda *a, **k: pytest.fail("graph step ran again"))
    assert main(args) == 0
    assert json.loads((out / "graph" / ".tour-done").read_text()) == marker
