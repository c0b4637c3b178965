"""The data-size sweep's protocol: epochs per fraction, seeds per fraction, the convergence read-out (late
gain) and the CNN's lead over attention taken seed by seed; all on hand-made records, so every expected
figure is worked out here."""

import math
import statistics

import pytest

from core.lab.runner import RunRecord
from vision.plots import sweep_figures
from vision.train import (late_gain, seed_gaps, sweep_groups, sweep_schedule, sweep_specs, sweep_summary,
                          train_config_for)


@pytest.mark.parametrize("epochs, fraction, expected", [
    (15, 1.0, (15, 1)),      # the full set: the comparison's schedule, validated every epoch
    (15, 0.2, (34, 2)),      # 15 / sqrt(0.2) = 33.54 -> 34 epochs, validated every 2 (17 times)
    (15, 0.05, (68, 5)),     # 67.08 -> 68, every round(4.53) = 5 epochs
    (15, 0.01, (150, 10)),   # exactly 150 (no float residue rounds it up to 151)
    (4, 0.25, (8, 2)),
])
def test_a_fraction_trains_epochs_over_root_fraction_validated_about_epochs_times(epochs, fraction, expected):
    assert sweep_schedule(epochs, fraction) == expected
    passes, every = expected
    assert abs(passes / every - epochs) <= epochs / 2  # about `epochs` validations at every fraction
    # Steps grow with the fraction, but more slowly than the data: fraction * passes ~ epochs * sqrt(fraction).
    assert math.isclose(fraction * passes, epochs * math.sqrt(fraction), rel_tol=0.05)


def test_small_fractions_train_every_seed_and_larger_ones_the_first():
    recipes = {name: train_config_for(name, epochs=15) for name in ("attention", "cnn")}
    specs, rows = sweep_specs(recipes, {"attention": "A", "cnn": "C"}, [0.01, 0.05, 1.0], all_seeds_up_to=0.05)
    by_name = {spec.name: spec for spec in specs}
    assert list(by_name) == ["attention @ 1%", "cnn @ 1%", "attention @ 5%", "cnn @ 5%",
                             "attention @ 100%", "cnn @ 100%"]
    assert [by_name[f"cnn @ {p}"].seeds for p in ("1%", "5%", "100%")] == [None, None, 1]
    assert (by_name["attention @ 1%"].train.epochs, by_name["attention @ 1%"].train.eval_every) == (150, 10)
    assert by_name["cnn @ 100%"].train.epochs == 15 and by_name["cnn @ 100%"].train.fraction == 1.0
    assert by_name["attention @ 5%"].config == "A" and rows["cnn @ 5%"] == ("cnn", 0.05)
    specs, _ = sweep_specs(recipes, {"attention": "A", "cnn": "C"}, [0.01, 1.0], all_seeds_up_to=1.0)
    assert all(spec.seeds is None for spec in specs)


def history(val: dict[int, float], epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0, **({"val_accuracy": val[e]} if e in val else {})}
            for e in range(1, epochs + 1)]


def test_late_gain_is_what_validation_won_in_the_last_third():
    # 9 epochs: the last third is epochs 7-9. Best before it 0.60, best overall 0.64: a gain of 0.04.
    assert late_gain(history({1: 0.1, 3: 0.5, 6: 0.60, 7: 0.62, 9: 0.64}, 9)) == pytest.approx(0.04)
    # Peaked early, later validations lower: nothing won late, converged.
    assert late_gain(history({2: 0.70, 4: 0.72, 8: 0.69, 9: 0.71}, 9)) == 0.0
    # The cut is counted in epochs run, not in validations (validated every 5 epochs of 30: cut at 20).
    assert late_gain(history({5: 0.3, 10: 0.4, 15: 0.5, 20: 0.55, 25: 0.6, 30: 0.61}, 30)) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="no validation accuracy"):
        late_gain(history({}, 3))


def run(test: float, val: float, images: int, curve: dict[int, float] | None = None) -> RunRecord:
    return RunRecord(metrics={"test_accuracy": test, "val_accuracy": val},
                     bookkeeping={"train_images": images, "epochs": 3},
                     history=history(curve or {1: val / 2, 3: val}, 3))


