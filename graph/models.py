"""Node classifiers for the citation graphs: graph attention models and the baselines they must beat.

- `GAT`: Veličković et al. (2018), transductive setup: 8 heads × 8 features, ELU, one output head,
  dropout 0.6 on every layer's input and on the attention weights; built on `graph.layers.GraphAttention`.
- `GraphTransformer`: the same masked attention with Transformer scoring (scaled dot product), residual
  connections and LayerNorm.
- `GCN`: Kipf & Welling (2017) with PyG's `GCNConv` (16 hidden, dropout 0.5).
- `MLP`: the same features without the edges: what attention over neighbours adds is the gap to it.
- `PyGGAT`: PyG's own `GATConv` in GAT's configuration, the reference peer for accuracy and speed.

Every model takes what `model.inputs(data)` builds once per graph (features and graph structure) and
returns class logits `(N, classes)`.

Legend: N nodes, D features, H heads, C channels per head, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.sparse import EdgeGraph
from graph.data import Planetoid
from graph.layers import DENSE_MAX_NODES, GraphAttention, feature_dropout, prepare_graph, project

__all__ = ["MODELS", "ROLES", "GraphModelConfig", "default_config", "build_model",
           "GAT", "GraphTransformer", "GCN", "MLP", "PyGGAT"]


@dataclass
class GraphModelConfig:
    """Hyper-parameters of one node classifier. `default_config(model)` gives each paper's values."""

    model: str = "gat"  # one of MODELS
    hidden: int = 8  # channels per head (GAT, transformer) or hidden units (GCN, MLP)
    heads: int = 8  # attention heads of the hidden layer(s)
    out_heads: int = 1  # GAT: output heads, averaged (the paper uses 1 on Cora and CiteSeer, 8 on PubMed)
    layers: int = 2  # graph transformer: attention blocks
    dropout: float = 0.6  # on the input of every layer
    attn_dropout: float = 0.6  # on the attention weights
    value_dropout: float = 0.0  # on the projected values before aggregation (GAT's reference code: 0.6)
    negative_slope: float = 0.2  # GAT's LeakyReLU
    lr: float = 0.005  # Adam learning rate
    weight_decay: float = 5e-4  # L2 penalty (GCN: first layer only, as the paper)
    dense_max_nodes: int = DENSE_MAX_NODES  # our attention models use the dense path up to this many nodes


#: name -> paper hyper-parameters.
_DEFAULTS = {
    # The GAT reference code also drops the projected values with the input rate; PyG's GATConv does not.
    "gat": GraphModelConfig("gat", value_dropout=0.6),
    "graph_transformer": GraphModelConfig("graph_transformer", hidden=8, heads=8, layers=2, dropout=0.6,
                                          attn_dropout=0.2),
    "gcn": GraphModelConfig("gcn", hidden=16, heads=1, dropout=0.5, attn_dropout=0.0, lr=0.01),
    "mlp": GraphModelConfig("mlp", hidden=64, heads=1, dropout=0.5, attn_dropout=0.0, lr=0.01),
    "pyg_gat": GraphModelConfig("pyg_gat"),
}
MODELS = tuple(_DEFAULTS)
ROLES = {"gat": "attention", "graph_transformer": "attention", "gcn": "baseline", "mlp": "baseline",
         "pyg_gat": "baseline"}


def default_config(model: str, **overrides: Any) -> GraphModelConfig:
    """The paper configuration of `model`, with `overrides` (None values ignored)."""
    if model not in _DEFAULTS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return replace(_DEFAULTS[model], **{k: v for k, v in overrides.items() if v is not None})


#: Features with at most this fraction of non-zeros (bag-of-words: Cora 1.3%) are read as a sparse matrix.
SPARSE_FEATURES_MAX_DENSITY = 0.1


def _features(data: Planetoid, sparse_ok: bool) -> Tensor:
    """The features as a CSR matrix when the model reads those and they are mostly zeros, else dense."""
    if sparse_ok and (data.x != 0).float().mean().item() <= SPARSE_FEATURES_MAX_DENSITY:
        return data.sparse_x()
    return data.x


class NodeClassifier(nn.Module):
    """What the models share: building their inputs once per graph and their optimizer groups."""

    #: whether the model reads the features as a sparse CSR tensor (our models) or dense (PyG's layers).
    sparse_features = False

    def __init__(self, config: GraphModelConfig):
        super().__init__()
        self.config = config

    def inputs(self, data: Planetoid) -> tuple[Tensor, Any]:
        """`(features, graph)` in the form `forward` takes; build once per graph, reuse every step."""
        return _features(data, self.sparse_features), data.edge_index

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.parameters()), "weight_decay": self.config.weight_decay}]


