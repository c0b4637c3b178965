"""Figures of the vision comparison: validation accuracy against training time, test accuracy against the
training-set size, and where each attention layer of a trained model looks from one query pixel.

Figures are ``matplotlib.figure.Figure``s (no pyplot state) saved to ``path``. ``compare_figures`` and
``sweep_figures`` draw what ``python -m vision compare`` / ``sweep`` put in their reports, from the
runner's records.

Legend: C channels, H/W image height/width, h/w a layer's grid.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from core.capture import capture_attention
from core.lab.plots import plot_learning_curves, plot_series, save_figure
from core.lab.runner import RunRecord

__all__ = ["plot_accuracy_vs_time", "compare_figures", "sweep_figures", "plot_attention_map"]


def plot_accuracy_vs_time(records: dict[str, list[RunRecord]], path: Path) -> Figure:
    """One line per model and seed: validation accuracy after each epoch against cumulative training
    seconds (evaluations excluded)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, runs in records.items():
        for k, run in enumerate(runs):
            elapsed, xs, ys = 0.0, [], []
            for row in run.history:
                elapsed += row["seconds"]
                if "val_accuracy" in row:
                    xs.append(elapsed / 60)
                    ys.append(100 * row["val_accuracy"])
            ax.plot(xs, ys, marker="o", label=name if len(runs) == 1 else f"{name} (seed {k})")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy against training time")
    return save_figure(fig, path)


def compare_figures(records: dict[str, list[RunRecord]], out: Path) -> list[tuple[str, str]]:
    """The figures of ``compare``: accuracy against time and the validation curve per epoch."""
    out = Path(out)
    plot_accuracy_vs_time(records, out / "accuracy_vs_time.png")
    plot_learning_curves({name: runs[0].history for name, runs in records.items() if runs}, "val_accuracy",
                         title="Validation accuracy per epoch (first seed)", path=out / "learning_curves.png")
    return [("Validation accuracy against training time", "accuracy_vs_time.png"),
            ("Validation accuracy per epoch, first seed of each model", "learning_curves.png")]


def sweep_figures(records: dict[str, list[RunRecord]], out: Path, *, specs: dict) -> list[tuple[str, str]]:
    """Test accuracy (mean over seeds) against training images, one line per model.

    Args:
        specs (dict[str, tuple[str, float]]): per row name, ``(model kind, fraction)``.
    """
    series: dict[str, dict[int, float]] = {}
    for name, runs in records.items():
        kind, _ = specs[name]
        if runs:
            images = int(runs[0].bookkeeping["train_images"])
            series.setdefault(kind, {})[images] = 100 * sum(r.metrics["test_accuracy"] for r in runs) / len(runs)
    sizes = sorted({size for points in series.values() for size in points})
    plot_series(sizes, {kind: [points[s] for s in sizes if s in points] for kind, points in series.items()},
                xlabel="training images", ylabel="test accuracy (%)", logx=True,
                title="Test accuracy against training-set size", path=Path(out) / "sweep.png")
    return [("Test accuracy against training-set size (scored once per run; validation kept the epoch)", "sweep.png")]


def plot_attention_map(model: torch.nn.Module, image: torch.Tensor, dataset: dict, row: int, col: int,
                       path: Path) -> tuple[Figure, str]:
    """Where each attention layer of ``model`` looks from the query pixel ``(row, col)`` of ``image``.

    Args:
        model (PixelHierarchy): a trained attention model, in eval mode.
        image (Tensor): uint8 ``(C, H, W)``.
        dataset (dict): ``classes``, ``mean``, ``std`` as stored in ``best.pt``.
        row, col (int): the query pixel.

    Returns:
        (Figure, str): the figure (saved to ``path``) and the predicted class.
    """
    C, H, W = image.shape
    mean = torch.tensor(dataset["mean"]).view(-1, 1, 1)
    std = torch.tensor(dataset["std"]).view(-1, 1, 1)
    with torch.no_grad(), capture_attention(model) as maps:
        logits = model(((image.float() / 255.0 - mean) / std).unsqueeze(0))
    layers = model.attention_layers()
    if len(maps) != len(layers):
        raise RuntimeError(f"captured {len(maps)} attention maps for {len(layers)} attention layers")
    predicted = dataset["classes"][int(logits.argmax())]
    shown = image.permute(1, 2, 0).squeeze(-1).numpy()  # (H, W, C) or (H, W)
    fig = Figure(figsize=(2.6 * (len(layers) + 1), 3.0))
    ax = fig.add_subplot(1, len(layers) + 1, 1)
    ax.imshow(shown, cmap="gray" if C == 1 else None)
    ax.scatter([col], [row], c="red", marker="x")
    ax.set_title(f"query pixel ({row}, {col})\npredicted: {predicted}", fontsize=9)
    ax.axis("off")
    for i, ((name, operator, stride), captured) in enumerate(zip(layers, maps)):
        grid = operator.attention_map(captured.weights, row // stride, col // stride)  # (h, w)
        h, w = grid.shape
        upsampled = grid.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:H, :W]  # (H, W)
        ax = fig.add_subplot(1, len(layers) + 1, i + 2)
        ax.imshow(shown, cmap="gray" if C == 1 else None)
        ax.imshow(upsampled.numpy(), cmap="inferno", alpha=0.7)
        ax.scatter([col], [row], c="cyan", marker="x")
        kind = "window" if type(operator).__name__ == "WindowAttention" else "global"
        ax.set_title(f"{name}\n{kind}, {h}x{w} grid", fontsize=9)
        ax.axis("off")
    return save_figure(fig, path), predicted
