"""The one learning-rate schedule the domains share: linear warm-up, then cosine decay to 0, counted in steps.

Counting in steps (not wall-clock time) makes a schedule the same on a busy and an idle machine, so the same
command and seed give the same weights. An equal-time comparison stops runs with ``--time-budget``
(:func:`core.lab.harness.fit`'s ``time_budget_s``), it does not bend the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["warmup_cosine", "warmup_cosine_scheduler"]


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at step ``step`` (0-based): ``(step + 1) / warmup_steps`` during the warm-up,
    then ``0.5 * (1 + cos(pi * progress))`` with ``progress`` going from 0 after the warm-up to 1 at
    ``total_steps`` (and staying 0 beyond).

    Args:
        total_steps (int): steps of the whole run (>= 1).
        warmup_steps (int): steps of the linear warm-up (>= 0; 0: none).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                            warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`warmup_cosine`, to be stepped after every batch (``fit(...,
    scheduler_per_batch=True)``); its state is saved and restored with ``last.pt``.

    Args:
        optimizer (torch.optim.Optimizer): the optimizer; every group's ``lr`` is the peak.
        total_steps (int): steps of the whole run.
        warmup_steps (int): steps of the warm-up.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
