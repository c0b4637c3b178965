"""One experiment runner: every domain's ``compare`` is a list of model specs and one ``train_one``.

A domain declares *what* it trains; the runner owns *how* an experiment is run and recorded::

    contract = MetricsContract(headline="test_accuracy", select="val_accuracy", mode="max")
    specs = [ModelSpec("gat", "attention", GATConfig()), ModelSpec("mlp", "baseline", MLPConfig())]

    def train_one(spec: ModelSpec, seed: int, ctx: RunContext) -> RunRecord:
        model = build(spec.config).to(ctx.device)
        history = ctx.fit(model, optimizer, train_data=..., train_step=..., evaluate=..., epochs=...)
        return RunRecord(metrics={"val_accuracy": ..., "test_accuracy": ...},
                         bookkeeping=ctx.bookkeeping(history, model), history=history.epochs, model=model)

    experiment = Experiment(domain="graph", dataset="Cora", title="...", contract=contract,
                            specs=specs, train_one=train_one, config=train_config, data_identity={...})
    result = run_experiment(experiment, RunnerOptions.from_args(args))

The runner owns:

- the loop over specs x seeds (``seed_everything(seed)`` before each run) and a progress bar over runs;
- the run folders ``<out>/<model slug>/seed<k>/``: ``identity.json`` (what this run is), ``last.pt``
  (everything needed to resume, written by :func:`core.lab.harness.fit`), ``best.pt`` (the kept weights),
  ``record.json`` (the finished run's :class:`RunRecord`);
- resume: a finished run with the same identity is loaded, not retrained; an interrupted one continues
  from ``last.pt``; a run whose identity (model config, training config, seed, data) differs from the
  stored one is refused, naming what differs, before anything is written (a field added to a configuration
  since the run was stored, and now at its default, is no difference: the stored run is the same run);
- a lock file ``<out>/.lock``: a second run on the same ``--out`` refuses while the first is alive;
- orphaned ``*.tmp`` files (a writer killed mid-checkpoint) are removed at start;
- an ``--out`` holding a ``metrics.json`` the runner did not write (g2p's ``average`` or ``ensemble`` record)
  is refused before anything is written, since the runner's own record would replace it;
- ``Experiment.prepare``: work the runs need that writes into the output folder (g2p's teacher decoding the
  training words), done under the lock once the stored runs' identities have passed, so a folder that belongs
  to another run is refused before that work starts and no second process can write there meanwhile;
- mean and sample std over seeds of every metric, bookkeeping kept apart (never averaged among metrics);
- ``metrics.json`` and ``report.md`` (which split selected the weights, which metric is the headline,
  whether ``--time-budget`` was used, wall time, threads, device, world size, versions);
- ``torchrun``: :func:`core.lab.distributed.init_distributed` once; ``ctx.wrap(model)`` wraps in DDP;
  rank 0 alone evaluates, writes checkpoints, records, ``metrics.json`` and ``report.md``. An experiment
  with ``distributed=False`` (full-batch graphs) refuses ``WORLD_SIZE > 1`` with a clear message.

The metrics contract (see ``docs/core-api.md``, "Runner and metrics contract", and
``tests/test_metrics_contract.py``): metric names start with the split they were measured on (``train_``,
``val_``, ``test_``); the contract names the headline metric (a ``test_`` metric) and the validation metric
that selects (a ``val_`` metric, with ``mode`` max or min); best epoch, epochs, steps, seconds, params and
FLOPs are bookkeeping and go to ``RunRecord.bookkeeping``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from core.lab.bench import cpu_model
from core.lab.distributed import DistInfo, cleanup, init_distributed, wrap_ddp
from core.lab.experiment import (ROLES, ModelResult, count_parameters, slug, summarize_runs, write_metrics,
                                 write_report)
from core.lab.harness import History, atomic_open, fit, read_json_object, seed_everything, to_plain

__all__ = [
    "SPLITS", "BOOKKEEPING", "MetricsContract", "ModelSpec", "RunRecord", "RunContext", "Experiment",
    "RunnerOptions", "ExperimentResult", "RunnerError", "run_experiment", "check_metrics_payload", "check_out_dir",
    "stored_record", "stored_runs",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Names that are bookkeeping, never metrics: they describe how a run went, not how good the model is.
BOOKKEEPING = ("best_epoch", "epochs", "steps", "seconds", "params", "flops")
LOCK_NAME = ".lock"


class RunnerError(RuntimeError):
    """An experiment the runner refuses to start (busy ``--out``, resume of a different run, torchrun for a
    single-process domain). The message is one line meant for the user."""


# ------------------------------------------------------------------------------------------------
# what a domain declares


@dataclass(frozen=True)
class MetricsContract:
    """Which metric a domain reports first and which one chooses the weights.

    Args:
        headline (str): the metric the report leads with, measured on test, e.g. ``"test_f1"``.
        select (str): the validation metric that picks the kept weights (and early stopping's default
            monitor), e.g. ``"val_f1"``. Test never selects anything.
        mode (str): ``"max"`` or ``"min"``: whether a larger ``select`` is better. (default: ``"max"``)
        rule (str): how the weights are chosen, in words, when more than ``select`` decides (e.g. GAT's rule
            on validation accuracy and loss); shown in the report. (default: ``""``: the best ``select``)
    """

    headline: str
    select: str
    mode: str = "max"
    rule: str = ""

    def __post_init__(self) -> None:
        if not self.headline.startswith("test_"):
            raise ValueError(f"the headline metric is measured on test: expected test_..., got {self.headline!r}")
        if not self.select.startswith("val_"):
            raise ValueError(f"selection happens on validation: expected val_..., got {self.select!r}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    def problems(self, metrics: dict[str, float]) -> list[str]:
        """What is wrong with one run's ``metrics`` under this contract (empty when nothing is)."""
        found = [f"metric {name!r} does not start with a split ({', '.join(s + '_' for s in SPLITS)})"
                 for name in metrics if name.split("_", 1)[0] not in SPLITS]
        found += [f"{name!r} is bookkeeping, not a metric: put it in RunRecord.bookkeeping"
                  for name in metrics if _is_bookkeeping(name)]
        found += [f"the {role} metric {name!r} is missing" for role, name in
                  (("headline", self.headline), ("selection", self.select)) if name not in metrics]
        return found


