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
