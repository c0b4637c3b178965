"""Figures of the vision comparison: validation accuracy against training time, test accuracy against the
training-set size with the CNN's lead over attention, the ablation's changes against the reference, and where
each attention layer of a trained model looks from one query pixel.

Figures are ``matplotlib.figure.Figure``s (no pyplot state) saved to ``path``. ``compare_figures`` and
``sweep_figures`` draw what ``python -m vision compare`` / ``sweep`` put in their reports, from the
runner's records.

Legend: C channels, H/W image height/width, h/w a layer's grid.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from core.capture import capture_attention
from core.lab.plots import add_legend, line_style, plot_learning_curves, save_figure
from core.lab.runner import RunRecord
from vision.train import seed_gaps, sweep_groups

__all__ = ["plot_accuracy_vs_time", "compare_figures", "sweep_figures", "plot_sweep_gap", "plot_attention_map",
           "plot_ablation", "ablation_figures"]

#: Bar colours of the ablation chart, by verdict.
VERDICT_COLOURS = {"gain": "tab:green", "loss": "tab:red", "within noise": "tab:gray"}


def plot_accuracy_vs_time(records: dict[str, list[RunRecord]], path: Path) -> Figure:
    """One line per model and seed: validation accuracy after each epoch against cumulative training
    seconds (evaluations excluded)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    lines = [(name if len(runs) == 1 else f"{name} (seed {k})", run)
             for name, runs in records.items() for k, run in enumerate(runs)]
    for i, (label, run) in enumerate(lines):
        elapsed, xs, ys = 0.0, [], []
        for row in run.history:
            elapsed += row["seconds"]
            if "val_accuracy" in row:
                xs.append(elapsed / 60)
                ys.append(100 * row["val_accuracy"])
        ax.plot(xs, ys, label=label, **line_style(i, marker="o"))
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    add_legend(ax)
    ax.set_title("Accuracy against training time")
    return save_figure(fig, path)


def compare_figures(records: dict[str, list[RunRecord]], out: Path) -> list[tuple[str, str]]:
    """The figures of ``compare``: accuracy against time and the validation curve per epoch."""
    out = Path(out)
    plot_accuracy_vs_time(records, out / "accuracy_vs_time.png")
    several = any(len(runs) > 1 for runs in records.values())
    plot_learning_curves({name: [r.history for r in runs] for name, runs in records.items() if runs}, "val_accuracy",
                         title="Validation accuracy per epoch", path=out / "learning_curves.png")
    return [("Validation accuracy against training time", "accuracy_vs_time.png"),
            (f"Validation accuracy per epoch{', every seed of each model' if several else ''}", "learning_curves.png")]


def plot_ablation(payload: Mapping, path: Path | None = None) -> Figure:
    """The ablation at a glance, from ``python -m vision ablate``'s metrics.json (``payload``): one row per
    change, its validation accuracy against the reference in points (a bar coloured by the verdict, the band
    of ±``ablation_noise_points`` shaded: inside it a difference is sampling noise) beside its training speed
    against the reference's.

    Raises:
        ValueError: the payload has no ``ablation`` table (not an ``ablate`` record).
    """
    table = payload.get("ablation")
    if not table:
        raise ValueError("no 'ablation' table in this metrics.json: it was not written by `python -m vision ablate`")
    noise = payload["ablation_noise_points"]
    rows = [(name, row) for name, row in table.items() if row["verdict"] != "reference"]
    names = [name.removeprefix("attention ") for name, _ in rows]
    fig = Figure(figsize=(9, 0.38 * len(rows) + 1.4), layout="constrained")
    gain_ax, speed_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    y = list(range(len(rows)))
    gains = [row["val_vs_attention"] for _, row in rows]
    gain_ax.axvspan(-noise, noise, color="0.9", zorder=0, label=f"±{noise:.2f} points: noise")
    gain_ax.barh(y, gains, color=[VERDICT_COLOURS[row["verdict"]] for _, row in rows], zorder=2)
    gain_ax.axvline(0, color="black", linewidth=0.8, zorder=3)
    for i, gain in zip(y, gains):
        gain_ax.annotate(f"{gain:+.2f}", (gain, i), xytext=(3 if gain >= 0 else -3, 0), textcoords="offset points",
                         ha="left" if gain >= 0 else "right", va="center", fontsize=8, zorder=4)
    low, high = min(min(gains), -noise), max(max(gains), noise)
    margin = 0.25 * (high - low)
    gain_ax.set_xlim(low - margin, high + margin)
    gain_ax.set_yticks(y, names)
    gain_ax.invert_yaxis()  # the first change on top, as in the report's table
    gain_ax.set_xlabel("validation accuracy against the reference (points)")
    gain_ax.grid(axis="x", alpha=0.3)
    handles = [gain_ax.patches[0]] + [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    gain_ax.legend(handles=handles, fontsize=8, loc="lower left")
    speeds = [row["speed_vs_attention"] for _, row in rows]
    speed_ax.barh(y, speeds, color="tab:blue", zorder=2)
    speed_ax.axvline(1, color="black", linewidth=0.8, zorder=3)
    for i, speed in zip(y, speeds):
        speed_ax.annotate(f"{speed:.2f}×", (speed, i), xytext=(3, 0), textcoords="offset points", va="center",
                          fontsize=8)
    speed_ax.set_xlim(0, 1.25 * max(max(speeds), 1))
    speed_ax.set_xlabel("training images/s against the reference (×)")
    speed_ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"One change at a time against the attention recipe ({table['attention']['val_accuracy']:.2%} on "
                 "validation)".replace("%", " %"), fontsize=11)
    return save_figure(fig, path)


