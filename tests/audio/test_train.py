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
    vals = {"ann": 0.0, "bob": 0.3, "cy": 0.6}
    records = {row: [run(1, tests[m][s][0], 0.1), run(2, tests[m][s][1], 0.3 + vals[s])] for row, (m, s) in folds.items()}
    notes, summary = loso_summary(records, [], folds=folds)
    attn = summary["loso"]["attn"]
    assert attn["per_speaker_test_accuracy"] == pytest.approx({"ann": 0.6, "bob": 0.75, "cy": 0.6})
    assert attn["mean_test_accuracy"] == pytest.approx(0.65) and attn["worst_speaker"] in {"ann", "cy"}
    assert attn["mean_val_accuracy"] == pytest.approx(0.35)  # (0.1 + 0.3) / 2 + mean(0, 0.3, 0.6) / 2
    # seed 1: (0.5 + 0.6 + 0.4) / 3 = 0.5; seed 2: (0.7 + 0.9 + 0.8) / 3 = 0.8; sample std of (0.5, 0.8)
    assert attn["per_seed_mean_test_accuracy"] == pytest.approx({"seed1": 0.5, "seed2": 0.8})
    assert attn["seed_std_of_mean_test_accuracy"] == pytest.approx(0.3 / 2 ** 0.5)
    assert summary["loso"]["cnn"]["per_seed_mean_test_accuracy"] == pytest.approx({"seed1": 0.8, "seed2": 0.7})
    assert attn["per_seed_mean_val_accuracy"] == pytest.approx({"seed1": 0.1, "seed2": 0.6})
    assert attn["seed_std_of_mean_val_accuracy"] == pytest.approx(0.5 / 2 ** 0.5)
    assert any("seed1 50.00%, seed2 80.00%" in note for note in notes)
    gap = summary["loso"]["cnn"]["gap_to_reference"]  # cnn minus attn: 0.75 - 0.65; seed by seed 0.3, -0.1
    assert gap["reference"] == "attn" and gap["mean"] == pytest.approx(0.1)
    assert gap["per_seed"] == pytest.approx({"seed1": 0.3, "seed2": -0.1})
    assert "gap_to_reference" not in attn and any("cnn - attn: +10.00 points" in note for note in notes)


def test_loso_summary_with_one_seed_reports_no_spread_over_seeds():
    folds = {"attn | ann": ("attn", "ann"), "attn | bob": ("attn", "bob")}
    records = {"attn | ann": [run(0, 0.5, 0.6)], "attn | bob": [run(0, 0.7, 0.8)]}
    _, summary = loso_summary(records, [], folds=folds)
    assert "per_seed_mean_test_accuracy" not in summary["loso"]["attn"]
    assert "gap_to_reference" not in summary["loso"]["attn"]
    assert summary["loso"]["attn"]["mean_test_accuracy"] == pytest.approx(0.6)


# --------------------------------------------------------------------------- mixup

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from audio.data import ClipDataset, FrameDataset  # noqa: E402
from audio.train import Batches, loss_of  # noqa: E402


@pytest.fixture
def clips():
    """12 clips of 5..8 frames with random values; clip i has label i, so a batch names its clips."""
    g = torch.Generator().manual_seed(3)
    features = [torch.randn(5 + i % 4, 3, generator=g) for i in range(12)]
    return ClipDataset(features, list(range(12)))


def test_mixup_batches_mix_each_clip_with_a_partner_from_its_batch_by_one_weight(clips):
    lams = []
    for batch in Batches(clips, 24, shuffle=True, seed=1, mixup=0.4):
        lam = float(batch["mix_lambda"])
        assert 0 < lam < 1
        lams.append(lam)
        labels, partners = batch["labels"].tolist(), batch["mix_labels"].tolist()
        assert sorted(partners) == sorted(labels) and partners != labels  # a permutation of the same batch
        for row, (i, j) in enumerate(zip(labels, partners)):
            a, b = clips.features[i], clips.features[j]
            length = max(len(a), len(b))
            assert batch["lengths"][row] == length
            want = lam * F.pad(a, (0, 0, 0, length - len(a))) + (1 - lam) * F.pad(b, (0, 0, 0, length - len(b)))
            torch.testing.assert_close(batch["features"][row, :length], want)
            assert not batch["features"][row, length:].any()
    assert len(lams) > 2 and len(set(lams)) == len(lams)  # a new weight per batch


def test_mixup_is_seeded_the_same_on_every_process_and_never_in_evaluation(clips):
    def draws(**kw):
        return [(float(b["mix_lambda"]), b["labels"].tolist(), b["mix_labels"].tolist())
                for b in Batches(clips, 24, shuffle=True, mixup=0.4, **kw)]

    assert draws(seed=1) == draws(seed=1) and draws(seed=1) != draws(seed=2)
    rank0, rank1 = draws(seed=1, rank=0, world_size=2), draws(seed=1, rank=1, world_size=2)
    whole = draws(seed=1)
    for (lam0, y0, p0), (lam1, y1, p1), (lam, y, p) in zip(rank0, rank1, whole):
        assert lam0 == lam1 == lam and sorted(y0 + y1) == sorted(y)
        assert dict(zip(y0 + y1, p0 + p1)) == dict(zip(y, p))  # each process holds its share of the same pairs
    assert all("mix_lambda" not in b for b in Batches(clips, 24, shuffle=False, mixup=0.4))
    assert all("mix_lambda" not in b for b in Batches(clips, 24, shuffle=True, seed=1))


def test_mixup_refuses_frame_labels_and_a_negative_alpha(clips):
    frames = FrameDataset([torch.randn(6, 3) for _ in range(4)], [torch.zeros(6, dtype=torch.long)] * 4)
    with pytest.raises(ValueError, match="label per frame"):
        next(iter(Batches(frames, 24, shuffle=True, mixup=0.4)))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        Batches(clips, 24, shuffle=True, mixup=-0.1)


def test_loss_of_a_mixed_batch_weighs_both_labels():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))

    class Fixed(torch.nn.Module):
        def forward(self, features, lengths):
            return logits

    y, y2 = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    batch = {"features": torch.zeros(4, 2, 3), "lengths": torch.tensor([2, 2, 2, 2]), "labels": y,
             "mix_labels": y2, "mix_lambda": torch.tensor(0.3)}
    log_p = logits.log_softmax(-1)
    want = -(0.3 * log_p[range(4), y] + 0.7 * log_p[range(4), y2]).mean()
    torch.testing.assert_close(loss_of(Fixed(), batch, torch.device("cpu")), want)
    del batch["mix_lambda"]
    torch.testing.assert_close(loss_of(Fixed(), batch, torch.device("cpu")), -log_p[range(4), y].mean())
