"""Lesson 8: an RNN against attention, timed on this machine.

The notes' claim: attention beats an RNN because it handles all positions at once. The *number of
sequential steps* is indeed T for an LSTM (step t needs the state of step t-1) and 1 for an attention
layer (every position is one batched matrix product). Whether that wins on the clock depends on the
machine: attention does O(T²·D) work against the LSTM's O(T·D²), so on a CPU with two cores the LSTM
can be faster at long lengths and large batches, while attention wins where the LSTM's T small steps
leave the hardware idle (short sequences, batch 1, GPUs). This lesson measures rather than asserts.

Timing: forward + backward of one layer of width D, interleaved (the two models alternate, the order
flips every round), median over rounds, after one untimed warm-up pass each.

Legend: B batch, T length, D width.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator
from torch import Tensor, nn

from core.lab.bench import interleaved_rounds, load_average, paired_ratio, summarize
from core.lab.plots import save_figure
from core.lessons.base import LessonResult, Log, Table, header
from core.multihead import MultiHeadAttention

__all__ = ["LSTMLayer", "time_forward_backward", "lesson", "QUICK_LENGTHS", "FULL_LENGTHS", "BATCH_SIZES"]

TITLE = "RNN vs attention: sequential steps and time on this machine"
QUICK_LENGTHS = (16, 64, 256, 1024)
FULL_LENGTHS = (16, 64, 256, 1024, 4096)
BATCH_SIZES = (1, 32)
DIM, HEADS = 64, 4
#: a point whose warm-up pass took longer than this (per model) is timed in one round
SLOW_PASS_S = 5.0
#: cheaper points get more rounds, up to MAX_ROUNDS or about ROUND_BUDGET_S of timing
MAX_ROUNDS, ROUND_BUDGET_S = 15, 1.0


class LSTMLayer(nn.Module):
    """One `nn.LSTM` layer, batch first, returning only its outputs `(B, T, D)`."""

    def __init__(self, dim: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.lstm(x)[0]


def time_forward_backward(
    models: dict[str, nn.Module], x: Tensor, rounds: int = 3, budget_s: float = ROUND_BUDGET_S
) -> list[dict[str, float]]:
    """Seconds of `model(x).sum().backward()` per model and round, timed interleaved
    (`core.lab.bench.interleaved_rounds`: each round runs every model once, in an order that flips every
    round). One untimed warm-up pass each comes first; a point whose warm-up took longer than
    `SLOW_PASS_S` per model is timed in one round, a cheap one in up to `MAX_ROUNDS` (about `budget_s`).

    Args:
        models (dict[str, nn.Module]): `(B, T, D) -> (B, T, D)` layers, by name.
        x (Tensor): `(B, T, D)` input.
        rounds (int, optional): timed rounds, at least (but see above). (default: 3)
        budget_s (float, optional): seconds of timing that earn a point more rounds. (default: 1.0)

    Returns:
        one `{name: seconds}` per round.
    """

    def one_pass(model: nn.Module) -> None:
        model(x).sum().backward()
        if x.device.type == "cuda":  # the clock must wait for the kernels
            torch.cuda.synchronize(x.device)

    start = time.perf_counter()
    for model in models.values():
        one_pass(model)
    warm = time.perf_counter() - start  # one pass of every model
    if warm > SLOW_PASS_S * len(models):
        rounds = 1
    else:  # cheap points get more rounds (up to MAX_ROUNDS, about ROUND_BUDGET_S in all): steadier medians
        rounds = max(rounds, min(MAX_ROUNDS, int(budget_s / max(warm, 1e-9))))
    fns = {name: (lambda m=model: one_pass(m)) for name, model in models.items()}
    return interleaved_rounds(fns, rounds, warmup=0)


def lesson(
    log: Log,
    fig_dir: Path | None,
    quick: bool = True,
    *,
    lengths: tuple[int, ...] | None = None,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    dim: int = DIM,
    num_heads: int = HEADS,
    rounds: int = 3,
    budget_s: float = ROUND_BUDGET_S,
    device: str = "cpu",
) -> LessonResult:
    """Time an LSTM layer against an attention layer of the same width, forward + backward.

    Args:
        log (Log): where the lesson prints.
        fig_dir (Path, optional): folder for `rnn_vs_attention_time.png`; None draws nothing.
        quick (bool, optional): `QUICK_LENGTHS` rather than `FULL_LENGTHS`. (default: True)
        lengths (tuple[int], optional): sequence lengths, overriding `quick`. (default: None)
        batch_sizes (tuple[int], optional): batch sizes B. (default: (1, 32))
        dim (int, optional): width D of both layers (the LSTM's hidden size). (default: 64)
        num_heads (int, optional): attention heads. (default: 4)
        rounds (int, optional): timed rounds per point, at least. (default: 3)
        budget_s (float, optional): timing seconds that earn a cheap point more rounds. (default: 1.0)
        device (str, optional): "cpu" or a CUDA device. (default: "cpu")
    """
    header(log, TITLE)
    lengths = tuple(lengths or (QUICK_LENGTHS if quick else FULL_LENGTHS))
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # fixed weights without reseeding the caller's generator
        torch.manual_seed(0)
        models = {"LSTM": LSTMLayer(dim).to(dev), "attention": MultiHeadAttention(dim, num_heads).to(dev)}
    g = torch.Generator(device=dev).manual_seed(0)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    load = (load_average() or [float("nan")])[0]
    threads = torch.get_num_threads()
    conditions = (f"{device}, {threads} thread{'s' if threads != 1 else ''}, load average {load:.1f} at start, "
                  f"float32, width D = {dim} (attention: {num_heads} heads), {rounds}–{MAX_ROUNDS} interleaved rounds "
                  f"(1 where a pass takes > {SLOW_PASS_S:g} s), median")
    log(f"One nn.LSTM layer ({params['LSTM']:,} parameters) vs one core MultiHeadAttention self-attention "
        f"layer ({params['attention']:,} parameters); forward + backward.")
    log(f"Conditions: {conditions}.")
    busy = load > (os.cpu_count() or 1)
    if busy:  # threads that wait for a busy core hurt the LSTM's T small steps most
        log(f"Note: the machine is busy (load {load:.1f} on {os.cpu_count()} cores), so these timings are noisy"
            + ("; --threads 1 gives steadier ones." if threads > 1 else "."))
    times: dict[tuple[int, int], dict[str, float]] = {}  # (B, T) -> median seconds per model
    ratios: dict[tuple[int, int], float] = {}  # (B, T) -> median over rounds of LSTM time / attention time
    rows = []
    time_forward_backward(models, torch.randn(1, 8, dim, device=dev), rounds=1, budget_s=0.0)  # first-call setup
    for B in batch_sizes:
        for T in lengths:
            x = torch.randn(B, T, dim, device=dev, generator=g)
            per_round = time_forward_backward(models, x, rounds, budget_s)
            t = {name: stats["median_ms"] / 1e3 for name, stats in summarize(per_round).items()}
            times[(B, T)] = t
            ratio = ratios[(B, T)] = paired_ratio(per_round, "LSTM", "attention")  # both sides saw the same load
            row = [str(B), str(T), f"{t['LSTM'] * 1e3:.1f}", f"{t['attention'] * 1e3:.1f}", f"{ratio:.2f}",
                   "attention" if ratio > 1 else "LSTM", f"{T} vs 1", str(len(per_round))]
            rows.append(row)
            log(f"  B={B:<3} T={T:<5} LSTM {row[2]:>9} ms   attention {row[3]:>9} ms   "
                f"LSTM/attention {row[4]:>6}   faster: {row[5]:<9} ({row[7]} round{'s' if row[7] != '1' else ''})")
    table = Table(
        f"Forward + backward time, one layer ({conditions})",
        ["B", "T", "LSTM (ms)", "attention (ms)", "LSTM / attention", "faster", "sequential steps (LSTM vs attention)",
         "rounds"],
        rows,
    )

    def where(lstm_faster: bool) -> str:
        parts = []
        for B in batch_sizes:
            ts = [str(T) for T in lengths if (ratios[(B, T)] < 1) == lstm_faster]
            if ts:
                parts.append(f"B = {B}: T = {', '.join(ts)}")
        return "; ".join(parts)

    verdict = " ".join(f"{who} was faster at {w}." if w else f"{who} was faster at no measured point."
                       for who, w in (("The LSTM", where(True)), ("Attention", where(False))))
    log(verdict)
    log("Sequential steps: the LSTM needs T (one per position, each waiting for the last); attention needs 1.")

    figures = []
    if fig_dir is not None:
        figures.append(_plot(times, ratios, lengths, batch_sizes, conditions, fig_dir / "rnn_vs_attention_time.png"))
    numbers = {f"{name}_ms_B{B}_T{T}": t[name] * 1e3 for (B, T), t in times.items() for name in t}
    return LessonResult(
        name="rnn",
        title=TITLE,
        text="An LSTM must run its T steps one after another; an attention layer computes all T positions in "
        "one batched product, but pays T² scores for it. Measured on this machine (table): " + verdict + " "
        "Fewer sequential steps is an advantage when the hardware has parallelism to spare (short "
        "sequences, small batches, GPUs); on a small CPU with a large batch and long sequences the "
        "quadratic work dominates and the RNN can be faster."
        + (f" (The machine was busy, load {load:.1f} on {os.cpu_count()} cores: treat the timings as noisy.)"
           if busy else ""),
        numbers=numbers | {f"ratio_B{B}_T{T}": r for (B, T), r in ratios.items()}
        | {"lstm_params": params["LSTM"], "attention_params": params["attention"]},
        tables=[table],
        figures=figures,
    )


def _plot(times: dict, ratios: dict, lengths: tuple[int, ...], batch_sizes: tuple[int, ...], conditions: str,
          path: Path) -> Path:
    fig = Figure(figsize=(11, 4.4))
    left, right = fig.subplots(1, 2)
    styles = ["--", "-", ":", "-."]
    for i, B in enumerate(batch_sizes):
        ls = styles[i % len(styles)]
        for name, color in (("LSTM", "tab:orange"), ("attention", "tab:blue")):
            left.plot(lengths, [times[(B, T)][name] * 1e3 for T in lengths], ls=ls, marker="o", color=color,
                      label=f"{name}, B = {B}")
        right.plot(lengths, [ratios[(B, T)] for T in lengths], ls=ls, marker="o", color="k", label=f"B = {B}")
    right.axhline(1.0, color="grey", lw=1)
    all_ms = [t[name] * 1e3 for t in times.values() for name in t]
    for ax, values in ((left, all_ms), (right, list(ratios.values()) + [1.0])):
        ax.set_xscale("log")
        ax.set_xticks(lengths, labels=[str(T) for T in lengths])
        ax.minorticks_off()
        if max(values) / min(values) > 10:  # log y where the values span a decade; ticks at 1, 2, 5 × 10^k
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("sequence length T")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("forward + backward (ms)")
    left.set_title("one layer, median time", fontsize=9)
    right.set_ylabel("LSTM time / attention time  (> 1: attention faster)")
    right.set_title("speed-up of attention over the LSTM", fontsize=9)
    fig.suptitle(conditions, fontsize=8)
    save_figure(fig, path)
    return path
