"""Lesson 7: LayerNorm against BatchNorm on a padded batch of sequences.

LayerNorm normalises each token over its own D features: B·T means, none of which mixes tokens, so a
token's output cannot depend on anything else in the batch, padding included. BatchNorm normalises each
feature over every position of the batch, B·T values per feature: the padding zeros are counted in its
mean and variance, so how much a batch is padded (a property of the *other* sequences) changes every
real token's output. This is why Transformers use LayerNorm on variable-length text and speech.

Legend: B sequences, T padded length, D features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from core.lab.plots import save_figure
from core.lessons.base import LessonResult, Log, Table, fmt, header

__all__ = ["padded_batch", "normalise", "lesson", "LENGTHS"]

TITLE = "LayerNorm vs BatchNorm on a padded batch"
LENGTHS = (5, 3, 2)
FEATURE_MEANS = (2.0, -1.0, 0.5, 3.0)


def padded_batch(padded_length: int, lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The same real tokens (feature means `FEATURE_MEANS`, std 1), zero-padded to `padded_length`.

    Returns:
        `x (B, T, D)` float64 and `real (B, T)` bool, True at real tokens.
    """
    if padded_length < max(lengths):
        raise ValueError(f"padded_length {padded_length} is shorter than the longest sequence {max(lengths)}")
    g = torch.Generator().manual_seed(seed)
    D = len(FEATURE_MEANS)
    tokens = torch.randn(len(lengths), max(lengths), D, generator=g, dtype=torch.float64)  # (B, Tmax, D)
    tokens += torch.tensor(FEATURE_MEANS, dtype=torch.float64)
    x = torch.zeros(len(lengths), padded_length, D, dtype=torch.float64)
    real = torch.arange(padded_length) < torch.tensor(lengths)[:, None]  # (B, T)
    x[:, : max(lengths)] = tokens
    return x * real[..., None], real


def normalise(x: Tensor) -> dict[str, Tensor]:
    """LayerNorm and BatchNorm (training mode: batch statistics, no affine) of `x (B, T, D)`.

    Returns:
        `layer`, `batch` `(B, T, D)` outputs and the BatchNorm batch mean `batch_mean (D,)`.
    """
    D = x.shape[-1]
    layer = nn.LayerNorm(D, elementwise_affine=False).double()(x)
    bn = nn.BatchNorm1d(D, affine=False).double().train()
    batch = bn(x.transpose(1, 2)).transpose(1, 2)  # BatchNorm1d wants (B, D, T)
    return {"layer": layer, "batch": batch, "batch_mean": x.mean(dim=(0, 1))}


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    x5, real5 = padded_batch(5)
    x12, real12 = padded_batch(12)
    B, _, D = x5.shape
    n5, n12 = normalise(x5), normalise(x12)
    real_mean = x5[real5].mean(0)  # (D,) over real tokens only
    log(f"Batch of {B} sequences of lengths {LENGTHS}, D = {D} features (means {FEATURE_MEANS}, std 1), "
        "zero-padded.")
    log(f"  LayerNorm: one mean and variance per token, over its {D} features -> B·T statistics.")
    log(f"  BatchNorm: one mean and variance per feature, over all B·T positions -> {D} statistics, "
        "padding included.")
    log.matrix("real-token mean per feature", real_mean)
    log.matrix(f"BatchNorm's batch mean, padded to T = 5  ({B * 5 - sum(LENGTHS)} of {B * 5} positions are padding)",
               n5["batch_mean"])
    log.matrix(f"BatchNorm's batch mean, padded to T = 12 ({B * 12 - sum(LENGTHS)} of {B * 12} positions are padding)",
               n12["batch_mean"])
    # The same real tokens, two paddings: how much does each output at a real token move?
    r5, r12 = x5[real5], x12[real12]  # both (sum(lengths), D), same tokens in the same order
    assert torch.equal(r5, r12)
    layer_move = (n5["layer"][real5] - n12["layer"][real12]).abs().max().item()
    batch_move = (n5["batch"][real5] - n12["batch"][real12]).abs().max().item()
    table = Table(
        "Outputs at the real tokens, padded to T = 5 vs T = 12",
        ["norm", "averages over", "statistics", "max |change| at real tokens"],
        [["LayerNorm", f"a token's {D} features", f"B·T = {B}·T", fmt(layer_move)],
         ["BatchNorm", "a feature's B·T positions", f"D = {D}", fmt(batch_move)]],
    )
    log.table(table)
    log("Padding moves every BatchNorm output; LayerNorm's do not move at all.")

    figures = []
    if fig_dir is not None:
        figures.append(_plot(x5, real5, fig_dir / "layernorm_vs_batchnorm.png"))
    return LessonResult(
        name="norms",
        title=TITLE,
        text=f"A batch of {B} sequences (lengths {', '.join(map(str, LENGTHS))}) zero-padded to a common length. "
        f"LayerNorm normalises each token over its own {D} features, so padding the batch further changes no "
        f"real token's output (max change {fmt(layer_move)}). BatchNorm normalises each feature over all "
        "positions of the batch, padding zeros included: padding from 5 to 12 pulls the batch means towards "
        f"0 and moves real tokens' outputs by up to {batch_move:.2f}. That dependence on the rest of the "
        "batch is why Transformers normalise per token.",
        numbers={"layer_move": layer_move, "batch_move": batch_move,
                 "batch_mean_f0_T5": n5["batch_mean"][0].item(), "batch_mean_f0_T12": n12["batch_mean"][0].item(),
                 "real_mean_f0": real_mean[0].item()},
        tables=[table],
        figures=figures,
    )


