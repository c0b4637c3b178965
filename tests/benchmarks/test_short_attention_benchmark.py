"""The few-keys benchmark runs end to end, records which side `core` takes at each point, draws its records, and
`kernel_only` really sends every call to the kernel (a few tiny points, not a timing)."""

import json

import torch


def test_short_attention_benchmark_records_both_sides_and_the_rule(tmp_path, load_benchmark):
    bench = load_benchmark("short_attention")
    out = tmp_path / "short.json"
    report = bench.main(["--quick", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    # float32, 32 channels a head: 2 keys a channel, training or not
    assert report["cpu_explicit_max_keys"] == {"32": {"train": 64, "eval": 64}} and report["precision"] == "fp32"
    points = report["points"]
    assert {(p["S"], p["causal"]) for p in points} == {(8, False), (8, True), (128, False), (128, True)}
    for p in points:
        assert p["core_takes"] == {mode: "explicit" if p["S"] <= 64 else "kernel" for mode in ("train", "eval")}
        for mode in ("train", "eval"):
            assert p[mode]["kernel_ms"] > 0 and p[mode]["explicit_ms"] > 0 and p[mode]["kernel_over_explicit"] > 0
    for side, keys in (("explicit_side", 8), ("kernel_side", 128)):
        ratios = [p["eval"]["kernel_over_explicit"] for p in points if p["S"] == keys]
        assert report["summary"][side]["eval"] == {"min": min(ratios), "max": max(ratios)}
    png = bench.plot([report, report], tmp_path / "short.png")
    assert png.stat().st_size > 10_000


def test_kernel_only_sends_every_call_to_the_kernel_and_restores_the_rule(load_benchmark, monkeypatch):
    import core.attention as attention
    from core.attention import scaled_dot_product_attention

    bench = load_benchmark("short_attention")
    calls, kernel = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or kernel(*a, **k))
    q = torch.randn(2, 1, 8, 4)
    with bench.kernel_only():
        scaled_dot_product_attention(q, q, q)
    assert calls == [1]
    scaled_dot_product_attention(q, q, q)
    assert calls == [1] and attention.CPU_EXPLICIT_MAX_KEYS == 256
