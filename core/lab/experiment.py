"""What every demo writes, and the command-line flags every demo shares.

A demo trains each model over one or more seeds, folds the runs into a :class:`ModelResult` with
:func:`summarize_runs`, and writes ``metrics.json`` (:func:`write_metrics`, machine-readable, with the
config, versions and command) and ``report.md`` (:func:`write_report`, one table row per model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.lab.bench import cpu_model
from core.lab.harness import atomic_open, select_device, set_num_threads_from_env, to_plain
from core.lab.results import table_row

ROLES = ("attention", "baseline")


@dataclass
class ModelResult:
    """One model's results over seeds.

    Attributes:
        model (str): the model's name, e.g. ``"transformer"``.
        role (str): ``"attention"`` or ``"baseline"``.
        metrics (dict[str, float]): each metric's mean over seeds.
        std (dict[str, float]): each metric's sample standard deviation over seeds (0 for one seed).
        runs (list[dict[str, float]]): the metrics of each seed.
        params (int): trainable parameters.
        train_seconds (float): mean training time per run.
        extra (dict): anything else worth keeping (e.g. the model's config).
        bookkeeping (dict[str, float]): means over seeds of how the runs went (``best_epoch``, ``epochs``,
            ``steps``, ``seconds``, ``params``, ``flops``), kept apart from ``metrics``.
        runs_bookkeeping (list[dict[str, float]]): the bookkeeping of each seed.
    """

    model: str
    role: str
    metrics: dict[str, float]
    std: dict[str, float]
    runs: list[dict[str, float]]
    params: int
    train_seconds: float
    extra: dict = field(default_factory=dict)
    bookkeeping: dict[str, float] = field(default_factory=dict)
    runs_bookkeeping: list[dict[str, float]] = field(default_factory=list)


def summarize_runs(model: str, role: str, runs: list[dict[str, float]], params: int,
                   train_seconds: list[float], extra: dict | None = None) -> ModelResult:
    """Fold per-seed metrics into means and sample standard deviations.

    Args:
        model (str): the model's name.
        role (str): ``"attention"`` or ``"baseline"``.
        runs (list[dict[str, float]]): one dict of metrics per seed, all with the same keys.
        params (int): trainable parameters (:func:`count_parameters`).
        train_seconds (list[float]): training time of each run.
        extra (dict, optional): stored as ``ModelResult.extra``. (default: ``None``)
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not runs:
        raise ValueError(f"no runs to summarize for {model}")
    keys = list(runs[0])
    if any(set(run) != set(keys) for run in runs):
        raise ValueError(f"runs of {model} report different metrics: {[sorted(run) for run in runs]}")
    values = {k: [float(run[k]) for run in runs] for k in keys}
    return ModelResult(
        model=model, role=role,
        metrics={k: statistics.fmean(v) for k, v in values.items()},
        std={k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in values.items()},
        runs=[{k: float(run[k]) for k in keys} for run in runs],
        params=int(params),
        train_seconds=statistics.fmean(train_seconds) if train_seconds else 0.0,
        extra=dict(extra or {}),
    )


def slug(name: str) -> str:
    """A file-system-safe form of a model name: ``"attention -crf"`` -> ``"attention-crf"``."""
    out = "".join(ch if ch.isalnum() or ch in "._" else "-" for ch in name.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "model"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def versions() -> dict[str, Any]:
    """Versions of Python, the libraries the results depend on, the platform, the processor and the accelerator."""
    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": installed("torchvision"),
        "torchaudio": installed("torchaudio"),
        "torch_geometric": installed("torch-geometric"),
        "numpy": installed("numpy"),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    plain = to_plain(obj)
    if plain is obj:
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")
    return plain


def write_metrics(out_dir: str | os.PathLike, *, domain: str, dataset: str, device: str | torch.device,
                  config: Any, results: list[ModelResult], extra: dict | None = None) -> Path:
    """Write ``out_dir/metrics.json`` atomically and return its path.

    Keys: ``domain``, ``dataset``, ``device``, ``versions``, ``config``, ``command`` (``sys.argv``),
    ``created`` (ISO 8601, UTC), ``results`` (one dict per model with every :class:`ModelResult` field),
    plus the keys of ``extra`` at the top level.

    Args:
        out_dir (str | PathLike): the demo's output folder (created if needed).
        domain (str): ``"text"``, ``"audio"``, ``"vision"`` or ``"graph"``.
        dataset (str): the dataset's name.
        device (str | torch.device): what the models ran on.
        config (dict | dataclass): the resolved configuration.
        results (list[ModelResult]): one per model.
        extra (dict, optional): more top-level keys; they may not replace the ones above. (default: ``None``)
    """
    payload = {
        "domain": domain, "dataset": dataset, "device": str(device), "versions": versions(),
        "config": to_plain(config), "command": list(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": [asdict(r) for r in results],
    }
    clashes = set(extra or {}) & set(payload)
    if clashes:
        raise ValueError(f"extra may not replace the keys {sorted(clashes)}")
    payload.update(extra or {})
    path = Path(out_dir) / "metrics.json"
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    return path


def _is_fraction(name: str, results: list[ModelResult]) -> bool:
    """An accuracy, F1, precision or recall kept in [0, 1] is shown in percent."""
    if not any(word in name.lower() for word in ("acc", "f1", "precision", "recall")):
        return False
    values = [r.metrics[name] for r in results if name in r.metrics]
    return bool(values) and all(0.0 <= v <= 1.0 for v in values)


def write_report(out_dir: str | os.PathLike, *, title: str, results: list[ModelResult], metric_names: list[str],
                 intro: str = "", notes: list[str] = (), figures: list[tuple[str, str]] = (),
                 bookkeeping_names: list[str] = ()) -> Path:
    """Write ``out_dir/report.md``: the title, the intro, a table with one row per model, notes and figures.

    Metric cells are ``mean ± std`` over seeds (just the mean for one seed); accuracies, F1, precision and recall in
    [0, 1] are shown in percent, marked ``(%)`` in the header.

    Args:
        out_dir (str | PathLike): the demo's output folder (created if needed).
        title (str): the report's heading.
        results (list[ModelResult]): one per model, in table order.
        metric_names (list[str]): the metrics to tabulate, in column order.
        intro (str): a paragraph under the title. (default: ``""``)
        notes (list[str]): bullet points under the table. (default: ``()``)
        figures (list[tuple[str, str]]): ``(caption, file name relative to out_dir)`` pairs, shown as
            images. (default: ``()``)
        bookkeeping_names (list[str]): columns of ``ModelResult.bookkeeping`` (means over seeds) after the
            metrics, e.g. ``["best_epoch", "epochs"]``. (default: ``()``)
    """
    percent = {name: _is_fraction(name, results) for name in metric_names}
    header = ["model", "role", *[f"{n} (%)" if percent[n] else n for n in metric_names],
              *[f"{n} (mean)" for n in bookkeeping_names], "seeds", "params", "train s / run"]
    rows = []
    for r in results:
        cells = [r.model, r.role]
        for name in metric_names:
            if name not in r.metrics:
                cells.append("—")
                continue
            scale = 100.0 if percent[name] else 1.0
            mean, std = r.metrics[name] * scale, r.std.get(name, 0.0) * scale
            fmt = "{:.2f}" if percent[name] else "{:.4g}"
            cells.append(fmt.format(mean) + (" ± " + fmt.format(std) if len(r.runs) > 1 else ""))
        cells += [f"{r.bookkeeping[n]:.4g}" if n in r.bookkeeping else "—" for n in bookkeeping_names]
        cells += [str(len(r.runs)), f"{r.params:,}", f"{r.train_seconds:.1f}"]
        rows.append(cells)

    lines = [f"# {title}", ""]
    if intro:
        lines += [intro.strip(), ""]
    lines += [table_row(header), "|" + "---|" * len(header)]
    lines += [table_row(cells) for cells in rows]
    lines += ["", "Cells are mean ± sample standard deviation over seeds; (%) marks accuracies and F1 scores "
                  "shown in percent.", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, file in figures:
            lines += [f"![{caption}]({Path(file).as_posix()})", "", f"*{caption}*", ""]
    path = Path(out_dir) / "report.md"
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def add_common_args(parser: argparse.ArgumentParser, *, default_out: str) -> argparse.ArgumentParser:
    """Add the flags every demo shares; :func:`apply_common_args` acts on them.

    Args:
        parser (argparse.ArgumentParser): the demo's parser.
        default_out (str): the default output folder, e.g. ``"runs/audio"``.
    """
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the datasets (default: $ATTNLAB_DATA, else ~/.cache/attnlab)")
    parser.add_argument("--out", default=default_out,
                        help=f"output folder for metrics.json, report.md, figures and checkpoints "
                             f"(default: {default_out})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to train: auto picks CUDA when available, else the CPU (default: auto)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every model with this many seeds (seed, seed+1, ...) and report "
                             "mean ± std (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default: 0)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from the checkpoints in --out when present; --no-resume trains "
                             "from scratch (default: resume)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: $ATTNLAB_THREADS, else torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def apply_common_args(args: argparse.Namespace) -> torch.device:
    """Set torch's thread count from ``--threads`` (or ``$ATTNLAB_THREADS``) and return the device
    chosen by ``--device``.

    Args:
        args (argparse.Namespace): parsed with the flags of :func:`add_common_args`.
    """
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    else:
        set_num_threads_from_env()
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    return select_device(args.device)
