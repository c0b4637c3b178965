"""Attention over an edge list: the O(E) counterpart of `core.attention` for graphs.

Node i attends node j iff there is an edge j -> i (`edge_index[0]` sources, `edge_index[1]` targets,
PyG's flow), the rule of `core.masks.adjacency_mask`. Instead of an (N, N) score matrix the scores live on
the E edges, the softmax runs per destination node over its incoming edges, and the weighted sum over the
sources is a sparse-dense product:

    alpha_e = exp(s_e) / sum_{e' -> dst(e)} exp(s_e')        out_i = sum_{e: j -> i} alpha_e v_j

`EdgeGraph` sorts the edges by destination once per graph (CSR: the incoming edges of node i are a
contiguous slice), so every later call runs without bookkeeping. The fused path then needs only segment
reductions over those slices and two sparse kernels, each the other's backward:

    SpMM   out[h] = A_h v[h]                 (aggregation; its backward is A_hᵀ g and an SDDMM)
    SDDMM  s[h, e] = <q[h, dst_e], k[h, src_e]>  (dot-product scores; its backward is two SpMMs)

so no (E, H, Dh) tensor of gathered messages is ever formed. `edge_attention_reference` is the textbook
path (gather, softmax with a scatter, scatter-add) beside it; tests prove the two agree, forward and
backward, and that both equal the dense masked attention of `core.attention`.

Nodes are the sequence axis: node tensors are `(N, H, D)`, a batch of graphs is their disjoint union.
Edge tensors are `(E, H)`; they are stored head-major, so the `(E, H)` views handed out and taken back are
free transposes.

Legend: N nodes, E edges (self-loops included), H heads, Dh query/key head dim, Dv value head dim.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

from core.masks import check_edge_index



@contextmanager
def quiet_csr_beta_warning() -> Iterator[None]:
    """Silence torch's "Sparse CSR tensor support is in beta" warning inside the block only.

    The kernels used here (CSR @ dense, sampled_addmm) are tested against the reference path, so the
    warning is noise for our own constructions; the user's warning filters stay as they were.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield

__all__ = [
    "EdgeGraph",
    "edge_softmax",
    "edge_dot",
    "edge_aggregate",
    "edge_attention",
    "edge_softmax_attention",
    "edge_attention_reference",
    "edge_dropout",
    "quiet_csr_beta_warning",
]


