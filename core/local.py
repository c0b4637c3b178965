"""Local attention in O(T·w): sliding windows, chunks and 2-D windows without the T×T matrix.

The queries are cut into blocks of `block` positions. Under a band or chunked mask the queries of block n
can only reach keys `n*block - left .. (n+1)*block - 1 + right`, a span of `W = block + left + right`
keys, so each block attends to its own W-key slice (an `unfold` view of the padded keys) and the exact
mask is applied inside the slice. Time and memory are O(T·W) instead of O(T·S); autograd provides the
backward pass, so it trains on the CPU (FlexAttention has no CPU backward).

`local_attention_2d` does the same on an image whose pixels are the tokens: the queries are cut into
`tile × tile` squares, and under a 2-D window of radius r each square reaches only the
`(tile + 2r) × (tile + 2r)` square of keys around it, gathered by row index.

Legend: B batch, H heads, T length, Dh head dim, Dv value dim, n blocks, b block size, W keys per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from core.attention import PositionBias, fused_attention
from core.masks import Mask, check_mask

__all__ = ["local_attention", "local_attention_2d", "tile_for_radius"]


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Mask,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    position_bias: PositionBias | None = None,
    q_offset: int = 0,
    k_offset: int = 0,
    span: tuple[int, int, int] | None = None,
) -> Tensor:
    """Blocked attention under a mask with bounded reach (`mask.local_span()` is not None).

    Equals `core.attention.scaled_dot_product_attention(q, k, v, mask)` to rounding error.

    Args:
        q, k, v (Tensor): `(B, H, T, Dh)`, `(B, H, T, Dh)`, `(B, H, T, Dv)`; self-attention lengths.
        mask (Mask): a band or chunked mask, optionally combined with padding or any other mask.
        scale (float, optional): score scale. (default: 1/√Dh)
        dropout (float, optional): dropout on the attention weights. (default: 0.0)
        position_bias (callable, optional): additive bias from absolute positions. (default: None)
        q_offset, k_offset (int): absolute position of the first query / key. (default: 0)
        span (tuple, optional): `(block, left, right)`; defaults to `mask.local_span()`.

    Returns:
        `(B, H, T, Dv)`.
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"local attention needs a core.masks.Mask with bounded reach, got {type(mask).__name__}")
    span = mask.local_span() if span is None else span
    if span is None:
        raise ValueError(f"{mask!r} has unbounded reach; local attention needs a window or chunked mask")
    *lead, T, Dh = q.shape
    S = k.shape[-2]
    if S != T or k.shape[:-2] != q.shape[:-2] or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"local attention is self-attention with q, k, v (..., T, D) of one length and batch; got q "
            f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    check_mask(mask, (*q.shape[:-1], S))
    block, left, right = span
    if block < 1 or left < 0 or right < 0:
        raise ValueError(f"span (block, left, right) needs block >= 1 and left, right >= 0, got {span}")
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    n = -(-T // block)
    W = block + left + right

    qb = F.pad(q, (0, 0, 0, n * block - T)).unflatten(-2, (n, block))  # (B, H, n, b, Dh)
    pad = (0, 0, left, n * block - T + right)
    # A contiguous copy of the overlapping windows (3x the keys at most) keeps every matmul, forward and
    # backward, on plain strided memory; on the overlapping view the CPU bmm backward is several times slower.
    kb = F.pad(k, pad).unfold(-2, W, block).transpose(-2, -1).contiguous()  # (B, H, n, W, Dh)
    vb = F.pad(v, pad).unfold(-2, W, block).transpose(-2, -1).contiguous()  # (B, H, n, W, Dv)

    q_idx = torch.arange(n * block, device=q.device).view(n, block, 1)  # (n, b, 1)
    k_start = torch.arange(n, device=q.device) * block - left
    k_idx = k_start.view(n, 1, 1) + torch.arange(W, device=q.device)  # (n, 1, W)
    in_range = (k_idx >= 0) & (k_idx < T)
    allowed = mask.allows(q_idx.clamp(max=T - 1), k_idx.clamp(0, T - 1)) & in_range  # (n, b, W) or (B, 1, n, b, W)
    additive = None
    if position_bias is not None:
        additive = position_bias(q_idx + q_offset, k_idx + k_offset).to(q.dtype)  # (H, n, b, W)

    out = _attend_blocks(qb, kb, vb, allowed, additive, dropout=dropout, scale=scale)  # (B, H, n, b, Dv)
    return out.flatten(-3, -2)[..., :T, :]  # (B, H, T, Dv)


def _attend_blocks(qb: Tensor, kb: Tensor, vb: Tensor, allowed: Tensor, additive: Tensor | None, *,
                   dropout: float, scale: float) -> Tensor:
    """Attention inside each block: qb `(B, H, n, b, Dh)` against its own keys kb/vb `(B, H, n, W, ·)`,
    under `allowed` `(n, b, W)` or `(B, 1, n, b, W)` and an additive `(H, n, b, W)` -> `(B, H, n, b, Dv)`.

    The fused (flash) CPU kernel takes only 4-D inputs and 2-D or 4-D masks; anything else silently falls
    back to the unfused math path. So batch and heads are folded into one dim and the blocks act as "heads".
    """
    lead_shape = qb.shape[:-3]

    def fold(x: Tensor) -> Tensor:
        if x.dim() == 3:
            return x.unsqueeze(0)  # (1, n, b, W): broadcast over batch and heads
        return x.expand(*lead_shape, *x.shape[-3:]).flatten(0, -4)  # (B*H, n, ., .)

    out = fused_attention(fold(qb), fold(kb), fold(vb), fold(allowed), None if additive is None else fold(additive),
                          dropout=dropout, scale=scale)  # (B*H, n, b, Dv)
    return out.unflatten(0, lead_shape)


def tile_for_radius(radius_y: int, radius_x: int) -> int:
    """Side of the query tiles for a 2-D window: about twice the radius, so that a tile's keys
    `(tile + 2r)²` are at most ~4x its queries, and at least 8 so the matmuls stay efficient."""
    return max(8, 2 * max(radius_y, radius_x))


def local_attention_2d(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Mask,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    position_bias: PositionBias | None = None,
    tile: int | None = None,
) -> Tensor:
    """Blocked attention under a 2-D window (`mask.window_2d()` is not None): only the scores inside each
    query tile's neighbourhood are computed.

    Equals `core.attention.scaled_dot_product_attention(q, k, v, mask)` to rounding error.

    Args:
        q, k, v (Tensor): `(B, H, T, Dh)`, `(B, H, T, Dh)`, `(B, H, T, Dv)` with `T = height · width`, the
            pixels of the mask's grid, row-major.
        mask (Mask): a `core.masks.Window2dMask`, optionally combined with any other mask (e.g. padding).
        scale (float, optional): score scale. (default: 1/√Dh)
        dropout (float, optional): dropout on the attention weights. (default: 0.0)
        position_bias (callable, optional): additive bias from flat pixel indices, e.g.
            `core.positional.RelativePositionBias2d`. (default: None)
        tile (int, optional): side of the query tiles. (default: `tile_for_radius`)

    Returns:
        `(B, H, T, Dv)`.
    """
    if not isinstance(mask, Mask) or mask.window_2d() is None:
        raise TypeError(f"2-D local attention needs a core.masks.Mask with a 2-D window, got {mask!r}")
    height, width, ry, rx = mask.window_2d()
    *lead, T, Dh = q.shape
    if T != height * width or k.shape[:-1] != q.shape[:-1] or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"2-D local attention is self-attention over the {height}x{width} grid's {height * width} pixels; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    check_mask(mask, (*q.shape[:-1], T))
    t = tile_for_radius(ry, rx) if tile is None else tile
    if t < 1:
        raise ValueError(f"tile must be >= 1, got {t}")
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    ny, nx = -(-height // t), -(-width // t)
    Ry, Rx = t + 2 * ry, t + 2 * rx  # the key square of a tile

    def grid(x: Tensor) -> Tensor:
        return x.unflatten(-2, (height, width))  # (B, H, height, width, D)

    # queries: (B, H, ny*t, nx*t, Dh) -> (B, H, ny, nx, t, t, Dh) -> (B, H, n, t*t, Dh)
    qg = F.pad(grid(q), (0, 0, 0, nx * t - width, 0, ny * t - height))
    qb = qg.unflatten(-3, (ny, t)).unflatten(-2, (nx, t)).transpose(-4, -3).flatten(-5, -4).flatten(-3, -2)

    device = q.device
    ty = torch.arange(ny, device=device).view(ny, 1, 1, 1) * t  # top row of each tile
    tx = torch.arange(nx, device=device).view(1, nx, 1, 1) * t
    qy = (ty + torch.arange(t, device=device).view(1, 1, t, 1)).expand(ny, nx, t, t).reshape(ny * nx, t * t, 1)
    qx = (tx + torch.arange(t, device=device).view(1, 1, 1, t)).expand(ny, nx, t, t).reshape(ny * nx, t * t, 1)
    ky = (ty - ry + torch.arange(Ry, device=device).view(1, 1, Ry, 1)).expand(ny, nx, Ry, Rx).reshape(ny * nx, 1, Ry * Rx)
    kx = (tx - rx + torch.arange(Rx, device=device).view(1, 1, 1, Rx)).expand(ny, nx, Ry, Rx).reshape(ny * nx, 1, Ry * Rx)
    in_image = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)  # (n, 1, Ry*Rx)
    q_idx = qy.clamp(max=height - 1) * width + qx.clamp(max=width - 1)  # padded queries read a real pixel
    k_idx = ky.clamp(0, height - 1) * width + kx.clamp(0, width - 1)
    allowed = mask.allows(q_idx, k_idx) & in_image  # (n, t*t, Ry*Rx) or (B, 1, n, t*t, Ry*Rx)
    # Each tile's key square, gathered by row index (a key off the image reads a clamped real pixel, which
    # `allowed` masks); the backward is one index_add. (An overlapping unfold gathers the same squares, but
    # its CPU backward is several times slower.)
    rows = k_idx.expand(ny * nx, 1, Ry * Rx).flatten()  # (n * Ry*Rx,)

    def neighbourhoods(x: Tensor) -> Tensor:  # (B, H, T, D) -> (B, H, n, Ry*Rx, D)
        return x.index_select(-2, rows).unflatten(-2, (ny * nx, Ry * Rx))

    kb, vb = neighbourhoods(k), neighbourhoods(v)
    additive = None
    if position_bias is not None:
        additive = position_bias(q_idx, k_idx).to(q.dtype)  # (H, n, t*t, Ry*Rx)

    out = _attend_blocks(qb, kb, vb, allowed, additive, dropout=dropout, scale=scale)  # (B, H, n, t*t, Dv)
    out = out.unflatten(-3, (ny, nx)).unflatten(-2, (t, t))  # (B, H, ny, nx, t, t, Dv)
    out = out.transpose(-4, -3).flatten(-5, -4).flatten(-3, -2)  # (B, H, ny*t, nx*t, Dv)
    return out[..., :height, :width, :].flatten(-3, -2)  # (B, H, T, Dv)
