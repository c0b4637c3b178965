"""The pixel-attention benchmark's bias section runs on a tiny grid and says which bias ran factored (a smoke
run, not a timing)."""

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "pixel_attention.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("pixel_attention_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bias_rows_time_both_modes_and_name_the_factored_bias():
    bench = load_benchmark()
    for kind, factored in (("table", False), ("quadratic", True)):
        (row,) = bench.bench_bias((4,), 1, kind)
        assert row["kind"] == kind and row["factored"] is factored and row["T"] == 16
        for mode in ("train", "eval"):
            assert row[mode]["plain_ms"] > 0 and row[mode]["bias_ms"] > 0 and row[mode]["ratio"] > 0
