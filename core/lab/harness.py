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

import json
import logging
import math
import os
import pickle
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on ``device`` is done (a CUDA GPU runs it asynchronously), so a clock read
    next times it; nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PRECISIONS = ("fp32", "bf16")


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively (a CPU without AVX-512 BF16 or AMX emulates
    them, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """``"fp32"`` or ``"bf16"`` for ``precision`` on ``device``: ``"auto"`` is bf16 where the device multiplies
    bfloat16 natively, else fp32.

    Raises:
        ValueError: for an unknown precision, or bf16 on a device without native bfloat16.
    """
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected auto or one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(f"--precision bf16: this {device.type} has no native bfloat16 arithmetic "
                         f"(it would be emulated, slower than fp32); use --precision fp32 or auto")
    return precision


def autocast(device: torch.device, precision: str = "fp32"):
    """The context that runs a forward pass in ``precision``: ``"fp32"`` a no-op, ``"bf16"`` ``torch.autocast``
    to bfloat16 (matrix products and convolutions in bfloat16, weights, optimizer and reductions in float32).

    Raises:
        ValueError: as :func:`resolve_precision` (``"auto"`` is resolved there, not here).
    """
    if precision == "auto":
        raise ValueError("autocast takes a resolved precision (fp32 or bf16); call resolve_precision first")
    precision = resolve_precision(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device), and keep cuDNN to its
    deterministic algorithms: left to choose, it picks convolution kernels whose sums vary from run to run,
    and on an H200 the same `--quick` audio command with the same seed gave the CNN two test accuracies
    a point apart.

    Args:
        seed (int): the seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


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


def read_json_object(path: str | os.PathLike) -> dict | None:
    """A JSON file written to be read back (a record, a cache): ``None`` where there is none, ``{}`` where it is
    not a JSON object (cut short, or written by hand), the object otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


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


class CheckpointError(pickle.UnpicklingError, ValueError):
    """A file that cannot be read as a checkpoint: not a torch file, a truncated one, or one holding objects
    other than tensors and plain data (which ``weights_only=True`` refuses to unpickle)."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, always with ``weights_only=True``
    (no arbitrary code runs while loading).

    Args:
        path (str | PathLike): the checkpoint file.
        map_location: as for ``torch.load``. (default: ``"cpu"``)

    Raises:
        CheckpointError: the file is not a checkpoint that loads weights-only (the message names it and
            never suggests ``weights_only=False``); the command lines print it as a one-line error.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError) as error:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: not a torch file, a truncated one, or one "
                              "holding objects other than tensors and plain data (checkpoints are loaded with "
                              "weights_only=True)") from error
    except RuntimeError as error:  # a damaged archive: torch's own reason, its first sentence
        if "zip archive" not in str(error) and "PytorchStreamReader" not in str(error):
            raise
        reason = str(error).split(". ")[0]
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: a damaged or truncated torch file "
                              f"({reason})") from error


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
        best_epoch (int | None): the epoch whose weights were kept (``keep="last"``: the last epoch).
        best_value (float | None): the monitored metric at ``best_epoch``.
        best_metrics (dict[str, float]): all metrics at ``best_epoch``.
        train_seconds (float): wall time of all epochs, resumed runs included.
        steps (int): optimiser steps taken, resumed runs included.
        stopped_early (bool): training ended before ``epochs`` (the stopper or the time budget).
        stop_reason (str): ``"patience"``, ``"time budget"`` or ``""``.
    """

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    stop_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> History:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


# ------------------------------------------------------------------------------------------------
# early stopping: objects with their own state, saved in last.pt


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` evaluations in a row; the best weights are
    those of its best evaluation.

    :func:`fit` calls :meth:`update` after every evaluation; the stopper says whether the weights just
    evaluated are the new best (kept with ``keep="best"``) and, through :attr:`should_stop`, whether to stop.
    Its state goes into ``last.pt``, so a resumed run stops exactly where an uninterrupted one would.

    Args:
        patience (int, optional): evaluations without improvement before stopping; ``None``: never stop,
            only track the best. (default: ``None``)
        monitor (str): the validation metric, e.g. ``"val_f1"``. (default: ``"val_accuracy"``)
        mode (str): ``"max"`` or ``"min"``. (default: ``"max"``)
    """

    def __init__(self, patience: int | None = None, monitor: str = "val_accuracy", mode: str = "max"):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {patience}")
        self.patience, self.monitor, self.mode = patience, monitor, mode
        self.best: float | None = None
        self.bad_evals = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; return whether its weights are the best so far."""
        value = _require(metrics, self.monitor)
        if _improved(value, self.best, self.mode):
            self.best, self.bad_evals = value, 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_evals = state["best"], state["bad_evals"]


class GATEarlyStopping:
    """The GAT paper's rule (Veličković et al., 2018, reference code): training goes on while the validation
    accuracy *or* the validation loss reaches a new best (ties count) within ``patience`` epochs; the weights
    kept are those of the last evaluation at which *both* were at their best.

    Args:
        patience (int): evaluations in a row with neither improving before stopping. (default: ``100``)
        accuracy (str): the accuracy metric (larger is better). (default: ``"val_accuracy"``)
        loss (str): the loss metric (smaller is better). (default: ``"val_loss"``)
    """

    def __init__(self, patience: int = 100, accuracy: str = "val_accuracy", loss: str = "val_loss"):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience, self.accuracy, self.loss = patience, accuracy, loss
        self.monitor, self.mode = accuracy, "max"
        self.best_accuracy, self.best_loss = -math.inf, math.inf
        self.bad_evals = 0

    def update(self, metrics: dict[str, float]) -> bool:
        acc, loss = _require(metrics, self.accuracy), _require(metrics, self.loss)
        better_acc, better_loss = acc >= self.best_accuracy, loss <= self.best_loss
        if better_acc or better_loss:
            self.best_accuracy, self.best_loss = max(self.best_accuracy, acc), min(self.best_loss, loss)
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return better_acc and better_loss

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best_accuracy": self.best_accuracy, "best_loss": self.best_loss, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best_accuracy, self.best_loss, self.bad_evals = state["best_accuracy"], state["best_loss"], state["bad_evals"]


def _require(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise KeyError(f"evaluate() returned {sorted(metrics)}, which lacks the monitored {name!r}")
    return float(metrics[name])


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


def _set_epoch(train_data: Iterable, epoch: int) -> None:
    """Tell the sampler (or batch sampler) which epoch this is, so its order depends on the epoch alone
    and a resumed run draws the same order (``DistributedSampler`` reshuffles only when told)."""
    for name in ("sampler", "batch_sampler"):
        sampler = getattr(train_data, name, None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _cpu_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def average_weights(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one architecture (e.g. the weights after a run's last epochs,
    which ``fit(keep_epochs=K)`` keeps): floating tensors averaged in float64 and cast back, other tensors
    (counters, integer buffers) taken from the last state.

    Raises:
        ValueError: no states, or states whose keys or shapes differ (the message names the first difference).
    """
    if not states:
        raise ValueError("average_weights needs at least one state dict")
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            extra = sorted(set(state) ^ set(first))[:3]
            raise ValueError(f"state {i} has other keys than state 0 (e.g. {extra}): not the same architecture")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise ValueError(f"state {i}: {key} has shape {tuple(value.shape)}, state 0 {tuple(first[key].shape)}")
    last = states[-1]
    return {key: (torch.stack([s[key].double() for s in states]).mean(0).to(value.dtype)
                  if value.is_floating_point() else last[key].clone())
            for key, value in first.items()}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    train_data: Iterable,
    train_step: Callable[[nn.Module, Any], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]] | None,
    epochs: int,
    keep: str = "best",
    monitor: str = "val_accuracy",
    mode: str = "max",
    stopper: EarlyStopping | GATEarlyStopping | None = None,
    patience: int | None = None,
    scheduler: Any = None,
    scheduler_per_batch: bool = False,
    grad_clip: float | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    checkpoint_epochs: int = 1,
    keep_epochs: int = 0,
    resume: bool = True,
    config: Any = None,
    best_extra: dict | None = None,
    progress: bool = True,
    desc: str = "",
    eval_every: int = 1,
    time_budget_s: float | None = None,
) -> History:
    """Train ``model`` for up to ``epochs`` epochs and return with the kept weights loaded, in eval mode.

    Each epoch: ``model.train()``; for every batch of ``train_data``: ``zero_grad``,
    ``loss = train_step(model, batch)``, ``backward``, optional clipping, ``step`` (and the scheduler, if
    per batch). Then, every ``eval_every`` epochs and on the last one, ``evaluate(module)`` under
    ``model.eval()`` and ``torch.no_grad()``, and ``stopper.update(metrics)``, which says whether these
    are the best weights so far and whether to stop. The scheduler steps once per epoch unless per batch
    (``ReduceLROnPlateau`` gets the monitored value).

    Which weights are kept is explicit: ``keep="best"`` the weights the stopper called best (by default an
    :class:`EarlyStopping` on ``monitor``/``mode``), ``keep="last"`` the final ones.

    With a ``checkpoint_dir``, ``last.pt`` (model, optimizer, scheduler, stopper, history, best weights,
    RNG states, the sampler's epoch and the position within it, config) is written atomically after every
    epoch, and every ``checkpoint_every`` steps within one; ``best.pt`` holds the kept weights (config,
    epoch, metrics, ``best_extra``). With ``resume`` and an existing ``last.pt``, training continues at the
    batch after the saved one and ends with the same weights as an uninterrupted run (the RNG state at the
    epoch's start is restored to rebuild the epoch's order, the skipped batches are drawn again, then the
    RNG state at the checkpoint is restored); a finished run returns at once.

    Distributed (``torch.distributed`` initialised, ``model`` wrapped by :func:`core.lab.distributed.wrap_ddp`):
    ``train_step`` gets the DDP wrapper so gradients are averaged; only rank 0 calls ``evaluate`` (on the
    unwrapped module), writes checkpoints and shows progress; rank 0's metrics are broadcast so every
    rank's stopper keeps the same best epoch and stops together. ``train_loss`` is each rank's own.

    Args:
        model (nn.Module): the model, already on its device (possibly DDP-wrapped).
        optimizer (torch.optim.Optimizer): its optimizer.
        train_data (Iterable): iterated once per epoch, e.g. a ``DataLoader`` or ``[full_batch]``. A
            ``sampler`` or ``batch_sampler`` with ``set_epoch`` is told the epoch (1-based) first.
        train_step (Callable[[nn.Module, Any], Tensor]): the scalar loss of one batch; moves the batch to
            the device itself.
        evaluate (Callable[[nn.Module], dict[str, float]] | None): validation metrics (split-prefixed,
            ``val_...``). ``None``: no evaluation; only ``keep="last"`` makes sense then.
        epochs (int): the most epochs to train (>= 1).
        keep (str): ``"best"`` or ``"last"``: which weights to return and store in ``best.pt``.
            (default: ``"best"``)
        monitor (str): the metric the default stopper tracks. (default: ``"val_accuracy"``)
        mode (str): ``"max"`` or ``"min"`` for ``monitor``. (default: ``"max"``)
        stopper (EarlyStopping | GATEarlyStopping, optional): decides the best weights and when to stop.
            (default: ``EarlyStopping(patience, monitor, mode)``)
        patience (int, optional): the default stopper's patience; give either this or ``stopper``.
            (default: ``None``, never stop early)
        scheduler (optional): an LR scheduler. (default: ``None``)
        scheduler_per_batch (bool): step the scheduler after every batch instead of every epoch.
            (default: ``False``)
        grad_clip (float, optional): clip the global gradient norm to this. (default: ``None``)
        checkpoint_dir (str | PathLike, optional): where ``last.pt`` / ``best.pt`` go. (default: ``None``)
        checkpoint_every (int, optional): also write ``last.pt`` every this many steps within an epoch.
            (default: ``None``, at epoch ends only)
        checkpoint_epochs (int): write ``last.pt`` (and ``best.pt`` when the kept weights changed) after every
            this many epochs and when training ends; more than 1 for epochs so short that writing costs more
            than training (a full-batch graph). A killed run repeats at most this many epochs. (default: ``1``)
        keep_epochs (int): also keep the weights after each of the last this many epochs, as
            ``checkpoint_dir/epochs/epoch<NNN>.pt`` (the format of ``best.pt``), for averaging or for looking
            back; older ones are deleted as training goes. (default: ``0``, none)
        resume (bool): continue from ``checkpoint_dir/last.pt`` when it exists. (default: ``True``)
        config (dict | dataclass, optional): the resolved configuration, saved with every checkpoint (as a
            plain dict, see :func:`to_plain`); resuming a checkpoint saved with a different config is an
            error. (default: ``None``)
        best_extra (dict, optional): more entries for ``best.pt`` (e.g. vocabularies; tensors, numbers,
            strings and plain containers). (default: ``None``)
        progress (bool): show tqdm bars (they also hide when stderr is not a terminal). (default: ``True``)
        desc (str): the bar's and the log lines' label. (default: ``""``)
        eval_every (int): evaluate every this many epochs. (default: ``1``)
        time_budget_s (float, optional): stop (after evaluating) once the epochs so far, resumed runs
            included, took this many seconds. (default: ``None``)

    Returns:
        History: per-epoch rows, steps and the kept epoch.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if keep == "best" and evaluate is None:
        raise ValueError("keep='best' needs an evaluate function; pass keep='last' to train without evaluating")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if checkpoint_epochs < 1:
        raise ValueError(f"checkpoint_epochs must be >= 1, got {checkpoint_epochs}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 or None, got {checkpoint_every}")
    if keep_epochs < 0:
        raise ValueError(f"keep_epochs must be >= 0, got {keep_epochs}")
    if stopper is not None and patience is not None:
        raise ValueError("give either a stopper or a patience, not both")
    if stopper is None:
        stopper = EarlyStopping(patience, monitor, mode)
    distributed = dist.is_available() and dist.is_initialized()
    is_main = not distributed or dist.get_rank() == 0
    module = _unwrap(model)
    config = to_plain(config if config is not None else {})
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    bar_disabled = True if not (progress and is_main) else None  # None: tqdm hides itself off a tty
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def save_best() -> None:
        if is_main and ckpt_dir is not None and best_state is not None:
            save_checkpoint(ckpt_dir / "best.pt", {"model": best_state, "config": config, "epoch": history.best_epoch,
                                                   "metrics": history.best_metrics, **(best_extra or {})})

    def save_epoch(epoch_done: int, metrics: dict | None) -> None:
        if not (is_main and ckpt_dir is not None and keep_epochs > 0):
            return
        folder = ckpt_dir / "epochs"
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / f"epoch{epoch_done:03d}.pt", {"model": _cpu_copy(module), "config": config,
                                                               "epoch": epoch_done, "metrics": metrics or {},
                                                               **(best_extra or {})})
        for old in sorted(folder.glob("epoch*.pt"))[:-keep_epochs]:
            old.unlink()

    def save_last(epoch_done: int, position: int, partial: dict | None) -> None:
        if is_main and ckpt_dir is not None:
            save_checkpoint(ckpt_dir / "last.pt", {
                "model": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "stopper": stopper.state_dict(), "epoch": epoch_done, "position": position, "partial": partial,
                "history": history.to_dict(), "best_state": best_state, "rng": _rng_state(train_data),
                "config": config, "threads": torch.get_num_threads(),
            })

    history, best_state, start, resumed, best_unsaved = History(), None, 1, None, False
    if ckpt_dir is not None and resume and (ckpt_dir / "last.pt").exists():
        resumed = load_checkpoint(ckpt_dir / "last.pt")
        if resumed["config"] != config:
            raise ValueError(
                f"{ckpt_dir / 'last.pt'} was saved with a different config; pass --no-resume to start "
                f"over or use another output folder.\n  saved:   {resumed['config']}\n  current: {config}"
            )
        module.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resumed["scheduler"])
        stopper.load_state_dict(resumed["stopper"])
        history, best_state = History.from_dict(resumed["history"]), resumed["best_state"]
        _set_rng_state(resumed["rng"], train_data)
        start = resumed["epoch"] + 1
        logger.info("resuming %s after epoch %d%s from %s", desc or "training", resumed["epoch"],
                    f" and {resumed['position']} batch(es) of epoch {start}" if resumed.get("position") else "",
                    ckpt_dir / "last.pt")
        saved_threads = resumed.get("threads")  # absent from checkpoints written before it was saved
        if saved_threads is not None and saved_threads != torch.get_num_threads():
            logger.warning("%s was saved by a run with %d thread(s) and resumes with %d: the thread count changes "
                           "the order of floating-point sums, so from here on the figures will differ slightly from "
                           "an uninterrupted run's (resume with --threads %d to repeat it exactly)",
                           ckpt_dir / "last.pt", saved_threads, torch.get_num_threads(), saved_threads)

    bar = tqdm(range(start, epochs + 1), initial=start - 1, total=epochs, desc=desc or None, unit="epoch",
               disable=bar_disabled)
    for epoch in bar:
        if history.stopped_early:  # resumed from a run that had already stopped
            break
        started = time.perf_counter()
        partial = resumed.get("partial") if resumed is not None and resumed.get("position") else None
        position = resumed["position"] if partial is not None else 0
        resumed = None
        if partial is not None:  # rebuild the epoch's order from the RNG state at its start
            _set_rng_state(partial["epoch_rng"], train_data)
        epoch_rng = _rng_state(train_data) if checkpoint_every is not None else None
        _set_epoch(train_data, epoch)
        model.train()
        iterator = iter(train_data)
        for _ in range(position):  # the batches the checkpoint had already trained on
            next(iterator)
        if partial is not None:
            _set_rng_state(partial["rng"], train_data)
        total = len(train_data) if hasattr(train_data, "__len__") else None
        batches = iterator
        if total is not None and total >= BATCH_BAR_MIN_BATCHES:
            batches = tqdm(iterator, desc=f"epoch {epoch}", leave=False, unit="batch", initial=position, total=total,
                           disable=bar_disabled)
        loss_sum = partial["loss_sum"] if partial is not None else None
        count = partial["loss_count"] if partial is not None else 0
        lr = partial["lr"] if partial is not None else optimizer.param_groups[0]["lr"]
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = train_step(model, batch)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None and scheduler_per_batch:
                scheduler.step()
            detached = loss.detach().float()  # no .item() per batch: that would sync the GPU every step
            loss_sum = detached if loss_sum is None else loss_sum.to(detached.device) + detached
            count += 1
            position += 1
            history.steps += 1
            if checkpoint_every is not None and history.steps % checkpoint_every == 0 and position != total:
                save_last(epoch - 1, position, {"epoch_rng": epoch_rng, "rng": _rng_state(train_data),
                                                "loss_sum": loss_sum.cpu(), "loss_count": count,
                                                "lr": lr})
        if count == 0:
            raise ValueError("train_data yielded no batches")
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": loss_sum.item() / count}
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training loss is {row['train_loss']} in epoch {epoch}")

        over_budget = (time_budget_s is not None
                       and history.train_seconds + time.perf_counter() - started >= time_budget_s)
        metrics = None
        if is_main and evaluate is not None and (epoch % eval_every == 0 or epoch == epochs or over_budget):
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in evaluate(module).items()}
        if distributed:
            shared = [metrics, over_budget]
            dist.broadcast_object_list(shared, src=0)
            metrics, over_budget = shared

        if metrics is not None:
            row.update(metrics)
            if stopper.update(metrics) and keep == "best":
                history.best_epoch, history.best_metrics = epoch, metrics
                history.best_value = metrics.get(stopper.monitor)
                best_state, best_unsaved = _cpu_copy(module), True
            if plateau and not scheduler_per_batch:
                scheduler.step(metrics[stopper.monitor])
        if scheduler is not None and not scheduler_per_batch and not plateau:
            scheduler.step()

        row["seconds"] = time.perf_counter() - started
        history.epochs.append(row)
        history.train_seconds += row["seconds"]
        if metrics is not None and stopper.should_stop and epoch < epochs:
            history.stopped_early, history.stop_reason = True, "patience"
        elif over_budget and epoch < epochs:
            history.stopped_early, history.stop_reason = True, "time budget"
        finished = history.stopped_early or epoch == epochs
        if keep == "last" and finished:
            history.best_epoch, history.best_metrics = epoch, metrics or {}
            history.best_value = (metrics or {}).get(stopper.monitor)
            best_state, best_unsaved = _cpu_copy(module), True
        save_epoch(epoch, metrics)
        if finished or epoch % checkpoint_epochs == 0:
            if best_unsaved:
                save_best()
                best_unsaved = False
            save_last(epoch, 0, None)

        shown = {"loss": f"{row['train_loss']:.4f}"}
        if stopper.monitor in row:
            shown[stopper.monitor] = f"{row[stopper.monitor]:.4f}"
        bar.set_postfix(shown)
        if is_main:
            logger.info("%s epoch %d/%d %s", desc, epoch, epochs,
                        " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if history.stopped_early:
            break
    bar.close()

    if best_state is not None:
        module.load_state_dict(best_state)
    model.eval()
    return history
