"""core.lab.runner with a tiny synthetic domain: run folders, mean ± std, the contract, resume, refusals, lock."""

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.lab.bench import cpu_model
from core.lab.cli import UsageError, check_common_args, cli_main
from core.lab.runner import (Experiment, MetricsContract, ModelSpec, RunnerError, RunnerOptions, RunRecord,
                             check_metrics_payload, identity_differences, run_experiment)

X = torch.randn(48, 3, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] - X[:, 2] > 0).long()
CONTRACT = MetricsContract(headline="test_accuracy", select="val_accuracy")


def accuracy(model, rows):
    return (model(X[rows]).argmax(-1) == Y[rows]).float().mean().item()


def make_experiment(calls, lr=0.1, bad_metrics=None, **options):
    def train_one(spec, seed, ctx):
        calls.append((spec.name, seed))
        model = ctx.wrap(nn.Sequential(nn.Linear(3, spec.config["hidden"]), nn.Tanh(), nn.Linear(spec.config["hidden"], 2)))
        optimizer = torch.optim.SGD(model.parameters(), lr=ctx.train["lr"])
        history = ctx.fit(model, optimizer, train_data=[(X[:32], Y[:32])], epochs=ctx.train["epochs"],
                          train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                          evaluate=lambda m: {"val_accuracy": accuracy(m, slice(32, 40))})
        metrics = bad_metrics or {"val_accuracy": accuracy(model, slice(32, 40)), "test_accuracy": accuracy(model, slice(40, 48))}
        return RunRecord(metrics=metrics, bookkeeping=ctx.bookkeeping(history, model), history=history.epochs, model=model)

    specs = [ModelSpec("attn net", "attention", {"hidden": 8}), ModelSpec("base", "baseline", {"hidden": 4}, seeds=1)]
    return Experiment(domain="toy", dataset="xor-ish", title="toy", contract=CONTRACT, specs=specs, train_one=train_one,
                      config={"epochs": 3, "lr": lr}, data_identity={"rows": 48}, **options)


def options(out, **kw):
    return RunnerOptions(out=out, seeds=[0, 1], progress=False, **kw)


def test_runner_writes_folders_metrics_and_report_and_keeps_bookkeeping_apart(tmp_path):
    calls = []
    result = run_experiment(make_experiment(calls), options(tmp_path))
    assert calls == [("attn net", 0), ("attn net", 1), ("base", 0)]  # seeds=1 trains the first seed only
    for run in ("attn-net/seed0", "attn-net/seed1", "base/seed0"):
        assert {p.name for p in (tmp_path / run).iterdir()} == {"best.pt", "last.pt", "identity.json", "record.json"}
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert check_metrics_payload(payload) == []
    attn = payload["results"][0]
    runs = [r["test_accuracy"] for r in attn["runs"]]
    assert attn["metrics"]["test_accuracy"] == pytest.approx(sum(runs) / 2)
    assert attn["std"]["test_accuracy"] == pytest.approx(abs(runs[0] - runs[1]) / 2 ** 0.5)
    assert set(attn["metrics"]) == {"val_accuracy", "test_accuracy"}
    assert attn["bookkeeping"]["epochs"] == 3 and attn["bookkeeping"]["steps"] == 3 and attn["params"] == 3 * 8 + 8 + 8 * 2 + 2
    assert payload["contract"]["select"] == "val_accuracy" and payload["seeds"] == [0, 1]
    report = (tmp_path / "report.md").read_text()
    assert "by the best val_accuracy (max)" in report and "no time budget" in report
    assert "| attn net | attention |" in report and "epochs (mean)" in report
    # names its processor, where the machine says what it is (no parenthesis where cpu_model() finds nothing)
    named = f"min on cpu ({cpu_model()}), " if cpu_model() else "min on cpu, "
    assert named in report and payload["versions"]["cpu"] == cpu_model()
    assert result.records["attn net"][0].model is not None


def test_the_report_says_when_a_time_budget_was_used(tmp_path):
    run_experiment(make_experiment([]), options(tmp_path, time_budget_s=600.0))
    assert "--time-budget 10 min per run was used" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["time_budget_s"] == 600.0


