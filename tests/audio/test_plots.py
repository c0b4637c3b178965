"""The attention figures of audio/plots.py: one map per model, and the pooling weights when a model pools
by attention."""

import torch
from PIL import Image

from audio.models import AudioConfig, build_model
from audio.plots import attention_figure

SMALL = dict(dim=32, heads=2, layers=2, ffn_dim=64, stem_channels=4, dropout=0.0)


def test_attention_pooling_adds_a_figure_of_its_weights(tmp_path):
    torch.manual_seed(0)
    features = torch.randn(60, 40)
    mean = attention_figure("window(w=8)", build_model(AudioConfig(**SMALL)).eval(), features, tmp_path / "mean")
    assert [file for _, file in mean] == ["attention_window-w-8.png"]
    pooled = build_model(AudioConfig(pooling="attention", **SMALL)).eval()
    figures = attention_figure("window(w=8)", pooled, features, tmp_path / "pooled")
    assert [file for _, file in figures] == ["attention_window-w-8.png", "pooling_window-w-8.png"]
    width, height = Image.open(tmp_path / "pooled" / "pooling_window-w-8.png").size
    assert width > 300 and height > 200


def test_loso_figure_draws_every_seed_on_its_bar(tmp_path, monkeypatch):
    import matplotlib.figure
    from pathlib import Path

    from matplotlib.collections import PathCollection

    from audio.plots import loso_figures
    from core.lab.runner import RunRecord

    drawn = []
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, path, **kw: (drawn.append((Path(path).name, fig)), save(fig, path, **kw))[1])
    folds = {f"{m} | {s}": (m, s) for m in ("attn", "cnn") for s in ("ann", "bob", "cy")}
    value = {"attn": 0.5, "cnn": 0.7}
    records = {row: [RunRecord(metrics={"test_accuracy": value[m] + k / 10 + len(s) / 100}, history=[
        {"epoch": 1, "val_accuracy": 0.5}]) for k in range(2)] for row, (m, s) in folds.items()}
    figures = loso_figures(records, tmp_path, folds=folds)
    assert "dots: each seed" in figures[0][0]
    fig = dict(drawn)["loso_accuracy.png"]
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    dots = sorted(round(float(y), 6) for c in scatters for _, y in c.get_offsets())
    want = sorted(round(100 * r.metrics["test_accuracy"], 6) for runs in records.values() for r in runs)
    assert dots == want  # 2 seeds x 2 models x 3 speakers, each at its own value
    bars = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert bars == sorted(round(100 * (value[m] + 0.05 + len(s) / 100), 6) for m, s in folds.values())
    one_seed = {row: runs[:1] for row, runs in records.items()}
    drawn.clear()
    assert "dots" not in loso_figures(one_seed, tmp_path / "one", folds=folds)[0][0]
    assert not [c for c in dict(drawn)["loso_accuracy.png"].axes[0].collections if isinstance(c, PathCollection)]
