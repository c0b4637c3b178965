import logging
import os
import pickle
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.lab.harness import (CheckpointError, EarlyStopping, History, average_weights, fit, load_checkpoint, save_checkpoint,
                               seed_everything, select_device, set_num_threads_from_env)


class NotATensor:
    """A class torch.load(weights_only=True) must refuse to rebuild."""


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA"):
        select_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("gpu")


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), float(np.random.rand()), torch.rand(3).tolist()

    seed_everything(7)
    first = draw()
    seed_everything(7)
    assert draw() == first
    seed_everything(8)
    assert all(a != b for a, b in zip(draw(), first))


def test_seed_everything_keeps_cudnn_deterministic(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    seed_everything(0)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


def test_threads_from_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("ATTNLAB_THREADS", "1")
        assert set_num_threads_from_env() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("ATTNLAB_THREADS", "zero")
        with pytest.raises(ValueError, match="ATTNLAB_THREADS"):
            set_num_threads_from_env()
    finally:
        torch.set_num_threads(before)


def test_failed_checkpoint_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.ones(3), "epoch": 1})

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(3), "epoch": 2})
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_load_checkpoint_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": NotATensor()}, path)
    # the file really holds a custom class (listed without unpickling it)...
    assert any("NotATensor" in g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path))
    # ...which the loader refuses to unpickle
    with pytest.raises(pickle.UnpicklingError, match="holding objects other than tensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b'{"not": "a checkpoint"}', b"", b"PK\x03\x04 half a zip"])
def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pt: cannot be read as a checkpoint") as raised:
        load_checkpoint(path)
    assert "weights_only=False" not in str(raised.value)


# --- fit -----------------------------------------------------------------------------------------------

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(123))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
CONFIG = {"hidden": 16, "lr": 0.01}


def make_run(seed: int):
    """Model with dropout, shuffled loader, Adam and a scheduler: everything resuming has to restore."""
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(4, CONFIG["hidden"]), nn.ReLU(), nn.Dropout(0.3), nn.Linear(CONFIG["hidden"], 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    loader = DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)
    return model, optimizer, scheduler, loader


def evaluate(model):
    logits = model(X)
    accuracy = (logits.argmax(-1) == Y).float().mean().item()
    return {"val_loss": F.cross_entropy(logits, Y).item(), "val_accuracy": accuracy}


def counting_step(calls, kill_at=None):
    def train_step(model, batch):
        calls.append(1)
        if kill_at is not None and len(calls) == kill_at:
            raise KeyboardInterrupt("killed")
        x, y = batch
        return F.cross_entropy(model(x), y)
    return train_step


def run_fit(seed, ckpt_dir, calls, kill_at=None, epochs=3, config=CONFIG):
    model, optimizer, scheduler, loader = make_run(seed)
    history = fit(model, optimizer, train_data=loader, train_step=counting_step(calls, kill_at), evaluate=evaluate,
                  epochs=epochs, monitor="val_loss", mode="min", scheduler=scheduler, checkpoint_dir=ckpt_dir,
                  config=config, progress=False)
    return model, history


def without_seconds(history: History):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history.epochs]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    full_model, full_history = run_fit(0, tmp_path / "full", calls=[])

    calls = []
    with pytest.raises(KeyboardInterrupt):  # dies in the first batch of epoch 3
        run_fit(0, tmp_path / "killed", calls, kill_at=2 * 4 + 1)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    # A fresh "process": other initial weights and a scrambled global RNG; only last.pt carries the state.
    torch.manual_seed(999)
    calls = []
    resumed_model, resumed_history = run_fit(1, tmp_path / "killed", calls)
    assert len(calls) == 4  # only epoch 3 was trained
    assert without_seconds(resumed_history) == without_seconds(full_history)
    assert resumed_history.best_epoch == full_history.best_epoch
    for key, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    last_resumed = load_checkpoint(tmp_path / "killed" / "last.pt")["model"]
    assert all(torch.equal(last_full[k], last_resumed[k]) for k in last_full)

    # A finished run resumes as finished: no training, same weights.
    calls = []
    again_model, again_history = run_fit(2, tmp_path / "full", calls)
    assert calls == [] and again_history.best_epoch == full_history.best_epoch
    assert all(torch.equal(again_model.state_dict()[k], v) for k, v in full_model.state_dict().items())


