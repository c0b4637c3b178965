"""A convolution is a special case of self-attention (Cordonnier, Loukas & Jaggi, ICLR 2020).

A K×K convolution computes, at every pixel, ``sum over offsets Δ of W[Δ] · x[pixel + Δ]``: a fixed
weighting of a fixed neighbourhood. Multi-head self-attention with K² heads computes
``W_out · concat_h(sum_j a_h(pixel, j) · W_v x[j])``. If head h puts all its attention on the one pixel at
offset Δ_h, whatever the content, the sum over j picks out ``x[pixel + Δ_h]``, and choosing the output
projection's block for head h to be ``W[Δ_h]`` makes the two computations identical.

Attention that ignores content and depends on the offset alone is what a relative position bias gives:
here ``core.positional.RelativePositionBias2d`` holds, for head h, Cordonnier's quadratic encoding
``-sharpness · ‖δ - Δ_h‖²`` over offsets δ, with the query and key projections zero. With a large
``sharpness`` the softmax is one-hot in float64 (``exp(-sharpness)`` underflows), so the match is exact to
rounding. The convolution's zero padding is the image padded with zero pixels: attention runs on the
padded grid, padded pixels have zero values, and only the original pixels are read out as queries.

Legend: B batch, C channels (Cin, Cout), H/W image height/width, K kernel side, T pixels of the padded
grid, D attention model dim, Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.multihead import MultiHeadAttention
from core.positional import RelativePositionBias2d

# exp(-1000) is 0 in float32 and float64: every head's softmax is exactly one-hot.
DEFAULT_SHARPNESS = 1000.0


class ConvAsAttention(nn.Module):
    """Multi-head self-attention with K² heads that computes a given K×K convolution.

    Build it with ``conv_as_attention(conv, height, width)``.

    Args:
        in_channels (int): Cin.
        out_channels (int): Cout.
        kernel_size (int): K (odd).
        height, width (int): the image size it runs on (the relative bias is laid out on that grid).

    Shapes:
        images (B, Cin, H, W) -> (B, Cout, H, W); with ``return_weights``, also (B, K², T, T).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, height: int, width: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.height, self.width = height, width
        self.pad = kernel_size // 2
        num_heads = kernel_size * kernel_size
        # Each head must carry all Cin channels of its pixel, and D must hold Cout output channels.
        head_dim = max(in_channels, -(-out_channels // num_heads))
        self.attention = MultiHeadAttention(num_heads * head_dim, num_heads, kdim=in_channels, vdim=in_channels)
        # Offsets beyond ±(pad + 1) are clipped to an edge that is still at distance >= 1 from every Δ_h.
        self.position_bias = RelativePositionBias2d(num_heads, self.pad + 1, width + 2 * self.pad)

    def head_offsets(self) -> list[tuple[int, int]]:
        """Δ_h = (dy, dx) of head h, row-major over the kernel: head h reads kernel tap h."""
        K, p = self.kernel_size, self.pad
        return [(ky - p, kx - p) for ky in range(K) for kx in range(K)]

    def forward(self, images: Tensor, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        B, C, H, W = images.shape
        if (C, H, W) != (self.in_channels, self.height, self.width):
            raise ValueError(f"built for ({self.in_channels}, {self.height}, {self.width}) images, got {(C, H, W)}")
        p = self.pad
        padded = F.pad(images, (p, p, p, p))  # (B, Cin, H+2p, W+2p): the convolution's zero padding
        tokens = padded.flatten(2).transpose(1, 2)  # (B, T, Cin), T = (H+2p)(W+2p)
        # Queries carry no content: where each head looks is decided by the position bias alone.
        queries = tokens.new_zeros(B, tokens.shape[1], self.attention.dim)  # (B, T, D)
        result = self.attention(queries, tokens, tokens, position_bias=self.position_bias,
                                return_weights=return_weights)
        out, weights = result if return_weights else (result, None)
        out = out[..., : self.out_channels].transpose(1, 2)  # (B, Cout, T)
        out = out.view(B, self.out_channels, H + 2 * p, W + 2 * p)[:, :, p : p + H, p : p + W]
        return (out, weights) if return_weights else out


@torch.no_grad()
def conv_as_attention(conv: nn.Conv2d, height: int, width: int,
                      sharpness: float = DEFAULT_SHARPNESS) -> ConvAsAttention:
    """Build the self-attention layer that reproduces ``conv`` ('same' zero padding) on H×W images.

    Args:
        conv (nn.Conv2d): a square, odd, stride-1, undilated, ungrouped convolution with
            ``padding = kernel_size // 2`` and zero padding mode.
        height, width (int): image size.
        sharpness (float): α of the quadratic position encoding ``-α‖δ - Δ_h‖²``; large means each
            head attends to exactly one offset. (default: 1000.0)

    Returns:
        ConvAsAttention with the dtype and device of ``conv``.
    """
    K = conv.kernel_size[0]
    if (conv.kernel_size != (K, K) or K % 2 != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1)
            or conv.groups != 1 or conv.padding != (K // 2, K // 2) or conv.padding_mode != "zeros"):
        raise ValueError(
            "conv_as_attention needs a square odd kernel, stride 1, dilation 1, groups 1 and 'same' zero "
            f"padding; got {conv}"
        )
    weight = conv.weight  # (Cout, Cin, K, K)
    layer = ConvAsAttention(conv.in_channels, conv.out_channels, K, height, width).to(weight.device, weight.dtype)
    mha, Cin, Cout = layer.attention, conv.in_channels, conv.out_channels
    Dh = mha.head_dim

    for w in mha._projection_weights():
        w.zero_()
    mha.in_proj_bias.zero_()
    mha.out_proj.weight.zero_()
    mha.out_proj.bias.zero_()
    for h, (dy, dx) in enumerate(layer.head_offsets()):
        # Head h's value is its pixel's Cin channels unchanged ...
        mha.v_proj_weight[h * Dh : h * Dh + Cin] = torch.eye(Cin, dtype=weight.dtype)
        # ... and the output projection applies the kernel tap of offset (dy, dx) to it.
        mha.out_proj.weight[:Cout, h * Dh : h * Dh + Cin] = weight[:, :, dy + layer.pad, dx + layer.pad]
    if conv.bias is not None:
        mha.out_proj.bias[:Cout] = conv.bias

    # Cordonnier's quadratic encoding: bias_h(δ) = -α‖δ - Δ_h‖², peaked at Δ_h.
    bias = layer.position_bias
    m = bias.max_distance
    span = torch.arange(-m, m + 1, dtype=weight.dtype, device=weight.device)
    dy_grid, dx_grid = torch.meshgrid(span, span, indexing="ij")  # (2m+1, 2m+1), the table's row-major order
    for h, (dy, dx) in enumerate(layer.head_offsets()):
        bias.bias[:, h] = (-sharpness * ((dy_grid - dy) ** 2 + (dx_grid - dx) ** 2)).flatten()
    return layer


def conv_check(kernel_size: int = 3, in_channels: int = 3, out_channels: int = 8, image_size: int = 16) -> dict:
    """Rebuild a random ``kernel_size``² convolution (seed 0) as self-attention and compare outputs on 4
    random images in float64: the report of ``python -m vision conv-check``, with ``max_abs_error``."""
    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2).double()
    layer = conv_as_attention(conv, image_size, image_size)
    images = torch.randn(4, in_channels, image_size, image_size, dtype=torch.float64)  # (B, Cin, H, W)
    with torch.no_grad():
        error = float((layer(images) - conv(images)).abs().max())
    return {"kernel_size": kernel_size, "in_channels": in_channels, "out_channels": out_channels,
            "image_size": image_size, "heads": kernel_size**2, "dtype": "float64", "max_abs_error": error}
