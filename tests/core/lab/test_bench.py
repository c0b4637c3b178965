"""core/lab/bench.py: interleaved rounds alternate the order, ratios are medians of per-round ratios."""

import pytest

from core.lab import bench


def test_rounds_alternate_the_order_after_warmup():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    rounds = bench.interleaved_rounds(fns, 3, warmup=1)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert len(rounds) == 3 and all(set(r) == set("abc") for r in rounds)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 2 is hit by a burst on both sides, round 3 slows "b" alone. The ratio of the two medians would be
    # 1.0 / 4.0; the per-round ratios are [1, 1, 0.25], whose median, 1.0, ignores the one disturbed round.
    rounds = [{"a": 1.0, "b": 1.0}, {"a": 10.0, "b": 10.0}, {"a": 1.0, "b": 4.0}]
    assert bench.paired_ratio(rounds, "a", "b") == pytest.approx(1.0)
    assert bench.paired_ratio(rounds, "b", "a") == pytest.approx(1.0)
    summary = bench.summarize(rounds)
    assert summary["b"]["median_ms"] == pytest.approx(4000.0) and summary["a"]["runs"] == 3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rounds"):
        bench.interleaved_rounds({"a": lambda: None}, 0)
    with pytest.raises(ValueError, match="contenders"):
        bench.interleaved_rounds({}, 3)
