"""The one training loop every domain uses, with devices, seeds and checkpoints.

:func:`fit` owns the parts that are the same for a graph trained full-batch, a batch of sequences and a
batch of images: ``zero_grad`` / ``backward`` / clipping / ``step``, evaluation on a validation metric,
early stopping, restoring the best weights, a tqdm bar, and atomic checkpoints that let a killed run
resume and end exactly where an uninterrupted one would. The domain supplies only ``train_step``
(model, batch -> loss) and ``evaluate`` (model -> metrics).

Checkpoints are read with ``torch.load(weights_only=True)``, so everything saved is tensors, numbers,
strings and plain containers: configs are stored as plain dicts (:func:`fit` converts dataclasses),
RNG states as tensors.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

THREADS_ENV = "ATTNLAB_THREADS"
# An epoch with at least this many batches also gets a bar over its batches.
BATCH_BAR_MIN_BATCHES = 50


def select_device(name: str = "auto") -> torch.device:
    """Return the device to run on.

    Args:
        name (str): ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            (default: ``"auto"``)

    Raises:
        RuntimeError: when CUDA is asked for and there is none (or not that index).
        ValueError: for any other name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        device = torch.device(name)
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return device
    raise ValueError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    Args:
        seed (int): the seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_num_threads_from_env() -> int:
    """Set torch's intra-op thread count from ``$ATTNLAB_THREADS`` when it is set.

    Returns:
        int: the number of threads torch now uses.

    Raises:
        ValueError: when ``$ATTNLAB_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        torch.set_num_threads(int(value))
    return torch.get_num_threads()


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success fsync it and ``os.replace`` it onto
    ``path``. If the body raises, the temp file is removed and ``path`` is left as it was.

    Args:
        path (str | PathLike): the file to (re)write; its folder is created if needed.
        mode (str): ``"wb"`` or ``"w"``. (default: ``"wb"``)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact.

    Args:
        path (str | PathLike): where to write, e.g. ``run_dir / "last.pt"``.
        state (dict): tensors, numbers, strings and plain containers only, so that
            :func:`load_checkpoint` can read it with ``weights_only=True``.
    """
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, always with ``weights_only=True``
    (no arbitrary code runs while loading).

    Args:
        path (str | PathLike): the checkpoint file.
        map_location: as for ``torch.load``. (default: ``"cpu"``)
    """
    return torch.load(path, map_location=map_location, weights_only=True)


def to_plain(obj: Any) -> Any:
    """Convert a config to what ``weights_only`` loading and JSON accept: dataclasses become dicts,
    paths and devices strings, tuples lists; containers are converted recursively."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    return obj


@dataclass
class History:
    """What :func:`fit` did.

    Attributes:
        epochs (list[dict]): one row per epoch: ``epoch`` (1-based), ``train_loss``, ``lr``, every
            metric ``evaluate`` returned (on evaluated epochs), ``seconds``.
        best_epoch (int | None): the epoch whose weights were restored.
        best_value (float | None): the monitored metric at ``best_epoch``.
        best_metrics (dict[str, float]): all metrics at ``best_epoch``.
        train_seconds (float): wall time of all epochs, resumed runs included.
        stopped_early (bool): training ended before ``epochs`` (patience or time budget).
        stop_reason (str): ``"patience"``, ``"time budget"`` or ``""``.
    """

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_early: bool = False
    stop_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> History:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _rng_state(train_data: Iterable) -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "rest": list(np_state[2:])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        state["loader"] = generator.get_state()
    return state