def test_resume_loads_finished_runs_and_refuses_another_identity_before_writing(tmp_path):
    run_experiment(make_experiment([]), options(tmp_path))
    first = (tmp_path / "metrics.json").read_bytes()
    calls = []
    again = run_experiment(make_experiment(calls), options(tmp_path))
    assert calls == [] and all(r.loaded for rs in again.records.values() for r in rs)
    assert json.loads(first)["results"][0]["runs"] == json.loads((tmp_path / "metrics.json").read_text())["results"][0]["runs"]

    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(RunnerError, match=r"attn-net/seed0 holds a different run \(saved -> now: train.lr: 0.1 -> 0.2\)"):
        run_experiment(make_experiment(calls, lr=0.2), options(tmp_path))
    assert calls == [] and {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written

    run_experiment(make_experiment(calls, lr=0.2), options(tmp_path, resume=False))  # --no-resume retrains
    assert len(calls) == 3


def test_an_interrupted_run_continues_from_last_pt(tmp_path):
    run_experiment(make_experiment([]), options(tmp_path / "full"))
    calls = []
    run_experiment(make_experiment(calls), options(tmp_path / "cut"))
    for run in ("attn-net/seed0", "attn-net/seed1", "base/seed0"):  # as if killed after training, before recording
        (tmp_path / "cut" / run / "record.json").unlink()
    run_experiment(make_experiment(calls), options(tmp_path / "cut"))
    assert len(calls) == 6  # train_one ran again, but fit found every run finished in last.pt
    full, cut = (json.loads((tmp_path / d / "metrics.json").read_text())["results"] for d in ("full", "cut"))
    assert [r["runs"] for r in full] == [r["runs"] for r in cut]


def test_orphaned_temp_files_are_removed(tmp_path):
    orphan = tmp_path / "attn-net" / "seed0" / ".last.pt.x1y2z3.tmp"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a checkpoint")
    run_experiment(make_experiment([]), options(tmp_path))
    assert not orphan.exists() and not list(tmp_path.rglob("*.tmp"))


def test_a_second_run_on_the_same_out_refuses(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('4242'); f.flush(); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunnerError, match=r"--out .* is in use by another run \(pid 4242"):
            run_experiment(make_experiment([]), options(tmp_path))
        assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "attn-net").exists()
    finally:
        holder.kill()
        holder.wait()
    run_experiment(make_experiment([]), options(tmp_path))  # free again once the holder is gone
    assert (tmp_path / "metrics.json").exists()


def test_another_commands_metrics_json_is_refused_before_anything_is_written(tmp_path):
    record = tmp_path / "metrics.json"  # as `python -m text g2p average --out DIR` leaves a folder
    average = '{"checkpoints": ["a.pt"], "config": {"dim": 8}, "results": []}'
    record.write_text(average)
    (tmp_path / "report.md").write_text("the average's report")
    calls = []
    for resume in (True, False):  # --no-resume retrains this command's runs; it does not discard other results
        with pytest.raises(RunnerError, match=r"holds .*metrics.json, which this runner did not write"):
            run_experiment(make_experiment(calls), options(tmp_path, resume=resume))
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.md"]
    assert record.read_text() == average

    ours = tmp_path / "ours"  # the runner's own record is rewritten, its runs there or removed
    run_experiment(make_experiment([]), options(ours))
    shutil.rmtree(ours / "attn-net")
    run_experiment(make_experiment(calls), options(ours))
    assert calls == [("attn net", 0), ("attn net", 1)]


