"""python -m graph end to end on Cora: two epochs per model, every output written, resume reuses runs."""

import json

import pytest

from core.lab.datasets import resolve_data_root
from graph.__main__ import build_parser, main
from graph.models import MODELS


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    argv = ["compare", "--dataset", "cora", "--data-dir", str(resolve_data_root()), "--epochs", "2",
            "--patience", "1", "--out", str(out), "--no-progress", "--threads", "1", "--no-download"]
    assert main(argv) == 0
    return out, argv


def test_compare_writes_metrics_report_and_figures(compared):
    out, _ = compared
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in metrics["results"]] == list(MODELS)
    assert metrics["domain"] == "graph" and metrics["dataset"] == "Cora" and metrics["wall_seconds"] > 0
    for result in metrics["results"]:
        assert 0.0 <= result["metrics"]["test_accuracy"] <= 1.0 and result["metrics"]["epochs"] <= 2
    report = (out / "report.md").read_text()
    for name in MODELS:
        assert f"| {name} |" in report
    for figure in ("learning_curves.png", "neighbourhood.png", "masked_attention.png"):
        assert (out / figure).stat().st_size > 1000 and figure in report


def test_resume_reuses_finished_runs(compared):
    out, argv = compared
    first = json.loads((out / "metrics.json").read_text())
    assert main(argv) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert [r["runs"] for r in second["results"]] == [r["runs"] for r in first["results"]]


def test_train_applies_the_hyper_parameter_flags(tmp_path):
    argv = ["train", "--model", "gcn", "--hidden", "8", "--lr", "0.02", "--dataset", "cora", "--epochs", "1",
            "--data-dir", str(resolve_data_root()), "--out", str(tmp_path), "--no-progress", "--threads", "1",
            "--no-download"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    (config,) = metrics["config"]["models"]
    assert (config["model"], config["hidden"], config["lr"]) == ("gcn", 8, 0.02)


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--seeds" in text and "--models" in text and "--dense-max-nodes" in text