def _set_rng_state(state: dict, train_data: Iterable) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), *state["numpy"]["rest"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(train_data, "generator", None)
    if "loader" in state and isinstance(generator, torch.Generator):
        generator.set_state(state["loader"])


def _improved(value: float, best: float | None, mode: str) -> bool:
    if math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _train_epoch(model, optimizer, train_data, train_step, scheduler, scheduler_per_batch, grad_clip,
                 epoch, bar_disabled) -> float:
    model.train()
    sampler = getattr(train_data, "sampler", None)
    if hasattr(sampler, "set_epoch"):  # DistributedSampler reshuffles per epoch only when told
        sampler.set_epoch(epoch)
    batches = train_data
    if hasattr(train_data, "__len__") and len(train_data) >= BATCH_BAR_MIN_BATCHES:
        batches = tqdm(train_data, desc=f"epoch {epoch}", leave=False, unit="batch", disable=bar_disabled)
    losses = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = train_step(model, batch)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None and scheduler_per_batch:
            scheduler.step()
        losses.append(loss.detach())  # no .item() per batch: that would sync the GPU every step
    if not losses:
        raise ValueError("train_data yielded no batches")
    mean_loss = torch.stack(losses).float().mean().item()
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training loss is {mean_loss} in epoch {epoch}")
    return mean_loss


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    train_data: Iterable,
    train_step: Callable[[nn.Module, Any], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]] | None,
    epochs: int,
    monitor: str = "val_accuracy",
    mode: str = "max",
    patience: int | None = None,
    scheduler: Any = None,
    scheduler_per_batch: bool = False,
    grad_clip: float | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    config: Any = None,
    progress: bool = True,
    desc: str = "",
    eval_every: int = 1,
    time_budget_s: float | None = None,
) -> History:
    """Train ``model`` for up to ``epochs`` epochs, keep the weights with the best ``monitor`` value, and
    return with those weights loaded and the model in eval mode.

    Each epoch: ``model.train()``; for every batch of ``train_data``: ``zero_grad``,
    ``loss = train_step(model, batch)``, ``backward``, optional clipping, ``step`` (and the scheduler, if
    per batch). Then, every ``eval_every`` epochs and on the last one, ``evaluate(module)`` under
    ``model.eval()`` and ``torch.no_grad()``; the scheduler steps once per epoch
    (``ReduceLROnPlateau`` gets the monitored value).

    With a ``checkpoint_dir``, ``last.pt`` (model, optimizer, scheduler, epoch, history, best weights,
    patience counter, RNG states, config) is written atomically after every epoch and ``best.pt``
    (best weights, config, epoch, metrics) on every improvement. With ``resume`` and an existing
    ``last.pt``, training continues after its epoch and ends with the same weights as an uninterrupted
    run; a finished run (all epochs, early stop or budget) returns at once.

    Distributed (``torch.distributed`` initialised, ``model`` wrapped by :func:`core.lab.distributed.wrap_ddp`):
    ``train_step`` gets the DDP wrapper so gradients are averaged; only rank 0 calls ``evaluate`` (on the
    unwrapped module), writes checkpoints and shows progress; rank 0's metrics and stop decision are
    broadcast so every rank keeps the same best epoch and stops together. ``train_loss`` is each rank's
    own. ``checkpoint_dir`` must be visible to all ranks for resuming.

    Args:
        model (nn.Module): the model, already on its device (possibly DDP-wrapped).
        optimizer (torch.optim.Optimizer): its optimizer.
        train_data (Iterable): iterated once per epoch, e.g. a ``DataLoader`` or ``[full_batch]``.
            A ``DataLoader`` whose sampler has ``set_epoch`` gets it called each epoch.
        train_step (Callable[[nn.Module, Any], Tensor]): returns the scalar loss of one batch; moves the
            batch to the device itself.
        evaluate (Callable[[nn.Module], dict[str, float]] | None): returns validation metrics, which must
            include ``monitor``. ``None``: no evaluation, the final weights are kept.
        epochs (int): the most epochs to train.
        monitor (str): the metric that picks the best epoch. (default: ``"val_accuracy"``)
        mode (str): ``"max"`` or ``"min"``: whether larger ``monitor`` is better. (default: ``"max"``)
        patience (int, optional): stop after this many evaluations in a row without improvement.
            (default: ``None``, never)
        scheduler (optional): an LR scheduler. (default: ``None``)
        scheduler_per_batch (bool): step the scheduler after every batch instead of every epoch.
            (default: ``False``)
        grad_clip (float, optional): clip the global gradient norm to this. (default: ``None``)
        checkpoint_dir (str | PathLike, optional): where ``last.pt`` / ``best.pt`` go. (default: ``None``)
        resume (bool): continue from ``checkpoint_dir/last.pt`` when it exists. (default: ``True``)
        config (dict | dataclass, optional): the resolved configuration, saved with every checkpoint
            (as a plain dict, see :func:`to_plain`); resuming a checkpoint saved with a different
            config is an error. (default: ``None``)
        progress (bool): show tqdm bars (they also hide when stderr is not a terminal). (default: ``True``)
        desc (str): the bar's label. (default: ``""``)
        eval_every (int): evaluate every this many epochs. (default: ``1``)
        time_budget_s (float, optional): stop (after evaluating) once the epochs so far, resumed runs
            included, took this many seconds. (default: ``None``)

    Returns:
        History: per-epoch rows and the best epoch.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    distributed = dist.is_available() and dist.is_initialized()
    is_main = not distributed or dist.get_rank() == 0
    module = _unwrap(model)
    config = to_plain(config if config is not None else {})
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    bar_disabled = True if not (progress and is_main) else None  # None: tqdm hides itself off a tty

    history, best_state, bad_evals, start = History(), None, 0, 1
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None and resume and (ckpt_dir / "last.pt").exists():
        ckpt = load_checkpoint(ckpt_dir / "last.pt")
        if ckpt["config"] != config:
            raise ValueError(
                f"{ckpt_dir / 'last.pt'} was saved with a different config; pass --no-resume to start "
                f"over or use another output folder.\n  saved:   {ckpt['config']}\n  current: {config}"
            )
        module.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history, best_state, bad_evals = History.from_dict(ckpt["history"]), ckpt["best_state"], ckpt["bad_evals"]
        _set_rng_state(ckpt["rng"], train_data)
        start = ckpt["epoch"] + 1
        logger.info("resuming %s from epoch %d of %s", desc or "training", ckpt["epoch"], ckpt_dir / "last.pt")

    bar = tqdm(range(start, epochs + 1), initial=start - 1, total=epochs, desc=desc or None, unit="epoch",
               disable=bar_disabled)
    for epoch in bar:
        if history.stopped_early:  # resumed from a run that had already stopped
            break
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row["train_loss"] = _train_epoch(model, optimizer, train_data, train_step, scheduler,
                                         scheduler_per_batch, grad_clip, epoch, bar_disabled)
        over_budget = (time_budget_s is not None
                       and history.train_seconds + time.perf_counter() - started >= time_budget_s)
        metrics = None
        if is_main and evaluate is not None and (epoch % eval_every == 0 or epoch == epochs or over_budget):
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in evaluate(module).items()}
            if monitor not in metrics:
                raise KeyError(f"evaluate() returned {sorted(metrics)}, which lacks monitor={monitor!r}")
        if distributed:
            shared = [metrics, over_budget]
            dist.broadcast_object_list(shared, src=0)
            metrics, over_budget = shared

        if metrics is not None:
            row.update(metrics)
            value = metrics[monitor]
            if _improved(value, history.best_value, mode):
                history.best_epoch, history.best_value, history.best_metrics = epoch, value, metrics
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
                bad_evals = 0
                if is_main and ckpt_dir is not None:
                    save_checkpoint(ckpt_dir / "best.pt",
                                    {"model": best_state, "config": config, "epoch": epoch, "metrics": metrics})
            else:
                bad_evals += 1
            if plateau and not scheduler_per_batch:
                scheduler.step(value)
        if scheduler is not None and not scheduler_per_batch and not plateau:
            scheduler.step()

        row["seconds"] = time.perf_counter() - started
        history.epochs.append(row)
        history.train_seconds += row["seconds"]
        if patience is not None and metrics is not None and bad_evals >= patience:
            history.stopped_early, history.stop_reason = True, "patience"
        elif over_budget and epoch < epochs:
            history.stopped_early, history.stop_reason = True, "time budget"

        if is_main and ckpt_dir is not None:
            save_checkpoint(ckpt_dir / "last.pt", {
                "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch, "history": history.to_dict(), "best_state": best_state,
                "bad_evals": bad_evals, "rng": _rng_state(train_data), "config": config,
            })
        shown = {"loss": f"{row['train_loss']:.4f}"}
        if monitor in row:
            shown[monitor] = f"{row[monitor]:.4f}"
        bar.set_postfix(shown)
        logger.info("%s epoch %d/%d %s", desc, epoch, epochs,
                    " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if history.stopped_early:
            break
    bar.close()

    if best_state is not None:
        module.load_state_dict(best_state)
    model.eval()
    return history
