"""Figures of the taggers: learning curves, the attention tagger's attention on a test sentence and its
learned relative position biases.

Figures are saved under the output folder; each function returns ``(caption, file)`` pairs for the report.

Symbol legend: H heads, T sentence length, M max distance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.capture import capture_attention
from core.lab.plots import plot_attention, plot_learning_curves
from text.data import TaggingDataset, collate
from text.models import Tagger

__all__ = ["attention_figures", "comparison_figures"]


def attention_figures(model: Tagger, data: TaggingDataset, out: Path) -> list[tuple[str, str]]:
    """Heatmaps (head average per layer) of the attention tagger on one test sentence of 10-16 words, words on
    both axes, and each layer's relative position bias by offset."""
    device = next(model.parameters()).device
    candidates = [i for i, s in enumerate(data.sentences) if 10 <= len(s) <= 16] or [0]
    i = candidates[0]
    batch = collate([data[i]]).to(device)
    words = data.sentences[i].words
    model.eval()
    with torch.no_grad(), capture_attention(model) as maps:
        model.predict(batch)
    figures = []
    if getattr(model, "relative", None) is not None:
        span = min(model.config.max_distance, 8)
        for layer, bias in enumerate(model.relative):
            M = bias.max_distance
            table = bias.bias.detach()[M - span : M + span + 1].T  # (H, 2*span+1): head x offset
            file = f"relative_bias_layer{layer + 1}.png"
            plot_attention(table - table.amin(), x_labels=[f"{o:+d}" for o in range(-span, span + 1)],
                           y_labels=[f"head {h}" for h in range(table.shape[0])], annotate=False,
                           title=f"layer {layer + 1}: learned bias by offset (key - query), shifted to min 0",
                           axis_labels=("offset of the key from the query (words)", "head"),
                           value_label="bias added to the score (shifted to min 0)", path=out / file)
            figures.append((f"Layer {layer + 1} relative position bias per head: where each head looks, "
                            "left (-) or right (+) of the word", file))
    for layer, amap in enumerate(maps):
        file = f"attention_layer{layer + 1}.png"
        plot_attention(amap.weights[0].mean(0), x_labels=words, y_labels=words,
                       title=f"attention tagger, layer {layer + 1} (mean over heads)", path=out / file)
        figures.append((f"Layer {layer + 1} attention on a test sentence (rows: each word; columns: the words it "
                        "reads)", file))
    return figures


def comparison_figures(records: dict, out: Path, *, test: TaggingDataset, monitor: str,
                       title: str) -> list[tuple[str, str]]:
    """The figures of ``python -m text compare``: learning curves of every model (every seed) and, when the
    attention tagger was trained in this invocation, its attention figures.

    Args:
        records (dict[str, list[RunRecord]]): the runner's records per model name.
        out (Path): the output folder.
        test (TaggingDataset): the test split (the attention figure's sentence comes from it).
        monitor (str): the validation metric drawn, e.g. ``"val_f1"``.
        title (str): the task's name for the curves' title.
    """
    curves = {name: [r.history for r in runs] for name, runs in records.items() if runs}
    several = any(len(runs) > 1 for runs in records.values())
    plot_learning_curves(curves, monitor, title=f"{title}: {monitor} per epoch", path=Path(out) / "learning_curves.png")
    figures = [(f"Learning curves: {monitor} per epoch{', every seed of each model' if several else ''}",
                "learning_curves.png")]
    if records.get("attention"):
        model = records["attention"][0].model
        if model is None:  # finished by an earlier invocation
            from text.train import load_tagger

            model, _, _ = load_tagger(records["attention"][0].run_dir / "best.pt")
        figures += attention_figures(model, test, Path(out))
    return figures