def test_prepare_runs_once_under_the_lock_after_the_stored_runs_pass(tmp_path):
    """`Experiment.prepare` runs once, while the runner holds the lock (another process on the same --out is
    refused meanwhile), after the identity check and before the first run trains; its notes and keys reach the
    report and metrics.json. A stored run with another identity is refused before prepare runs."""
    events = []

    def prepare(out):
        take = "import fcntl, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"
        probe = subprocess.run([sys.executable, "-c", take, str(out / ".lock")], capture_output=True)
        events.append(("prepare", "locked" if probe.returncode else "free"))
        return ["prepared: one shared file"], {"prepared": {"files": 1}}

    run_experiment(make_experiment(events, distributed=False, prepare=prepare), options(tmp_path))
    assert events == [("prepare", "locked"), ("attn net", 0), ("attn net", 1), ("base", 0)]
    assert json.loads((tmp_path / "metrics.json").read_text())["prepared"] == {"files": 1}
    assert "prepared: one shared file" in (tmp_path / "report.md").read_text()

    events.clear()
    with pytest.raises(RunnerError, match="holds a different run"):
        run_experiment(make_experiment(events, lr=0.2, distributed=False, prepare=prepare), options(tmp_path))
    assert events == []  # refused before anything was prepared
    run_experiment(make_experiment(events, lr=0.2, distributed=False, prepare=prepare), options(tmp_path, resume=False))
    assert events[0] == ("prepare", "locked") and len(events) == 4

    with pytest.raises(ValueError, match="prepare must be single-process"):
        run_experiment(make_experiment([], prepare=prepare), options(tmp_path / "dist"))


def test_records_that_break_the_contract_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'best_epoch' is bookkeeping"):
        run_experiment(make_experiment([], bad_metrics={"val_accuracy": 1.0, "test_accuracy": 1.0, "best_epoch": 3.0}),
                       options(tmp_path / "a"))
    with pytest.raises(ValueError, match="'accuracy' does not start with a split"):
        run_experiment(make_experiment([], bad_metrics={"val_accuracy": 1.0, "test_accuracy": 1.0, "accuracy": 1.0}),
                       options(tmp_path / "b"))
    with pytest.raises(ValueError, match="headline metric 'test_accuracy' is missing"):
        run_experiment(make_experiment([], bad_metrics={"val_accuracy": 1.0}), options(tmp_path / "c"))
    with pytest.raises(ValueError, match="selection happens on validation"):
        MetricsContract(headline="test_accuracy", select="test_accuracy")


def test_check_metrics_payload_names_each_breach():
    payload = {"contract": {"headline": "test_f1", "select": "val_f1", "mode": "max"},
               "results": [{"model": "m", "metrics": {"test_f1": 0.9, "dev_f1": 0.8, "test_seconds": 2.0}}]}
    problems = check_metrics_payload(payload)
    assert "m: no 'bookkeeping' field" in problems
    assert any("'dev_f1' does not start with a split" in p for p in problems)
    assert any("'test_seconds' is bookkeeping" in p for p in problems)
    assert any("selection metric 'val_f1' is missing" in p for p in problems)
    assert check_metrics_payload({"results": []}) == ["no 'contract' (headline, select, mode) at the top level"]


