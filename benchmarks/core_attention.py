"""Benchmark the attention core; prints a table and writes JSON.

1. `core.MultiHeadAttention` against `nn.MultiheadAttention` (same weights), forward+backward, for several
   (B, T, D, H). Figure of merit: time ratio ours / theirs (target <= 1.05 on the CPU).
2. Blocked local attention against dense `F.scaled_dot_product_attention` with the same band mask,
   T = 1024 ... 65536, window 128 each side, H = 4, Dh = 64: forward+backward time and peak memory.
   Targets: >= 8x faster at T = 8192, memory linear in T, T = 65536 runs.

Timings interleave the two contenders round by round; a ratio is the median of the per-round ratios, so
background load hits both sides of each ratio alike. Peak
memory is measured in a fresh subprocess per point (resident memory sampled every 0.5 ms during the call,
minus what was resident before it), which counts every allocation, autograd's saved tensors included.

    python benchmarks/core_attention.py [--out runs/benchmarks/core_attention.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lab.bench import interleaved_rounds, paired_ratio  # noqa: E402
from core.local import local_attention  # noqa: E402
from core.masks import sliding_window_mask  # noqa: E402
from core.multihead import MultiHeadAttention  # noqa: E402

MHA_CONFIGS = [(32, 64, 128, 4), (16, 256, 256, 8), (8, 512, 512, 8), (2, 1024, 256, 4)]
LOCAL_LENGTHS = [1024, 2048, 4096, 8192, 16384, 65536]
DENSE_MAX_T = 16384  # beyond this the dense (T, T) scores need tens of GiB
WINDOW, HEADS, HEAD_DIM = 128, 4, 64


def _fwd_bwd_seconds(fns: dict, repeats: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Median seconds of one forward+backward per contender, and the per-round times
    (`core.lab.bench.interleaved_rounds`: each round runs every contender once, in alternating order)."""
    rounds = interleaved_rounds(fns, repeats)
    return {name: statistics.median(t[name] for t in rounds) for name in fns}, rounds


_paired_ratio = paired_ratio  # median over rounds of time[num] / time[den]


def bench_multihead(repeats: int, configs) -> list[dict]:
    rows = []
    for B, T, D, H in configs:
        torch.manual_seed(0)
        theirs = nn.MultiheadAttention(D, H, batch_first=True)
        ours = MultiHeadAttention.from_torch(theirs)
        x = torch.randn(B, T, D, requires_grad=True)

        def run_theirs():
            theirs(x, x, x, need_weights=False)[0].sum().backward()

        def run_ours():
            ours(x).sum().backward()

        t, rounds = _fwd_bwd_seconds({"ours": run_ours, "torch": run_theirs}, repeats)
        rows.append({"B": B, "T": T, "D": D, "H": H, "ours_ms": 1e3 * t["ours"], "torch_ms": 1e3 * t["torch"],
                     "ratio": _paired_ratio(rounds, "ours", "torch")})
        print(f"  MHA B={B:3d} T={T:5d} D={D:4d} H={H}: ours {rows[-1]['ours_ms']:8.2f} ms  "
              f"nn.MultiheadAttention {rows[-1]['torch_ms']:8.2f} ms  ratio {rows[-1]['ratio']:.3f}", flush=True)
    return rows


def _band_inputs(T: int):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, T, HEAD_DIM, requires_grad=True) for _ in range(3))
    return q, k, v, sliding_window_mask(T, WINDOW, WINDOW)


def _run(method: str, q, k, v, mask, dense_mask=None) -> None:
    if method == "local":
        out = local_attention(q, k, v, mask)  # what scaled_dot_product_attention dispatches to for long bands
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask)
    out.sum().backward()


def _measure_peak(method: str, T: int) -> None:
    """Subprocess entry: print the peak RSS growth (bytes) during one forward+backward."""
    # Warm up at a small size first: the first call maps kernel libraries and thread pools into memory,
    # which is not the attention's own memory.
    small = _band_inputs(1024)
    _run(method, *small, small[3].dense() if method == "dense" else None)
    del small
    q, k, v, mask = _band_inputs(T)
    dense_mask = mask.dense() if method == "dense" else None
    rss_before = _current_rss()
    peak, done = [rss_before], threading.Event()

    def sample() -> None:  # torch ops release the GIL, so this keeps polling during the call
        while not done.is_set():
            peak[0] = max(peak[0], _current_rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _run(method, q, k, v, mask, dense_mask)
    done.set()
    sampler.join()
    print(json.dumps({"peak_bytes": max(peak[0] - rss_before, 0)}))


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(method: str, T: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--_measure", method, str(T)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def bench_local(repeats: int, lengths) -> list[dict]:
    rows = []
    for T in lengths:
        q, k, v, mask = _band_inputs(T)
        row: dict = {"T": T, "window": WINDOW, "H": HEADS, "Dh": HEAD_DIM}
        fns = {"local": lambda: _run("local", q, k, v, mask)}
        if T <= DENSE_MAX_T:
            dense_mask = mask.dense()
            fns["dense"] = lambda: _run("dense", q, k, v, mask, dense_mask)
        reps = repeats if T <= 8192 else max(1, repeats // 2)
        t, rounds = _fwd_bwd_seconds(fns, reps)
        row["local_ms"] = 1e3 * t["local"]
        row["local_peak_mib"] = peak_memory("local", T) / 2**20
        if "dense" in t:
            row["dense_ms"] = 1e3 * t["dense"]
            row["speedup"] = _paired_ratio(rounds, "dense", "local")
            row["dense_peak_mib"] = peak_memory("dense", T) / 2**20
        else:
            row["dense_ms"] = row["speedup"] = row["dense_peak_mib"] = None
        rows.append(row)
        dense = f"dense {row['dense_ms']:9.1f} ms  speedup {row['speedup']:5.1f}x  dense peak {row['dense_peak_mib']:8.1f} MiB" \
            if row["dense_ms"] is not None else "dense skipped (T×T does not fit)"
        print(f"  local T={T:6d}: {row['local_ms']:9.1f} ms  peak {row['local_peak_mib']:8.1f} MiB | {dense}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/benchmarks/core_attention.json", help="JSON output path")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per point (medians are reported)")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._measure:
        _measure_peak(args._measure[0], int(args._measure[1]))
        return

    mha_configs = MHA_CONFIGS[:1] if args.quick else MHA_CONFIGS
    lengths = LOCAL_LENGTHS[:2] if args.quick else LOCAL_LENGTHS
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print("1. MultiHeadAttention vs nn.MultiheadAttention, forward+backward")
    mha = bench_multihead(args.repeats, mha_configs)
    print(f"2. local attention vs dense SDPA with the same band mask (window ±{WINDOW}), forward+backward")
    local = bench_local(args.repeats, lengths)

    by_t = {r["T"]: r for r in local}
    summary = {
        "mha_ratio_max": max(r["ratio"] for r in mha),
        "mha_ratio_geomean": statistics.geometric_mean(r["ratio"] for r in mha),
        "local_speedup_at_8192": by_t.get(8192, {}).get("speedup"),
        "local_peak_mib_per_1k_tokens": {T: r["local_peak_mib"] / (T / 1024) for T, r in by_t.items()},
        "local_65536_ran": 65536 in by_t,
    }
    result = {
        "benchmark": "core_attention",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "multihead": mha,
        "local_vs_dense": local,
        "summary": summary,
        "targets": {"mha_ratio_max": 1.05, "local_speedup_at_8192": 8.0},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
