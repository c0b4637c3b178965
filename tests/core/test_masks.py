import pytest
import torch

from core.masks import (
    adjacency_mask,
    as_mask,
    causal_mask,
    chunked_mask,
    padding_mask,
    sliding_window_mask,
    to_key_padding_mask,
)


def test_padding_mask_masks_only_padded_keys():
    m = padding_mask(torch.tensor([3, 1]), max_len=4).dense()
    assert m.shape == (2, 1, 1, 4)
    assert m[0, 0, 0].tolist() == [True, True, True, False]
    assert m[1, 0, 0].tolist() == [True, False, False, False]


def test_causal_mask_is_lower_triangular():
    assert torch.equal(causal_mask(5).dense(), torch.ones(5, 5, dtype=torch.bool).tril())


def test_sliding_window_mask_matches_band_definition():
    T, left, right = 9, 2, 1
    m = sliding_window_mask(T, left, right).dense()
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    assert torch.equal(m, (j - i >= -left) & (j - i <= right))
    assert m.sum(-1).tolist() == [2, 3, 4, 4, 4, 4, 4, 4, 3]


def test_chunked_mask_sees_own_chunk_left_chunks_and_lookahead():
    m = chunked_mask(8, chunk=2, left_chunks=1, right=1).dense()
    # frame 4 is in chunk 2 (frames 4-5): sees chunk 1 (2-3), chunk 2, and one frame ahead (6)
    assert m[4].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    assert m[5].nonzero().flatten().tolist() == [2, 3, 4, 5, 6]
    # frame 0: no left context exists, sees its chunk and frame 2
    assert m[0].nonzero().flatten().tolist() == [0, 1, 2]
    unlimited = chunked_mask(8, chunk=2, left_chunks=None).dense()
    assert unlimited[7].nonzero().flatten().tolist() == list(range(8))


def test_adjacency_mask_direction_and_self_loops():
    edge_index = torch.tensor([[0, 1], [1, 2]])  # 0 -> 1, 1 -> 2
    m = adjacency_mask(edge_index, 4).dense()
    assert m[1, 0] and m[2, 1] and not m[0, 1] and not m[1, 2]
    assert m.diagonal().all()
    assert not adjacency_mask(edge_index, 4, self_loops=False).dense()[3].any()


def test_masks_combine_with_and():
    m = sliding_window_mask(6, 1, 1) & padding_mask(torch.tensor([6, 3]))
    dense = m.dense()
    assert dense.shape == (2, 1, 6, 6)
    expected = sliding_window_mask(6, 1, 1).dense() & padding_mask(torch.tensor([6, 3])).dense()
    assert torch.equal(dense, expected)
    assert not dense[1, 0, 2, 3]  # key 3 is padding for the second sequence
    assert m.local_span() is not None  # the band still bounds the combination
    combined_with_tensor = causal_mask(3) & torch.tensor([[True, False, True]] * 3)
    assert combined_with_tensor.dense().tolist() == [[True, False, False], [True, False, False], [True, False, True]]


def test_unbounded_masks_have_no_local_span():
    assert causal_mask(10).local_span() is None
    assert chunked_mask(10, 2, None).local_span() is None
    block, left, right = chunked_mask(10, 4, 2, right=3).local_span()
    assert (block, left, right) == (4, 8, 3)


def test_key_padding_conversion_is_the_opposite_convention():
    kpm = to_key_padding_mask(torch.tensor([2, 3]), 3)
    assert kpm.tolist() == [[False, False, True], [False, False, False]]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="negative"):
        adjacency_mask(torch.tensor([[0, -1], [1, 0]]), 3)
    with pytest.raises(ValueError, match="out of range"):
        adjacency_mask(torch.tensor([[0, 5], [1, 0]]), 3)
    with pytest.raises(TypeError, match="integer"):
        adjacency_mask(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 3)
    with pytest.raises(ValueError, match="different sizes"):
        causal_mask(3) & causal_mask(4)
    with pytest.raises(ValueError, match="exceeds max_len"):
        padding_mask(torch.tensor([5]), max_len=3)
    with pytest.raises(TypeError):
        as_mask([[True]])