class EdgeGraph:
    """A graph's edges sorted by destination, ready for attention. Build once per graph, reuse.

    Duplicate edges are merged (as in the boolean adjacency mask) and, with `self_loops=True`, every node
    gets exactly one self-loop (existing ones are kept once, missing ones added), as GAT does.

    Args:
        edge_index (LongTensor): `(2, E_in)`, row 0 sources, row 1 targets.
        num_nodes (int): N.
        self_loops (bool, optional): every node also attends itself. (default: True)

    Attributes:
        src, dst (LongTensor): `(E,)` endpoints, edges sorted by `(dst, src)`.
        rowptr (LongTensor): `(N + 1,)`: the incoming edges of node i are `rowptr[i]:rowptr[i + 1]`.
        t_perm (LongTensor): `(E,)` the edges in `(src, dst)` order (the transpose, for backward).
        t_rowptr (LongTensor): `(N + 1,)` the outgoing edges of node j are
            `t_perm[t_rowptr[j]:t_rowptr[j + 1]]`.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, *, self_loops: bool = True):
        edge_index = check_edge_index(edge_index, num_nodes).long()
        N = int(num_nodes)
        src, dst = edge_index[0], edge_index[1]
        if self_loops:
            loops = torch.arange(N, device=src.device)
            src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
        key = torch.unique(dst * N + src)  # sorted, duplicates merged
        self.num_nodes = N
        self.self_loops = self_loops
        self.dst = torch.div(key, N, rounding_mode="floor") if N else key
        self.src = key - self.dst * N
        self.rowptr = _offsets(self.dst, N)
        self.t_perm = torch.argsort(self.src * N + self.dst)
        self.t_rowptr = _offsets(self.src, N)
        self._heads: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}

    @property
    def num_edges(self) -> int:
        return len(self.src)

    @property
    def edge_index(self) -> Tensor:
        """`(2, E)` the edges actually attended over (self-loops included), in this graph's order."""
        return torch.stack([self.src, self.dst])

    def in_degree(self) -> Tensor:
        """`(N,)` number of incoming edges (attended keys) per node."""
        return self.rowptr.diff()

    def head_structure(self, H: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The graph repeated once per head as one block-diagonal `(H*N, H*N)` CSR pattern: row offsets and
        columns of A, then of Aᵀ. Row `h*N + i` holds head h's incoming edges of node i, in the order of the
        flattened `(H, E)` head-major edge tensors, so one sparse kernel call serves all heads. Built once
        per head count; 32-bit indices, on which MKL's kernels run fastest."""
        if H not in self._heads:
            N, E = self.num_nodes, self.num_edges
            index_dtype = torch.int32 if H * max(N, E) < 2**31 - 1 else torch.int64
            head = torch.arange(H, device=self.src.device).unsqueeze(1)  # (H, 1)

            def blocks(rowptr: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
                crow = torch.cat([(rowptr[:-1] + head * E).reshape(-1), rowptr.new_tensor([H * E])])  # (H*N+1,)
                return crow.to(index_dtype), (col + head * N).reshape(-1).to(index_dtype)  # (H*E,)

            self._heads[H] = (*blocks(self.rowptr, self.src), *blocks(self.t_rowptr, self.dst[self.t_perm]))
        return self._heads[H]

    def to(self, device: torch.device | str) -> EdgeGraph:
        """This graph on another device."""
        moved = EdgeGraph.__new__(EdgeGraph)
        moved.__dict__.update({k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()})
        moved._heads = {}
        return moved

    def __repr__(self) -> str:
        return f"EdgeGraph(N={self.num_nodes}, E={self.num_edges}, self_loops={self.self_loops})"


def _offsets(sorted_ids: Tensor, N: int) -> Tensor:
    """`(N + 1,)` segment offsets of ids counted per node."""
    rowptr = torch.zeros(N + 1, dtype=torch.long, device=sorted_ids.device)
    rowptr[1:] = torch.bincount(sorted_ids, minlength=N).cumsum(0)
    return rowptr


def _check_graph(graph: EdgeGraph, num_nodes: int, what: str) -> None:
    if not isinstance(graph, EdgeGraph):
        raise TypeError(f"graph must be a core.sparse.EdgeGraph, got {type(graph).__name__}")
    if num_nodes != graph.num_nodes:
        raise ValueError(f"{what} has {num_nodes} nodes but the graph has {graph.num_nodes}")


def _check_edges(x: Tensor, graph: EdgeGraph, what: str) -> None:
    if x.dim() != 2 or x.shape[0] != graph.num_edges:
        raise ValueError(f"{what} must be (E, H) with E={graph.num_edges}, got {tuple(x.shape)}")


def _head_major(x: Tensor) -> Tensor:
    """`(E, H)` -> contiguous `(H, E)`; free when x is already a transposed head-major tensor."""
    return x.t().contiguous()


# --- the two sparse kernels ---------------------------------------------------------------------


def _spmm(crow: Tensor, col: Tensor, values: Tensor, x: Tensor) -> Tensor:
    """Per head h: `A_h x[h]`, all heads in one call of a block-diagonal CSR matrix (`head_structure`).
    values (H, E) head-major, x (H, N, D) -> (H, N, D)."""
    H, N, D = x.shape
    with quiet_csr_beta_warning():
        A = torch.sparse_csr_tensor(crow, col, values.reshape(-1), (H * N, H * N), check_invariants=False)
    return (A @ x.reshape(H * N, D)).view(H, N, D)


def _sddmm(crow: Tensor, col: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """`out[h, e] = <a[h, dst_e], b[h, src_e]>` for a, b (H, N, D) -> (H, E), only at the edges: no
    (E, H, D) tensor of gathered rows, no (N, N) product."""
    H, N, D = a.shape
    # Zeros, not empty: sampled_addmm computes beta * values even for beta=0, and 0 * NaN garbage is NaN.
    with quiet_csr_beta_warning():
        pattern = torch.sparse_csr_tensor(crow, col, a.new_zeros(len(col)), (H * N, H * N), check_invariants=False)
    out = torch.sparse.sampled_addmm(pattern, a.reshape(H * N, D), b.reshape(H * N, D).t(), beta=0.0)
    return out.values().view(H, -1)


class _EdgeAggregate(torch.autograd.Function):
    """out[i] = sum over edges j -> i of w_e v[j], per head."""

    @staticmethod
    def forward(ctx, weights: Tensor, values: Tensor, graph: EdgeGraph) -> Tensor:
        w = _head_major(weights)  # (H, E)
        v = values.transpose(0, 1).contiguous()  # (H, N, Dv)
        ctx.save_for_backward(w, v)
        ctx.graph = graph
        crow, col, _, _ = graph.head_structure(w.shape[0])
        return _spmm(crow, col, w, v).transpose(0, 1)  # (N, H, Dv)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w, v = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        crow, col, t_crow, t_col = graph.head_structure(w.shape[0])
        g = grad_out.transpose(0, 1).contiguous()  # (H, N, Dv)
        grad_w = grad_v = None
        if ctx.needs_input_grad[0]:
            grad_w = _sddmm(crow, col, g, v).t()  # (E, H)
        if ctx.needs_input_grad[1]:
            w_t = w.index_select(1, graph.t_perm)  # (H, E) in transposed order
            grad_v = _spmm(t_crow, t_col, w_t, g).transpose(0, 1)  # (N, H, Dv)
        return grad_w, grad_v, None


class _EdgeDot(torch.autograd.Function):
    """s[e] = <q[dst_e], k[src_e]> per head."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, graph: EdgeGraph) -> Tensor:
        q_h = q.transpose(0, 1).contiguous()  # (H, N, Dh)
        k_h = k.transpose(0, 1).contiguous()  # (H, N, Dh)
        ctx.save_for_backward(q_h, k_h)
        ctx.graph = graph
        crow, col, _, _ = graph.head_structure(q_h.shape[0])
        return _sddmm(crow, col, q_h, k_h).t()  # (E, H)

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        q_h, k_h = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        crow, col, t_crow, t_col = graph.head_structure(q_h.shape[0])
        g = _head_major(grad_s)  # (H, E)
        grad_q = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_q = _spmm(crow, col, g, k_h).transpose(0, 1)  # (N, H, Dh)
        if ctx.needs_input_grad[1]:
            g_t = g.index_select(1, graph.t_perm)
            grad_k = _spmm(t_crow, t_col, g_t, q_h).transpose(0, 1)  # (N, H, Dh)
        return grad_q, grad_k, None


class _EdgeSoftmax(torch.autograd.Function):
    """Softmax of edge scores over the incoming edges of each destination node."""

    @staticmethod
    def forward(ctx, scores: Tensor, graph: EdgeGraph) -> Tensor:
        s = _head_major(scores)  # (H, E)
        offsets = graph.rowptr
        # The max shift only guards exp against overflow; it cancels in the ratio, so no gradient.
        peak = torch.segment_reduce(s.t(), "max", offsets=offsets, axis=0)  # (N, H)
        peak = peak.t().contiguous().index_select(1, graph.dst)  # (H, E)
        p = (s - peak).exp_()
        total = torch.segment_reduce(p.t(), "sum", offsets=offsets, axis=0)  # (N, H)
        alpha = p.div_(total.t().contiguous().index_select(1, graph.dst))  # (H, E)
        ctx.save_for_backward(alpha)
        ctx.graph = graph
        return alpha.t()  # (E, H)

    @staticmethod
    def backward(ctx, grad_alpha: Tensor):
        (alpha,) = ctx.saved_tensors
        graph: EdgeGraph = ctx.graph
        g = _head_major(grad_alpha)  # (H, E)
        ag = alpha * g
        dot = torch.segment_reduce(ag.t(), "sum", offsets=graph.rowptr, axis=0)  # (N, H)
        grad = ag.sub_(alpha * dot.t().contiguous().index_select(1, graph.dst))  # (H, E)
        return grad.t(), None


# --- public functions ---------------------------------------------------------------------------


def edge_softmax(scores: Tensor, graph: EdgeGraph) -> Tensor:
    """Softmax of per-edge scores over the incoming edges of each destination node.

    Args:
        scores (Tensor): `(E, H)` one score per edge and head, in `graph`'s edge order.
        graph (EdgeGraph): the edges.

    Shapes: `(E, H) -> (E, H)`; the weights into each node sum to 1 (nodes with no incoming edge have
    no weights at all).
    """
    _check_edges(scores, graph, "scores")
    return _EdgeSoftmax.apply(scores, graph)


def edge_dot(q: Tensor, k: Tensor, graph: EdgeGraph) -> Tensor:
    """Dot-product score of every edge j -> i: `<q[i], k[j]>` per head (an SDDMM).

    Shapes: q `(N, H, Dh)`, k `(N, H, Dh)` -> `(E, H)`.
    """
    _check_graph(graph, q.shape[0], "q")
    _check_graph(graph, k.shape[0], "k")
    if q.shape[1:] != k.shape[1:]:
        raise ValueError(f"q and k must both be (N, H, Dh); got {tuple(q.shape)} and {tuple(k.shape)}")
    return _EdgeDot.apply(q, k, graph)


def edge_aggregate(weights: Tensor, v: Tensor, graph: EdgeGraph) -> Tensor:
    """Weighted sum of the sources of each node's incoming edges: `out[i] = sum_{j -> i} w_e v[j]` (an SpMM).

    Shapes: weights `(E, H)`, v `(N, H, Dv)` -> `(N, H, Dv)`. A node with no incoming edge gets zeros.
    """
    _check_edges(weights, graph, "weights")
    _check_graph(graph, v.shape[0], "v")
    if v.dim() != 3 or v.shape[1] != weights.shape[1]:
        raise ValueError(f"v must be (N, H, Dv) with H={weights.shape[1]}, got {tuple(v.shape)}")
    return _EdgeAggregate.apply(weights, v, graph)


def edge_dropout(weights: Tensor, p: float) -> Tensor:
    """Inverted dropout on attention weights. Pass p=0 at evaluation.

    Same distribution as `F.dropout`; a uniform draw compared with p is several times faster on the CPU
    than the Bernoulli sampler `F.dropout` uses, and at E x H weights per step that matters.
    """
    if p <= 0.0:
        return weights
    if p >= 1.0:
        return torch.zeros_like(weights)
    keep = torch.rand(weights.shape, device=weights.device) >= p
    return weights * keep.to(weights.dtype) * (1.0 / (1.0 - p))


def edge_softmax_attention(
    scores: Tensor,
    v: Tensor,
    graph: EdgeGraph,
    *,
    dropout: float = 0.0,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention from precomputed edge scores (e.g. GAT's additive ones): softmax per destination over
    its incoming edges, dropout, weighted sum of the source values.

    Args:
        scores (Tensor): `(E, H)` unnormalised scores in `graph`'s edge order.
        v (Tensor): values `(N, H, Dv)`.
        graph (EdgeGraph): the edges.
        dropout (float, optional): dropout on the weights. Pass 0 at evaluation. (default: 0.0)
        return_weights (bool, optional): also return the weights (before dropout). (default: False)

    Returns:
        `out (N, H, Dv)`, or `(out, weights (E, H))`. Nodes with no incoming edge get zeros.
    """
    weights = edge_softmax(scores, graph)
    out = edge_aggregate(edge_dropout(weights, dropout), v, graph)
    return (out, weights) if return_weights else out


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    graph: EdgeGraph,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Scaled dot-product attention along the edges: `softmax_{j -> i}(<q_i, k_j> · scale) v_j`.

    Equals `core.attention.scaled_dot_product_attention(q, k, v, adjacency_mask(...))` on the same graph,
    in O(E) time and memory.

    Args:
        q (Tensor): queries `(N, H, Dh)`.
        k (Tensor): keys `(N, H, Dh)`.
        v (Tensor): values `(N, H, Dv)`.
        graph (EdgeGraph): the edges (j -> i: node i attends node j).
        scale (float, optional): score scale. (default: :math:`1/\sqrt{D_h}`)
        dropout (float, optional): dropout on the weights. Pass 0 at evaluation. (default: 0.0)
        return_weights (bool, optional): also return the weights (before dropout). (default: False)

    Returns:
        `out (N, H, Dv)`, or `(out, weights (E, H))`.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = edge_dot(q, k, graph) * scale  # (E, H)
    return edge_softmax_attention(scores, v, graph, dropout=dropout, return_weights=return_weights)


def edge_attention_reference(
    scores: Tensor, v: Tensor, graph: EdgeGraph, *, dropout: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The textbook edge attention, for reading and for tests: gather, per-node softmax, scatter-add.

    Memory O(E · H · Dv) (it forms every message). Shapes as `edge_softmax_attention`; returns
    `(out (N, H, Dv), weights (E, H))`.
    """
    _check_edges(scores, graph, "scores")
    N, H = graph.num_nodes, scores.shape[1]
    index = graph.dst.unsqueeze(1).expand(-1, H)  # (E, H)
    peak = scores.new_full((N, H), float("-inf")).scatter_reduce(0, index, scores.detach(), "amax")
    p = (scores - peak[graph.dst]).exp()
    total = scores.new_zeros(N, H).index_add(0, graph.dst, p)
    weights = p / total[graph.dst]  # (E, H)
    messages = edge_dropout(weights, dropout).unsqueeze(-1) * v[graph.src]  # (E, H, Dv)
    out = v.new_zeros(N, H, v.shape[-1]).index_add(0, graph.dst, messages)  # (N, H, Dv)
    return out, weights