class GAT(NodeClassifier):
    """Two graph attention layers (Veličković et al., 2018).

    Args:
        in_dim (int): D.
        num_classes (int): K.
        config (GraphModelConfig): hidden (C), heads (H), out_heads, dropout, attn_dropout, negative_slope.

    Shapes: x `(N, D)` (dense or sparse CSR) with an `EdgeGraph`, or `(B, N, D)` / `(N, D)` with an
    adjacency mask -> `(…, N, K)`.
    """

    sparse_features = True

    def __init__(self, in_dim: int, num_classes: int, config: GraphModelConfig):
        super().__init__(config)
        c = config
        self.conv1 = GraphAttention(in_dim, c.hidden, c.heads, scoring="additive", dropout=c.attn_dropout,
                                    value_dropout=c.value_dropout, negative_slope=c.negative_slope)
        self.conv2 = GraphAttention(c.hidden * c.heads, num_classes, c.out_heads, scoring="additive",
                                    concat=False, dropout=c.attn_dropout, value_dropout=c.value_dropout,
                                    negative_slope=c.negative_slope)

    def inputs(self, data: Planetoid) -> tuple[Tensor, Any]:
        graph = prepare_graph(data.edge_index, data.num_nodes, dense_max_nodes=self.config.dense_max_nodes)
        # The sparse path reads CSR features; the dense one needs them dense.
        return _features(data, isinstance(graph, EdgeGraph)), graph

    def forward(self, x: Tensor, graph: Any) -> Tensor:
        p = self.config.dropout
        x = feature_dropout(x, p, self.training)
        x = F.elu(self.conv1(x, graph))  # (N, H*C)
        x = feature_dropout(x, p, self.training)
        return self.conv2(x, graph)  # (N, K)


class GraphTransformer(NodeClassifier):
    """Transformer blocks whose attention is masked by the graph: dot-product scoring over each node's
    neighbours (and itself), residual connection and LayerNorm after each block.

    Args:
        in_dim (int): D.
        num_classes (int): K.
        config (GraphModelConfig): hidden (C per head), heads (H; model dim H*C), layers, dropout,
            attn_dropout.

    Shapes: as `GAT`.
    """

    sparse_features = True

    def __init__(self, in_dim: int, num_classes: int, config: GraphModelConfig):
        super().__init__(config)
        c = config
        dim = c.hidden * c.heads
        self.embed = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList(
            GraphAttention(dim, c.hidden, c.heads, scoring="dot", dropout=c.attn_dropout, value_dropout=c.value_dropout)
            for _ in range(c.layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(c.layers))
        self.head = nn.Linear(dim, num_classes)

    inputs = GAT.inputs

    def forward(self, x: Tensor, graph: Any) -> Tensor:
        p = self.config.dropout
        h = project(feature_dropout(x, p, self.training), self.embed)  # (N, H*C)
        for attention, norm in zip(self.blocks, self.norms):
            h = norm(h + feature_dropout(attention(h, graph), p, self.training))  # (N, H*C)
        return self.head(feature_dropout(h, p, self.training))  # (N, K)


class GCN(NodeClassifier):
    """Two `torch_geometric.nn.GCNConv` layers (Kipf & Welling, 2017); L2 on the first layer only."""

    def __init__(self, in_dim: int, num_classes: int, config: GraphModelConfig):
        super().__init__(config)
        from torch_geometric.nn import GCNConv

        self.conv1 = GCNConv(in_dim, config.hidden, cached=True)
        self.conv2 = GCNConv(config.hidden, num_classes, cached=True)

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.conv1.parameters()), "weight_decay": self.config.weight_decay},
                {"params": list(self.conv2.parameters()), "weight_decay": 0.0}]

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        p = self.config.dropout
        x = F.dropout(x, p, self.training)
        x = F.relu(self.conv1(x, edge_index))  # (N, hidden)
        x = F.dropout(x, p, self.training)
        return self.conv2(x, edge_index)  # (N, K)


class MLP(NodeClassifier):
    """Two linear layers on each node's own features; the edges are ignored."""

    sparse_features = True

    def __init__(self, in_dim: int, num_classes: int, config: GraphModelConfig):
        super().__init__(config)
        self.fc1 = nn.Linear(in_dim, config.hidden)
        self.fc2 = nn.Linear(config.hidden, num_classes)

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        p = self.config.dropout
        x = F.relu(project(feature_dropout(x, p, self.training), self.fc1))  # (N, hidden)
        return self.fc2(feature_dropout(x, p, self.training))  # (N, K)


class PyGGAT(NodeClassifier):
    """GAT built from PyG's `GATConv`, as PyG's `examples/gat.py`: the reference peer."""

    def __init__(self, in_dim: int, num_classes: int, config: GraphModelConfig):
        super().__init__(config)
        from torch_geometric.nn import GATConv

        c = config
        self.conv1 = GATConv(in_dim, c.hidden, heads=c.heads, dropout=c.attn_dropout, negative_slope=c.negative_slope)
        self.conv2 = GATConv(c.hidden * c.heads, num_classes, heads=c.out_heads, concat=False,
                             dropout=c.attn_dropout, negative_slope=c.negative_slope)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        p = self.config.dropout
        x = F.dropout(x, p, self.training)
        x = F.elu(self.conv1(x, edge_index))  # (N, H*C)
        x = F.dropout(x, p, self.training)
        return self.conv2(x, edge_index)  # (N, K)


_CLASSES = {"gat": GAT, "graph_transformer": GraphTransformer, "gcn": GCN, "mlp": MLP, "pyg_gat": PyGGAT}


def build_model(config: GraphModelConfig, in_dim: int, num_classes: int) -> NodeClassifier:
    """The model `config.model` names."""
    if config.model not in _CLASSES:
        raise ValueError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    return _CLASSES[config.model](in_dim, num_classes, config)