def _plot(x: Tensor, real: Tensor, path: Path) -> Path:
    B, T, D = x.shape
    fig = Figure(figsize=(11, 4.6))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})

    # Left: the padded batch as (B·T) × D cells, one row per position; padding hatched.
    grid = x.reshape(B * T, D).numpy()  # (B·T, D)
    pad = ~real.reshape(B * T).numpy()
    left.imshow(np.where(pad[:, None], np.nan, grid), cmap="viridis", aspect="auto")
    for r in np.flatnonzero(pad):
        left.add_patch(Rectangle((-0.5, r - 0.5), D, 1, facecolor="0.85", hatch="///", edgecolor="0.6", lw=0))
    for b in range(1, B):
        left.axhline(b * T - 0.5, color="k", lw=1.5)
    left.add_patch(Rectangle((-0.45, 0.55), D - 0.1, 0.9, fill=False, edgecolor="tab:red", lw=2.5))
    left.add_patch(Rectangle((0.55, -0.45), 0.9, B * T - 0.1, fill=False, edgecolor="tab:blue", lw=2.5))
    left.set_yticks(range(B * T), labels=[f"seq {b + 1}, t {t + 1}" for b in range(B) for t in range(T)], fontsize=7)
    left.set_xticks(range(D), labels=[f"f{d + 1}" for d in range(D)])
    left.set_xlabel("feature")
    left.set_title("red: LayerNorm averages one token's features\nblue: BatchNorm averages one feature's "
                   "positions\nhatched: padding (zeros)", fontsize=9)

    # Right: one real token's output as the batch is padded further.
    lengths = list(range(T, 41))
    ln, bn, mean = [], [], []
    for length in lengths:
        xp, _ = padded_batch(length)
        n = normalise(xp)
        ln.append(n["layer"][0, 1, 1].item())  # the boxed token (seq 1, t 2) and feature f2
        bn.append(n["batch"][0, 1, 1].item())
        mean.append(n["batch_mean"][1].item())
    real_mean = x[real][:, 1].mean().item()
    right.plot(lengths, ln, color="tab:red", label="LayerNorm output at (seq 1, t 2, f2)")
    right.plot(lengths, bn, color="tab:blue", label="BatchNorm output at (seq 1, t 2, f2)")
    right.plot(lengths, mean, color="tab:blue", ls="--", label="BatchNorm's batch mean of f2")
    right.axhline(real_mean, color="0.4", ls=":", label="mean of f2 over real tokens")
    right.set_xlabel("padded length T (the real tokens stay the same)")
    right.set_ylabel("value")
    right.grid(alpha=0.3)
    right.legend(fontsize=8, loc="center right")
    right.set_title(f"Padding {B} sequences of lengths {', '.join(map(str, LENGTHS))} further", fontsize=9)
    save_figure(fig, path)
    return path
