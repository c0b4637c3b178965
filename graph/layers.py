"""Graph attention: self-attention over node vectors in which the adjacency matrix is the mask.

A graph is a set of N node vectors; node i may attend node j iff there is an edge j -> i (plus a
self-loop). `GraphAttention` computes exactly that, on one of two paths that share the parameters:

- dense: node features `(B, N, D)` and `core.masks.adjacency_mask`; the scores form a `(B, H, N, N)`
  matrix that core's `softmax_attention` (additive) or `scaled_dot_product_attention` (dot) masks,
  normalises and sums. Clear, and O(N²).
- sparse: node features `(N, D)` and a `core.sparse.EdgeGraph`; the scores live on the E edges and the
  softmax runs over each node's incoming edges. O(E), for graphs whose N² matrix does not fit.

Scoring is either the Transformer's scaled dot product `<W_q h_i, W_k h_j> / sqrt(Dh)` or GAT's additive
`LeakyReLU(aᵀ [W h_i ‖ W h_j])` (Veličković et al., 2018, eq. 3), split as `a_dstᵀ W h_i + a_srcᵀ W h_j`.

Legend: B batch, N nodes, E edges, D input dim, H heads, C channels per head.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.attention import scaled_dot_product_attention, softmax_attention
from core.capture import is_capturing, record
from core.masks import GraphMask, adjacency_mask
from core.sparse import EdgeGraph, edge_attention, edge_dropout, edge_softmax_attention, quiet_csr_beta_warning

__all__ = ["GraphAttention", "DenseGraphTooLarge", "prepare_graph", "feature_dropout", "project",
           "DENSE_MAX_NODES", "DENSE_MAX_BYTES"]

Scoring = Literal["additive", "dot"]

#: `prepare_graph` takes the dense path up to this many nodes: beyond it the (N, N) scores cost more
#: than the edges on any sparse graph.
DENSE_MAX_NODES = 1024
#: The dense path refuses to allocate score matrices larger than this.
DENSE_MAX_BYTES = 2 * 1024**3


class DenseGraphTooLarge(MemoryError):
    """The dense `(B, H, N, N)` attention matrix would not fit; use the sparse path."""


def prepare_graph(
    edge_index: Tensor, num_nodes: int, *, self_loops: bool = True, dense_max_nodes: int = DENSE_MAX_NODES
) -> EdgeGraph | GraphMask:
    """The structure a `GraphAttention` runs on: a dense adjacency mask for small graphs, the sorted edge
    list (sparse path) above `dense_max_nodes`. Validates `edge_index` (integer ids in range).

    Build it once per graph: the sparse structure is sorted once and reused every step.
    """
    if num_nodes <= dense_max_nodes:
        return adjacency_mask(edge_index, num_nodes, self_loops=self_loops)
    return EdgeGraph(edge_index, num_nodes, self_loops=self_loops)


def feature_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout on node features, dense or sparse CSR.

    On a sparse bag-of-words matrix only the stored entries are drawn: dropping a zero changes nothing,
    so the result has the distribution of `F.dropout` on the dense matrix at ~1% of the cost (Cora: 49k
    stored entries of 3.9M).
    """
    if not training or p <= 0.0:
        return x
    if x.layout == torch.sparse_csr:
        values = edge_dropout(x.values(), p)
        with quiet_csr_beta_warning():
            return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False)
    return edge_dropout(x, p)


def project(x: Tensor, linear: nn.Linear) -> Tensor:
    """`linear(x)` for dense or sparse CSR `x (N, D)`."""
    if x.layout == torch.sparse_csr:
        out = x @ linear.weight.t()
        return out if linear.bias is None else out + linear.bias
    return linear(x)


