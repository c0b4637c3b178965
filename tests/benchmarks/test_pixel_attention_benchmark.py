"""The pixel-attention benchmark's bias section runs on a tiny grid and says which bias ran factored (a smoke
run, not a timing)."""


def test_bias_rows_time_both_modes_and_name_the_factored_bias(load_benchmark):
    bench = load_benchmark("pixel_attention")
    for kind, factored in (("table", False), ("quadratic", True)):
        (row,) = bench.bench_bias((4,), 1, kind)
        assert row["kind"] == kind and row["factored"] is factored and row["T"] == 16
        for mode in ("train", "eval"):
            assert row[mode]["plain_ms"] > 0 and row[mode]["bias_ms"] > 0 and row[mode]["ratio"] > 0
