"""audio.train's leave-one-speaker-out summary, on hand-made run records (no training)."""

from pathlib import Path

import pytest

from audio.train import loso_summary
from core.lab.runner import RunRecord


def run(seed: int, test: float, val: float) -> RunRecord:
    return RunRecord(metrics={"test_accuracy": test, "val_accuracy": val}, run_dir=Path(f"out/x/seed{seed}"))


def test_loso_summary_gives_the_mean_over_folds_seed_by_seed_and_its_spread():
    # Two models, three held-out speakers, seeds 1 and 2; the values differ per seed, fold and model.
    folds = {f"{m} | {s}": (m, s) for m in ("attn", "cnn") for s in ("ann", "bob", "cy")}
    tests = {"attn": {"ann": (0.5, 0.7), "bob": (0.6, 0.9), "cy": (0.4, 0.8)},
             "cnn": {"ann": (0.9, 0.8), "bob": (0.7, 0.7), "cy": (0.8, 0.6)}}
    records = {row: [run(1, tests[m][s][0], 0.1), run(2, tests[m][s][1], 0.3)] for row, (m, s) in folds.items()}
    notes, summary = loso_summary(records, [], folds=folds)
    attn = summary["loso"]["attn"]
    assert attn["per_speaker_test_accuracy"] == pytest.approx({"ann": 0.6, "bob": 0.75, "cy": 0.6})
    assert attn["mean_test_accuracy"] == pytest.approx(0.65) and attn["worst_speaker"] in {"ann", "cy"}
    assert attn["mean_val_accuracy"] == pytest.approx(0.2)
    # seed 1: (0.5 + 0.6 + 0.4) / 3 = 0.5; seed 2: (0.7 + 0.9 + 0.8) / 3 = 0.8; sample std of (0.5, 0.8)
    assert attn["per_seed_mean_test_accuracy"] == pytest.approx({"seed1": 0.5, "seed2": 0.8})
    assert attn["seed_std_of_mean_test_accuracy"] == pytest.approx(0.3 / 2 ** 0.5)
    assert summary["loso"]["cnn"]["per_seed_mean_test_accuracy"] == pytest.approx({"seed1": 0.8, "seed2": 0.7})
    assert any("seed1 50.00%, seed2 80.00%" in note for note in notes)


def test_loso_summary_with_one_seed_reports_no_spread_over_seeds():
    folds = {"attn | ann": ("attn", "ann"), "attn | bob": ("attn", "bob")}
    records = {"attn | ann": [run(0, 0.5, 0.6)], "attn | bob": [run(0, 0.7, 0.8)]}
    _, summary = loso_summary(records, [], folds=folds)
    assert "per_seed_mean_test_accuracy" not in summary["loso"]["attn"]
    assert summary["loso"]["attn"]["mean_test_accuracy"] == pytest.approx(0.6)