def test_single_process_experiments_refuse_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RunnerError, match="toy trains full-batch in one process; run `python -m toy` without torchrun"):
        run_experiment(make_experiment([], distributed=False), options(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_identity_differences_name_the_paths():
    saved = {"config": {"hidden": 8, "lr": 0.1}, "seed": 0, "data": {"files": "a"}}
    now = {"config": {"hidden": 16, "lr": 0.1}, "seed": 0, "data": {"files": "b", "extra": 1}}
    assert identity_differences(saved, now) == ["config.hidden: 8 -> 16", "data.extra: (absent) -> 1",
                                                "data.files: 'a' -> 'b'"]


def test_a_key_absent_from_a_saved_identity_is_forgiven_only_at_its_default():
    saved = {"train": {"lr": 0.1}, "seed": 0}
    defaults = {"train": {"lr": 0.05, "mixup": 0.0}}
    assert identity_differences(saved, {"train": {"lr": 0.1, "mixup": 0.0}, "seed": 0}, defaults=defaults) == []
    assert identity_differences(saved, {"train": {"lr": 0.1, "mixup": 0.4}, "seed": 0}, defaults=defaults) == [
        "train.mixup: (absent) -> 0.4"]
    # A saved value that differs from the current one is a difference even where it equals the default.
    assert identity_differences({"train": {"lr": 0.05}}, {"train": {"lr": 0.1}}, defaults=defaults) == [
        "train.lr: 0.05 -> 0.1"]
    assert identity_differences({"train": {"lr": 0.1, "old": 1}}, {"train": {"lr": 0.1}}, defaults=defaults) == [
        "train.old: 1 -> (absent)"]  # a field removed since is not forgiven
    assert identity_differences(saved, {"train": {"lr": 0.1, "mixup": 0.0}, "seed": 0}) == [
        "train.mixup: (absent) -> 0.0"]  # no defaults, no forgiveness


@dataclasses.dataclass
class TrainV1:
    epochs: int = 3
    lr: float = 0.1


@dataclasses.dataclass
class TrainV2(TrainV1):  # the same recipe after a release added a field
    mixup: float = 0.0


def typed_experiment(calls, train):
    def train_one(spec, seed, ctx):
        calls.append((spec.name, seed))
        model = nn.Linear(3, 2)
        history = ctx.fit(model, torch.optim.SGD(model.parameters(), lr=ctx.train.lr),
                          train_data=[(X[:32], Y[:32])], epochs=ctx.train.epochs,
                          train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                          evaluate=lambda m: {"val_accuracy": accuracy(m, slice(32, 40))})
        return RunRecord(metrics={"val_accuracy": accuracy(model, slice(32, 40)),
                                  "test_accuracy": accuracy(model, slice(40, 48))},
                         bookkeeping=ctx.bookkeeping(history, model), history=history.epochs)

    return Experiment(domain="toy", dataset="xor-ish", title="toy", contract=CONTRACT, train_one=train_one,
                      specs=[ModelSpec("net", "attention", {"hidden": 2}, train=train)])


def test_runs_saved_before_a_field_existed_load_and_resume_when_it_is_at_its_default(tmp_path):
    run_experiment(typed_experiment([], TrainV1()), options(tmp_path / "old"))
    before = json.loads((tmp_path / "old" / "metrics.json").read_text())["results"][0]["runs"]
    calls = []
    run_experiment(typed_experiment(calls, TrainV2()), options(tmp_path / "old"))
    assert calls == []  # both finished runs loaded, not retrained
    assert json.loads((tmp_path / "old" / "metrics.json").read_text())["results"][0]["runs"] == before
    for seed in (0, 1):  # interrupted after training: fit must accept last.pt, saved under the old identity
        (tmp_path / "old" / "net" / f"seed{seed}" / "record.json").unlink()
    run_experiment(typed_experiment(calls, TrainV2()), options(tmp_path / "old"))
    assert len(calls) == 2 and json.loads((tmp_path / "old" / "metrics.json").read_text())["results"][0]["runs"] == before
    with pytest.raises(RunnerError, match=r"train.mixup: \(absent\) -> 0.4"):
        run_experiment(typed_experiment(calls, TrainV2(mixup=0.4)), options(tmp_path / "old"))


def test_out_that_is_a_file_is_refused_at_the_door(tmp_path):
    import argparse

    a_file = tmp_path / "f"
    a_file.write_text("")
    args = argparse.Namespace(out=str(a_file), seeds=1, threads=None, epochs=3, time_budget=None)
    with pytest.raises(UsageError, match="--out .*f is a file"):
        check_common_args(args)
    with pytest.raises(UsageError, match="--out .*: .*f is a file, not a folder"):
        check_common_args(args, a_file / "sub")
    args.out, args.epochs = str(tmp_path / "new"), 0
    with pytest.raises(UsageError, match="--epochs must be >= 1"):
        check_common_args(args)


def test_cli_main_turns_user_errors_into_one_line(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--x", type=int, default=1)

    def run(args):
        raise UsageError("--x must be\nsmall")

    with pytest.raises(SystemExit, match=r"^error: --x must be small$"):
        cli_main(parser, [], run)

    def crash(args):
        raise KeyError("a bug, not the user's")

    with pytest.raises(KeyError):  # programming errors keep their traceback
        cli_main(parser, [], crash)