def _is_bookkeeping(name: str) -> bool:
    rest = name.split("_", 1)[1] if name.split("_", 1)[0] in SPLITS and "_" in name else name
    return rest in BOOKKEEPING or "seconds" in rest or rest.endswith("_per_s") or rest.startswith("ms_")


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison.

    Args:
        name (str): the row's name in the report and the run folder (slugged), e.g. ``"gat"`` or
            ``"attention -crf"``.
        role (str): ``"attention"`` or ``"baseline"``.
        config (dataclass): the model's resolved configuration; part of the run's identity.
        train (dataclass, optional): a training configuration for this spec only (e.g. a shorter
            ablation schedule); ``None``: the experiment's ``config``. (default: ``None``)
        seeds (int, optional): train only the first this many of the command's seeds (ablations: 1);
            ``None``: all of them. (default: ``None``)
    """

    name: str
    role: str
    config: Any
    train: Any = None
    seeds: int | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role of {self.name!r} must be one of {ROLES}, got {self.role!r}")


@dataclass
class RunRecord:
    """What one spec trained with one seed produced.

    Attributes:
        metrics (dict[str, float]): split-prefixed metrics of the kept weights (``val_*`` from the
            selection split, ``test_*`` scored once at the end, optional ``train_*``); averaged over seeds.
        bookkeeping (dict[str, float]): how the run went: any of ``best_epoch``, ``epochs``, ``steps``,
            ``seconds``, ``params``, ``flops`` (and throughput such as ``test_sentences_per_s``); kept
            apart from the metrics.
        history (list[dict]): :class:`core.lab.harness.History` ``epochs`` rows, for learning curves.
        model (nn.Module, optional): the trained model with its kept weights, in memory only (figures);
            ``None`` when the record was loaded from an earlier invocation (``best.pt`` holds the weights).
        extra (dict): more JSON-able details of this run, stored in ``record.json`` and not averaged.
        run_dir (Path, optional): set by the runner: the run folder.
        loaded (bool): set by the runner: the run was finished by an earlier invocation.
    """

    metrics: dict[str, float]
    bookkeeping: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    extra: dict = field(default_factory=dict)
    run_dir: Path | None = None
    loaded: bool = False

    def to_json(self) -> dict:
        return {"metrics": self.metrics, "bookkeeping": self.bookkeeping, "history": self.history,
                "extra": self.extra}


@dataclass
class RunContext:
    """Everything ``train_one`` needs from the runner for one run.

    Attributes:
        spec (ModelSpec): the spec being trained.
        seed (int): its seed (the runner has already called ``seed_everything(seed)``).
        run_dir (Path): ``<out>/<model slug>/seed<k>/``; ``fit`` checkpoints here.
        device (torch.device): this process's device.
        dist (DistInfo): rank and world size (one process: rank 0 of 1).
        contract (MetricsContract): the experiment's contract.
        identity (dict): what this run is; saved in its checkpoints.
        resume (bool): continue from ``run_dir/last.pt`` when present.
        progress (bool): show progress bars.
        time_budget_s (float, optional): ``--time-budget`` in seconds per run, ``None`` when not given.
        train (Any): this run's training configuration: ``spec.train``, else the experiment's ``config``.
        checkpoint_every (int, optional): also write ``last.pt`` every this many steps inside an epoch
            (``--checkpoint-every``); not part of the identity, since it does not change the results.
    """

    spec: ModelSpec
    seed: int
    run_dir: Path
    device: torch.device
    dist: DistInfo
    contract: MetricsContract
    identity: dict
    resume: bool = True
    progress: bool = True
    time_budget_s: float | None = None
    train: Any = None
    checkpoint_every: int | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, scores test and writes files."""
        return self.dist.is_main

    @property
    def desc(self) -> str:
        return f"{self.spec.name} seed {self.seed}"

    def wrap(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and, under torchrun, wrap it in ``DistributedDataParallel``."""
        return wrap_ddp(model, self.dist)

    def fit(self, model: nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any) -> History:
        """:func:`core.lab.harness.fit` with this run's folder, resume flag, progress, time budget,
        identity and the contract's selection metric filled in (each may be overridden by ``kwargs``).
        """
        options = dict(checkpoint_dir=self.run_dir, resume=self.resume, progress=self.progress, desc=self.desc,
                       time_budget_s=self.time_budget_s, monitor=self.contract.select, mode=self.contract.mode,
                       config=self.identity, checkpoint_every=self.checkpoint_every)
        options.update(kwargs)
        return fit(model, optimizer, **options)

    def bookkeeping(self, history: History, model: nn.Module | None = None, **more: float) -> dict[str, float]:
        """The usual bookkeeping of a run trained by :meth:`fit`: ``best_epoch``, ``epochs``, ``steps``,
        ``seconds`` (training wall time) and ``params`` (when ``model`` is given), plus ``more``."""
        out = {"best_epoch": float(history.best_epoch or 0), "epochs": float(len(history.epochs)),
               "steps": float(history.steps), "seconds": float(history.train_seconds)}
        if model is not None:
            out["params"] = float(count_parameters(model))
        out.update({k: float(v) for k, v in more.items()})
        return out


FigureFn = Callable[[dict[str, list[RunRecord]], Path], list[tuple[str, str]]]
SummaryFn = Callable[[dict[str, list[RunRecord]], list[ModelResult]], tuple[list[str], dict]]


@dataclass
class Experiment:
    """A domain's comparison, declared.

    Args:
        domain (str): ``"text"``, ``"audio"``, ``"vision"`` or ``"graph"``.
        dataset (str): the dataset's name, for metrics.json and the report.
        title (str): the report's heading.
        contract (MetricsContract): headline and selection metrics.
        specs (list[ModelSpec]): the rows, in report order.
        train_one (Callable[[ModelSpec, int, RunContext], RunRecord]): trains one spec with one seed
            in ``ctx.run_dir`` and returns its record (rank 0's record is the one kept).
        config (dataclass | dict, optional): the shared training configuration; saved in metrics.json and
            part of each run's identity. (default: ``None``)
        data_identity (dict): what the data is (file names, sizes, checksums, split seeds); part of each
            run's identity, so resuming on other data is refused. (default: ``{}``)
        intro (str): the report's first paragraph. (default: ``""``)
        notes (list[str]): the domain's own report notes, after the runner's. (default: ``[]``)
        table (list[str]): metric columns after the headline and the selection metric. (default: ``[]``)
        bookkeeping_table (list[str]): bookkeeping columns in the report.
            (default: ``["best_epoch", "epochs", "seconds"]``)
        distributed (bool): whether ``train_one`` supports several processes; ``False`` refuses
            ``WORLD_SIZE > 1``. (default: ``True``)
        figures (Callable[[dict[str, list[RunRecord]], Path], list[tuple[str, str]]], optional): draws the
            figures from the records (rank 0 only) and returns ``(caption, file)`` pairs for the report.
            (default: ``None``)
        extra (dict): more top-level keys for metrics.json. (default: ``{}``)
        prepare (Callable[[Path], tuple[list[str], dict]], optional): work every run needs that writes into
            the output folder, e.g. a file computed once and read back when the command comes again (g2p's
            teacher pronunciations, ``<out>/teacher.json``). Called with the output folder, once, while the
            runner holds its lock and after every stored run's identity has been checked (so nothing is
            computed or written for a folder that belongs to another run), before the first run trains. What it
            computes and a run depends on must be part of ``data_identity`` already (e.g. the checksums of the
            files it reads). Returns report notes (after ``notes``) and more top-level keys for metrics.json.
            Single-process experiments only (``distributed=False``). (default: ``None``)
        summary (Callable[[dict[str, list[RunRecord]], list[ModelResult]], tuple[list[str], dict]], optional):
            conclusions drawn once every run is done (rank 0 only), e.g. which variant is best on validation:
            returns report notes (after ``notes``) and more top-level keys for metrics.json. It may also add
            numbers measured after training to a result's ``bookkeeping`` (e.g. a speed timed once every model
            is trained), which metrics.json and the report's table then show. (default: ``None``)
    """

    domain: str
    dataset: str
    title: str
    contract: MetricsContract
    specs: list[ModelSpec]
    train_one: Callable[[ModelSpec, int, RunContext], RunRecord]
    config: Any = None
    data_identity: dict = field(default_factory=dict)
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    table: list[str] = field(default_factory=list)
    bookkeeping_table: list[str] = field(default_factory=lambda: ["best_epoch", "epochs", "seconds"])
    distributed: bool = True
    figures: FigureFn | None = None
    extra: dict = field(default_factory=dict)
    summary: SummaryFn | None = None
    prepare: Callable[[Path], tuple[list[str], dict]] | None = None


@dataclass
class RunnerOptions:
    """How the command asked for the experiment to be run (the shared flags of :mod:`core.lab.cli`).

    Args:
        out (Path): the output folder.
        seeds (list[int]): the seeds, e.g. ``[0, 1, 2]``.
        device (str): ``"auto"``, ``"cpu"`` or ``"cuda"``. (default: ``"auto"``)
        resume (bool): reuse finished runs and continue interrupted ones. (default: ``True``)
        progress (bool): show progress bars. (default: ``True``)
        time_budget_s (float, optional): stop each run after the epoch that crosses this many seconds
            (an explicit equal-time comparison; the report says so). (default: ``None``)
        checkpoint_every (int, optional): also write ``last.pt`` every this many steps inside an epoch, so a
            run killed mid-epoch loses at most that many steps. (default: ``None``, at epoch ends)
    """

    out: Path
    seeds: list[int]
    device: str = "auto"
    resume: bool = True
    progress: bool = True
    time_budget_s: float | None = None
    checkpoint_every: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, out: str | Path | None = None) -> RunnerOptions:
        """From flags added by :func:`core.lab.cli.add_common_args` (``--time-budget`` in minutes when the
        command has it). ``out`` overrides ``args.out`` (e.g. after filling in ``<dataset>``)."""
        budget = getattr(args, "time_budget", None)
        return cls(out=Path(out if out is not None else args.out), seeds=list(range(args.seed, args.seed + args.seeds)),
                   device=args.device, resume=args.resume, progress=not args.no_progress,
                   time_budget_s=budget * 60.0 if budget else None,
                   checkpoint_every=getattr(args, "checkpoint_every", None))


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        out (Path): the output folder.
        results (list[ModelResult]): one per spec, mean ± std over seeds (rank 0; empty elsewhere).
        records (dict[str, list[RunRecord]]): each spec's records, in seed order.
        wall_seconds (float): wall time of this invocation.
        metrics_path (Path, optional): ``out/metrics.json`` (``None`` on ranks other than 0).
    """

    out: Path
    results: list[ModelResult]
    records: dict[str, list[RunRecord]]
    wall_seconds: float
    metrics_path: Path | None


