import pytest
import torch
from torch import nn

from vision.conv_as_attention import conv_as_attention


@pytest.mark.parametrize(
    "in_channels, out_channels, kernel_size, height, width, bias",
    [(3, 8, 3, 8, 8, True), (2, 5, 5, 7, 9, True), (4, 2, 3, 6, 5, False), (1, 12, 1, 4, 4, True)],
)
def test_matches_conv2d_in_float64(in_channels, out_channels, kernel_size, height, width, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias).double()
    layer = conv_as_attention(conv, height, width)
    images = torch.randn(3, in_channels, height, width, dtype=torch.float64)
    with torch.no_grad():
        expected, got = conv(images), layer(images)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5
    assert (got - expected).abs().max() <= 1e-12  # float64: exact up to rounding


def test_matches_conv2d_in_float32():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    layer = conv_as_attention(conv, 10, 10)
    images = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert (layer(images) - conv(images)).abs().max() <= 1e-5


def test_each_head_attends_to_exactly_its_offset():
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    layer = conv_as_attention(conv, 5, 6)
    images = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        _, weights = layer(images, return_weights=True)  # (1, 9, T, T) on the 7x8 padded grid
    padded_width = 6 + 2
    assert weights.shape == (1, 9, 7 * 8, 7 * 8)
    for h, (dy, dx) in enumerate(layer.head_offsets()):
        for row, col in [(1, 1), (3, 4), (5, 6)]:  # original pixels, corners included
            query = row * padded_width + col
            target = (row + dy) * padded_width + (col + dx)
            assert weights[0, h, query, target] == pytest.approx(1.0, abs=1e-12)
            assert weights[0, h, query].sum() == pytest.approx(1.0, abs=1e-12)


def test_gradients_flow_like_the_convolution():
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    layer = conv_as_attention(conv, 4, 4)
    images = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (grad_conv,) = torch.autograd.grad(conv(images).square().sum(), images)
    (grad_attention,) = torch.autograd.grad(layer(images).square().sum(), images)
    assert torch.allclose(grad_conv, grad_attention, atol=1e-10)


def test_rejects_convolutions_it_cannot_express():
    with pytest.raises(ValueError, match="stride 1"):
        conv_as_attention(nn.Conv2d(3, 3, 3, stride=2, padding=1), 8, 8)
    with pytest.raises(ValueError, match="odd kernel"):
        conv_as_attention(nn.Conv2d(3, 3, 2), 8, 8)
