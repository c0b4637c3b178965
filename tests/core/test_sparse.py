"""core/sparse.py: edge-list attention equals the textbook path and core's dense masked attention."""

import pytest
import torch

from core.attention import scaled_dot_product_attention
from core.masks import adjacency_mask
from core.sparse import (EdgeGraph, edge_aggregate, edge_attention, edge_attention_reference, edge_dot,
                         edge_dropout, edge_softmax, edge_softmax_attention)


def _graph(N=12, E=40, seed=0, self_loops=True, isolated=()):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, N, (2, E), generator=g)
    keep = ~(torch.isin(edge_index[0], torch.tensor(list(isolated), dtype=torch.long))
             | torch.isin(edge_index[1], torch.tensor(list(isolated), dtype=torch.long)))
    return edge_index[:, keep]


def _nodes(N, H, D, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, H, D, generator=g, dtype=torch.float64, requires_grad=True)


def test_edge_graph_sorts_by_destination_merges_duplicates_and_adds_self_loops():
    edge_index = torch.tensor([[1, 1, 2, 0, 2], [0, 0, 1, 2, 2]])  # 1->0 twice, 2->2 already a loop
    graph = EdgeGraph(edge_index, 4)
    assert graph.edge_index.tolist() == [[0, 1, 1, 2, 0, 2, 3], [0, 0, 1, 1, 2, 2, 3]]
    assert graph.rowptr.tolist() == [0, 2, 4, 6, 7]
    assert graph.in_degree().tolist() == [2, 2, 2, 1]
    # the transpose order lists edges by source
    assert graph.src[graph.t_perm].tolist() == sorted(graph.src.tolist())
    assert EdgeGraph(edge_index, 4, self_loops=False).edge_index.tolist() == [[1, 2, 0, 2], [0, 1, 2, 2]]


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "integer"),
    (torch.tensor([[0, -1], [1, 0]]), "negative"),
    (torch.tensor([[0, 5], [1, 0]]), "out of range"),
    (torch.tensor([0, 1, 2]), "shape"),
])
def test_bad_edge_index_is_named(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        EdgeGraph(bad, 5)


@pytest.mark.parametrize("num_nodes", [-1, 2.5, True])
def test_bad_num_nodes_is_named(num_nodes):
    with pytest.raises(ValueError, match="num_nodes must be a non-negative integer"):
        EdgeGraph(torch.zeros(2, 0, dtype=torch.long), num_nodes)
    assert EdgeGraph(torch.zeros(2, 0, dtype=torch.long), 0).num_edges == 0


def test_fused_equals_reference_forward_and_backward():
    N, H, D = 15, 3, 4
    graph = EdgeGraph(_graph(N, 50, isolated=(14,)), N, self_loops=False)  # node 14 attends nothing
    q, k, v = _nodes(N, H, D, 1), _nodes(N, H, D, 2), _nodes(N, H, 6, 3)
    out, weights = edge_attention(q, k, v, graph, return_weights=True)
    scores = (q[graph.dst] * k[graph.src]).sum(-1) / D**0.5  # (E, H)
    ref_out, ref_weights = edge_attention_reference(scores, v, graph)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(weights, ref_weights)
    grad = torch.randn_like(out)
    fused = torch.autograd.grad(out, (q, k, v), grad)
    reference = torch.autograd.grad(ref_out, (q, k, v), grad)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b)
    assert (out[14] == 0).all()


def test_sparse_equals_dense_masked_attention():
    N, H, D = 11, 2, 5
    edge_index = _graph(N, 30, seed=3)
    graph = EdgeGraph(edge_index, N)
    q, k, v = _nodes(N, H, D, 4), _nodes(N, H, D, 5), _nodes(N, H, D, 6)
    sparse = edge_attention(q, k, v, graph)  # (N, H, D)
    as_batch = lambda t: t.transpose(0, 1).unsqueeze(0)  # (1, H, N, D)  # noqa: E731
    dense, dense_weights = scaled_dot_product_attention(as_batch(q), as_batch(k), as_batch(v),
                                                        adjacency_mask(edge_index, N), return_weights=True)
    torch.testing.assert_close(sparse, dense[0].transpose(0, 1))
    _, weights = edge_attention(q, k, v, graph, return_weights=True)
    torch.testing.assert_close(weights, dense_weights[0][:, graph.dst, graph.src].t())
    grad = torch.randn_like(sparse)
    for a, b in zip(torch.autograd.grad(sparse, (q, k, v), grad),
                    torch.autograd.grad(dense[0].transpose(0, 1), (q, k, v), grad)):
        torch.testing.assert_close(a, b)


def test_gradcheck_of_each_kernel():
    N, H = 5, 2
    graph = EdgeGraph(_graph(N, 8, seed=7), N)
    q, k, v = _nodes(N, H, 2, 8), _nodes(N, H, 2, 9), _nodes(N, H, 2, 10)
    scores = torch.randn(graph.num_edges, H, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: edge_softmax(s, graph), (scores,))
    assert torch.autograd.gradcheck(lambda a, b: edge_dot(a, b, graph), (q, k))
    assert torch.autograd.gradcheck(lambda w, x: edge_aggregate(w, x, graph), (scores, v))


def test_softmax_sums_to_one_per_node_and_isolated_nodes_give_zeros_not_nan():
    N, H = 6, 2
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # nodes 2..5 have no incoming edge
    graph = EdgeGraph(edge_index, N, self_loops=False)
    scores = torch.tensor([[1e4, -3.0], [0.0, 2.0], [-1e4, 0.5]], requires_grad=True)  # huge: max shift
    v = torch.randn(N, H, 3, requires_grad=True)
    out, weights = edge_softmax_attention(scores, v, graph, return_weights=True)
    sums = torch.zeros(N, H).index_add(0, graph.dst, weights)
    assert sums[:2].tolist() == [[1.0, 1.0], [1.0, 1.0]] and (sums[2:] == 0).all()
    assert (out[2:] == 0).all() and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.isfinite(v.grad).all()
    assert (v.grad[3:] == 0).all()  # nodes 3..5 are nobody's source


def test_edge_dropout_is_inverted_dropout():
    w = torch.ones(20000, 4)
    assert edge_dropout(w, 0.0) is w
    dropped = edge_dropout(w, 0.6)
    kept = dropped != 0
    assert dropped[kept].unique().tolist() == pytest.approx([2.5])
    assert abs(kept.float().mean().item() - 0.4) < 0.02
    assert (edge_dropout(w, 1.0) == 0).all()


def test_shape_errors_are_clear():
    graph = EdgeGraph(torch.tensor([[0], [1]]), 3)
    with pytest.raises(ValueError, match="E=4"):
        edge_softmax(torch.zeros(5, 1), graph)
    with pytest.raises(ValueError, match="the graph has 3"):
        edge_dot(torch.zeros(4, 1, 2), torch.zeros(4, 1, 2), graph)
