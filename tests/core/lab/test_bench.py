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


def test_count_flops_counts_the_cpu_fused_attention_kernel_as_the_explicit_path():
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    # T != S and B != H, so a transposed or swapped shape in the formula changes the count (the CPU kernel
    # wants Dv == Dh; with them unequal torch takes its unfused path, which torch counts itself)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    explicit = bench.count_flops(lambda: torch.softmax(q @ k.transpose(-2, -1), -1) @ v)
    assert explicit == 2 * (2 * 2 * 3 * 5 * 7 * 8)
    assert bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == explicit
    with FlopCounterMode(display=False) as plain:  # what torch alone counts for the CPU kernel
        F.scaled_dot_product_attention(q, k, v)
    assert plain.get_total_flops() == 0
    q.requires_grad_()
    both = bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert both > 2 * explicit  # the backward pass is counted too
