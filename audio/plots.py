"""Figures of the audio comparison: learning curves, validation accuracy against window size, what each
attention variant costs as the input grows, and one attention map per variant.

``comparison_figures`` draws the figures ``python -m audio compare`` puts in its report, from the runner's
records; figures are ``matplotlib.figure.Figure``s (no pyplot state) saved under ``out``.

Legend: T frames, F mel bins, K classes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from audio.cost import measure
from audio.models import ATTENTIONS, AudioConfig
from audio.train import load_model
from core.capture import capture_attention
from core.lab.experiment import slug
from core.lab.plots import plot_attention, plot_learning_curves, plot_series
from core.lab.runner import RunRecord

__all__ = ["comparison_figures", "window_sweep_figure", "cost_figures", "attention_figure", "loso_figures"]


def window_sweep_figure(records: dict[str, list[RunRecord]], configs: dict[str, AudioConfig], metric: str,
                        out: Path) -> list[tuple[str, str]]:
    """Validation ``metric`` against the window size w of every windowed model (first seed), with full
    attention as a reference line. Drawn on validation: the sweep chooses, so test stays out of it."""
    windows = sorted((configs[name].window, runs[0].metrics[metric]) for name, runs in records.items()
                     if runs and configs[name].model == "attention" and configs[name].attention == "window")
    if len(windows) < 2:
        return []
    series = {"window attention": [m for _, m in windows]}
    full = [runs[0].metrics[metric] for name, runs in records.items()
            if runs and configs[name].model == "attention" and configs[name].attention == "full"]
    if full:
        series["full attention (reference)"] = full * len(windows)
    plot_series([w for w, _ in windows], series, xlabel="window w (frames on each side)", ylabel=metric,
                logx=True, title="Validation accuracy against window size", path=out / "accuracy_vs_window.png")
    return [(f"{metric} against window size (first seed; validation, which chooses)", "accuracy_vs_window.png")]


def cost_figures(base: AudioConfig, lengths: list[int], out: Path) -> list[tuple[str, str]]:
    """Time and saved-for-backward memory of one core attention call against input length, per variant;
    the measurements go to ``attention_cost.json`` beside the figures."""
    cost = {attention: [measure(replace(base, attention=attention), T, scope="attention", repeats=1)
                        for T in lengths] for attention in ATTENTIONS}
    seconds = [T / 100 for T in lengths]
    plot_series(seconds, {a: [c["seconds"] for c in rows] for a, rows in cost.items()}, xlabel="audio (s)",
                ylabel="forward+backward time (s)", logx=True, logy=True,
                title="Attention time against input length", path=out / "time_vs_length.png")
    plot_series(seconds, {a: [c["saved_mb"] for c in rows] for a, rows in cost.items()}, xlabel="audio (s)",
                ylabel="memory saved for backward (MB)", logx=True, logy=True,
                title="Attention memory against input length", path=out / "memory_vs_length.png")
    (out / "attention_cost.json").write_text(json.dumps(cost, indent=1) + "\n")
    return [("Attention time (forward+backward of one core attention call) against input length",
             "time_vs_length.png"),
            ("Attention memory (saved for backward) against input length", "memory_vs_length.png")]


def attention_figure(name: str, model: torch.nn.Module, features: torch.Tensor, out: Path) -> list[tuple[str, str]]:
    """Layer 1's attention (heads averaged) of ``model`` over ``features (T, F)``; with attention pooling,
    also the pooling weights over the utterance's frames."""
    with torch.no_grad(), capture_attention(model) as maps:
        model(features.unsqueeze(0), torch.tensor([features.shape[0]]))
    weights = maps[0].weights[0].mean(0)  # (T, T): first layer, heads averaged
    file = f"attention_{slug(name)}.png"
    plot_attention(weights, title=f"{name}: layer 1, mean over heads", path=out / file)
    figures = [(f"Attention map of one test utterance, {name}", file)]
    pooling = [m for m in maps if m.name == "head"]
    if pooling:
        file = f"pooling_{slug(name)}.png"
        pooling_figure(features, pooling[0].weights.reshape(-1), name, out / file)
        figures.append((f"Attention pooling of one test utterance, {name}: which frames make the clip's vector",
                        file))
    return figures