# ------------------------------------------------------------------------------------------------
# the runner


def run_experiment(experiment: Experiment, options: RunnerOptions) -> ExperimentResult:
    """Train every spec with every seed, then write ``metrics.json``, ``report.md`` and the figures.

    Args:
        experiment (Experiment): what to train and how to report it.
        options (RunnerOptions): where, with which seeds, on which device, resume or not.

    Raises:
        RunnerError: ``--out`` busy (lock held by another run), a stored run whose identity differs or a
            ``metrics.json`` the runner did not write (nothing written or prepared before either), or
            torchrun with several processes for a single-process experiment.
    """
    if not experiment.distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RunnerError(f"{experiment.domain} trains full-batch in one process; run `python -m "
                          f"{experiment.domain}` without torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']})")
    if experiment.prepare is not None and experiment.distributed:
        raise ValueError("an experiment with prepare must be single-process (distributed=False): prepare runs once, "
                         "in one process")
    names = [spec.name for spec in experiment.specs]
    if len(set(map(slug, names))) != len(names):
        raise ValueError(f"model names must differ after slugging: {names}")
    joined_here = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(options.device)
    out = Path(options.out)
    plan = [(spec, seed) for spec in experiment.specs for seed in options.seeds[: spec.seeds or None]]
    identities = {(spec.name, seed): _identity(experiment, spec, seed, info) for spec, seed in plan}
    if options.resume:  # a run saved before a field was added, at that field's default, is this run
        _adopt_older_identities(out, plan, identities, experiment)

    lock = None
    if info.is_main:
        check_out_dir(out)
        _check_foreign_record(out)  # refuse before writing anything, the lock file included
        if options.resume:
            _check_identities(out, plan, identities)
        out.mkdir(parents=True, exist_ok=True)
        lock = _acquire_lock(out)
    try:
        if info.is_main:
            _check_foreign_record(out)  # the first checks ran without the lock; a run may have started since
            if options.resume:
                _check_identities(out, plan, identities)
            removed = clean_orphans(out)
            if removed:
                logger.info("removed %d orphaned temporary file(s) under %s", len(removed), out)
            if not options.resume:
                for spec, seed in plan:
                    shutil.rmtree(run_dir_of(out, spec.name, seed), ignore_errors=True)
            if experiment.prepare is not None:
                notes, extra = experiment.prepare(out)
                experiment = dataclasses.replace(experiment, notes=[*experiment.notes, *notes],
                                                 extra={**experiment.extra, **extra})
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank sees the run folders as rank 0 left them
        return _run(experiment, options, info, out, plan, identities)
    finally:
        if lock is not None:
            _release_lock(lock)
        if joined_here:
            cleanup()


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


