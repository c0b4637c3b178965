"""Timing contenders fairly on a shared, noisy CPU: interleaved rounds, alternating order, paired ratios.

Timing one contender after the other lets a change in background load (another process waking up,
frequency scaling) land on one side only. Here every round runs each contender once, back to back, in
an order that alternates between rounds, and a ratio is the median over rounds of the ratio *within* a
round: both sides of each ratio saw the same load, and the median drops the rounds a burst disturbed.

    rounds = interleaved_rounds({"ours": run_ours, "torch": run_torch}, rounds=15)
    ratio = paired_ratio(rounds, "ours", "torch")          # median of ours/torch per round
    summary = summarize(rounds)                           # median and quartiles, ms, per contender
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["interleaved_rounds", "paired_ratio", "summarize", "count_flops", "load_average", "machine", "write_result"]


def interleaved_rounds(fns: Mapping[str, Callable[[], object]], rounds: int, *, warmup: int = 1) -> list[dict[str, float]]:
    """Seconds of each contender in each round.

    Args:
        fns (Mapping[str, Callable]): contender name -> a call to time (its return value is ignored).
        rounds (int): timed rounds; each runs every contender once. Even rounds run them in the given
            order, odd rounds in reverse, so no contender always runs first (caches, turbo) or last.
        warmup (int, optional): untimed calls of each contender first (lazy kernels, allocator). (default: 1)

    Returns:
        one ``{name: seconds}`` per round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not fns:
        raise ValueError("no contenders to time")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out: list[dict[str, float]] = []
    for r in range(rounds):
        times = {}
        for name in names if r % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            fns[name]()
            times[name] = time.perf_counter() - started
        out.append(times)
    return out


def paired_ratio(rounds: list[dict[str, float]], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]`` (> 1: ``num`` is slower)."""
    return statistics.median(r[num] / r[den] for r in rounds)


def summarize(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per contender: ``median_ms``, quartiles ``q1_ms`` / ``q3_ms`` and the number of ``runs``."""
    out = {}
    for name in rounds[0]:
        values = [1000.0 * r[name] for r in rounds]
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {"median_ms": statistics.median(values), "q1_ms": q1, "q3_ms": q3, "runs": len(values)}
    return out


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn``, counted by ``torch.utils.flop_counter`` (matrix products
    and attention; elementwise work is not counted), so a figure that does not depend on the machine or its load.

    ``FlopCounterMode`` has no formula for the CPU's fused attention kernel
    (``aten::_scaled_dot_product_flash_attention_for_cpu``) and would count it as zero; here it gets the one
    torch gives the other fused kernels: dense ``Q Kᵀ`` and ``P V`` (a mask saves nothing in the count).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
               aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``os.getloadavg``), for the record: how busy the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The processor's name (Linux: ``model name`` in ``/proc/cpuinfo``, e.g. "AMD EPYC 9R14 96-Core
    Processor"), else what ``platform.processor()`` says, else None. Sessions have run on different
    processors, whose kernels round differently and run at different speeds, so a record names its own."""
    fields: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:  # not Linux, or no such file
        pass
    name = fields.get("model name")
    if not name:
        return platform.processor() or None
    if "cpu family" in fields and "model" in fields:  # a virtual machine's name can be as plain as "Xeon Processor"
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def machine() -> dict:
    """What a benchmark record says about where it ran: torch version, threads, platform, processor, CPU
    count, load."""
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.platform(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_average": load_average()}


def write_result(path: str | os.PathLike, result: dict) -> Path:
    """Write a benchmark's JSON record atomically (a crash mid-write leaves the previous record) and
    return the path."""
    from core.lab.harness import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return path