def pooling_figure(features: torch.Tensor, weights: torch.Tensor, name: str, path: Path) -> None:
    """The log-mel frames ``(T, F)`` above the attention-pooling weight of every frame ``(T,)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True, height_ratios=(2, 1))
    top.imshow(features.T.cpu(), origin="lower", aspect="auto", cmap="magma")
    top.set_ylabel("mel bin")
    top.set_title(f"{name}: attention pooling over one test utterance")
    bottom.plot(weights.cpu(), color="tab:blue")
    bottom.axhline(1 / len(weights), color="grey", linestyle="--", linewidth=1, label="mean pooling (1/T)")
    bottom.set_xlabel("frame (10 ms)")
    bottom.set_ylabel("weight")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def comparison_figures(records: dict[str, list[RunRecord]], out: Path, *, configs: dict[str, AudioConfig],
                       test: Dataset, select: str, lengths: list[int]) -> list[tuple[str, str]]:
    """Every figure of ``python -m audio compare``, as ``(caption, file)`` pairs for the report.

    Args:
        records (dict[str, list[RunRecord]]): the runner's records per model name.
        out (Path): the output folder.
        configs (dict[str, AudioConfig]): each model's config (to rebuild one loaded from ``best.pt``).
        test (Dataset): the test set; one of its items is drawn in the attention maps (nothing is scored).
        select (str): the validation metric that selects (``val_accuracy`` or ``val_frame_accuracy``).
        lengths (list[int]): input lengths in frames for the cost figures.
    """
    out = Path(out)
    figures = []
    curves = {name: [r.history for r in runs] for name, runs in records.items() if runs}
    several = any(len(runs) > 1 for runs in records.values())
    plot_learning_curves(curves, select, title=f"{select} per epoch", path=out / "learning_curves.png")
    figures.append((f"{select} per epoch{', every seed of each model' if several else ''}", "learning_curves.png"))
    figures += window_sweep_figure(records, configs, select, out)
    attention = [c for c in configs.values() if c.model == "attention"]
    if attention:
        figures += cost_figures(attention[0], lengths, out)
    longest = max(range(min(len(test), 50)), key=lambda i: test[i][0].shape[0])
    features = test[longest][0][:300]  # (T, F): 3 s at most is enough to see the band
    shown = set()
    for name, runs in records.items():
        config = configs[name]
        if runs and config.model == "attention" and config.attention not in shown:
            shown.add(config.attention)  # one map per variant: the sweep's extra windows look alike
            figures += attention_figure(name, load_model(config, runs[0]).cpu().eval(), features, out)
    return figures


def loso_figures(records: dict[str, list[RunRecord]], out: Path, *, folds: dict[str, tuple[str, str]],
                 metric: str = "test_accuracy") -> list[tuple[str, str]]:
    """Leave-one-speaker-out: ``metric`` per held-out speaker, one group of bars per model (each bar the mean
    over seeds), the model's mean over folds as a line across its group; and the first fold's learning curves.

    Args:
        records (dict[str, list[RunRecord]]): the runner's records per row (one row per model and fold).
        out (Path): the output folder.
        folds (dict[str, tuple[str, str]]): row name -> (model, held-out speaker).
        metric (str): the metric drawn. (default: ``"test_accuracy"``)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = list(dict.fromkeys(model for model, _ in folds.values()))
    speakers = sorted({speaker for _, speaker in folds.values()})
    seeds = {(model, speaker): [r.metrics[metric] for r in records[row]]
             for row, (model, speaker) in folds.items() if records.get(row)}
    values = {key: float(np.mean(runs)) for key, runs in seeds.items()}
    several = max(map(len, seeds.values()), default=1) > 1
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(models) * len(speakers) / 3), 4.0))
    width = 0.8 / len(speakers)
    colours = plt.get_cmap("tab10")
    for j, speaker in enumerate(speakers):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(models))]
        ys = [100 * values.get((m, speaker), np.nan) for m in models]
        ax.bar(xs, ys, width * 0.92, color=colours(j), label=speaker)
        if several:  # every seed's own value on its bar: the spread a mean of few seeds hides
            for x, model in zip(xs, models):
                runs = seeds.get((model, speaker), [])
                ax.scatter([x] * len(runs), [100 * v for v in runs], s=10, color="black", zorder=3,
                           label="one seed" if j == 0 and model == models[0] else None)
    for i, model in enumerate(models):
        mean = np.nanmean([values.get((model, s), np.nan) for s in speakers])
        ax.hlines(100 * mean, i - 0.42, i + 0.42, colors="black", linewidth=1.5)
        ax.text(i, 100 * mean + 0.8, f"mean {100 * mean:.1f}", ha="center", fontsize=8,
                bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))
    low = min([100 * v for runs in seeds.values() for v in runs] + [100.0])
    ax.set_ylim(max(0.0, low - 10), 102)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%), held-out speaker")
    ax.set_title("Leave one speaker out: accuracy on a voice never heard in training"
                 + (f"\n(bars: mean over {max(map(len, seeds.values()))} seeds; dots: each seed)" if several else ""),
                 fontsize=11)
    ax.legend(title="held-out speaker", fontsize=8, ncol=min(7, len(speakers) + several), loc="lower center",
              bbox_to_anchor=(0.5, -0.32))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "loso_accuracy.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    figures = [(f"{metric} per held-out speaker (bars: mean over seeds{'; dots: each seed' if several else ''}; "
                "line: mean over the folds)",
                "loso_accuracy.png")]
    first = speakers[0]
    curves = {model: [r.history for r in records[row]] for row, (model, speaker) in folds.items()
              if speaker == first and records.get(row)}
    select = "val_accuracy"
    plot_learning_curves(curves, select, title=f"{select} per epoch, fold {first} held out",
                         path=out / "learning_curves.png")
    figures.append((f"{select} per epoch, fold '{first}' held out{', every seed of each model' if several else ''}",
                    "learning_curves.png"))
    return figures
