"""The vision throughput benchmark runs end to end and writes its ratios (a few tiny steps, not a timing)."""

import json


def test_vision_benchmark_writes_images_per_second_and_ratios(tmp_path, load_benchmark):
    out = tmp_path / "vision.json"
    report = load_benchmark("vision").main(["--models", "attention,cnn", "--batch-size", "4", "--shape", "1", "8", "8",
                                            "--steps", "1", "--warmup", "0", "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    rows = {row["model"]: row for row in report["results"]}
    assert set(rows) == {"attention", "cnn"} and report["reference"] == "cnn"
    assert rows["cnn"]["speed_vs_cnn"] == 1.0
    for row in rows.values():
        assert row["images_per_second"] > 0 and row["params"] > 0 and row["mflops_per_image_forward"] > 0
        expected = row["images_per_second"] / rows["cnn"]["images_per_second"]
        assert abs(row["speed_vs_cnn"] - expected) < 1e-12
    assert rows["attention"]["config"]["in_channels"] == 1 and rows["attention"]["config"]["image_height"] == 8
