"""Lesson 4: why the scores are divided by √d.

With q and k drawn from N(0, I_d), the dot product q·k has mean 0 and variance d, so the raw scores
spread further apart as d grows and the softmax saturates: one key takes almost all the weight, the
entropy of the weights falls towards 0 and the gradient through the softmax vanishes. Dividing by √d
brings the variance back to 1 at every d, and the weights keep the same spread.

Legend: N queries, S keys, d dim.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from core.attention import scaled_dot_product_attention
from core.lab.plots import save_figure
from core.lessons.base import LessonResult, Log, Table, fmt, header

__all__ = ["softmax_spread", "lesson", "DIMS"]

TITLE = "Why divide by √d: softmax saturation"
DIMS = tuple(2**i for i in range(11))  # 1 … 1024


def softmax_spread(
    d: int, *, scaled: bool, num_queries: int = 256, num_keys: int = 32, seed: int = 0
) -> dict[str, float]:
    """Mean largest weight and mean entropy (nats) of softmax(q·k · scale) for random q, k ~ N(0, I_d).

    Args:
        d (int): query/key dim.
        scaled (bool): scale by 1/√d (True) or not at all (False).
        num_queries (int, optional): queries averaged over. (default: 256)
        num_keys (int, optional): keys each query sees; the uniform entropy is log(num_keys). (default: 32)
        seed (int, optional): the draw. (default: 0)
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(num_queries, d, generator=g, dtype=torch.float64)  # (N, d)
    k = torch.randn(num_keys, d, generator=g, dtype=torch.float64)  # (S, d)
    _, w = scaled_dot_product_attention(q, k, k, scale=1 / math.sqrt(d) if scaled else 1.0, return_weights=True)
    entropy = -(w * torch.log(w.clamp_min(1e-300))).sum(-1)  # (N,); 0·log 0 = 0
    raw = q @ k.T  # (N, S)
    return {
        "max_weight": w.max(-1).values.mean().item(),
        "entropy": entropy.mean().item(),
        "score_std": (raw / math.sqrt(d) if scaled else raw).std().item(),
    }


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    S = 32
    rows, curves = [], {"max_weight": {True: [], False: []}, "entropy": {True: [], False: []}}
    for d in DIMS:
        r = {scaled: softmax_spread(d, scaled=scaled, num_keys=S) for scaled in (False, True)}
        for key in curves:
            for scaled in (False, True):
                curves[key][scaled].append(r[scaled][key])
        rows.append([str(d), fmt(r[False]["score_std"], 1), fmt(r[False]["max_weight"]), fmt(r[False]["entropy"]),
                     fmt(r[True]["score_std"], 2), fmt(r[True]["max_weight"]), fmt(r[True]["entropy"])])
    log(f"Random q, k ~ N(0, I_d), {S} keys per query, 256 queries (seed 0); entropy in nats "
        f"(uniform over {S} keys: log {S} = {math.log(S):.3f}).")
    table = Table(
        "Softmax weights of random queries over 32 random keys, mean over 256 queries",
        ["d", "std q·k", "max weight", "entropy", "std q·k/√d", "max weight (÷√d)", "entropy (÷√d)"],
        rows,
    )
    log.table(table)
    i64 = DIMS.index(64)
    numbers = {
        "max_weight_unscaled_d64": curves["max_weight"][False][i64],
        "max_weight_scaled_d64": curves["max_weight"][True][i64],
        "entropy_unscaled_d64": curves["entropy"][False][i64],
        "entropy_scaled_d64": curves["entropy"][True][i64],
        "entropy_uniform": math.log(S),
    }
    log(f"At d = 64: without scaling the largest weight averages {numbers['max_weight_unscaled_d64']:.2f} "
        f"(entropy {numbers['entropy_unscaled_d64']:.2f} nats); with ÷√64 it is "
        f"{numbers['max_weight_scaled_d64']:.2f} (entropy {numbers['entropy_scaled_d64']:.2f}).")
    figures = []
    if fig_dir is not None:
        figures.append(_plot(curves, S, fig_dir / "sqrt_d_scaling.png"))
    return LessonResult(
        name="scaling",
        title=TITLE,
        text="A dot product of two random d-dim vectors has standard deviation √d. Without the division the "
        "scores of 32 random keys grow apart with d and the softmax picks one key: at d = 64 the largest "
        f"weight averages {numbers['max_weight_unscaled_d64']:.2f} and the entropy drops to "
        f"{numbers['entropy_unscaled_d64']:.2f} nats, a near one-hot whose gradient is almost zero. "
        "Dividing by √d keeps the scores' spread at 1 and the weights equally soft at every d "
        f"(max weight {numbers['max_weight_scaled_d64']:.2f}, entropy {numbers['entropy_scaled_d64']:.2f} "
        f"of the uniform {math.log(S):.2f}).",
        numbers=numbers,
        tables=[table],
        figures=figures,
    )


def _plot(curves: dict, num_keys: int, path: Path) -> Path:
    fig = Figure(figsize=(11, 4.2))
    for ax, key, label in zip(fig.subplots(1, 2), ("max_weight", "entropy"), ("largest weight", "entropy (nats)")):
        ax.plot(DIMS, curves[key][False], marker="o", color="tab:red", label="softmax(q·k)")
        ax.plot(DIMS, curves[key][True], marker="o", color="tab:blue", label="softmax(q·k / √d)")
        if key == "entropy":
            ax.axhline(math.log(num_keys), color="grey", ls="--", lw=1, label=f"uniform, log {num_keys}")
            ax.set_ylim(bottom=0)
        else:
            ax.axhline(1 / num_keys, color="grey", ls="--", lw=1, label=f"uniform, 1/{num_keys}")
            ax.set_ylim(0, 1.02)
        ax.set_xscale("log", base=2)
        ax.set_xticks(DIMS, labels=[str(d) for d in DIMS], fontsize=8)
        ax.axvline(64, color="k", lw=0.6, ls=":")
        ax.text(64, 0.5, " d = 64", transform=ax.get_xaxis_transform(), fontsize=8)
        ax.set_xlabel("dimension d of q and k")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Random q, k ~ N(0, I): weights over {num_keys} keys, mean of 256 queries")
    save_figure(fig, path)
    return path

