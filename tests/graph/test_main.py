"""python -m graph end to end on Cora through the runner: outputs, resume, determinism, learning, refusals."""

import json

import pytest

from core.lab.datasets import resolve_data_root
from graph.__main__ import build_parser, main
from graph.models import MODELS


def common(out, *more):
    return ["--dataset", "cora", "--data-dir", str(resolve_data_root()), "--out", str(out), "--no-progress",
            "--threads", "1", "--no-download", *more]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph")
    argv = ["compare", *common(out, "--epochs", "2", "--patience", "1")]
    assert main(argv) == 0
    return out, argv


def test_compare_writes_metrics_report_figures_and_run_folders(compared):
    out, _ = compared
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in metrics["results"]] == list(MODELS)
    assert metrics["domain"] == "graph" and metrics["dataset"] == "Cora" and metrics["wall_seconds"] > 0
    assert metrics["contract"]["headline"] == "test_accuracy" and metrics["contract"]["select"] == "val_accuracy"
    assert metrics["world_size"] == 1 and metrics["time_budget_s"] is None
    for result in metrics["results"]:
        assert 0.0 <= result["metrics"]["test_accuracy"] <= 1.0 and result["bookkeeping"]["epochs"] <= 2
        assert "best_epoch" not in result["metrics"] and "ms_per_epoch" in result["bookkeeping"]
        run = out / result["model"] / "seed0"
        assert {"best.pt", "last.pt", "identity.json", "record.json"} <= {p.name for p in run.iterdir()}
    report = (out / "report.md").read_text()
    for name in MODELS:
        assert f"| {name} |" in report
    assert "chosen on the validation split, by GAT's rule" in report
    for figure in ("learning_curves.png", "neighbourhood.png", "masked_attention.png"):
        assert (out / figure).stat().st_size > 1000 and figure in report


def test_resume_reuses_finished_runs_and_refuses_another_config(compared, capsys):
    out, argv = compared
    first = json.loads((out / "metrics.json").read_text())
    assert main(argv) == 0
    second = json.loads((out / "metrics.json").read_text())
    assert [r["runs"] for r in second["results"]] == [r["runs"] for r in first["results"]]
    assert "were loaded" in (out / "report.md").read_text()
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(SystemExit, match=r"^error: .*gat/seed0 holds a different run .*train.patience: 1 -> 2"):
        main(["compare", *common(out, "--epochs", "2", "--patience", "2")])
    assert (out / "metrics.json").read_bytes() == before  # nothing written before refusing


def test_the_same_command_twice_gives_the_same_metrics(tmp_path):
    results = []
    for folder in ("a", "b"):
        assert main(["compare", "--models", "gat", "mlp", *common(tmp_path / folder, "--epochs", "3")]) == 0
        results.append([r["runs"] for r in json.loads((tmp_path / folder / "metrics.json").read_text())["results"]])
    assert results[0] == results[1]


def test_gat_learns_cora_in_thirty_epochs(tmp_path):
    # GAT reaches ~0.83 after ~300 epochs; 30 epochs already lift it far above chance (1/7) and the
    # majority class (0.32 of the test nodes): floor 0.6
    assert main(["train", "--model", "gat", *common(tmp_path, "--epochs", "30")]) == 0
    (result,) = json.loads((tmp_path / "metrics.json").read_text())["results"]
    assert result["metrics"]["test_accuracy"] >= 0.6


def test_train_applies_the_hyper_parameter_flags(tmp_path):
    assert main(["train", "--model", "gcn", "--hidden", "8", "--lr", "0.02", *common(tmp_path, "--epochs", "1")]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    config = metrics["config"]["models"]["gcn"]
    assert (config["model"], config["hidden"], config["lr"]) == ("gcn", 8, 0.02)


def test_bad_arguments_are_refused_at_the_door_naming_the_flag(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["compare", *common(tmp_path, "--epochs", "0")])
    assert "--epochs: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", *common(tmp_path, "--time-budget", "-1")])
    assert "--time-budget: must be >= 0" in capsys.readouterr().err
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit, match=r"^error: --out .*file\.txt is a file"):
        main(["compare", *common(a_file)])
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun --nproc-per-node 2
    with pytest.raises(SystemExit, match=r"^error: graph trains full-batch in one process"):
        main(["compare", *common(tmp_path / "ddp", "--epochs", "1")])
    assert not (tmp_path / "ddp").exists()


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--seeds" in text and "--models" in text and "--dense-max-nodes" in text and "--time-budget" in text
    assert "--quick" in text and "--checkpoint-every" in text


def test_quick_keeps_a_flag_given_and_the_report_says_so(tmp_path):
    out = tmp_path / "quick"
    assert main(["compare", "--quick", *common(out, "--epochs", "2")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["model"] for r in metrics["results"]] == ["gat", "mlp"]  # the profile's models
    assert all(r["bookkeeping"]["epochs"] <= 2 for r in metrics["results"])  # the given epochs, not its 200
    assert "--epochs 2 given with --quick, which would set 200" in (out / "report.md").read_text()