def test_resuming_with_another_thread_count_says_the_figures_will_differ(tmp_path, caplog):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt):
            run_fit(0, tmp_path, [], kill_at=5)
        assert load_checkpoint(tmp_path / "last.pt")["threads"] == 1
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="core.lab.harness"):
            run_fit(0, tmp_path, [])
        assert "saved by a run with 1 thread(s) and resumes with 2" in caplog.text
        caplog.clear()
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt):
            run_fit(0, tmp_path / "same", [], kill_at=5)
        with caplog.at_level(logging.WARNING, logger="core.lab.harness"):
            run_fit(0, tmp_path / "same", [])
        assert "thread(s) and resumes with" not in caplog.text  # the same count: nothing to say
    finally:
        torch.set_num_threads(threads)


def test_resume_refuses_another_config(tmp_path):
    run_fit(0, tmp_path, calls=[], epochs=1)
    with pytest.raises(ValueError, match="different config"):
        run_fit(0, tmp_path, calls=[], epochs=2, config={**CONFIG, "lr": 0.1})


def test_early_stopping_restores_best_weights(tmp_path):
    seed_everything(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scores = [0.5, 0.8, 0.6, 0.7, 0.9, 0.95]
    snapshots = []

    def scripted_evaluate(m):
        assert not m.training and not torch.is_grad_enabled()
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"val_accuracy": scores[len(snapshots) - 1]}

    history = fit(model, optimizer, train_data=[(X, Y)], train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                  evaluate=scripted_evaluate, epochs=len(scores), patience=2, checkpoint_dir=tmp_path, progress=False)
    assert history.stopped_early and history.stop_reason == "patience"
    assert len(history.epochs) == 4 and history.best_epoch == 2 and history.best_value == 0.8
    assert [row["val_accuracy"] for row in history.epochs] == scores[:4]
    best, last = snapshots[1], snapshots[3]
    assert not torch.equal(best["weight"], last["weight"])  # training moved the weights after the best epoch
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    on_disk = load_checkpoint(tmp_path / "best.pt")
    assert on_disk["epoch"] == 2 and torch.equal(on_disk["model"]["weight"], best["weight"])
    assert not model.training