def ablation_figures(payload: Mapping, out: Path) -> list[tuple[str, str]]:
    """``plot_ablation`` as a report figure: ``(caption, file)``."""
    plot_ablation(payload, Path(out) / "ablation.png")
    return [("Each change against the reference: validation accuracy (coloured by verdict; the shaded band is "
             "sampling noise) and training speed (changes to the optimisation alone train the reference's model: "
             "1.00× by construction)", "ablation.png")]


def sweep_figures(records: dict[str, list[RunRecord]], out: Path, *, specs: dict,
                  reference: str = "cnn") -> list[tuple[str, str]]:
    """Test accuracy against training images, one line per model (mean over seeds, bars ± std), and the
    ``reference`` model's lead over attention at each size: every seed a dot, the mean ± std over seeds.

    Args:
        specs (dict[str, tuple[str, float]]): per row name, ``(model kind, fraction)``.
    """
    out = Path(out)
    groups = sweep_groups(records, specs)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for kind in dict.fromkeys(kind for models in groups.values() for kind in models):
        points = [(int(models[kind][0].bookkeeping["train_images"]),
                   [100 * r.metrics["test_accuracy"] for r in models[kind]])
                  for models in groups.values() if kind in models]
        ax.errorbar([size for size, _ in points], [statistics.fmean(a) for _, a in points],
                    yerr=[statistics.stdev(a) if len(a) > 1 else 0.0 for _, a in points], marker="o", capsize=4,
                    label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Test accuracy against training-set size (mean ± std over seeds)")
    save_figure(fig, out / "sweep.png")
    figures = [("Test accuracy against training-set size (scored once per run; validation kept the epoch; "
                "bars: std over seeds)", "sweep.png")]
    paired = {int(models["attention"][0].bookkeeping["train_images"]): seed_gaps(models, "test", reference)
              for models in groups.values() if "attention" in models and reference in models}
    if paired:
        plot_sweep_gap(paired, reference, out / "sweep_gap.png")
        figures.append((f"The {reference}'s lead over attention in test accuracy at each training-set size: each "
                        "seed a dot (both models of a seed saw the same subset), the line the mean ± std",
                        "sweep_gap.png"))
    return figures


def plot_sweep_gap(paired: dict[int, list[float]], reference: str, path: Path) -> Figure:
    """``reference``'s lead over attention (accuracy, a fraction) against training images: every seed a grey
    dot, the mean ± sample std over seeds a line with bars.

    Args:
        paired (dict[int, list[float]]): per training-set size, the seed-by-seed leads (``seed_gaps``).
    """
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    sizes = sorted(paired)
    for size in sizes:
        ax.scatter([size] * len(paired[size]), [100 * g for g in paired[size]], color="grey", s=18, zorder=3)
    ax.errorbar(sizes, [100 * statistics.fmean(paired[s]) for s in sizes],
                yerr=[100 * statistics.stdev(paired[s]) if len(paired[s]) > 1 else 0.0 for s in sizes],
                marker="o", capsize=4, color="C3", label="mean ± std over seeds")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images")
    ax.set_ylabel(f"{reference} − attention, test accuracy (points)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"The {reference}'s lead over attention against training-set size (dots: seeds)")
    return save_figure(fig, path)


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
