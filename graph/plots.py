"""Figures of graph attention: one node's neighbourhood with its learned weights, and the attention matrix
of a small subgraph next to the adjacency mask that shapes it.

Figures are `matplotlib.figure.Figure`s (no pyplot state) saved to `path` when given. `comparison_figures`
draws the ones `python -m graph compare` puts in its report, from the runner's records.

Legend: N nodes, E edges, H heads, n nodes of a subgraph.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from core.lab.harness import load_checkpoint
from core.lab.plots import plot_learning_curves, save_figure
from core.masks import adjacency_mask
from core.sparse import EdgeGraph

__all__ = ["plot_neighbourhood", "plot_masked_attention", "khop_nodes", "comparison_figures", "pick_node",
           "CORA_CLASSES"]

CORA_CLASSES = ["Case_Based", "Genetic_Algorithms", "Neural_Networks", "Probabilistic_Methods",
                "Reinforcement_Learning", "Rule_Learning", "Theory"]


def plot_neighbourhood(
    node: int,
    neighbours: Sequence[int],
    weights: Sequence[float],
    labels: Tensor,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One node (centre) and the nodes it attends to (circle), each edge drawn as thick and dark as its
    attention weight; nodes coloured by class.

    Args:
        node (int): the attending node.
        neighbours (Sequence[int]): the nodes it attends to (itself included when it has a self-loop).
        weights (Sequence[float]): its attention weight on each, same order (summing to 1).
        labels (Tensor): `(N,)` class of every node, for the colours.
        class_names (Sequence[str], optional): legend names of the classes.
    """
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(7, 6.5))
    ax = fig.add_subplot()
    others = [(j, w) for j, w in zip(neighbours, weights) if j != node]
    self_weight = sum(w for j, w in zip(neighbours, weights) if j == node)
    top = max(list(weights) + [1e-9])
    for k, (j, w) in enumerate(others):
        angle = 2 * math.pi * k / max(len(others), 1)
        px, py = math.cos(angle), math.sin(angle)
        ax.plot([0, px], [0, py], color="black", alpha=0.15 + 0.85 * w / top, linewidth=0.5 + 8 * w / top, zorder=1)
        ax.scatter([px], [py], s=500, color=cmap(int(labels[j]) % 10), edgecolors="black", zorder=2)
        ax.annotate(f"{j}", (px, py), ha="center", va="center", fontsize=7, zorder=3)
        ax.annotate(f"{w:.2f}", (0.6 * px, 0.6 * py), ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8), zorder=3)
    ax.scatter([0], [0], s=900, color=cmap(int(labels[node]) % 10), edgecolors="red", linewidths=2.5, zorder=2)
    ax.annotate(f"{node}\nself {self_weight:.2f}", (0, 0), ha="center", va="center", fontsize=7, zorder=3)
    classes = sorted({int(labels[j]) for j in [node, *neighbours]})
    for c in classes:
        name = class_names[c] if class_names is not None else f"class {c}"
        ax.scatter([], [], s=80, color=cmap(c % 10), edgecolors="black", label=name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"attention of node {node} over its neighbours")
    return save_figure(fig, path)


def plot_masked_attention(
    mask: Tensor,
    weights: Tensor,
    nodes: Sequence[int],
    *,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Two panels: the adjacency mask of a subgraph (True = may attend) and the attention matrix computed
    under it, whose zeros fall exactly where the mask is False.

    Args:
        mask (Tensor): `(n, n)` bool, row i attends column j.
        weights (Tensor): `(n, n)` attention weights (one head or the head mean).
        nodes (Sequence[int]): the graph's ids of the n nodes, for the tick labels.
    """
    m = mask.detach().cpu().numpy().astype(float)
    w = weights.detach().float().cpu().numpy()
    n = len(nodes)
    fig = Figure(figsize=(13, 6))
    axes = fig.subplots(1, 2)
    axes[0].imshow(m, cmap="Greys", vmin=0, vmax=1)
    axes[0].set_title("adjacency mask (+ self-loops): may attend")
    im = axes[1].imshow(np.ma.masked_where(m == 0, w), cmap="viridis", vmin=0, vmax=max(float(w.max()), 1e-9))
    axes[1].set_facecolor("#f2f2f2")
    axes[1].set_title("attention weights (grey: masked, exactly 0)")
    fig.colorbar(im, ax=axes[1], fraction=0.046, label="attention weight")
    for ax in axes:
        ticks = list(range(n)) if n <= 30 else list(range(0, n, max(1, n // 15)))
        ax.set_xticks(ticks, labels=[str(nodes[t]) for t in ticks], rotation=90, fontsize=7)
        ax.set_yticks(ticks, labels=[str(nodes[t]) for t in ticks], fontsize=7)
        ax.set_xlabel("key node j (attended to)")
        ax.set_ylabel("query node i")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def khop_nodes(edge_index: Tensor, node: int, hops: int, limit: int) -> list[int]:
    """`node` and up to `limit - 1` nodes within `hops` of it (breadth first, smallest ids first)."""
    src, dst = edge_index
    chosen, frontier = [node], [node]
    seen = {node}
    for _ in range(hops):
        found = sorted({int(j) for j in src[torch.isin(dst, torch.tensor(frontier))].tolist()} - seen)
        found = found[: max(limit - len(chosen), 0)]
        chosen += found
        seen.update(found)
        frontier = found
        if len(chosen) >= limit or not frontier:
            break
    return chosen



def pick_node(data) -> int:
    """A test node with a readable neighbourhood (5-9 neighbours), the first by id."""
    degree = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
    good = ((degree >= 5) & (degree <= 9) & data.test_mask).nonzero().flatten()
    return int(good[0]) if len(good) else int(degree.argmax())


def comparison_figures(records: dict, out: Path, *, data, configs: dict) -> list[tuple[str, str]]:
    """Learning curves of every model (every seed), and what the first seed's GAT attends to.

    Args:
        records (dict[str, list[RunRecord]]): the runner's records per model name.
        out (Path): the output folder.
        data (Planetoid): the graph.
        configs (dict[str, GraphModelConfig]): each model's config, to rebuild a model loaded from `best.pt`.

    Returns:
        list[tuple[str, str]]: `(caption, file)` pairs for the report.
    """
    from graph.models import build_model

    figures = []
    curves = {name: [r.history for r in runs] for name, runs in records.items() if runs}
    several = any(len(runs) > 1 for runs in records.values())
    plot_learning_curves(curves, "val_accuracy", title=f"{data.name}: validation accuracy",
                         path=Path(out) / "learning_curves.png")
    figures.append((f"Validation accuracy per epoch{', every seed of each model' if several else ''}",
                    "learning_curves.png"))
    if not records.get("gat"):
        return figures
    first = records["gat"][0]
    model = first.model
    if model is None:  # finished by an earlier invocation: the kept weights are in best.pt
        model = build_model(configs["gat"], data.num_features, data.num_classes)
        model.load_state_dict(load_checkpoint(first.run_dir / "best.pt")["model"])
    model = model.cpu().eval()
    data = data.to("cpu")
    node = pick_node(data)
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
                       path=Path(out) / "neighbourhood.png")
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
                          path=Path(out) / "masked_attention.png")
    figures.append(("The adjacency mask of a 2-hop subgraph and GAT's first-layer attention under it",
                    "masked_attention.png"))
    return figures
