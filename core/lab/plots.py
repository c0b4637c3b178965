"""Plots every domain shares: attention heatmaps, positional encodings, learning curves, series.

Figures are built with `matplotlib.figure.Figure` (no pyplot state, no display needed) and saved to
`path` when one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter
from torch import Tensor

__all__ = ["save_figure", "line_style", "add_legend", "plot_attention", "plot_positional_encoding",
           "plot_learning_curves", "plot_series"]

#: Lines beyond this many get the legend outside the axes, where it cannot cover the data.
LEGEND_INSIDE_MAX = 6
#: A learning curve longer than this many evaluations is drawn without a marker at each.
MARKERS_MAX_POINTS = 60
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = (".", "o", "s", "^", "v", "D")


def _array(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def save_figure(fig: Figure, path: str | Path | None) -> Figure:
    """Save `fig` to `path` (parents created) when a path is given; return it."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def line_style(i: int, *, marker: str = ".") -> dict:
    """Plot keywords for the `i`-th of several lines: the colour cycle (ten colours) first, then each round of it
    in a new dash pattern and marker, so line 11 is never drawn like line 1."""
    round_ = i // 10
    return {"color": f"C{i % 10}", "linestyle": _LINESTYLES[round_ % len(_LINESTYLES)],
            "marker": marker if round_ == 0 else _MARKERS[round_ % len(_MARKERS)]}


def add_legend(ax, **kwargs) -> None:
    """The axes' legend: inside, where matplotlib finds room, for a few lines; to the right of the axes for
    more than `LEGEND_INSIDE_MAX`, so a crowd of labels never hides the curves' ends."""
    _, labels = ax.get_legend_handles_labels()
    if len(labels) > LEGEND_INSIDE_MAX:
        kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "fontsize": 8, **kwargs}
    ax.legend(**kwargs)


def plot_attention(
    weights: Tensor | np.ndarray,
    *,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str | None = None,
    annotate: bool | None = None,
    path: str | Path | None = None,
    axis_labels: tuple[str, str] = ("key (attended to)", "query"),
    value_label: str = "attention weight",
) -> Figure:
    """Heatmap of a `(T, S)` attention matrix: rows are queries, columns the keys they attend to.

    Args:
        weights: `(T, S)` weights (one head, one example), >= 0.
        x_labels, y_labels: key and query labels (tokens); omitted for long sequences.
        annotate: print each weight in its cell (default: when the matrix is at most 12×12).
        axis_labels: `(x, y)` axis titles, for a table laid out otherwise (e.g. heads × offsets).
        value_label: the colour bar's title, for values that are not attention weights (e.g. a bias).
    """
    w = _array(weights)
    if w.ndim != 2:
        raise ValueError(f"plot_attention takes one (T, S) matrix, got shape {w.shape}")
    T, S = w.shape
    fig = Figure(figsize=(min(2 + 0.45 * S, 14), min(1.5 + 0.45 * T, 14)))
    ax = fig.add_subplot()
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-9), aspect="auto")
    fig.colorbar(im, ax=ax, label=value_label)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if x_labels is not None:
        ax.set_xticks(range(S), labels=list(x_labels), rotation=90)
    if y_labels is not None:
        ax.set_yticks(range(T), labels=list(y_labels))
    if annotate if annotate is not None else max(T, S) <= 12:
        for i in range(T):
            for j in range(S):
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", color="w" if w[i, j] < 0.6 * w.max() else "k")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_positional_encoding(pe: Tensor | np.ndarray, *, title: str | None = None, path: str | Path | None = None) -> Figure:
    """Heatmap of a `(positions, dims)` encoding table."""
    p = _array(pe)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    im = ax.imshow(p, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(title or "Sinusoidal positional encoding")
    return save_figure(fig, path)


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]] | Sequence[Sequence[Mapping[str, float]]]],
    metric: str,
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One colour per model: `metric` per epoch, from `History.epochs`-style lists of dicts.

    A model maps to one run's epochs, or to a list of runs (one per seed): each run is then drawn as a thinner
    line of the model's colour, and the legend names the model once, with its number of runs, so the spread
    between seeds shows without a line per seed in the legend.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (name, runs) in enumerate(histories.items()):
        runs = [runs] if not runs or isinstance(runs[0], Mapping) else list(runs)
        style = line_style(i)
        if max((len(epochs) for epochs in runs), default=0) > MARKERS_MAX_POINTS:  # hundreds of dots: a smudge
            style["marker"] = None
        if len(runs) > 1:
            style.update(linewidth=1.0, alpha=0.75, markersize=3)
        for j, epochs in enumerate(runs):
            xs = [e["epoch"] for e in epochs if metric in e]
            label = name if len(runs) == 1 else f"{name} ({len(runs)} runs)" if j == 0 else "_nolegend_"
            ax.plot(xs, [e[metric] for e in epochs if metric in e], label=label, **style)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 2.5
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    add_legend(ax)
    ax.set_title(title or f"{metric} per epoch")
    return save_figure(fig, path)


def plot_series(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Several named y-series over a shared x (accuracy vs data size, time vs length, ...)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (name, ys) in enumerate(series.items()):
        ax.plot(list(x)[: len(ys)], list(ys), label=name, **line_style(i, marker="o"))
    ax.set_xscale("log" if logx else "linear")
    if logx:  # label the measured x values themselves, not 10^k with crowded minor labels
        ax.set_xticks(list(x), labels=[f"{v:g}" for v in x])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    add_legend(ax)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