def _run(experiment: Experiment, options: RunnerOptions, info: DistInfo, out: Path, plan: list,
         identities: dict) -> ExperimentResult:
    started, load_at_start = time.perf_counter(), _load_average()
    if info.is_main:
        logger.info("%s on %s: %d model(s), seeds %s, %d run(s) on %s, %d thread(s), %d process(es); output in %s",
                    experiment.domain, experiment.dataset, len(experiment.specs), options.seeds, len(plan), info.device,
                    torch.get_num_threads(), info.world_size, out)
    records: dict[str, list[RunRecord]] = {spec.name: [] for spec in experiment.specs}
    bar = tqdm(plan, desc="runs", unit="run", disable=True if not (options.progress and info.is_main) else None)
    for spec, seed in bar:
        identity = identities[(spec.name, seed)]
        run_dir = run_dir_of(out, spec.name, seed)
        record = _load_record(run_dir, identity) if options.resume else None
        if record is None:
            if info.is_main:
                _write_json(run_dir / "identity.json", identity)
            seed_everything(seed)
            ctx = RunContext(spec=spec, seed=seed, run_dir=run_dir, device=info.device, dist=info,
                             contract=experiment.contract, identity=identity, resume=options.resume,
                             progress=options.progress, time_budget_s=options.time_budget_s,
                             train=spec.train if spec.train is not None else experiment.config,
                             checkpoint_every=options.checkpoint_every)
            record = experiment.train_one(spec, seed, ctx)
            record.run_dir = run_dir
            if info.is_main:
                problems = experiment.contract.problems(record.metrics)
                if problems:
                    raise ValueError(f"{experiment.domain} {spec.name} seed {seed}: " + "; ".join(problems))
                _write_json(run_dir / "record.json", {"identity": identity, **record.to_json()})
        if info.is_main:
            logger.info("%s seed %d: %s%s", spec.name, seed, _show(record.metrics, experiment.contract),
                        " (finished earlier, loaded)" if record.loaded else "")
        records[spec.name].append(record)
    bar.close()
    wall = time.perf_counter() - started
    if not info.is_main:
        return ExperimentResult(out, [], records, wall, None)

    results = [_summarize(spec, records[spec.name]) for spec in experiment.specs]
    for r in results:
        logger.info("%s: %s over %d seed(s)", r.model, _show(r.metrics, experiment.contract, r.std), len(r.runs))
    summary_notes, summary_extra = experiment.summary(records, results) if experiment.summary is not None else ([], {})
    figures = experiment.figures(records, out) if experiment.figures is not None else []
    contract = experiment.contract
    selection_note = ("the weights kept in every run are chosen on the validation split, "
                      + (contract.rule or f"by the best {contract.select} ({contract.mode})")
                      + f"; test is scored once on them and chooses nothing. Headline: {contract.headline}.")
    payload_extra = {
        "contract": {"headline": contract.headline, "select": contract.select, "mode": contract.mode,
                     "rule": contract.rule},
        "selection_note": selection_note,
        "seeds": options.seeds, "wall_seconds": wall, "threads": torch.get_num_threads(),
        "world_size": info.world_size, "time_budget_s": options.time_budget_s,
        "load_average": {"start": load_at_start, "end": _load_average(), "cpu_count": os.cpu_count()},
        "data": experiment.data_identity, **experiment.extra, **summary_extra,
    }
    path = write_metrics(out, domain=experiment.domain, dataset=experiment.dataset, device=info.device,
                         config={"train": experiment.config, "models": {s.name: s.config for s in experiment.specs},
                                 "spec_train": {s.name: s.train for s in experiment.specs if s.train is not None}},
                         results=results, extra=payload_extra)
    loaded = sum(r.loaded for rs in records.values() for r in rs)
    notes = [
        f"selection: {selection_note}",
        (f"time budget: --time-budget {options.time_budget_s / 60:g} min per run was used (an equal-time "
         "comparison: runs stop after the epoch that crosses it, so results depend on the machine's speed)"
         if options.time_budget_s else "schedules are counted in epochs and steps (no time budget): the same "
                                      "command and seed give the same results on the same machine"),
        f"wall time of this command: {wall / 60:.1f} min on {info.device}"
        + (f" ({processor})" if info.device.type == "cpu" and (processor := cpu_model()) else "")
        + f", {torch.get_num_threads()} thread(s), "
        f"{info.world_size} process(es); 1-minute load average {load_at_start} at the start, {_load_average()} at the "
        f"end, on {os.cpu_count()} CPU(s)" + (f"; {loaded} run(s) finished by an earlier invocation were loaded"
                                              if loaded else ""),
        *experiment.notes,
        *summary_notes,
    ]
    columns = list(dict.fromkeys([contract.headline, contract.select, *experiment.table]))
    write_report(out, title=experiment.title, results=results, metric_names=columns,
                 bookkeeping_names=experiment.bookkeeping_table, intro=experiment.intro, notes=notes,
                 figures=figures)
    logger.info("wrote %s and %s (%.1f min)", out / "metrics.json", out / "report.md", wall / 60)
    return ExperimentResult(out, results, records, wall, path)