class GraphAttention(nn.Module):
    r"""Multi-head graph attention: node i attends its in-neighbours j (edges j -> i).

    .. math::
        \alpha_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}(e_{ij}), \qquad
        h_i' = \Big\Vert_{h=1}^{H} \sum_{j \in \mathcal{N}(i)} \alpha^h_{ij} V^h x_j

    with :math:`e_{ij} = \mathrm{LeakyReLU}(a_{dst}^\top W x_i + a_{src}^\top W x_j)` (`"additive"`, GAT)
    or :math:`e_{ij} = (W_q x_i)^\top (W_k x_j) / \sqrt{C}` (`"dot"`, Transformer).

    Args:
        in_dim (int): D, input features per node.
        out_dim (int): C, output channels per head.
        heads (int, optional): H. (default: 1)
        scoring (str, optional): `"additive"` (GAT) or `"dot"` (scaled dot product). (default: "additive")
        concat (bool, optional): concatenate the heads (`H * C` out) or average them (`C` out).
            (default: True)
        dropout (float, optional): dropout on the attention weights. (default: 0.0)
        value_dropout (float, optional): dropout on the projected values `V x_j` before they are summed
            (the scores see them undropped), as GAT's reference code does. (default: 0.0)
        negative_slope (float, optional): LeakyReLU slope of additive scoring. (default: 0.2)
        bias (bool, optional): additive: a bias on the output; dot: biases on the query, key and value
            projections (as PyG's `TransformerConv`). (default: True)
        root_weight (bool, optional): add a linear skip `W_r x_i` to the output. (default: False)
        dense_max_bytes (int, optional): the dense path refuses score matrices larger than this.
            (default: 2 GiB)

    Shapes:
        - sparse: x `(N, D)` (dense or sparse CSR), graph `EdgeGraph` -> `(N, H*C)` or `(N, C)`;
          weights `(E, H)` in `graph.edge_index` order.
        - dense: x `(B, N, D)` or `(N, D)`, graph `GraphMask` (`adjacency_mask`) -> `(B, N, H*C)` or
          `(N, H*C)`; weights `(B, H, N, N)` or `(H, N, N)`, zero off the mask.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        heads: int = 1,
        *,
        scoring: Scoring = "additive",
        concat: bool = True,
        dropout: float = 0.0,
        value_dropout: float = 0.0,
        negative_slope: float = 0.2,
        bias: bool = True,
        root_weight: bool = False,
        dense_max_bytes: int = DENSE_MAX_BYTES,
    ):
        super().__init__()
        if scoring not in ("additive", "dot"):
            raise ValueError(f"scoring must be 'additive' or 'dot', got {scoring!r}")
        self.in_dim, self.out_dim, self.heads = in_dim, out_dim, heads
        self.scoring, self.concat, self.dropout = scoring, concat, dropout
        self.value_dropout = value_dropout
        self.negative_slope = negative_slope
        self.dense_max_bytes = dense_max_bytes
        HC = heads * out_dim
        if scoring == "additive":
            self.lin = nn.Linear(in_dim, HC, bias=False)
            self.att_src = nn.Parameter(torch.empty(heads, out_dim))
            self.att_dst = nn.Parameter(torch.empty(heads, out_dim))
            self.bias = nn.Parameter(torch.zeros(HC if concat else out_dim)) if bias else None
        else:
            self.lin_query = nn.Linear(in_dim, HC, bias=bias)
            self.lin_key = nn.Linear(in_dim, HC, bias=bias)
            self.lin_value = nn.Linear(in_dim, HC, bias=bias)
            self.bias = None
        self.lin_root = nn.Linear(in_dim, HC if concat else out_dim, bias=False) if root_weight else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot (Xavier-uniform) weights, zero biases, as GAT and PyG initialise."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.scoring == "additive":
            # Glorot over each head's (C, 1) attention vector, as PyG's GATConv.
            bound = math.sqrt(6.0 / (1 + self.out_dim))
            nn.init.uniform_(self.att_src, -bound, bound)
            nn.init.uniform_(self.att_dst, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def out_features(self) -> int:
        return self.heads * self.out_dim if self.concat else self.out_dim

    def forward(
        self, x: Tensor, graph: EdgeGraph | GraphMask, *, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        want_weights = return_weights or is_capturing()
        if isinstance(graph, EdgeGraph):
            out, weights = self._sparse(x, graph, want_weights)
        elif isinstance(graph, GraphMask):
            out, weights = self._dense(x, graph, want_weights)
        else:
            raise TypeError(
                "graph must be a core.sparse.EdgeGraph (sparse path) or a core.masks.adjacency_mask "
                f"(dense path), e.g. from graph.layers.prepare_graph; got {type(graph).__name__}"
            )
        if weights is not None:
            record(self, weights)
        if self.lin_root is not None:
            out = out + project(x, self.lin_root)
        return (out, weights) if return_weights else out

    def _merge_heads(self, out: Tensor) -> Tensor:
        """(..., N, H, C) -> (..., N, H*C) or the head mean (..., N, C), plus bias."""
        out = out.flatten(-2) if self.concat else out.mean(-2)
        return out if self.bias is None else out + self.bias

    def _sparse(self, x: Tensor, graph: EdgeGraph, return_weights: bool) -> tuple[Tensor, Tensor | None]:
        if x.dim() != 2 or x.shape[0] != graph.num_nodes:
            raise ValueError(f"sparse graph attention takes x (N, D) with N={graph.num_nodes}, got {tuple(x.shape)}")
        H, C = self.heads, self.out_dim
        p = self.dropout if self.training else 0.0
        if self.scoring == "additive":
            h = project(x, self.lin).view(-1, H, C)  # (N, H, C)
            a_src = (h * self.att_src).sum(-1).t().contiguous()  # (H, N)
            a_dst = (h * self.att_dst).sum(-1).t().contiguous()  # (H, N)
            # Scores built head-major (H, E): the (E, H) view core takes is then a free transpose.
            scores = a_src.index_select(1, graph.src) + a_dst.index_select(1, graph.dst)  # (H, E)
            scores = F.leaky_relu(scores, self.negative_slope)
            values = feature_dropout(h, self.value_dropout, self.training)
            result = edge_softmax_attention(scores.t(), values, graph, dropout=p, return_weights=return_weights)
        else:
            q = project(x, self.lin_query).view(-1, H, C)  # (N, H, C)
            k = project(x, self.lin_key).view(-1, H, C)  # (N, H, C)
            v = project(x, self.lin_value).view(-1, H, C)  # (N, H, C)
            v = feature_dropout(v, self.value_dropout, self.training)
            result = edge_attention(q, k, v, graph, dropout=p, return_weights=return_weights)
        out, weights = result if return_weights else (result, None)
        return self._merge_heads(out), weights

    def _dense(self, x: Tensor, graph: GraphMask, return_weights: bool) -> tuple[Tensor, Tensor | None]:
        if x.layout != torch.strided:
            x = x.to_dense()
        unbatched = x.dim() == 2
        x = x.unsqueeze(0) if unbatched else x  # (B, N, D)
        B, N, _ = x.shape
        H, C = self.heads, self.out_dim
        need = B * H * N * N * x.element_size() * (3 if self.training else 2)
        if need > self.dense_max_bytes:
            raise DenseGraphTooLarge(
                f"dense graph attention over N={N} nodes needs ~{need / 2**30:.1f} GiB for its (B={B}, H={H}, "
                f"N, N) scores (limit {self.dense_max_bytes / 2**30:.1f} GiB); pass a core.sparse.EdgeGraph "
                "(graph.layers.prepare_graph picks it above DENSE_MAX_NODES) for the O(E) sparse path"
            )
        p = self.dropout if self.training else 0.0
        if self.scoring == "additive":
            h = self.lin(x).view(B, N, H, C).transpose(1, 2)  # (B, H, N, C)
            a_src = (h * self.att_src.unsqueeze(1)).sum(-1)  # (B, H, N)
            a_dst = (h * self.att_dst.unsqueeze(1)).sum(-1)  # (B, H, N)
            scores = F.leaky_relu(a_dst.unsqueeze(-1) + a_src.unsqueeze(-2), self.negative_slope)  # (B, H, N, N)
            values = feature_dropout(h, self.value_dropout, self.training)
            result = softmax_attention(
                scores, values, graph, dropout=self.dropout, training=self.training, return_weights=return_weights
            )
        else:
            q = self.lin_query(x).view(B, N, H, C).transpose(1, 2)  # (B, H, N, C)
            k = self.lin_key(x).view(B, N, H, C).transpose(1, 2)  # (B, H, N, C)
            v = self.lin_value(x).view(B, N, H, C).transpose(1, 2)  # (B, H, N, C)
            v = feature_dropout(v, self.value_dropout, self.training)
            result = scaled_dot_product_attention(q, k, v, graph, dropout=p, return_weights=return_weights)
        out, weights = result if return_weights else (result, None)
        out = self._merge_heads(out.transpose(1, 2))  # (B, N, H*C) or (B, N, C)
        if unbatched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights
