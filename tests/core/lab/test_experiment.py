import argparse
import json
import platform
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import torch
from torch import nn

from core.lab.experiment import (ModelResult, add_common_args, apply_common_args, count_parameters, summarize_runs,
                             versions, write_metrics, write_report)


@dataclass
class TinyConfig:
    dim: int = 32
    data: Path = Path("/data")


def results() -> list[ModelResult]:
    attention = summarize_runs("transformer", "attention",
                               [{"val_accuracy": 0.8, "val_loss": 0.5}, {"val_accuracy": 0.9, "val_loss": 0.3}],
                               params=1234, train_seconds=[10.0, 12.0], extra={"best_epoch": 7})
    baseline = summarize_runs("bilstm", "baseline", [{"val_accuracy": 0.75, "val_loss": 0.6}],
                              params=999, train_seconds=[5.0])
    return [attention, baseline]


def test_summarize_runs():
    attention, baseline = results()
    assert attention.metrics["val_accuracy"] == pytest.approx(0.85)
    assert attention.std["val_accuracy"] == pytest.approx(0.0707107, rel=1e-5)  # sample std
    assert attention.train_seconds == 11.0 and attention.extra == {"best_epoch": 7}
    assert baseline.std == {"val_accuracy": 0.0, "val_loss": 0.0} and len(baseline.runs) == 1
    with pytest.raises(ValueError, match="role"):
        summarize_runs("x", "teacher", [{"a": 1.0}], params=1, train_seconds=[1.0])
    with pytest.raises(ValueError, match="different metrics"):
        summarize_runs("x", "baseline", [{"a": 1.0}, {"b": 1.0}], params=1, train_seconds=[1.0, 1.0])


def test_count_parameters_counts_trainable_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 2 + 2


def test_versions_names_the_stack():
    info = versions()
    assert info["torch"] == torch.__version__
    for key in ("python", "torchvision", "torchaudio", "torch_geometric", "numpy", "platform", "cpu", "cpu_count",
                "cuda_device"):
        assert key in info


def test_cpu_model_names_the_processor_and_its_family(tmp_path):
    from core.lab.bench import cpu_model

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\n"
                    "model name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Other\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) Processor (family 6, model 167)"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert cpu_model(info) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_model(tmp_path / "missing") == (platform.processor() or None)


def test_metrics_json(tmp_path):
    path = write_metrics(tmp_path / "out", domain="text", dataset="conll2000", device=torch.device("cpu"),
                         config=TinyConfig(), results=results(), extra={"notes": "tiny"})
    assert path == tmp_path / "out" / "metrics.json"
    data = json.loads(path.read_text())
    for key in ("domain", "dataset", "device", "versions", "config", "command", "created", "results", "notes"):
        assert key in data, key
    assert data["domain"] == "text" and data["device"] == "cpu" and data["command"] == sys.argv
    assert data["config"] == {"dim": 32, "data": "/data"}
    datetime.fromisoformat(data["created"])
    assert [r["model"] for r in data["results"]] == ["transformer", "bilstm"]
    for result in data["results"]:
        assert set(result) == {"model", "role", "metrics", "std", "runs", "params", "train_seconds", "extra",
                               "bookkeeping", "runs_bookkeeping"}
    assert data["results"][0]["runs"][1]["val_accuracy"] == 0.9
    with pytest.raises(ValueError, match="results"):
        write_metrics(tmp_path, domain="text", dataset="d", device="cpu", config={}, results=[],
                      extra={"results": []})


def test_report_has_a_row_per_model(tmp_path):
    path = write_report(tmp_path, title="Chunking", results=results(), metric_names=["val_accuracy", "val_loss"],
                        intro="Tiny run.", notes=["one note"], figures=[("attention maps", "attention.png")])
    text = path.read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2  # header, rule, one row per model
    assert "val_accuracy (%)" in table[0] and "val_loss (%)" not in table[0]
    transformer_row = next(line for line in table if line.startswith("| transformer "))
    assert "85.00 ± 7.07" in transformer_row and "1,234" in transformer_row and "0.4 ± 0.1414" in transformer_row
    bilstm_row = next(line for line in table if line.startswith("| bilstm "))
    assert "| 75.00 |" in bilstm_row and "±" not in bilstm_row  # one seed: no spread to show
    assert text.startswith("# Chunking") and "Tiny run." in text and "- one note" in text
    assert "![attention maps](attention.png)" in text


def test_common_args(monkeypatch):
    parser = add_common_args(argparse.ArgumentParser(), default_out="runs/text")
    defaults = parser.parse_args([])
    assert (defaults.out, defaults.device, defaults.seeds, defaults.seed, defaults.resume) == \
        ("runs/text", "auto", 1, 0, True)
    assert defaults.data_dir is None and defaults.threads is None and defaults.no_progress is False
    args = parser.parse_args(["--data-dir", "/d", "--device", "cpu", "--seeds", "3", "--seed", "5",
                              "--no-resume", "--threads", "1", "--no-progress"])
    assert (args.data_dir, args.seeds, args.seed, args.resume, args.threads, args.no_progress) == \
        ("/d", 3, 5, False, 1, True)
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])

    before = torch.get_num_threads()
    try:
        assert apply_common_args(args) == torch.device("cpu") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_precision_and_recall_are_shown_in_percent_like_f1(tmp_path):
    runs = [{"test_f1": 0.9, "test_precision": 0.88, "test_recall": 0.92, "test_loss": 0.3}]
    result = summarize_runs("tagger", "attention", runs, params=10, train_seconds=[1.0])
    names = ["test_f1", "test_precision", "test_recall", "test_loss"]
    header = next(line for line in write_report(tmp_path, title="t", results=[result], metric_names=names)
                  .read_text().splitlines() if line.startswith("|"))
    assert "test_precision (%)" in header and "test_recall (%)" in header and "test_loss (%)" not in header


def test_a_pipe_in_a_model_name_does_not_split_its_row(tmp_path):
    result = summarize_runs("window(w=8) | george", "attention", [{"test_accuracy": 0.9}], params=10,
                            train_seconds=[1.0])
    lines = [line for line in write_report(tmp_path, title="t", results=[result], metric_names=["test_accuracy"])
             .read_text().splitlines() if line.startswith("|")]
    header, _, row = lines

    def cells(line):  # split on the pipes Markdown splits on: those not escaped
        return [c for c in re.split(r"(?<!\\)\|", line)[1:-1]]

    assert len(cells(row)) == len(cells(header))
    assert cells(row)[0].strip() == "window(w=8) \\| george"
