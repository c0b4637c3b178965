"""graph/layers.py: our graph attention against PyG's GATConv and TransformerConv, dense against sparse,
and the bad inputs."""

import pytest
import torch
from torch_geometric.nn import GATConv, TransformerConv
from torch_geometric.utils import coalesce, remove_self_loops

from core.capture import capture_attention
from core.masks import adjacency_mask
from core.sparse import EdgeGraph
from graph.layers import DenseGraphTooLarge, GraphAttention, feature_dropout, prepare_graph

torch.set_default_dtype(torch.float32)


def _edges(N, E, seed=0, isolated=()):
    """Random directed edges without self-loops or duplicates; `isolated` nodes touch none."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, N, (2, E), generator=g)
    if isolated:
        gone = torch.tensor(list(isolated))
        edge_index = edge_index[:, ~(torch.isin(edge_index[0], gone) | torch.isin(edge_index[1], gone))]
    return coalesce(remove_self_loops(edge_index)[0], num_nodes=N)


def _x(N, D, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("heads, concat", [(3, True), (1, False), (4, False)])
def test_additive_layer_equals_pyg_gatconv(heads, concat):
    N, D, C = 20, 6, 5
    edge_index = _edges(N, 60)
    ours = GraphAttention(D, C, heads, scoring="additive", concat=concat, negative_slope=0.2).double().eval()
    peer = GATConv(D, C, heads=heads, concat=concat, negative_slope=0.2).double().eval()
    with torch.no_grad():
        peer.lin.weight.copy_(ours.lin.weight)
        peer.att_src.copy_(ours.att_src.unsqueeze(0))
        peer.att_dst.copy_(ours.att_dst.unsqueeze(0))
        ours.bias.normal_()
        peer.bias.copy_(ours.bias)
    x = _x(N, D)
    out, weights = ours(x, EdgeGraph(edge_index, N), return_weights=True)
    expected, (peer_edges, peer_weights) = peer(x, edge_index, return_attention_weights=True)
    torch.testing.assert_close(out, expected)
    # Same weights per edge, whatever order each keeps its edges in.
    graph = EdgeGraph(edge_index, N)
    ours_by_edge = dict(zip(map(tuple, graph.edge_index.t().tolist()), weights.tolist()))
    for edge, w in zip(map(tuple, peer_edges.t().tolist()), peer_weights.tolist()):
        assert ours_by_edge[edge] == pytest.approx(w, abs=1e-10)
    grad = torch.randn_like(out)
    (ours_grad,) = torch.autograd.grad(out, x, grad)
    (peer_grad,) = torch.autograd.grad(expected, x, grad)
    torch.testing.assert_close(ours_grad, peer_grad)


@pytest.mark.parametrize("heads", [1, 2])
def test_dot_product_layer_equals_pyg_transformerconv(heads):
    N, D, C = 18, 7, 4
    edge_index = _edges(N, 50, seed=2)
    ours = GraphAttention(D, C, heads, scoring="dot", root_weight=False).double().eval()
    peer = TransformerConv(D, C, heads=heads, root_weight=False).double().eval()
    with torch.no_grad():
        for name in ("query", "key", "value"):
            getattr(peer, f"lin_{name}").weight.copy_(getattr(ours, f"lin_{name}").weight)
            getattr(peer, f"lin_{name}").bias.copy_(torch.randn(heads * C))
            getattr(ours, f"lin_{name}").bias.copy_(getattr(peer, f"lin_{name}").bias)
    x = _x(N, D, seed=3)
    # TransformerConv attends exactly the given edges (no self-loops), so ours is told the same.
    out = ours(x, EdgeGraph(edge_index, N, self_loops=False))
    torch.testing.assert_close(out, peer(x, edge_index))


@pytest.mark.parametrize("scoring", ["additive", "dot"])
@pytest.mark.parametrize("concat, root_weight", [(True, False), (False, True)])
def test_dense_equals_sparse_forward_and_backward(scoring, concat, root_weight):
    N, D, C, H = 16, 5, 3, 2
    edge_index = _edges(N, 40, seed=4, isolated=(15,))
    layer = GraphAttention(D, C, H, scoring=scoring, concat=concat, root_weight=root_weight).double().eval()
    x = _x(N, D, seed=5)
    sparse, edge_weights = layer(x, EdgeGraph(edge_index, N), return_weights=True)
    dense, matrix = layer(x, adjacency_mask(edge_index, N), return_weights=True)
    assert (sparse - dense).abs().max() < 1e-5
    graph = EdgeGraph(edge_index, N)
    torch.testing.assert_close(edge_weights, matrix[:, graph.dst, graph.src].t())
    assert (matrix[:, ~adjacency_mask(edge_index, N).dense()] == 0).all()  # the mask really masks
    grad = torch.randn_like(sparse)
    sparse_grads = torch.autograd.grad(sparse, [x, *layer.parameters()], grad)
    dense_grads = torch.autograd.grad(dense, [x, *layer.parameters()], grad)
    for a, b in zip(sparse_grads, dense_grads):
        assert (a - b).abs().max() < 1e-5


def test_batched_dense_input():
    N, D = 9, 4
    edge_index = _edges(N, 20, seed=6)
    layer = GraphAttention(D, 3, 2).eval()
    x = torch.randn(3, N, D)
    out = layer(x, adjacency_mask(edge_index, N))
    assert out.shape == (3, N, 6)
    torch.testing.assert_close(out[1], layer(x[1], EdgeGraph(edge_index, N)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scoring", ["additive", "dot"])
def test_isolated_nodes_give_zeros_not_nan_and_every_parameter_learns(scoring):
    N, D = 10, 4
    edge_index = _edges(N, 25, seed=7, isolated=(8, 9))
    layer = GraphAttention(D, 3, 2, scoring=scoring, dropout=0.3, bias=False)
    x = torch.randn(N, D)
    for graph in (EdgeGraph(edge_index, N, self_loops=False), adjacency_mask(edge_index, N, self_loops=False)):
        layer.zero_grad()
        out = layer(x, graph)
        assert torch.isfinite(out).all() and (out[8:] == 0).all()
        out.square().sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), "integer"),
    (torch.tensor([[0, -3], [1, 2]]), "negative"),
    (torch.tensor([[0, 1], [1, 7]]), "out of range"),
])
@pytest.mark.parametrize("dense_max_nodes", [0, 100])  # sparse and dense structures
def test_bad_edge_index_is_a_clear_error(bad, message, dense_max_nodes):
    with pytest.raises((TypeError, ValueError), match=message):
        prepare_graph(bad, 4, dense_max_nodes=dense_max_nodes)


def test_prepare_graph_switches_to_sparse_above_the_threshold():
    edge_index = _edges(30, 60, seed=8)
    assert isinstance(prepare_graph(edge_index, 30, dense_max_nodes=30), type(adjacency_mask(edge_index, 30)))
    assert isinstance(prepare_graph(edge_index, 30, dense_max_nodes=29), EdgeGraph)


def test_dense_path_refuses_what_would_not_fit():
    N = 300
    layer = GraphAttention(4, 2, 4, dense_max_bytes=1_000_000)
    with pytest.raises(DenseGraphTooLarge, match="sparse path"):
        layer(torch.randn(N, 4), adjacency_mask(_edges(N, 10), N))
    assert layer(torch.randn(N, 4), EdgeGraph(_edges(N, 10), N)).shape == (N, 8)


def test_wrong_graph_type_and_wrong_node_count():
    layer = GraphAttention(4, 2)
    with pytest.raises(TypeError, match="EdgeGraph"):
        layer(torch.randn(5, 4), torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="N=5"):
        layer(torch.randn(6, 4), EdgeGraph(torch.tensor([[0, 1], [1, 0]]), 5))


def test_sparse_csr_features_equal_dense_and_capture_records_edge_weights():
    N, D = 12, 30
    x = torch.rand(N, D) * (torch.rand(N, D) < 0.1)
    graph = EdgeGraph(_edges(N, 30, seed=9), N)
    layer = GraphAttention(D, 4, 2).eval()
    with capture_attention(layer) as maps:
        out = layer(x.to_sparse_csr(), graph)
    torch.testing.assert_close(out, layer(x, graph))
    assert len(maps) == 1 and maps[0].weights.shape == (graph.num_edges, 2)


def test_feature_dropout_on_sparse_features_drops_stored_entries_only():
    x = (torch.rand(50, 40) < 0.2).float()
    dropped = feature_dropout(x.to_sparse_csr(), 0.5, training=True).to_dense()
    assert ((dropped != 0) <= (x != 0)).all()
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert feature_dropout(x, 0.5, training=False) is x
