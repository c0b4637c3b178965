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


# --- masks that cannot be misread -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.int8])
def test_integer_masks_are_refused_naming_the_dtype(dtype):
    """A 0/1 integer mask added to the scores would shift them by one instead of masking."""
    from core.attention import scaled_dot_product_attention
    from core.multihead import MultiHeadAttention

    mask = torch.ones(4, 4, dtype=dtype).tril()
    with pytest.raises(TypeError, match=rf"dtype {dtype}.*mask\.bool\(\)"):
        as_mask(mask)
    q = torch.randn(1, 2, 4, 3)
    with pytest.raises(TypeError, match=str(dtype)):
        scaled_dot_product_attention(q, q, q, mask)
    with pytest.raises(TypeError, match=str(dtype)):
        MultiHeadAttention(4, 2)(torch.randn(1, 4, 4), mask=mask)
    with pytest.raises(TypeError, match=str(dtype)):
        causal_mask(4) & mask


def test_bool_masks_mask_and_float_masks_are_added():
    from core.attention import scaled_dot_product_attention

    q = torch.randn(1, 1, 3, 2, dtype=torch.float64)
    bool_mask = torch.tensor([[True, False, True]] * 3)
    _, w = scaled_dot_product_attention(q, q, q, bool_mask, return_weights=True)
    assert (w[..., 1] == 0).all()
    bias = torch.tensor([[0.0, 1.0, 0.0]] * 3, dtype=torch.float64)  # a float 0/1 is a bias, not a mask
    _, wb = scaled_dot_product_attention(q, q, q, bias, return_weights=True)
    scores = q @ q.transpose(-2, -1) / 2**0.5 + bias
    assert torch.allclose(wb, scores.softmax(-1)) and (wb[..., 1] > 0).all()
    with pytest.raises(TypeError, match="only boolean masks combine"):
        causal_mask(3) & bias


def test_nan_in_a_float_mask_is_an_error():
    from core.attention import scaled_dot_product_attention

    bias = torch.zeros(3, 3)
    bias[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        as_mask(bias)
    q = torch.randn(1, 1, 3, 2)
    with pytest.raises(ValueError, match="NaN"):
        scaled_dot_product_attention(q, q, q, bias)
    minus_inf = torch.zeros(3, 3).masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
    assert scaled_dot_product_attention(q, q, q, minus_inf).isfinite().all()  # -inf masks, it is fine


@pytest.mark.parametrize("fused", [True, False])
def test_a_mask_whose_batch_does_not_match_is_an_error_not_a_broadcast(fused):
    from core.attention import scaled_dot_product_attention

    q = torch.randn(2, 3, 5, 4)  # (B=2, H=3, T=5, Dh=4)
    run = lambda mask: scaled_dot_product_attention(q, q, q, mask, return_weights=not fused)  # noqa: E731
    with pytest.raises(ValueError, match="batch of 1 but attention has a batch of 2"):
        run(padding_mask(torch.tensor([3]), 5))
    with pytest.raises(ValueError, match="batch of 3 but attention has a batch of 2"):
        run(padding_mask(torch.tensor([3, 5, 2]), 5) & causal_mask(5))
    with pytest.raises(ValueError, match=r"DenseMask\(shape=\(1, 1, 5, 5\)\) is for a batch of 1"):
        run(torch.ones(1, 1, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"dim -4 \(batch\) is 1, must be 2"):
        run(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"dim -3 \(heads H\) is 2, must be 3"):
        run(torch.zeros(2, 2, 5, 5))
    with pytest.raises(ValueError, match="more dims"):
        run(torch.zeros(1, 2, 3, 5, 5))
    with pytest.raises(ValueError, match="without a batch dim"):
        scaled_dot_product_attention(q[0], q[0], q[0], padding_mask(torch.tensor([3]), 5))
    # masks without a batch dim are shared by the whole batch, as are head-only ones
    shared = torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) > 0.3
    shared[:, 0] = True
    out = lambda mask: run(mask) if fused else run(mask)[0]  # noqa: E731
    assert torch.allclose(out(shared), out(shared.expand(2, 3, 5, 5).clone()))
    run(torch.zeros(3, 5, 5))
    run(torch.zeros(2, 1, 5, 5))
    run(padding_mask(torch.tensor([3, 5]), 5) & causal_mask(5))


def test_masks_of_different_batch_sizes_do_not_combine():
    with pytest.raises(ValueError, match=r"different batch sizes \[2, 3\]"):
        padding_mask(torch.tensor([1, 2])) & padding_mask(torch.tensor([1, 2, 2]), 2)


@pytest.mark.parametrize("build, message", [
    (lambda: adjacency_mask(torch.zeros(2, 0, dtype=torch.long), -1), "num_nodes must be a non-negative integer"),
    (lambda: adjacency_mask(torch.tensor([[0], [1]]), 2.5), "num_nodes"),
    (lambda: causal_mask(-1), "T must be a non-negative integer"),
    (lambda: sliding_window_mask(5, -1, 2), "left must be"),
    (lambda: sliding_window_mask(5, 1, -2), "right must be"),
    (lambda: sliding_window_mask(5, 1.5, 2), "left must be"),
    (lambda: chunked_mask(5, 0, 1), "chunk must be >= 1"),
    (lambda: chunked_mask(5, 2, -1), "left_chunks must be"),
    (lambda: chunked_mask(5, 2, 1, right=-1), "right must be"),
    (lambda: padding_mask(torch.tensor([0, 0]), max_len=-1), "max_len must be"),
    (lambda: padding_mask(torch.tensor([2, -1])), "lengths must be >= 0"),
])
def test_mask_constructors_validate_their_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_softmax_attention_refuses_what_scaled_dot_product_attention_refuses():
    from core.attention import softmax_attention

    scores, v = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 5, 6)  # (B, H, T, S), (B, H, S, Dv)
    with pytest.raises(TypeError, match="torch.int64"):
        softmax_attention(scores, v, torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="batch of 1 but attention has a batch of 2"):
        softmax_attention(scores, v, padding_mask(torch.tensor([3]), 5))
    with pytest.raises(ValueError, match=r"dim -4 \(batch\) is 1, must be 2"):
        softmax_attention(scores, v, torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        softmax_attention(scores, v, torch.full((4, 5), float("nan")))
    # (B, T, S) scores (additive attention, no heads) take a padding mask of their batch, and no other
    scores3, v3 = torch.randn(2, 4, 5), torch.randn(2, 5, 6)
    assert softmax_attention(scores3, v3, padding_mask(torch.tensor([3, 5]), 5)).shape == (2, 4, 6)
    with pytest.raises(ValueError, match="batch of 3 but attention has a batch of 2"):
        softmax_attention(scores3, v3, padding_mask(torch.tensor([3, 5, 1]), 5))


def test_valid_positions_marks_real_positions_and_keeps_the_device():
    from core.masks import valid_positions

    lengths = torch.tensor([3, 1, 4])
    got = valid_positions(lengths, 5)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    assert got.dtype == torch.bool and torch.equal(got, expected)
    assert valid_positions(lengths).shape == (3, 4)  # default length: the longest
