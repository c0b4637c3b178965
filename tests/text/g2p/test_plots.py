"""The figures hook of `python -m text g2p compare`: which runs each figure draws."""

from __future__ import annotations

from types import SimpleNamespace

from core.lab.runner import RunRecord
from text.g2p import plots


def _record(run_dir, val_wers):
    history = [{"epoch": i + 1, "val_wer": w} for i, w in enumerate(val_wers)]
    return RunRecord(metrics={"val_wer": min(val_wers)}, history=history, run_dir=run_dir)


def test_learning_curves_draw_every_seed_and_captions_say_which(tmp_path, monkeypatch):
    drawn = {}

    def capture(histories, metric, **kwargs):
        drawn.update(histories)

    monkeypatch.setattr(plots, "plot_learning_curves", capture)
    data = SimpleNamespace(test={"cat": [("K", "AE", "T")]}, vocab=None)
    records = {"transformer": [_record(tmp_path / "transformer" / "seed3", [0.5, 0.4]),
                               _record(tmp_path / "transformer" / "seed4", [0.6, 0.3])]}
    figures = plots.make_figures(records, tmp_path, data)
    assert list(drawn) == ["transformer, seed 3", "transformer, seed 4"]  # named by their run folders' seeds
    assert [e["val_wer"] for e in drawn["transformer, seed 4"]] == [0.6, 0.3]
    assert any("every seed" in caption for caption, _ in figures)
    drawn.clear()
    one = plots.make_figures({"transformer": records["transformer"][:1]}, tmp_path, data)
    assert list(drawn) == ["transformer"]  # one seed: the model's name alone
    assert not any("seed" in caption for caption, _ in one)
