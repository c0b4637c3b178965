import subprocess
import sys

import pytest
import torch

from core.__main__ import worked_example
from core.lab.plots import (LEGEND_INSIDE_MAX, plot_attention, plot_learning_curves, plot_positional_encoding,
                            plot_series)


def test_worked_example_numbers():
    r = worked_example()
    assert [round(s, 2) for s in r["scores"]] == [2.12, 1.41]
    assert abs(sum(r["weights"]) - 1) < 1e-12 and r["weights"][0] > r["weights"][1]
    assert abs(r["output"][1] - 1.0) < 1e-12  # both values have second coordinate 1


def test_plots_write_png_files(tmp_path):
    plot_attention(torch.rand(3, 4), x_labels=list("abcd"), y_labels=list("xyz"), path=tmp_path / "a.png")
    plot_positional_encoding(torch.rand(10, 8), path=tmp_path / "p.png")
    plot_learning_curves({"m": [{"epoch": 1, "acc": 0.5}, {"epoch": 2, "acc": 0.7}]}, "acc", path=tmp_path / "c.png")
    plot_series([1, 2, 4], {"a": [1, 2, 3]}, xlabel="x", ylabel="y", logx=True, path=tmp_path / "s.png")
    for name in "apcs":
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_many_lines_stay_distinct_and_the_legend_leaves_the_axes():
    def curves(n):
        return {f"model {i}": [{"epoch": e, "acc": 0.1 * e + 0.01 * i} for e in (1, 2, 3)] for i in range(n)}

    fig = plot_learning_curves(curves(14), "acc")
    ax = fig.axes[0]
    looks = [(line.get_color(), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()]
    assert len(looks) == 14 and len(set(looks)) == 14  # the 11th line is not drawn like the 1st
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1  # beside the axes, not over the curves' ends

    long = plot_learning_curves({"gcn": [{"epoch": e, "acc": 0.5} for e in range(1, 301)],
                                 "mlp": [{"epoch": e, "acc": 0.4} for e in range(1, 11)]}, "acc")
    assert [line.get_marker() for line in long.axes[0].get_lines()] == ["None", "."]  # no smudge of 300 dots

    few = plot_learning_curves(curves(LEGEND_INSIDE_MAX), "acc")
    few.canvas.draw()
    ax = few.axes[0]
    assert ax.get_legend().get_window_extent().x0 < ax.get_window_extent().x1  # a short legend stays inside


def test_every_run_of_a_model_is_drawn_in_its_colour_and_named_once():
    def run(offset):
        return [{"epoch": e, "acc": 0.1 * e + offset} for e in (1, 2, 3)]

    fig = plot_learning_curves({"attention": [run(0.0), run(0.01), run(0.02)], "cnn": run(0.05)}, "acc")
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4 and [line.get_ydata()[0] for line in lines] == pytest.approx([0.1, 0.11, 0.12, 0.15])
    assert len({line.get_color() for line in lines[:3]}) == 1 and lines[3].get_color() != lines[0].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["attention (3 runs)", "cnn"]


def test_python_m_core_runs_and_writes_heatmaps(tmp_path):
    lessons = ["--lesson", "worked", "--lesson", "sinusoidal"]  # the whole run times an LSTM: too slow here
    out = subprocess.run([sys.executable, "-m", "core", *lessons, "--out", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert "3/√2 = 2.1213" in out.stdout and "2/√2 = 1.4142" in out.stdout
    assert (tmp_path / "attention_positions.png").exists() and (tmp_path / "positional_encoding.png").exists()
    assert (tmp_path / "report.md").exists()


def test_an_attention_heatmap_names_its_axes_and_values_and_takes_other_names_for_other_tables():
    fig = plot_attention(torch.rand(3, 4))
    heat, bar = fig.axes
    assert (heat.get_xlabel(), heat.get_ylabel(), bar.get_ylabel()) == ("key (attended to)", "query", "attention weight")
    fig = plot_attention(torch.rand(2, 5), axis_labels=("offset", "head"), value_label="bias")
    heat, bar = fig.axes
    assert (heat.get_xlabel(), heat.get_ylabel(), bar.get_ylabel()) == ("offset", "head", "bias")
