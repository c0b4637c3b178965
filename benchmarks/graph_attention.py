"""Speed and memory of our sparse graph attention against PyG's GATConv, side by side in one process.

    python benchmarks/graph_attention.py [--repeats 10] [--out runs/graph/benchmark.json]

Measures, with the paper's GAT (8 heads x 8, ELU, 1 output head, dropout 0.6, Adam lr 0.005, L2 5e-4):

1. Cora: one full training step (forward, backward, Adam) of our GAT as `python -m graph` trains it, and of
   the same model built from PyG's `GATConv` (dense features, as PyG's example). Steps are interleaved and
   the median is reported. Our model reads the bag-of-words features as a sparse matrix, so its input
   dropout and first projection touch ~49k stored entries instead of 3.9M; to show how much of the gap that
   is, our model is also timed on the dense features ("ours_dense_features").
2. A synthetic graph with 1,000,000 edges (dense random features): the same two models, where only the
   edge attention differs.
3. Memory against E: how far resident memory rises during one forward+backward of a GAT layer (64 -> 8 x 8),
   ours and PyG's, each size in a fresh process; and the dense path's refusal when its (H, N, N) scores
   would not fit.

Threads: whatever torch uses (`$ATTNLAB_THREADS` / `--threads`); the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.lab.harness import set_num_threads_from_env  # noqa: E402
from core.masks import adjacency_mask  # noqa: E402
from core.sparse import EdgeGraph  # noqa: E402
from graph.data import Planetoid, load_planetoid, row_normalize  # noqa: E402
from graph.layers import DenseGraphTooLarge, GraphAttention  # noqa: E402
from graph.models import build_model, default_config  # noqa: E402


def _stepper(model, x, graph, y, train_mask):
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=model.config.lr)

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, graph)[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()

    return step


def time_side_by_side(steps: dict, repeats: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Median and quartiles (ms) of each step function, run interleaved so that load changes hit all."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(1000.0 * (time.perf_counter() - started))
    out = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {"median_ms": statistics.median(values), "q1_ms": q[0], "q3_ms": q[2], "runs": len(values)}
    return out


def gat_models(data: Planetoid, seed: int = 0):
    """Our GAT (sparse path, as trained by `python -m graph`) and PyG's, same configuration and init."""
    torch.manual_seed(seed)
    ours = build_model(default_config("gat", dense_max_nodes=0), data.num_features, data.num_classes)
    torch.manual_seed(seed)
    peer = build_model(default_config("pyg_gat"), data.num_features, data.num_classes)
    return ours, peer


def bench_graph(data: Planetoid, repeats: int, dense_features_too: bool) -> dict:
    ours, peer = gat_models(data)
    ours_x, graph = ours.inputs(data)
    steps = {"ours": _stepper(ours, ours_x, graph, data.y, data.train_mask),
             "pyg_gatconv": _stepper(peer, data.x, data.edge_index, data.y, data.train_mask)}
    if dense_features_too:
        twin, _ = gat_models(data)
        steps["ours_dense_features"] = _stepper(twin, data.x, graph, data.y, data.train_mask)
    timing = time_side_by_side(steps, repeats)
    ratio = {f"{name}_over_pyg": timing[name]["median_ms"] / timing["pyg_gatconv"]["median_ms"]
             for name in steps if name != "pyg_gatconv"}
    return {"nodes": data.num_nodes, "edges_input": int(data.edge_index.shape[1]),
            "edges_attended": graph.num_edges, "features": data.num_features,
            "feature_density": float((data.x != 0).float().mean()), "step": timing, **ratio}


def synthetic_graph(num_nodes: int, num_edges: int, features: int, classes: int, seed: int = 0) -> Planetoid:
    """Random directed graph with exactly `num_edges` distinct non-loop edges, dense random features."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.unique(torch.randint(0, num_nodes * num_nodes, (int(num_edges * 1.05),), generator=g))
    keys = keys[(keys // num_nodes) != (keys % num_nodes)]
    keys = keys[torch.randperm(len(keys), generator=g)[:num_edges]]
    edge_index = torch.stack([keys % num_nodes, keys // num_nodes])
    x = row_normalize(torch.rand(num_nodes, features, generator=g))
    y = torch.randint(0, classes, (num_nodes,), generator=g)
    train = torch.zeros(num_nodes, dtype=torch.bool)
    train[torch.randperm(num_nodes, generator=g)[: num_nodes // 10]] = True
    return Planetoid("synthetic", x, edge_index, y, train, ~train, ~train)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _layer_peak_rss(num_edges: int, num_nodes: int, which: str = "ours") -> dict:
    """Child process: how far resident memory rises above its level before one forward+backward of a GAT
    layer (64 -> 8 x 8) on the sparse path. Linux: freed heap is returned (malloc_trim) and the peak
    counter reset (clear_refs 5) first, so only the step's own working set is measured."""
    import ctypes

    set_num_threads_from_env()
    data = synthetic_graph(num_nodes, num_edges, 64, 2)
    if which == "ours":
        graph = EdgeGraph(data.edge_index, num_nodes)
        layer = GraphAttention(64, 8, 8, dropout=0.6)
    else:
        from torch_geometric.nn import GATConv

        graph, layer = data.edge_index, GATConv(64, 8, heads=8, dropout=0.6)
    x = data.x.requires_grad_()
    layer(x, graph).sum().backward()  # warm: kernels and lazily built structures
    layer.zero_grad(set_to_none=True)
    x.grad = None
    del data
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    layer(x, graph).sum().backward()
    peak = _status_kib("VmHWM")
    edges = num_edges + num_nodes  # with self-loops, as both layers attend
    return {"layer": which, "edges": edges, "nodes": num_nodes, "step_peak_mib": (peak - before) / 1024,
            "bytes_per_edge": (peak - before) * 1024 / edges}


