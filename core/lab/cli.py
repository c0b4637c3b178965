"""The command-line pieces every domain shares: flags, checks at the door, one-line errors.

A domain's ``__main__.py`` is argparse plus specs::

    parser = argparse.ArgumentParser(prog="python -m graph")
    compare = commands.add_parser("compare")
    add_common_args(compare, default_out="runs/graph/<dataset>")   # --out --seeds --device --resume ...
    add_schedule_args(compare, epochs=1000)                       # --epochs, --time-budget
    ...
    def main(argv=None) -> int:
        return cli_main(build_parser(), argv, run, errors=(PlanetoidError,))

:func:`cli_main` parses, configures logging (one line per message on stderr: the runner's one line per
epoch and per run), checks the shared flags before anything is loaded or trained (:func:`check_common_args`),
and turns the errors a user can fix (bad flags, data files, a busy or foreign ``--out``) into one line
``error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.lab.datasets import DatasetNotFoundError
from core.lab.experiment import add_common_args, apply_common_args
from core.lab.harness import PRECISIONS, CheckpointError, resolve_precision, select_device
from core.lab.runner import RunnerError, check_out_dir

__all__ = ["UsageError", "add_common_args", "apply_common_args", "add_schedule_args", "positive_int",
           "non_negative_float", "subset_of", "check_common_args", "cli_main", "apply_profile",
           "add_precision_arg", "precision_from_args"]


class UsageError(ValueError):
    """A flag or an input the user can fix; shown as one line ``error: ...``."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def subset_of(choices: Sequence[str], what: str = "models") -> Callable[[str], list[str]]:
    """argparse type: a non-empty comma-separated subset of ``choices`` (``"attention,cnn"``), in the
    order given; anything else is refused naming the choices."""

    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        if not names or any(n not in choices for n in names):
            raise argparse.ArgumentTypeError(f"{what} are a comma-separated subset of {','.join(choices)}, got {text!r}")
        return names

    return parse


def number_list(kind: type = int, *, minimum: float | None = None) -> Callable[[str], list]:
    """argparse type: a non-empty comma-separated list of ``kind`` (``"16,48,96"``), each ``>= minimum`` when
    given; anything else is refused, quoting the text."""
    what = "whole numbers" if kind is int else "numbers"

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        if minimum is not None and min(values) < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum:g}, got {text!r}")
        return values

    return parse


def add_schedule_args(parser: argparse.ArgumentParser, *, epochs: int, time_budget: bool = True,
                      epochs_help: str | None = None) -> None:
    """Add ``--epochs`` (>= 1), ``--checkpoint-every`` (steps, >= 1) and, when ``time_budget``,
    ``--time-budget`` (minutes per run, >= 0; 0 or absent: none).

    Args:
        parser (argparse.ArgumentParser): the command's parser.
        epochs (int): the default number of epochs.
        time_budget (bool): add ``--time-budget``. (default: ``True``)
        epochs_help (str, optional): ``--epochs``' help where it means more than the epochs of every run.
            (default: ``None``: "most epochs per model and seed")
    """
    parser.add_argument("--epochs", type=positive_int, default=epochs,
                        help=epochs_help or f"most epochs per model and seed (default: {epochs})")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="STEPS",
                        help="also save the run's state every STEPS training steps inside an epoch, so a run "
                             "killed mid-epoch resumes from there, exactly (default: at the end of each epoch)")
    if time_budget:
        parser.add_argument("--time-budget", type=non_negative_float, default=None, metavar="MIN",
                            help="minutes per model and seed, for an equal-time comparison: each run stops after "
                                 "the epoch that crosses it and the report says so; results then depend on the "
                                 "machine's speed (default: none, the schedule is counted in epochs)")


def add_precision_arg(parser: argparse.ArgumentParser, *, default: str, why: str = "") -> None:
    """``--precision {auto,fp32,bf16}``: the arithmetic of the training forward passes (``core.lab.harness.autocast``).

    ``why`` (a sentence) is added to the help, e.g. why the domain's default is what it is.
    """
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default=default,
                        help="arithmetic of the training forward passes: bf16 autocast (matrix products and "
                             "convolutions in bfloat16, weights and optimizer in float32), fp32, or auto: bf16 "
                             "where the device has native bfloat16 (a CPU with AVX-512 BF16 or AMX, a recent "
                             f"GPU), else fp32 (default: {default}). Evaluation is always float32."
                             + (f" {why}" if why else ""))


