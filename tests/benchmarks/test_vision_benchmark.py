"""The vision throughput benchmark runs end to end and writes its ratios (a few tiny steps, not a timing)."""

import json


def test_vision_benchmark_writes_images_per_second_and_ratios(tmp_path, load_benchmark):
    out = tmp_path / "vision.json"
    report = load_benchmark("vision").main(["--models", "attention,cnn", "--batch-size", "4", "--shape", "1", "8", "8",
                                            "--steps", "1", "--rounds", "3", "--warmup", "0", "--device", "cpu",
                                            "--conv-stages", "1", "--global-tokens", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {row["model"]: row for row in report["results"]}
    assert set(rows) == {"attention", "cnn"} and report["reference"] == "cnn"
    assert rows["cnn"]["speed_vs_cnn"] == 1.0
    for row in rows.values():
        assert row["images_per_second"] > 0 and row["params"] > 0 and row["mflops_per_image_forward"] > 0
        assert len(row["round_seconds"]) == 3
        # the ratio is the median of per-round ratios, not a ratio of medians
        per_round = sorted(c / a for c, a in zip(rows["cnn"]["round_seconds"], row["round_seconds"]))
        assert abs(row["speed_vs_cnn"] - per_round[1]) < 1e-12
    config = rows["attention"]["config"]
    assert config["in_channels"] == 1 and config["image_height"] == 8
    assert (config["conv_stages"], config["global_max_tokens"]) == (1, 4) and rows["cnn"]["config"]["conv_stages"] == 0


def test_vision_benchmark_runs_each_model_in_each_precision(tmp_path, load_benchmark):
    import pytest
    import torch

    from core.lab.harness import bf16_supported

    bench = load_benchmark("vision")
    common = ["--models", "cnn,resnet", "--batch-size", "4", "--shape", "3", "8", "8", "--steps", "1", "--rounds",
              "3", "--warmup", "0", "--device", "cpu", "--resnet-width", "4", "--out", str(tmp_path / "v.json")]
    with pytest.raises(SystemExit, match="'fp16' is not one of fp32, bf16"):
        bench.main([*common, "--precisions", "fp32,fp16"])
    if not bf16_supported(torch.device("cpu")):
        with pytest.raises(SystemExit, match="no native bfloat16"):
            bench.main([*common, "--precisions", "fp32,bf16"])
        return
    report = bench.main([*common, "--precisions", "fp32,bf16"])
    rows = {row["model"] + "@" + row["precision"]: row for row in report["results"]}
    assert set(rows) == {"cnn@fp32", "cnn@bf16", "resnet@fp32", "resnet@bf16"}
    assert report["reference"] == "cnn"
    for precision in ("fp32", "bf16"):  # each against the reference in its own arithmetic, and against itself in fp32
        assert rows[f"cnn@{precision}"]["speed_vs_cnn"] == 1.0
        assert rows[f"resnet@{precision}"]["speed_vs_cnn"] != 1.0
    assert rows["cnn@fp32"]["speed_vs_fp32"] == rows["resnet@fp32"]["speed_vs_fp32"] == 1.0
    assert rows["cnn@bf16"]["speed_vs_fp32"] != 1.0
    assert rows["resnet@bf16"]["config"]["width"] == 4 and report["precisions"] == ["fp32", "bf16"]