@pytest.fixture
def sweep_records():
    rows = {"attention @ 1%": ("attention", 0.01), "cnn @ 1%": ("cnn", 0.01),
            "attention @ 100%": ("attention", 1.0), "cnn @ 100%": ("cnn", 1.0)}
    # Three seeds at 1%, each seed's subset easier or harder for both models alike; one seed at 100%.
    records = {"attention @ 1%": [run(0.30, 0.31, 450), run(0.36, 0.35, 450), run(0.33, 0.34, 450)],
               "cnn @ 1%": [run(0.40, 0.42, 450), run(0.43, 0.44, 450), run(0.44, 0.43, 450)],
               "attention @ 100%": [run(0.71, 0.72, 45000, {1: 0.5, 2: 0.70, 3: 0.72})],
               "cnn @ 100%": [run(0.725, 0.73, 45000, {1: 0.6, 2: 0.73, 3: 0.73})]}
    return records, rows


def test_the_cnns_lead_is_taken_seed_by_seed_with_the_sample_spread(sweep_records):
    records, rows = sweep_records
    groups = sweep_groups(records, rows)
    assert list(groups) == [0.01, 1.0] and set(groups[0.01]) == {"attention", "cnn"}
    assert seed_gaps(groups[0.01], "test") == pytest.approx([0.10, 0.07, 0.11])  # paired by seed, cnn − attention
    notes, extra = sweep_summary(records, [], rows=rows)
    small, full = extra["sweep"]["1%"], extra["sweep"]["100%"]
    assert small["train_images"] == 450 and full["train_images"] == 45000
    assert small["mean_test_gap"] == pytest.approx(statistics.fmean([0.10, 0.07, 0.11]))
    assert small["std_test_gap"] == pytest.approx(statistics.stdev([0.10, 0.07, 0.11]))  # n - 1, not n
    assert small["val_gap"] == pytest.approx([0.11, 0.09, 0.09])
    assert full["test_gap"] == pytest.approx([0.015]) and full["std_test_gap"] == 0.0
    # The mean of the paired differences equals the difference of the means, but its spread is the paired one:
    # far smaller here than the spread of either model over the three subsets.
    assert small["std_test_gap"] < statistics.stdev([0.30, 0.36, 0.33])
    # Late gain: every 1% run doubled from epoch 1 to 3 (cut at epoch 2: the whole rise counts).
    assert small["late_gain"]["attention"] == pytest.approx(statistics.fmean([0.31, 0.35, 0.34]) / 2)
    assert full["late_gain"] == pytest.approx({"attention": 0.02, "cnn": 0.0})
    assert notes[0].startswith("1% (450 images): cnn − attention +9.33 points test")
    assert "over 3 seed(s) (test std 2.08)" in notes[0] and "over 1 seed(s)" in notes[1]
    assert "attention @ 100% 2.00; cnn @ 100% 0.00" in notes[-1]


def test_a_sweep_without_both_models_has_no_lead(sweep_records):
    records, rows = sweep_records
    only_cnn = {name: runs for name, runs in records.items() if name.startswith("cnn")}
    notes, extra = sweep_summary(only_cnn, [], rows=rows)
    assert "test_gap" not in extra["sweep"]["1%"] and len(notes) == 1


def test_the_lead_figure_draws_every_seed_as_a_dot(sweep_records, tmp_path):
    records, rows = sweep_records
    figures = sweep_figures(records, tmp_path, specs=rows)
    assert [name for _, name in figures] == ["sweep.png", "sweep_gap.png"]
    assert (tmp_path / "sweep.png").stat().st_size > 0 and (tmp_path / "sweep_gap.png").stat().st_size > 0
    only_cnn = {name: runs for name, runs in records.items() if name.startswith("cnn")}
    assert [name for _, name in sweep_figures(only_cnn, tmp_path / "cnn", specs=rows)] == ["sweep.png"]


def test_the_lead_figure_puts_each_dot_at_its_seeds_lead_and_the_line_at_the_mean(tmp_path):
    from vision.plots import plot_sweep_gap
    paired = {450: [0.10, 0.07, 0.11], 45000: [0.015]}
    fig = plot_sweep_gap(paired, "cnn", tmp_path / "gap.png")
    ax = fig.axes[0]
    dots = sorted((float(x), round(float(y), 6)) for c in ax.collections if c.get_offsets().shape[1:] == (2,)
                  and len(c.get_offsets()) and type(c).__name__ == "PathCollection" for x, y in c.get_offsets())
    assert dots == [(450.0, 7.0), (450.0, 10.0), (450.0, 11.0), (45000.0, 1.5)]
    line = ax.lines[0]
    assert list(line.get_xdata()) == [450, 45000]
    assert list(line.get_ydata()) == pytest.approx([100 * statistics.fmean(paired[450]), 1.5])