def test_time_budget_and_per_batch_scheduler():
    seed_everything(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [(X[:32], Y[:32]), (X[32:], Y[32:])]
    history = fit(model, optimizer, train_data=batches, train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                  evaluate=evaluate, epochs=5, eval_every=3, scheduler=scheduler, scheduler_per_batch=True,
                  time_budget_s=0.0, progress=False)
    assert len(history.epochs) == 1 and history.stop_reason == "time budget"
    assert "val_accuracy" in history.epochs[0]  # evaluated before stopping although eval_every=3
    assert scheduler.last_epoch == 2


def test_atomic_open_gives_concurrent_writers_their_own_temp_files(tmp_path):
    # Two runs caching the same dataset at once both write the same target; each must get its own temp
    # file, so both renames succeed and the target holds one whole file (a shared "<name>.tmp" made the
    # second rename fail with FileNotFoundError).
    from core.lab.harness import atomic_open

    target = tmp_path / "cache.pt"
    with atomic_open(target) as first:
        first.write(b"first")
        with atomic_open(target) as second:
            second.write(b"second")
        assert target.read_bytes() == b"second"
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.pt"]  # no temp file left behind
    umask = os.umask(0o022)
    try:
        with atomic_open(target) as f:
            f.write(b"again")
    finally:
        os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o644  # the usual mode, not mkstemp's private 0600


# --- exact resume after SIGKILL mid-epoch, stoppers, keep -------------------------------------------

KILLABLE_RUN = '''
import os, signal, sys
import torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from core.lab.harness import EarlyStopping, fit, seed_everything
from core.lab.schedule import warmup_cosine_scheduler

def run(ckpt_dir, kill_at=None, seed=0):
    """Dropout, a loader shuffled by the global RNG, Adam, a per-batch schedule, a stopper: everything an exact
    resume has to restore; checkpoints every 2 steps."""
    seed_everything(seed)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(123))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = warmup_cosine_scheduler(optimizer, total_steps=3 * 4, warmup_steps=3)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    steps = []

    def train_step(m, batch):
        steps.append(1)
        if kill_at is not None and len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return F.cross_entropy(m(batch[0]), batch[1])

    history = fit(model, optimizer, train_data=loader, train_step=train_step, epochs=3, scheduler=scheduler,
                  scheduler_per_batch=True, stopper=EarlyStopping(5, "val_loss", "min"),
                  evaluate=lambda m: {"val_loss": F.cross_entropy(m(x), y).item()},
                  checkpoint_dir=ckpt_dir, checkpoint_every=2, progress=False)
    return model, history, len(steps)

if __name__ == "__main__":
    run(sys.argv[1], kill_at=int(sys.argv[2]))
'''


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path):
    namespace = {}
    exec(compile(KILLABLE_RUN, "killable_run", "exec"), namespace)
    full_model, full_history, _ = namespace["run"](tmp_path / "full")

    script = tmp_path / "killable_run.py"
    script.write_text(KILLABLE_RUN)
    # step 7 = the 3rd batch of epoch 2; the last checkpoint was written after step 6 (2 batches into epoch 2)
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "7"], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert (state["epoch"], state["position"]) == (1, 2)

    torch.manual_seed(999)  # this process's RNG is elsewhere; only last.pt carries the state
    resumed_model, resumed_history, steps = namespace["run"](tmp_path / "killed", seed=5)
    assert steps == 2 + 4  # the rest of epoch 2 and epoch 3
    assert without_seconds(resumed_history) == without_seconds(full_history)
    assert resumed_history.steps == full_history.steps == 12
    for key, value in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def test_gat_stopper_state_survives_a_resume(tmp_path):
    from core.lab.harness import GATEarlyStopping

    losses_accs = [(1.0, 0.5), (0.8, 0.6), (0.9, 0.55), (0.95, 0.5), (0.85, 0.58), (0.9, 0.5), (0.7, 0.7)]

    def run(epochs, kill_after=None, done=0):
        seed_everything(0)
        model = nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        calls = [1] * done  # evaluations of the earlier process: the scripted values go on from there

        def evaluate(m):
            calls.append(1)
            if kill_after is not None and len(calls) > kill_after:
                raise KeyboardInterrupt
            loss, acc = losses_accs[len(calls) - 1]
            return {"val_loss": loss, "val_accuracy": acc}

        history = fit(model, optimizer, train_data=[(X, Y)], train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                      evaluate=evaluate, epochs=epochs, stopper=GATEarlyStopping(patience=3), checkpoint_dir=tmp_path,
                      progress=False)
        return model, history

    with pytest.raises(KeyboardInterrupt):
        run(7, kill_after=3)  # epochs 1-3 done: the stopper has seen 1 bad evaluation (epoch 3)
    assert load_checkpoint(tmp_path / "last.pt")["stopper"]["bad_evals"] == 1
    model, history = run(7, done=3)
    # epochs 4 and 5 improve neither (0.95 > 0.8, 0.58 < 0.6): the 3rd bad one is epoch 5; epoch 2 is the best
    assert history.stopped_early and len(history.epochs) == 5 and history.best_epoch == 2


