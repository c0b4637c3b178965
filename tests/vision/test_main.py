import json

import pytest
import torch

from vision.__main__ import build_parser, main


@pytest.fixture
def tiny_gray_set(tmp_path, make_image_folder):
    # 18x18 gray: the attention model's first stage (324 pixels) is windowed with padding (18 -> 20).
    return make_image_folder(tmp_path / "digits", classes=("a", "b", "c"), per_class=4, size=(18, 18), mode="L")


def test_compare_writes_metrics_report_figure_and_checkpoints(tmp_path, tiny_gray_set, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "compare"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--steps", "2",
          "--rounds", "2", "--eval-images", "6", "--batch-size", "6", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["domain"] == "vision"
    assert [r["model"] for r in metrics["results"]] == ["attention", "cnn", "resnet"]
    for result in metrics["results"]:
        assert 0.0 <= result["metrics"]["test_accuracy"] <= 1.0
        assert 0.0 <= result["metrics"]["test_accuracy_flip"] <= 1.0
        assert result["metrics"]["mflops_per_image"] > 0
        assert result["extra"]["steps"] == [2]
        assert len(result["extra"]["curves"][0]) == 2
    assert "attention" in (out / "report.md").read_text()
    assert (out / "accuracy_vs_time.png").stat().st_size > 0

    # The checkpoint rebuilds the model from plain data; attention-map draws one panel per layer.
    image = tiny_gray_set / "test" / "b" / "0001.png"
    main(["attention-map", "--checkpoint", str(out / "attention" / "seed0" / "best.pt"), str(image),
          "--pixel", "17", "2", "--out", str(tmp_path / "map")])
    assert (tmp_path / "map" / "attention_map.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="no attention layers"):
        main(["attention-map", "--checkpoint", str(out / "cnn" / "seed0" / "best.pt"), str(image)])
    with pytest.raises(SystemExit, match="outside"):
        main(["attention-map", "--checkpoint", str(out / "attention" / "seed0" / "best.pt"), str(image),
              "--pixel", "18", "0"])


def test_sweep_trains_every_fraction_with_the_same_steps(tmp_path, tiny_gray_set, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "sweep"
    main(["sweep", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--fractions", "0.5,1.0",
          "--models", "cnn,resnet", "--steps", "2", "--rounds", "1", "--batch-size", "4", "--out", str(out),
          "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["model"]: r["metrics"] for r in metrics["results"]}
    assert set(rows) == {"cnn @ 50%", "cnn @ 100%", "resnet @ 50%", "resnet @ 100%"}
    assert rows["cnn @ 50%"]["train_images"] == 6 and rows["cnn @ 100%"]["train_images"] == 12
    assert {row["steps"] for row in rows.values()} == {2}
    assert (out / "sweep.png").stat().st_size > 0


def test_dims_and_depths_resize_both_pixel_hierarchies(tmp_path, tiny_gray_set, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "sized"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--models", "attention,cnn",
          "--dims", "8,24", "--depths", "2,1", "--steps", "1", "--rounds", "1", "--eval-images", "6",
          "--batch-size", "6", "--out", str(out), "--no-progress"])
    for name in ("attention", "cnn"):
        stored = torch.load(out / name / "seed0" / "best.pt", weights_only=True)
        assert stored["config"]["model_config"]["dims"] == [8, 24]
        assert stored["config"]["model_config"]["depths"] == [2, 1]
    for flags, message in ((["--dims", "8,x"], "whole numbers"), (["--dims", "8,0"], "positive"),
                           (["--dims", "8,16", "--depths", "1,1,1"], "same length")):
        with pytest.raises(SystemExit, match=message):
            main(["compare", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "absent"), *flags,
                  "--out", str(tmp_path / "bad")])


def test_conv_check_reports_a_tiny_difference(tmp_path):
    error = main(["conv-check", "--kernel-size", "3", "--channels", "2", "4", "--image-size", "6",
                  "--out", str(tmp_path)])
    assert error <= 1e-5
    assert json.loads((tmp_path / "conv_check.json").read_text())["max_abs_error"] == error


def test_bad_arguments_are_clear(tmp_path, tiny_gray_set):
    with pytest.raises(SystemExit, match="unknown"):
        main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--models", "vit",
              "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="fractions"):
        main(["sweep", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--fractions", "0,1",
              "--out", str(tmp_path)])


def test_help_explains_every_command(capsys):
    parser = build_parser()
    for command in ("compare", "sweep", "attention-map", "conv-check"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert "--out" in capsys.readouterr().out
