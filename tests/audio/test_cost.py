"""The cost measurements behind the time/memory plots and the benchmark (mirrors audio/cost.py)."""

import torch

from audio.cost import measure, saved_bytes
from audio.models import AudioConfig


def test_saved_bytes_counts_each_storage_once():
    x = torch.randn(1000, requires_grad=True)  # 4000 bytes
    out, saved = saved_bytes(lambda: (x * x).sum())  # mul saves x twice: one storage
    assert saved == 4000 and out.requires_grad


def test_full_attention_memory_grows_quadratically_and_window_linearly():
    rows = {}
    for attention in ("full", "window"):
        config = AudioConfig(attention=attention, window=4, task="frame", num_classes=11, dim=16, heads=2)
        rows[attention] = [measure(config, T, scope="attention", repeats=1)["saved_mb"] for T in (256, 1024)]
    full_growth = rows["full"][1] / rows["full"][0]
    window_growth = rows["window"][1] / rows["window"][0]
    assert full_growth > 10  # 4x the length, ~16x the score matrix
    assert window_growth < 6  # 4x the length, ~4x the band
    assert rows["full"][1] > 5 * rows["window"][1]
