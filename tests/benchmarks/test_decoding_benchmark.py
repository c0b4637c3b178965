"""The decoding benchmark runs end to end on a tiny model and writes what the docs read (a smoke test, not a timing)."""

import json

import pytest


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
    work = report["gflop_per_batch"]
    assert work["recompute"] > work["cache"] > work["encode_only"] > 0


TINY_G2P = ["--limit-words", "300", "--epochs", "2", "--batch-size", "16", "--dim", "32", "--heads", "2", "--layers",
            "1", "--ffn-dim", "64", "--hidden", "32", "--lr", "5e-3", "--warmup-steps", "10", "--threads", "1",
            "--no-progress"]


@pytest.fixture(scope="module")
def tiny_g2p(tmp_path_factory):
    from text.g2p.__main__ import main as g2p_main

    out = tmp_path_factory.mktemp("g2p")
    assert g2p_main(["compare", *TINY_G2P, "--models", "transformer,lstm", "--out", str(out)]) == 0
    return out


def test_decoding_benchmark_on_a_trained_checkpoint_decodes_the_validation_words_as_evaluation_does(
        tmp_path, load_benchmark, tiny_g2p):
    out = tmp_path / "trained.json"
    report = load_benchmark("decoding").main([
        "--checkpoint", str(tiny_g2p / "transformer" / "seed0" / "best.pt"), "--batch-size", "4", "--rounds", "2",
        "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    payload = json.loads((tiny_g2p / "metrics.json").read_text())
    assert report["words"] == payload["data"]["sizes"]["val"]["words"] == 15
    assert set(report["words_per_s"]) == {"cache", "recompute"} and all(v > 0 for v in report["words_per_s"].values())
    assert report["same_outputs"] and report["model"]["dim"] == 32 and report["batch_size"] == 4
    assert report["decode_only_speedup"] > 0
    low, high = report["per_round_speedup_range"]
    assert low <= report["cache_speedup"] <= high
    # the work, counted: recomputing never does less than the cache, and the ratios are what the counts give
    work = report["gflop_per_pass"]
    assert work["recompute"] >= work["cache"] > work["encode_only"] > 0
    assert report["work_ratio"] == pytest.approx(work["recompute"] / work["cache"])
    assert report["decode_work_ratio"] == pytest.approx(
        (work["recompute"] - work["encode_only"]) / (work["cache"] - work["encode_only"]))
    # the words the run chose its weights on, decoded the way it decoded them: the same validation error rates
    kept = next(r for r in payload["results"] if r["model"] == "transformer")["metrics"]
    assert report["val_wer_of_outputs"] == pytest.approx(kept["val_wer"])
    assert report["val_per_of_outputs"] == pytest.approx(kept["val_per"])


def test_decoding_benchmark_refuses_a_checkpoint_without_a_cache(tmp_path, load_benchmark, tiny_g2p):
    with pytest.raises(SystemExit, match="holds a LSTMSeq2Seq"):
        load_benchmark("decoding").main(["--checkpoint", str(tiny_g2p / "lstm" / "seed0" / "best.pt"),
                                         "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_decoding_alone_takes_each_rounds_encoding_off_both_sides(load_benchmark):
    # recompute 10 s and cache 4 s, of which 1 s is encoding on each side: 9 / 3 for the decoders alone
    rounds = [{"recompute": 10.0, "cache": 4.0, "encode_only": 1.0}, {"recompute": 7.0, "cache": 3.0, "encode_only": 2.0}]
    assert load_benchmark("decoding").decode_only_speedups(rounds) == pytest.approx([3.0, 5.0])