def _summarize(spec: ModelSpec, records: list[RunRecord]) -> ModelResult:
    books = [r.bookkeeping for r in records]
    keys = list(dict.fromkeys(k for b in books for k in b))
    mean_books = {k: statistics.fmean([b[k] for b in books if k in b]) for k in keys}
    result = summarize_runs(spec.name, spec.role, [r.metrics for r in records],
                            int(mean_books.get("params", 0)), [b.get("seconds", 0.0) for b in books],
                            extra={"config": to_plain(spec.config)})
    result.bookkeeping = mean_books
    result.runs_bookkeeping = books
    return result


def _show(metrics: dict[str, float], contract: MetricsContract, std: dict[str, float] | None = None) -> str:
    parts = []
    for name in dict.fromkeys([contract.headline, contract.select]):
        if name in metrics:
            value = f"{metrics[name]:.4f}" + (f" ± {std[name]:.4f}" if std else "")
            parts.append(f"{name} {value}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------
# run folders, identities, the lock


def run_dir_of(out: Path, model: str, seed: int) -> Path:
    """``<out>/<model slug>/seed<seed>/``."""
    return Path(out) / slug(model) / f"seed{seed}"


def _identity(experiment: Experiment, spec: ModelSpec, seed: int, info: DistInfo) -> dict:
    return to_plain({
        "domain": experiment.domain, "dataset": experiment.dataset, "data": experiment.data_identity,
        "model": spec.name, "role": spec.role, "config": spec.config,
        "train": spec.train if spec.train is not None else experiment.config, "seed": seed,
        "world_size": info.world_size,
    })


def field_defaults(obj: Any) -> dict | None:
    """The plain default value of every field of a dataclass instance that has one (a nested dataclass
    field without a default: the defaults of its own fields); ``None`` for anything else."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return None
    defaults = {}
    for f in dataclasses.fields(obj):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = to_plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = to_plain(f.default_factory())
        elif (nested := field_defaults(getattr(obj, f.name))) is not None:
            defaults[f.name] = nested
    return defaults


def identity_differences(saved: Any, current: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """The dotted paths at which two plain (JSON-like) values differ, e.g. ``["config.hidden: 8 -> 16"]``.

    ``defaults`` (a tree like ``current``'s, of default values) forgives a key that ``saved`` lacks where
    ``current`` holds that key's default: a field added to a configuration after the run was saved, at the
    value the saved run in effect had. A key that ``current`` lacks, or holds at another value, still differs.
    """
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        defaults = defaults if isinstance(defaults, dict) else {}
        for key in sorted(set(saved) | set(current)):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved:
                if key not in defaults or defaults[key] != current[key]:
                    found.append(f"{path}: (absent) -> {current[key]!r}")
            elif key not in current:
                found.append(f"{path}: {saved[key]!r} -> (absent)")
            else:
                found += identity_differences(saved[key], current[key], path, defaults.get(key))
        return found
    return [] if saved == current else [f"{prefix or 'value'}: {saved!r} -> {current!r}"]


def _adopt_older_identities(out: Path, plan: list, identities: dict, experiment: Experiment) -> None:
    """Where a stored run's identity lacks only fields added since, each at its default now, that stored
    identity is this run's (so its record loads and its ``last.pt`` resumes); every rank reads the same files."""
    for spec, seed in plan:
        file = run_dir_of(out, spec.name, seed) / "identity.json"
        if not file.exists():
            continue
        saved, current = json.loads(file.read_text()), identities[(spec.name, seed)]
        defaults = {"config": field_defaults(spec.config),
                    "train": field_defaults(spec.train if spec.train is not None else experiment.config)}
        if saved != current and not identity_differences(saved, current, defaults=defaults):
            logger.info("%s: stored before %s existed; resuming it as the same run", file.parent,
                        ", ".join(d.split(":")[0] for d in identity_differences(saved, current)))
            identities[(spec.name, seed)] = saved


def _check_identities(out: Path, plan: list, identities: dict) -> None:
    for spec, seed in plan:
        file = run_dir_of(out, spec.name, seed) / "identity.json"
        if not file.exists():
            continue
        saved = json.loads(file.read_text())
        differences = identity_differences(saved, identities[(spec.name, seed)])
        if differences:
            shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
            raise RunnerError(f"{file.parent} holds a different run (saved -> now: {shown}); pass --no-resume to "
                              "train it again from scratch, or choose another --out")


def _check_foreign_record(out: Path) -> None:
    """Refuse an ``--out`` holding a ``metrics.json`` that the runner did not write: another command's record
    (g2p's ``average`` or ``ensemble``), which the runner's own ``metrics.json`` and ``report.md`` would replace
    at its end. ``--no-resume`` does not change that: it retrains this command's runs, it does not discard
    other results. A runner's record is told by its ``config.models`` (one entry per model), which every
    runner record holds, older ones included; rerunning over one rewrites it, as it always has."""
    record = stored_record(out)
    if record is None:
        return
    config = record.get("config")
    if not (isinstance(config, dict) and isinstance(config.get("models"), dict)):
        raise RunnerError(f"--out {out} holds {out / 'metrics.json'}, which this runner did not write (another "
                          "command's record, such as g2p's average or ensemble); this command would write over it at "
                          "its end: choose another --out, or remove that file first")


def stored_record(out: Path) -> dict | None:
    """``out/metrics.json`` as read back (``core.lab.harness.read_json_object``): ``None`` where there is none,
    ``{}`` where it is not a JSON object. What a command checks before it writes its own record there."""
    return read_json_object(Path(out) / "metrics.json")


def stored_runs(out: Path) -> list[Path]:
    """The run folders ``<model>/seed<k>/`` under ``out`` that a run has started in (each holds its
    ``identity.json``), sorted: what a command that writes its own record there would overwrite."""
    return sorted(path.parent for path in Path(out).glob("*/seed*/identity.json"))


def _load_record(run_dir: Path, identity: dict) -> RunRecord | None:
    file = run_dir / "record.json"
    if not file.exists():
        return None
    saved = json.loads(file.read_text())
    if saved.get("identity") != identity:
        return None
    return RunRecord(metrics=saved["metrics"], bookkeeping=saved["bookkeeping"], history=saved["history"],
                     extra=saved.get("extra", {}), run_dir=run_dir, loaded=True)


def _write_json(path: Path, payload: dict) -> None:
    with atomic_open(path, "w") as f:
        json.dump(payload, f, indent=1, default=to_plain)
        f.write("\n")


def check_out_dir(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder (or its nearest existing parent) that is not writable.

    Raises:
        RunnerError: naming ``--out`` and why.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunnerError(f"--out {out} is a file, not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunnerError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunnerError(f"--out {out}: {existing} is not writable")


def _acquire_lock(out: Path):
    path = out / LOCK_NAME
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunnerError(f"--out {out} is in use by another run (pid {holder}, lock {path}); wait for it to "
                          "finish or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _release_lock(handle) -> None:
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def clean_orphans(out: Path) -> list[Path]:
    """Remove the temporary files of writers that died mid-write (``.<name>.<random>.tmp``, see
    :func:`core.lab.harness.atomic_open`) under ``out``. Call only while holding ``out``'s lock."""
    removed = []
    for path in Path(out).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------------
# the contract, checked on a written metrics.json


def check_metrics_payload(payload: dict) -> list[str]:
    """What in a ``metrics.json`` payload breaks the metrics contract (empty when nothing does).

    The payload must name its contract (``contract.headline``, ``contract.select``, ``contract.mode``);
    every result's ``metrics`` must be split-prefixed and hold the headline and selection metrics, and
    bookkeeping must sit in its own ``bookkeeping`` field.
    """
    problems = []
    raw = payload.get("contract")
    if not isinstance(raw, dict):
        return ["no 'contract' (headline, select, mode) at the top level"]
    try:
        contract = MetricsContract(raw.get("headline", ""), raw.get("select", ""), raw.get("mode", "max"))
    except ValueError as error:
        return [f"contract: {error}"]
    for result in payload.get("results", []):
        name = result.get("model", "?")
        if "bookkeeping" not in result:
            problems.append(f"{name}: no 'bookkeeping' field")
        problems += [f"{name}: {p}" for p in contract.problems(result.get("metrics", {}))]
        for value in result.get("metrics", {}).values():
            if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
                problems.append(f"{name}: a metric is not a number: {value!r}")
    if not payload.get("results"):
        problems.append("no results")
    return problems
