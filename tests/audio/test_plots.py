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
