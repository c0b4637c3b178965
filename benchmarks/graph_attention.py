"""Speed and memory of our sparse graph attention against PyG's GATConv, side by side in one process.

    python benchmarks/graph_attention.py [--repeats 10] [--out runs/graph/benchmark.json]

Measures, with the paper's GAT (8 heads x 8, ELU, 1 output head, dropout 0.6, Adam lr 0.005, L2 5e-4):

1. Cora: one full training step (forward, backward, Adam) of our GAT and of the same model built from PyG's
   `GATConv`, both on the same inputs: the dense row-normalised bag-of-words matrix (2708 x 1433) and the
   same edge_index. That ratio (`ours_over_pyg`) is the headline. Beside it, labelled, our GAT as
   `python -m graph` trains it, reading the features as a sparse CSR matrix (its input dropout and first
   projection touch ~49k stored entries instead of 3.9M; PyG's `GATConv` takes dense features only):
   `ours_sparse_features_over_pyg_dense`, a different input, not a like-for-like ratio.
2. A synthetic graph with 1,000,000 edges (dense random features, the same for both): the same two models,
   where only the edge attention differs.
3. Memory against E: how far resident memory rises during one forward+backward of a GAT layer (64 -> 8 x 8),
   ours and PyG's, each size in a fresh process; and the dense path's refusal when its (H, N, N) scores
   would not fit.

Timing: `core.lab.bench`: interleaved rounds in alternating order, each ratio the median of the per-round
ratios, so background load (the CPU may be shared) hits both sides of a ratio alike.
Threads: whatever torch uses (`$ATTNLAB_THREADS` / `--threads`); the JSON records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.lab.bench import interleaved_rounds, load_average, paired_ratio, summarize  # noqa: E402
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


def gat_models(data: Planetoid, seed: int = 0):
    """Our GAT (sparse path, as trained by `python -m graph`) and PyG's, same configuration and init."""
    torch.manual_seed(seed)
    ours = build_model(default_config("gat", dense_max_nodes=0), data.num_features, data.num_classes)
    torch.manual_seed(seed)
    peer = build_model(default_config("pyg_gat"), data.num_features, data.num_classes)
    return ours, peer


def bench_graph(data: Planetoid, repeats: int, sparse_features_too: bool) -> dict:
    """Training-step time of our GAT and PyG's on the same dense features and edges; with
    `sparse_features_too`, also our GAT on the CSR features (its training input), labelled as such."""
    ours, peer = gat_models(data)
    _, graph = ours.inputs(data)
    steps = {"ours": _stepper(ours, data.x, graph, data.y, data.train_mask),
             "pyg_gatconv": _stepper(peer, data.x, data.edge_index, data.y, data.train_mask)}
    if sparse_features_too:
        twin, _ = gat_models(data)
        sparse_x, _ = twin.inputs(data)
        assert sparse_x.layout == torch.sparse_csr, "the sparse variant must read CSR features"
        steps["ours_sparse_features"] = _stepper(twin, sparse_x, graph, data.y, data.train_mask)
    rounds = interleaved_rounds(steps, repeats, warmup=3)
    out = {"nodes": data.num_nodes, "edges_input": int(data.edge_index.shape[1]),
           "edges_attended": graph.num_edges, "features": data.num_features,
           "feature_density": float((data.x != 0).float().mean()),
           "inputs": "ours and pyg_gatconv: the same dense features (N x D) and edge_index",
           "step": summarize(rounds), "ours_over_pyg": paired_ratio(rounds, "ours", "pyg_gatconv")}
    if sparse_features_too:
        out["ours_sparse_features_over_pyg_dense"] = paired_ratio(rounds, "ours_sparse_features", "pyg_gatconv")
        out["inputs_ours_sparse_features"] = "our GAT on the CSR features (as python -m graph trains it); PyG dense"
    return out


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
              "cpu_count": os.cpu_count(), "command": [sys.executable, *sys.argv], "load_average_start": load_average()}
    cora = load_planetoid("cora", args.data_dir)
    print(f"Cora training step, {args.repeats} interleaved repeats ...", file=sys.stderr)
    report["cora"] = bench_graph(cora, args.repeats, sparse_features_too=True)
    print(json.dumps(report["cora"]["step"], indent=1), file=sys.stderr)
    print(f"synthetic graph, {args.edges} edges ...", file=sys.stderr)
    large = synthetic_graph(args.nodes, args.edges, 64, 8)
    report["synthetic"] = bench_graph(large, args.large_repeats, sparse_features_too=False)
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
    report["load_average_end"] = load_average()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}: Cora ours/pyg (same dense features) = {report['cora']['ours_over_pyg']:.2f}, "
          f"ours on sparse features / pyg = {report['cora']['ours_sparse_features_over_pyg_dense']:.2f}, "
          f"{args.edges} edges ours/pyg = {report['synthetic']['ours_over_pyg']:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
