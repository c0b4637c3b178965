"""2-D windows: the blocked path (`core.local.local_attention_2d`) against the dense masked attention."""

import pytest
import torch

import core.local
from core.attention import scaled_dot_product_attention
from core.local import local_attention_2d
from core.masks import Window2dMask, padding_mask, window2d_mask
from core.positional import RelativePositionBias2d


def _qkv(T, B=2, H=3, D=5, Dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, T, D), (B, H, T, D), (B, H, T, Dv)]
    return [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


# Grids that are not multiples of the tile, rectangular windows (a y/x swap shows), tiles smaller than
# the radius, a window wider than the image.
CASES = [
    (5, 7, 3, None), (9, 6, 5, 4), (10, 13, (3, 5), None), (11, 8, (5, 1), 3), (3, 3, 7, 2), (17, 20, 5, None),
]


@pytest.mark.parametrize("height, width, size, tile", CASES)
def test_2d_window_equals_the_dense_mask_with_a_random_bias_forward_and_backward(height, width, size, tile):
    T = height * width
    q, k, v = _qkv(T)
    mask = window2d_mask(height, width, size)
    bias = RelativePositionBias2d(3, max_distance=3, width=width).double()
    with torch.no_grad():
        bias.bias.copy_(torch.randn(bias.bias.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    dense = scaled_dot_product_attention(q, k, v, mask.dense(), position_bias=bias)
    local = local_attention_2d(q, k, v, mask, position_bias=bias, tile=tile)
    assert (local - dense).abs().max() < 1e-10
    w = torch.randn(dense.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads_dense = torch.autograd.grad((dense * w).sum(), (q, k, v, bias.bias))
    grads_local = torch.autograd.grad((local * w).sum(), (q, k, v, bias.bias))
    for a, b in zip(grads_dense, grads_local):
        assert (a - b).abs().max() < 1e-10
    assert grads_local[-1].abs().sum() > 0


def test_2d_window_with_padding_equals_dense():
    """Combined with a per-image key mask (here a padding mask), the other part is applied inside each tile."""
    height, width = 9, 10
    mask = window2d_mask(height, width, 5) & padding_mask(torch.tensor([90, 37]))
    q, k, v = _qkv(height * width)
    dense = scaled_dot_product_attention(q, k, v, mask.dense())
    local = local_attention_2d(q, k, v, mask, tile=4)
    assert (local - dense).abs().max() < 1e-10


def test_the_dispatcher_takes_the_2d_path_on_a_large_image_and_it_agrees(monkeypatch):
    height = width = 32
    mask = window2d_mask(height, width, 5)
    q, k, v = _qkv(height * width, B=1, H=2, D=4, Dv=4)
    calls = []
    real = core.local.local_attention_2d
    monkeypatch.setattr(core.local, "local_attention_2d", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    fast = scaled_dot_product_attention(q, k, v, mask)
    assert calls == [1]
    explicit, _ = scaled_dot_product_attention(q, k, v, mask, return_weights=True)  # the textbook path
    assert (fast - explicit).abs().max() < 1e-10


def test_the_dispatcher_stays_dense_when_the_window_covers_much_of_a_small_image(monkeypatch):
    calls = []
    monkeypatch.setattr(core.local, "local_attention_2d", lambda *a, **kw: calls.append(1))
    q, k, v = _qkv(64, B=1)
    scaled_dot_product_attention(q, k, v, window2d_mask(8, 8, 3))
    assert calls == []


def test_window_mask_rule_and_bad_sizes():
    mask = Window2dMask(4, 5, radius_y=1, radius_x=2)
    allowed = mask.dense()
    assert allowed.shape == (20, 20)
    # pixel (1, 1) = token 6 reaches rows 0..2, columns 0..3
    reach = allowed[6].view(4, 5)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0:3, 0:4] = True
    assert torch.equal(reach, expected)
    with pytest.raises(ValueError, match="odd"):
        window2d_mask(8, 8, 4)
    with pytest.raises(ValueError, match="grid"):
        local_attention_2d(*_qkv(63), window2d_mask(8, 8, 3))
    with pytest.raises(ValueError, match="different grids"):
        (window2d_mask(8, 8, 3) & window2d_mask(4, 16, 3)).window_2d()