def precision_from_args(args: argparse.Namespace) -> str:
    """``--precision`` resolved on ``--device`` to ``"fp32"`` or ``"bf16"``; bf16 on a device without native
    bfloat16 is a :class:`UsageError` naming the flag."""
    try:
        return resolve_precision(select_device(args.device), args.precision)
    except (ValueError, RuntimeError) as error:
        raise UsageError(str(error)) from None


def apply_profile(args: argparse.Namespace, defaults: argparse.Namespace, profile: dict[str, Any],
                  name: str = "--quick") -> list[str]:
    """Apply a named set of settings (a domain's ``--quick``) to parsed flags; a flag the user gave wins.

    Each key of ``profile`` is set on ``args`` unless the user gave that flag a value other than its default
    (``defaults``: the parser's flags with nothing given). Keys that are no flag (``defaults`` lacks them) are
    always set. Returns one line per flag the user kept, for the report: a profile's floors and budgets hold
    for the profile as written, not for a changed one, and the record says so.
    """
    kept = []
    for key, value in profile.items():
        given = getattr(args, key, None)
        if hasattr(defaults, key) and given != getattr(defaults, key) and given != value:
            flag = "--" + key.replace("_", "-")
            kept.append(f"{flag} {_shown(given)} given with {name}, which would set {_shown(value)}: "
                        f"the floors and budget of {name} are for its own settings")
        else:
            setattr(args, key, value)
    return kept


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "(none)"
    return str(value)


def check_common_args(args: argparse.Namespace, out: str | Path | None = None) -> None:
    """Refuse bad shared flags before any data is read or model trained, naming the flag.

    Checks ``--seeds`` / ``--threads`` >= 1, ``--epochs`` >= 1, ``--time-budget`` >= 0 (when present), that
    ``--device`` names a device this machine has (``--device cuda`` without a GPU), and that ``--out`` (or
    ``out``, the resolved folder) is not a file and is writable.

    Raises:
        UsageError: naming the flag.
    """
    for flag in ("seeds", "threads", "epochs"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be >= 1, got {value}")
    budget = getattr(args, "time_budget", None)
    if budget is not None and not budget >= 0:
        raise UsageError(f"--time-budget must be >= 0 minutes, got {budget}")
    if getattr(args, "device", None) is not None:
        try:
            select_device(args.device)
        except (RuntimeError, ValueError) as error:
            raise UsageError(str(error)) from None
    try:
        check_out_dir(Path(out if out is not None else args.out))
    except RunnerError as error:
        raise UsageError(str(error)) from None


def cli_main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, run: Callable[[argparse.Namespace], Any],
             *, errors: tuple[type[BaseException], ...] = ()) -> Any:
    """Parse ``argv``, set up logging and call ``run(args)``; errors a user can fix become ``error: ...``.

    Args:
        parser (argparse.ArgumentParser): the domain's parser.
        argv (Sequence[str], optional): the arguments (``None``: ``sys.argv[1:]``).
        run (Callable[[argparse.Namespace], Any]): the command; its return value is returned.
        errors (tuple[type[BaseException], ...]): the domain's own user-facing error types (data file
            errors). :class:`UsageError`, :class:`core.lab.runner.RunnerError` and
            :class:`core.lab.datasets.DatasetNotFoundError` and
            :class:`core.lab.harness.CheckpointError` are always caught. (default: ``()``)

    Raises:
        SystemExit: with the message ``error: ...`` (exit status 1) for any of those errors.
    """
    args = parser.parse_args(argv)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return run(args)
    except (UsageError, RunnerError, DatasetNotFoundError, CheckpointError, *errors) as error:
        message = str(error).strip().replace("\n", " ")
        raise SystemExit(f"error: {message}") from None