def bench_memory(edge_counts: list[int], num_nodes: int) -> list[dict]:
    """Each size and layer in a fresh process, so peaks do not carry over."""
    rows = []
    for num_edges in edge_counts:
        for which in ("ours", "pyg_gatconv"):
            code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); "
                    f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from graph_attention import _layer_peak_rss; "
                    f"print(json.dumps(_layer_peak_rss({num_edges}, {num_nodes}, {which!r})))")
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def dense_refusal(num_nodes: int) -> dict:
    layer = GraphAttention(64, 8, 8)
    edge_index = torch.stack([torch.arange(num_nodes), torch.arange(num_nodes).roll(1)])
    try:
        layer(torch.randn(num_nodes, 64), adjacency_mask(edge_index, num_nodes))
    except DenseGraphTooLarge as error:
        return {"nodes": num_nodes, "refused": True, "message": str(error)}
    return {"nodes": num_nodes, "refused": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="data root holding planetoid/Cora/raw "
                        "(default: $ATTNLAB_DATA, else ~/.cache/attnlab)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model (default: 10)")
    parser.add_argument("--large-repeats", type=int, default=3,
                        help="timed steps per model on the 1M-edge graph (default: 3)")
    parser.add_argument("--edges", type=int, default=1_000_000, help="edges of the synthetic graph (default: 1e6)")
    parser.add_argument("--nodes", type=int, default=50_000, help="nodes of the synthetic graph (default: 50000)")
    parser.add_argument("--memory-edges", type=int, nargs="*", default=[250_000, 500_000, 1_000_000, 2_000_000],
                        help="edge counts for the memory scan (empty: skip)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: $ATTNLAB_THREADS, else torch's default)")
    parser.add_argument("--out", default="runs/graph/benchmark.json",
                        help="where to write the JSON (default: runs/graph/benchmark.json)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["ATTNLAB_THREADS"] = str(args.threads)  # the memory scan's child processes
    else:
        set_num_threads_from_env()

    report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(),
              "cpu_count": os.cpu_count(), "command": [sys.executable, *sys.argv]}
    cora = load_planetoid("cora", args.data_dir)
    print(f"Cora training step, {args.repeats} interleaved repeats ...", file=sys.stderr)
    report["cora"] = bench_graph(cora, args.repeats, dense_features_too=True)
    print(json.dumps(report["cora"]["step"], indent=1), file=sys.stderr)
    print(f"synthetic graph, {args.edges} edges ...", file=sys.stderr)
    large = synthetic_graph(args.nodes, args.edges, 64, 8)
    report["synthetic"] = bench_graph(large, args.large_repeats, dense_features_too=False)
    print(json.dumps(report["synthetic"]["step"], indent=1), file=sys.stderr)
    if args.memory_edges:
        print("memory scan ...", file=sys.stderr)
        rows = bench_memory(args.memory_edges, args.nodes)
        report["memory_layer_step"] = rows
        for which in ("ours", "pyg_gatconv"):
            mine = [r for r in rows if r["layer"] == which]
            if len(mine) > 1:  # slope between the smallest and largest graph: the cost of one more edge
                slope = (mine[-1]["step_peak_mib"] - mine[0]["step_peak_mib"]) / (mine[-1]["edges"] - mine[0]["edges"])
                report[f"memory_bytes_per_extra_edge_{which}"] = slope * 2**20
    report["dense_refusal"] = dense_refusal(args.nodes)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}: Cora ours/pyg = {report['cora']['ours_over_pyg']:.2f}, "
          f"{args.edges} edges ours/pyg = {report['synthetic']['ours_over_pyg']:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