def test_keep_last_keeps_the_final_weights_and_best_pt_holds_them(tmp_path):
    seed_everything(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scores = iter([0.9, 0.1, 0.2])
    history = fit(model, optimizer, train_data=[(X, Y)], train_step=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
                  evaluate=lambda m: {"val_accuracy": next(scores)}, epochs=3, keep="last", checkpoint_dir=tmp_path,
                  progress=False)
    assert history.best_epoch == 3
    on_disk = load_checkpoint(tmp_path / "best.pt")
    assert on_disk["epoch"] == 3 and torch.equal(on_disk["model"]["weight"], model.weight.detach())
    with pytest.raises(ValueError, match="keep='best' needs an evaluate"):
        fit(model, optimizer, train_data=[(X, Y)], train_step=lambda m, b: m(b[0]).sum(), evaluate=None, epochs=1)
    with pytest.raises(ValueError, match="either a stopper or a patience"):
        fit(model, optimizer, train_data=[(X, Y)], train_step=lambda m, b: m(b[0]).sum(), evaluate=lambda m: {},
            epochs=1, patience=2, stopper=EarlyStopping(2))


def test_keep_epochs_keeps_the_weights_of_the_last_epochs_only(tmp_path):
    seed_everything(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    after = []

    def step(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1])

    def evaluate_and_remember(m):
        after.append(m.weight.detach().clone())
        return {"val_accuracy": 0.5}

    fit(model, optimizer, train_data=[(X, Y)], train_step=step, evaluate=evaluate_and_remember, epochs=4,
        checkpoint_dir=tmp_path, keep_epochs=2, best_extra={"vocab": "v"}, progress=False)
    kept = sorted(p.name for p in (tmp_path / "epochs").iterdir())
    assert kept == ["epoch003.pt", "epoch004.pt"]
    for name, epoch in (("epoch003.pt", 3), ("epoch004.pt", 4)):
        stored = load_checkpoint(tmp_path / "epochs" / name)
        assert stored["epoch"] == epoch and stored["vocab"] == "v" and stored["metrics"] == {"val_accuracy": 0.5}
        assert torch.equal(stored["model"]["weight"], after[epoch - 1])  # that epoch's weights, not the last
    assert not torch.equal(after[2], after[3])
    with pytest.raises(ValueError, match="keep_epochs must be >= 0"):
        fit(model, optimizer, train_data=[(X, Y)], train_step=step, evaluate=evaluate_and_remember, epochs=1,
            keep_epochs=-1)


def test_average_weights_means_floats_and_keeps_the_last_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3), "h": torch.tensor([0.5], dtype=torch.float16)}
    b = {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor(7), "h": torch.tensor([1.5], dtype=torch.float16)}
    mean = average_weights([a, b])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and mean["steps"].item() == 7
    assert mean["h"].dtype == torch.float16 and mean["h"].item() == 1.0
    assert torch.equal(average_weights([a])["w"], a["w"]) and a["w"].tolist() == [1.0, 2.0]  # inputs untouched
    with pytest.raises(ValueError, match="other keys"):
        average_weights([a, {"w": b["w"]}])
    with pytest.raises(ValueError, match=r"w has shape \(3,\), state 0 \(2,\)"):
        average_weights([a, {**b, "w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])


def test_warmup_cosine_is_counted_in_steps():
    from core.lab.schedule import warmup_cosine

    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0) and factor(150) == 0.0
    assert warmup_cosine(10, 0)(0) == pytest.approx(1.0)


# --- precision: the one place that turns bfloat16 on ------------------------------------------------------


def test_autocast_fp32_is_a_no_op_and_bf16_multiplies_in_bfloat16():
    from core.lab.harness import autocast, bf16_supported

    cpu = torch.device("cpu")
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    if bf16_supported(cpu):
        with autocast(cpu, "bf16"):
            product = a @ b
        assert product.dtype == torch.bfloat16
        torch.testing.assert_close(product.float(), a @ b, atol=0.1, rtol=0.05)
    else:  # a CPU without native bfloat16 is refused, not silently slowed down
        with pytest.raises(ValueError, match="no native bfloat16"):
            autocast(cpu, "bf16")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        autocast(cpu, "fp16")
    with pytest.raises(ValueError, match="call resolve_precision first"):
        autocast(cpu, "auto")


def test_bf16_on_a_device_without_it_is_refused(monkeypatch):
    from core.lab import harness

    monkeypatch.setattr(harness, "bf16_supported", lambda device: False)
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="use --precision fp32"):
        harness.autocast(cpu, "bf16")
    assert (harness.resolve_precision(cpu, "auto"), harness.resolve_precision(cpu, "fp32")) == ("fp32", "fp32")
    monkeypatch.setattr(harness, "bf16_supported", lambda device: True)
    assert harness.resolve_precision(cpu, "auto") == "bf16"
