"""Local attention in O(T·w): sliding windows and chunks without the T×T matrix.

The queries are cut into blocks of `block` positions. Under a band or chunked mask the queries of block n
can only reach keys `n*block - left .. (n+1)*block - 1 + right`, a span of `W = block + left + right`
keys, so each block attends to its own W-key slice (an `unfold` view of the padded keys) and the exact
mask is applied inside the slice. Time and memory are O(T·W) instead of O(T·S); autograd provides the
backward pass, so it trains on the CPU (FlexAttention has no CPU backward).

Legend: B batch, H heads, T length, Dh head dim, Dv value dim, n blocks, b block size, W keys per block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from core.attention import PositionBias, fused_attention
from core.masks import Mask, check_mask

__all__ = ["local_attention"]


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

    # The fused (flash) CPU kernel takes only 4-D inputs and 2-D or 4-D masks; anything else silently
    # falls back to the unfused math path. Fold batch and heads into one dim, blocks act as "heads".
    lead_shape = qb.shape[:-3]

    def fold(x: Tensor) -> Tensor:
        if x.dim() == 3:
            return x.unsqueeze(0)  # (1, n, b, W): broadcast over batch and heads
        return x.expand(*lead_shape, *x.shape[-3:]).flatten(0, -4)  # (B*H, n, ., .)

    out = fused_attention(
        fold(qb), fold(kb), fold(vb), fold(allowed), None if additive is None else fold(additive),
        dropout=dropout, scale=scale,
    )  # (B*H, n, b, Dv)
    return out.unflatten(0, lead_shape).flatten(-3, -2)[..., :T, :]  # (B, H, T, Dv)
