"""The command line end to end on tiny ImageFolder trees (mirrors vision/__main__.py), and the --quick
profile on the shared CIFAR-10 copy."""

import json

import pytest
import torch

from core.lab.runner import check_metrics_payload
from vision.__main__ import QUICK, QUICK_FLOOR, build_parser, main


@pytest.fixture
def tiny_gray_set(tmp_path, make_image_folder):
    # 18x18 gray: the attention model's first stage (324 pixels) is windowed with padding (18 -> 20).
    return make_image_folder(tmp_path / "digits", classes=("a", "b", "c"), per_class=4, size=(18, 18), mode="L")


def test_compare_writes_metrics_report_figures_and_checkpoints(tmp_path, tiny_gray_set, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "compare"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--epochs", "2",
          "--batch-size", "4", "--val-fraction", "0.25", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    assert metrics["domain"] == "vision" and metrics["contract"]["select"] == "val_accuracy"
    assert metrics["data"]["train"] == 9 and metrics["data"]["val"] == 3 and metrics["data"]["test"] == 12
    assert [r["model"] for r in metrics["results"]] == ["attention", "cnn", "resnet"]
    for result in metrics["results"]:  # an ImageFolder trains without mirroring, so no flip TTA either
        assert set(result["metrics"]) == {"val_accuracy", "val_loss", "test_accuracy", "test_loss"}
        assert metrics["config"]["spec_train"][result["model"]]["augment"] == ["crop"]
        assert result["bookkeeping"]["flops"] > 0 and result["bookkeeping"]["epochs"] == 2
    report = (out / "report.md").read_text()
    assert "validation" in report and "time budget" not in report.split("## Notes")[1].split("\n")[2]
    assert "training augmentation: crop; no flip test-time augmentation" in report
    for figure in ("accuracy_vs_time.png", "learning_curves.png"):
        assert (out / figure).stat().st_size > 0

    # best.pt rebuilds the model from plain data; attention-map draws one panel per layer.
    image = tiny_gray_set / "test" / "b" / "0001.png"
    main(["attention-map", "--checkpoint", str(out / "attention" / "seed0" / "best.pt"), str(image),
          "--pixel", "17", "2", "--out", str(tmp_path / "map")])
    assert (tmp_path / "map" / "attention_map.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="^error: .*no attention layers"):
        main(["attention-map", "--checkpoint", str(out / "cnn" / "seed0" / "best.pt"), str(image)])
    with pytest.raises(SystemExit, match="^error: .*outside"):
        main(["attention-map", "--checkpoint", str(out / "attention" / "seed0" / "best.pt"), str(image),
              "--pixel", "18", "0"])


def test_a_val_folder_is_the_validation_split(tmp_path, make_image_folder, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    root = make_image_folder(tmp_path / "tree", classes=("a", "b"), per_class=3, size=(8, 8),
                             splits=("train", "val", "test"))
    out = tmp_path / "out"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(root), "--models", "cnn", "--epochs", "1",
          "--batch-size", "6", "--dims", "8,8", "--depths", "1,1", "--augment", "crop,cutout", "--out", str(out),
          "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    data = metrics["data"]
    assert (data["train"], data["val"], data["test"]) == (6, 6, 6) and "val/" in data["validation"]
    assert metrics["config"]["spec_train"]["cnn"]["augment"] == ["crop", "cutout"]  # asked for, kept in the record
    assert ("training augmentation: crop, cutout; no flip test-time augmentation; cutout sets one 2×2 square"
            in (out / "report.md").read_text())


def test_sweep_scales_epochs_per_fraction_and_reports_the_cnns_lead(tmp_path, make_image_folder, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    root = make_image_folder(tmp_path / "tree", classes=("a", "b"), per_class=10, size=(8, 8))
    out = tmp_path / "sweep"
    main(["sweep", "--dataset", "imagefolder", "--data-dir", str(root), "--fractions", "0.5,1.0",
          "--models", "attention,cnn", "--dims", "8,8", "--depths", "1,1", "--epochs", "2", "--batch-size", "4",
          "--val-fraction", "0.2", "--seeds", "2", "--all-seeds-up-to", "0.5", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    rows = {r["model"]: r for r in metrics["results"]}
    assert set(rows) == {"attention @ 50%", "attention @ 100%", "cnn @ 50%", "cnn @ 100%"}
    assert rows["cnn @ 50%"]["bookkeeping"]["train_images"] == 8
    assert rows["cnn @ 100%"]["bookkeeping"]["train_images"] == 16
    # 50%: ceil(2 / sqrt(0.5)) = 3 epochs of 2 batches; 100%: 2 epochs of 4 batches.
    assert rows["cnn @ 50%"]["bookkeeping"]["steps"] == 6 and rows["cnn @ 100%"]["bookkeeping"]["steps"] == 8
    assert len(rows["attention @ 50%"]["runs"]) == 2 and len(rows["attention @ 100%"]["runs"]) == 1  # seeds up to 50%
    lead = metrics["sweep"]["50%"]
    assert len(lead["test_gap"]) == 2 and set(lead["late_gain"]) == {"attention", "cnn"}
    assert len(metrics["sweep"]["100%"]["test_gap"]) == 1
    report = (out / "report.md").read_text()
    assert "cnn − attention" in report and "sqrt(f)" in report
    for figure in ("sweep.png", "sweep_gap.png"):
        assert (out / figure).stat().st_size > 0
    with pytest.raises(SystemExit, match="--all-seeds-up-to must be a fraction"):
        main(["sweep", "--dataset", "imagefolder", "--data-dir", str(root), "--all-seeds-up-to", "2",
              "--out", str(tmp_path / "bad")])


def test_dims_and_depths_resize_both_pixel_hierarchies(tmp_path, tiny_gray_set, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "sized"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--models", "attention,cnn",
          "--dims", "8,24", "--depths", "2,1", "--epochs", "1", "--batch-size", "6", "--out", str(out),
          "--relative-bias", "quadratic", "--conv-stages", "1", "--global-tokens", "16", "--no-progress"])
    for name in ("attention", "cnn"):
        stored = torch.load(out / name / "seed0" / "best.pt", weights_only=True)
        assert stored["config"]["config"]["dims"] == [8, 24] and stored["config"]["config"]["depths"] == [2, 1]
        assert stored["config"]["config"]["relative_bias"] == "quadratic"
    stored = torch.load(out / "attention" / "seed0" / "best.pt", weights_only=True)["config"]["config"]
    assert (stored["conv_stages"], stored["global_max_tokens"]) == (1, 16)  # the CNN's config does not change
    assert "the first 1 stage(s) convolutional (a conv stem)" in (out / "report.md").read_text()
    assert any("centre" in key for key in torch.load(out / "attention/seed0/best.pt", weights_only=True)["model"])
    assert build_parser().parse_args(["compare", "--relative-bias"]).relative_bias == "table"
    assert build_parser().parse_args(["compare"]).relative_bias == "off"
    for flags, message in ((["--dims", "8,x"], "argument --dims: expected comma-separated whole numbers"),
                           (["--dims", "8,0"], "argument --dims: expected whole numbers >= 1"),
                           (["--dims", "8,16", "--depths", "1,1,1"], "same length"),
                           (["--models", "attention,vit"], "argument --models: models are a comma-separated subset"),
                           (["--epochs", "0"], "argument --epochs: must be >= 1"),
                           (["--relative-bias", "rope"], "argument --relative-bias: invalid choice: 'rope'"),
                           (["--conv-stages", "3"], "--conv-stages/--global-tokens: conv_stages must be in [0, 2]")):
        with pytest.raises(SystemExit) as stopped:
            main(["compare", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "absent"), *flags,
                  "--out", str(tmp_path / "bad")])
        assert message in str(stopped.value) + capsys.readouterr().err, flags
        assert not (tmp_path / "bad").exists()


def test_conv_check_reports_a_tiny_difference(tmp_path):
    error = main(["conv-check", "--kernel-size", "3", "--channels", "2", "4", "--image-size", "6",
                  "--out", str(tmp_path)])
    assert error <= 1e-5
    assert json.loads((tmp_path / "conv_check.json").read_text())["max_abs_error"] == error


def test_quick_help_states_the_floor(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--help"])
    assert f"{QUICK_FLOOR:.0%}" in capsys.readouterr().out


def test_quick_takes_every_setting_of_its_profile_that_the_user_left_alone():
    from core.lab.cli import apply_profile

    defaults = build_parser().parse_args(["compare"])
    args = build_parser().parse_args(["compare", "--quick", "--image-size", "32"])
    kept = apply_profile(args, defaults, QUICK)
    assert (args.epochs, args.batch_size, args.augment, args.models) == (QUICK["epochs"], QUICK["batch_size"],
                                                                          QUICK["augment"], QUICK["models"])
    assert args.image_size == 32 and kept == [
        f"--image-size 32 given with --quick, which would set {QUICK['image_size']}: the floors and budget of "
        "--quick are for its own settings"]


def test_quick_profile_learns_above_its_floor(tmp_path):
    """`compare --quick` on the real images: attention and CNN both at or above the stated floor."""
    out = tmp_path / "quick"
    main(["compare", "--quick", "--threads", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    accuracy = {r["model"]: r["metrics"]["test_accuracy"] for r in metrics["results"]}
    assert set(accuracy) == {"attention", "cnn"}
    assert min(accuracy.values()) >= QUICK_FLOOR, accuracy
    assert {"accuracy_vs_time.png", "learning_curves.png"} <= {p.name for p in out.glob("*.png")}


def test_augment_flag_turns_flip_on_for_an_imagefolder_and_is_checked(tmp_path, tiny_gray_set, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "flip"
    main(["compare", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--models", "cnn", "--epochs", "1",
          "--batch-size", "4", "--val-fraction", "0.25", "--augment", "crop,flip", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    scored = metrics["results"][0]["metrics"]
    assert {"test_accuracy_flip", "val_accuracy_flip", "val_chose_flip", "test_accuracy_chosen"} <= set(scored)
    assert scored["test_accuracy_chosen"] == scored["test_accuracy_flip" if scored["val_chose_flip"] else "test_accuracy"]
    assert metrics["config"]["spec_train"]["cnn"]["augment"] == ["crop", "flip"]
    with pytest.raises(SystemExit):
        main(["compare", "--augment", "crop,rotate", "--out", str(tmp_path / "bad")])
    assert "augmentations are a comma-separated subset of crop,flip" in capsys.readouterr().err


def test_ablate_trains_each_variant_with_its_change_and_times_distinct_models(tmp_path, tiny_gray_set, monkeypatch):
    monkeypatch.setenv("ATTNLAB_THREADS", "1")
    out = tmp_path / "ablate"
    main(["ablate", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--epochs", "1", "--fraction", "0.5",
          "--batch-size", "4", "--val-fraction", "0.25", "--variants", "window-8,lr-1e-3", "--speed-rounds", "2",
          "--speed-steps", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    assert [r["model"] for r in metrics["results"]] == ["attention", "cnn", "attention window-8", "attention lr-1e-3"]
    models, train = metrics["config"]["models"], metrics["config"]["spec_train"]
    assert models["attention"]["window"] == 4 and models["attention window-8"]["window"] == 8
    assert models["attention lr-1e-3"] == models["attention"] and models["cnn"]["operator"] == "conv"
    assert train["attention"]["lr"] == 2e-3 and train["attention lr-1e-3"]["lr"] == 1e-3
    assert all(t["fraction"] == 0.5 and t["epochs"] == 1 for t in train.values())
    for result in metrics["results"]:
        assert result["bookkeeping"]["train_images"] == 6  # half of each class's 3 training images, rounded up
    table = metrics["ablation"]
    # the learning-rate row trains the reference's model: timed as it, the same speed; the others timed apart
    assert {row: entry["timed_as"] for row, entry in table.items()} == {
        "attention": "attention", "cnn": "cnn", "attention window-8": "attention window-8",
        "attention lr-1e-3": "attention"}
    assert table["attention lr-1e-3"]["speed_vs_attention"] == 1.0
    assert table["attention lr-1e-3"]["images_per_s"] == table["attention"]["images_per_s"] > 0
    by_model = {r["model"]: r for r in metrics["results"]}
    gain = 100 * (by_model["attention window-8"]["metrics"]["val_accuracy"]
                  - by_model["attention"]["metrics"]["val_accuracy"])
    assert by_model["attention window-8"]["bookkeeping"]["val_vs_attention"] == pytest.approx(gain)
    report = (out / "report.md").read_text()
    assert "attention window-8: 8×8 attention tiles" in report and "validation chooses:" in report
    assert "images_per_s" in report.split("## Notes")[0]
    assert "](ablation.png)" in report and (out / "ablation.png").stat().st_size > 0
    # the chart again from the record alone, and a record of another command refused by name
    (out / "ablation.png").unlink()
    main(["plot-ablation", str(out / "metrics.json"), "--out", str(out)])
    assert (out / "ablation.png").stat().st_size > 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": []}))
    with pytest.raises(SystemExit, match="was not written by `python -m vision ablate`"):
        main(["plot-ablation", str(other), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--fraction must be in"):
        main(["ablate", "--dataset", "imagefolder", "--data-dir", str(tiny_gray_set), "--fraction", "1.5"])
    with pytest.raises(SystemExit):
        main(["ablate", "--variants", "dropout"])
