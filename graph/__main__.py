"""Graph attention on the Planetoid citation graphs, against GCN, an MLP and PyG's GATConv.

    python -m graph compare --dataset cora [--seeds 10] [--out DIR]
    python -m graph train --model gat --dataset cora [--heads 8 --hidden 8 ...]

Every model is trained with the same protocol (`graph.training`): full batch, Adam, the public split, GAT's
early stopping on the validation accuracy and loss. Writes `metrics.json`, `report.md` and figures to
`--out` (default `runs/graph/<dataset>`), one result file per model and seed under `runs/` there, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from core.lab.experiment import add_common_args, apply_common_args, count_parameters, summarize_runs, write_metrics, \
    write_report
from core.lab.harness import atomic_open, load_checkpoint, save_checkpoint, to_plain
from core.masks import adjacency_mask
from core.lab.plots import plot_learning_curves
from core.sparse import EdgeGraph
from graph.data import PLANETOID_NAMES, Planetoid, load_planetoid
from graph.layers import DENSE_MAX_NODES
from graph.models import MODELS, ROLES, GraphModelConfig, build_model, default_config
from graph.plots import khop_nodes, plot_masked_attention, plot_neighbourhood
from graph.training import TrainConfig, train_node_classifier

DEFAULT_OUT = "runs/graph/<dataset>"
CORA_CLASSES = ["Case_Based", "Genetic_Algorithms", "Neural_Networks", "Probabilistic_Methods",
                "Reinforcement_Learning", "Rule_Learning", "Theory"]
#: Published Cora test accuracies (public split) quoted in the report.
PAPER_CORA = {"gat": "83.0 ± 0.7 (GAT paper)", "pyg_gat": "83.0 ± 0.7 (GAT paper)", "gcn": "81.5 (GCN paper)",
              "mlp": "55.1 (GCN paper)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m graph",
        description="Graph attention: self-attention in which node i may attend only its neighbours, so the "
                    "adjacency matrix (with self-loops) is the attention mask. Trains on the Planetoid "
                    "citation graphs (public split) and compares with GCN, an MLP and PyG's GATConv.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{compare,train}")
    compare = commands.add_parser(
        "compare", help="train our GAT, our graph transformer, GCN, MLP and PyG's GATConv with one protocol",
        description="Train several models with the same protocol over --seeds seeds and write metrics.json, "
                    "report.md and figures (learning curves, a node's attention over its neighbours, the "
                    "masked attention matrix of a subgraph).")
    compare.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                         help=f"models to compare (default: all: {' '.join(MODELS)})")
    train = commands.add_parser(
        "train", help="train one model (optionally with changed hyper-parameters)",
        description="Train one model over --seeds seeds; hyper-parameters default to its paper's values.")
    train.add_argument("--model", choices=MODELS, default="gat", help="the model (default: gat)")
    train.add_argument("--hidden", type=int, help="channels per head (attention models) or hidden units")
    train.add_argument("--heads", type=int, help="attention heads of the hidden layer(s)")
    train.add_argument("--layers", type=int, help="graph transformer: number of attention blocks")
    train.add_argument("--dropout", type=float, help="dropout on every layer's input")
    train.add_argument("--attn-dropout", type=float, help="dropout on the attention weights")
    train.add_argument("--lr", type=float, help="Adam learning rate")
    train.add_argument("--weight-decay", type=float, help="L2 penalty")
    for sub in (compare, train):
        sub.add_argument("--dataset", default="cora", type=str.lower, choices=sorted(PLANETOID_NAMES),
                         help="Planetoid graph, read from <data-dir>/planetoid/<Name>/raw/ (default: cora)")
        sub.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                         help=f"most epochs per run (default: {TrainConfig.epochs})")
        sub.add_argument("--patience", type=int, default=TrainConfig.patience,
                         help="stop after this many epochs without a new best validation accuracy or loss "
                              f"(default: {TrainConfig.patience})")
        sub.add_argument("--dense-max-nodes", type=int, default=DENSE_MAX_NODES,
                         help="our attention models attend through the dense (N, N) masked matrix up to this "
                              f"many nodes and over the edge list above it (default: {DENSE_MAX_NODES})")
        sub.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                         help="download missing raw files from the Planetoid repository (default: yes)")
        add_common_args(sub, default_out=DEFAULT_OUT)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    device = apply_common_args(args)
    data = load_planetoid(args.dataset, args.data_dir, download=args.download)
    out = Path(args.out.replace("<dataset>", args.dataset))
    train = TrainConfig(epochs=args.epochs, patience=args.patience)
    if args.command == "compare":
        configs = [default_config(name, dense_max_nodes=args.dense_max_nodes) for name in args.models]
    else:
        configs = [default_config(args.model, hidden=args.hidden, heads=args.heads, layers=args.layers,
                                  dropout=args.dropout, attn_dropout=args.attn_dropout, lr=args.lr,
                                  weight_decay=args.weight_decay, dense_max_nodes=args.dense_max_nodes)]
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(f"{data}; {len(configs)} model(s) x {len(seeds)} seed(s) on {device}, "
          f"{torch.get_num_threads()} thread(s); output in {out}", file=sys.stderr)

    started = time.perf_counter()
    results, curves, kept = [], {}, {}
    for config in configs:
        runs, seconds = [], []
        for seed in seeds:
            metrics, epochs, model = _run_once(config, data, seed, train, device, out, args)
            runs.append(metrics)
            seconds.append(metrics["ms_per_epoch"] * metrics["epochs"] / 1000.0)
            if seed == seeds[0]:
                curves[config.model], kept[config.model] = epochs, model
        params = count_parameters(build_model(config, data.num_features, data.num_classes))
        results.append(summarize_runs(config.model, ROLES[config.model], runs, params, seconds,
                                      extra={"config": asdict(config)}))
        r = results[-1]
        print(f"{config.model}: test accuracy {100 * r.metrics['test_accuracy']:.2f} ± "
              f"{100 * r.std['test_accuracy']:.2f} over {len(runs)} seed(s)", file=sys.stderr)
    wall = time.perf_counter() - started

    figures = _figures(data, curves, kept, out)
    write_metrics(out, domain="graph", dataset=data.name, device=device,
                  config={"command": args.command, "train": train, "seeds": seeds,
                          "models": [asdict(c) for c in configs]},
                  results=results, extra={"wall_seconds": wall, "threads": torch.get_num_threads()})
    notes = [f"wall time of this command: {wall / 60:.1f} min on {torch.get_num_threads()} thread(s) "
             "(runs loaded from an earlier invocation count as 0)",
             "protocol for every model: full-batch Adam, public split, GAT's early stopping (patience "
             f"{train.patience} on validation accuracy or loss, the weights of the last epoch at which both were "
             f"best), at most {train.epochs} epochs"]
    if data.name == "Cora":
        notes += [f"published Cora test accuracy of {name}: {PAPER_CORA[name]}" for name in
                  [c.model for c in configs] if name in PAPER_CORA]
    write_report(out, title=f"Graph attention on {data.name} (Planetoid public split)", results=results,
                 metric_names=["test_accuracy", "val_accuracy", "best_epoch", "ms_per_epoch"],
                 intro="Node classification in which node i attends only its neighbours: the adjacency "
                       "matrix (with self-loops) masks the attention matrix. The MLP sees the same features "
                       "without the edges.",
                 notes=notes, figures=figures)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'} ({wall / 60:.1f} min)", file=sys.stderr)
    return 0


def _run_once(config: GraphModelConfig, data: Planetoid, seed: int, train: TrainConfig, device: torch.device,
              out: Path, args: argparse.Namespace):
    """Train one model with one seed, or load the result of an identical earlier run (`--resume`)."""
    folder = out / "runs" / config.model
    result_file, weights_file = folder / f"seed{seed}.json", folder / f"seed{seed}.pt"
    identity = to_plain({"model": config, "train": train, "seed": seed, "dataset": data.name})
    if args.resume and result_file.exists() and weights_file.exists():
        saved = json.loads(result_file.read_text())
        if saved.get("identity") == identity:
            model = build_model(config, data.num_features, data.num_classes).to(device)
            model.load_state_dict(load_checkpoint(weights_file, map_location=device)["model"])
            model.eval()
            return saved["metrics"], saved["epochs"], model
    result = train_node_classifier(config, data, seed=seed, train=train, device=device,
                                   progress=not args.no_progress, desc=f"{config.model} seed {seed}")
    save_checkpoint(weights_file, {"model": result.model.state_dict(), "config": to_plain(config)})
    with atomic_open(result_file, "w") as f:
        json.dump({"identity": identity, "metrics": result.metrics, "epochs": result.history.epochs}, f)
    return result.metrics, result.history.epochs, result.model


def _figures(data: Planetoid, curves: dict, kept: dict, out: Path) -> list[tuple[str, str]]:
    """Learning curves of every model, and what the first seed's GAT attends to."""
    figures = []
    plot_learning_curves(curves, "val_accuracy", title=f"{data.name}: validation accuracy (first seed)",
                         path=out / "learning_curves.png")
    figures.append(("Validation accuracy per epoch, first seed of each model", "learning_curves.png"))
    if "gat" not in kept:
        return figures
    model = kept["gat"].cpu().eval()
    data = data.to("cpu")
    node = _pick_node(data)
    class_names = CORA_CLASSES if data.name == "Cora" else None

    x, graph = model.inputs(data)
    with torch.no_grad():
        hidden = torch.nn.functional.elu(model.conv1(x, graph))
        _, weights = model.conv2(hidden, graph, return_weights=True)
    if isinstance(graph, EdgeGraph):  # weights (E, H) over edges j -> i
        incoming = graph.dst == node
        neighbours, alpha = graph.src[incoming].tolist(), weights[incoming].mean(-1).tolist()
    else:  # dense: (H, N, N), row = query
        row = weights.mean(0)[node]
        neighbours = row.nonzero().flatten().tolist()
        alpha = row[neighbours].tolist()
    plot_neighbourhood(node, neighbours, alpha, data.y, class_names=class_names,
                       title=f"{data.name} node {node} (class {data.y[node].item()}): output-layer attention",
                       path=out / "neighbourhood.png")
    figures.append((f"Node {node} and its neighbours; edge width = the GAT output layer's attention weight",
                    "neighbourhood.png"))

    from torch_geometric.utils import subgraph

    nodes = khop_nodes(data.edge_index, node, hops=2, limit=24)
    sub_edges, _ = subgraph(torch.tensor(nodes), data.edge_index, relabel_nodes=True, num_nodes=data.num_nodes)
    mask = adjacency_mask(sub_edges, len(nodes))
    with torch.no_grad():
        _, sub_weights = model.conv1(data.x[nodes], mask, return_weights=True)  # (H, n, n), dense path
    plot_masked_attention(mask.dense(), sub_weights.mean(0), nodes,
                          title=f"{data.name}: GAT layer 1 (head mean) on the subgraph around node {node}, dense path",
                          path=out / "masked_attention.png")
    figures.append(("The adjacency mask of a 2-hop subgraph and GAT's first-layer attention under it",
                    "masked_attention.png"))
    return figures


def _pick_node(data: Planetoid) -> int:
    """A test node with a readable neighbourhood (5-9 neighbours), the first by id."""
    degree = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
    good = ((degree >= 5) & (degree <= 9) & data.test_mask).nonzero().flatten()
    return int(good[0]) if len(good) else int(degree.argmax())


if __name__ == "__main__":
    sys.exit(main())
