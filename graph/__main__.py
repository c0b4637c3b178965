"""Graph attention on the Planetoid citation graphs, against GCN, an MLP and PyG's GATConv.

    python -m graph compare --dataset cora [--seeds 10] [--out DIR]
    python -m graph compare --quick                      # GAT and the MLP, 200 epochs: a minute or two
    python -m graph train --model gat --dataset cora [--heads 8 --hidden 8 ...]

Every model is trained with the same protocol (`graph.train`): full batch, Adam, the public split, GAT's
early stopping on the validation accuracy and loss. The experiment runner (`core.lab.runner`) writes
`metrics.json`, `report.md` and figures to `--out` (default `runs/graph/<dataset>`) and one folder per model
and seed (`<model>/seed<k>/`), so an interrupted comparison resumes where it stopped. Graphs train full-batch
in one process: under torchrun with several processes the command refuses.
"""

from __future__ import annotations

import argparse
import functools
import sys

from core.lab.cli import UsageError, add_common_args, add_schedule_args, apply_common_args, apply_profile, \
    check_common_args, cli_main, positive_int
from core.lab.runner import Experiment, ModelSpec, RunnerOptions, run_experiment
from graph.data import PLANETOID_NAMES, UnsafePickleError, data_identity, load_planetoid
from graph.layers import DENSE_MAX_NODES
from graph.models import MODELS, ROLES, default_config
from graph.plots import comparison_figures
from graph.train import CONTRACT, TrainConfig, train_one

DEFAULT_OUT = "runs/graph/<dataset>"
#: --quick: our GAT against the MLP (no edges) for at most 200 epochs, one seed.
QUICK = dict(models=["gat", "mlp"], epochs=200)
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
    compare.add_argument("--quick", action="store_true",
                         help="a short profile: " + ", ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                             for k, v in QUICK.items())
                              + " (a flag given explicitly wins; the report says so)")
    train = commands.add_parser(
        "train", help="train one model (optionally with changed hyper-parameters)",
        description="Train one model over --seeds seeds; hyper-parameters default to its paper's values.")
    train.add_argument("--model", choices=MODELS, default="gat", help="the model (default: gat)")
    train.add_argument("--hidden", type=positive_int, help="channels per head (attention models) or hidden units")
    train.add_argument("--heads", type=positive_int, help="attention heads of the hidden layer(s)")
    train.add_argument("--layers", type=positive_int, help="graph transformer: number of attention blocks")
    train.add_argument("--dropout", type=float, help="dropout on every layer's input")
    train.add_argument("--attn-dropout", type=float, help="dropout on the attention weights")
    train.add_argument("--lr", type=float, help="Adam learning rate")
    train.add_argument("--weight-decay", type=float, help="L2 penalty")
    for sub in (compare, train):
        sub.add_argument("--dataset", default="cora", type=str.lower, choices=sorted(PLANETOID_NAMES),
                         help="Planetoid graph, read from <data-dir>/planetoid/<Name>/raw/ (default: cora)")
        add_schedule_args(sub, epochs=TrainConfig.epochs)
        sub.add_argument("--patience", type=positive_int, default=TrainConfig.patience,
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
    return cli_main(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    kept = []
    if getattr(args, "quick", False):
        kept = apply_profile(args, build_parser().parse_args([args.command]), QUICK)
    out = args.out.replace("<dataset>", args.dataset + ("-quick" if getattr(args, "quick", False) else ""))
    check_common_args(args, out)
    apply_common_args(args)
    try:
        data = load_planetoid(args.dataset, args.data_dir, download=args.download)
        identity = data_identity(args.dataset, args.data_dir)
    except (UnsafePickleError, ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    if args.command == "compare":
        configs = [default_config(name, dense_max_nodes=args.dense_max_nodes) for name in args.models]
    else:
        configs = [default_config(args.model, hidden=args.hidden, heads=args.heads, layers=args.layers,
                                  dropout=args.dropout, attn_dropout=args.attn_dropout, lr=args.lr,
                                  weight_decay=args.weight_decay, dense_max_nodes=args.dense_max_nodes)]
    train = TrainConfig(epochs=args.epochs, patience=args.patience)
    notes = ["protocol for every model: full-batch Adam, public split, GAT's early stopping (patience "
             f"{train.patience} on validation accuracy or loss, the weights of the last epoch at which both were "
             f"best), at most {train.epochs} epochs; one process (full batch: nothing to shard)"]
    notes += kept
    if data.name == "Cora":
        notes += [f"published Cora test accuracy of {c.model}: {PAPER_CORA[c.model]}" for c in configs
                  if c.model in PAPER_CORA]
    experiment = Experiment(
        domain="graph", dataset=data.name, title=f"Graph attention on {data.name} (Planetoid public split)",
        contract=CONTRACT, specs=[ModelSpec(c.model, ROLES[c.model], c) for c in configs],
        train_one=functools.partial(train_one, data=data), config=train, data_identity=identity,
        intro="Node classification in which node i attends only its neighbours: the adjacency matrix (with "
              "self-loops) masks the attention matrix. The MLP sees the same features without the edges.",
        notes=notes, table=["val_loss", "train_accuracy"],
        bookkeeping_table=["best_epoch", "epochs", "ms_per_epoch"], distributed=False,
        figures=functools.partial(comparison_figures, data=data, configs={c.model: c for c in configs}),
        extra={"command_name": args.command},
    )
    run_experiment(experiment, RunnerOptions.from_args(args, out=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
