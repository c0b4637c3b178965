"""The decoding benchmark runs end to end on a tiny model and writes what the docs read (a smoke test, not a timing)."""

import json


def test_decoding_benchmark_times_cache_recompute_and_an_ensemble(tmp_path, load_benchmark):
    out = tmp_path / "decoding.json"
    report = load_benchmark("decoding").main([
        "--dim", "16", "--layers", "1", "--heads", "2", "--words", "6", "--steps", "3", "--rounds", "3",
        "--profile-steps", "3", "--profile-rounds", "1", "--ensemble", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["words_per_s"]) == {"cache", "recompute", "ensemble"}
    assert all(v > 0 for v in report["words_per_s"].values())
    assert report["ensemble_members"] == 2 and report["ensemble_speed_vs_cache"] > 0
    assert report["same_outputs"] and len(report["per_step"]) == 3
