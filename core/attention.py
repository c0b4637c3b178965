"""Scaled dot-product attention, as the textbook writes it and as the fused kernels run it.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V        (Vaswani et al., 2017, eq. 1)

`scaled_dot_product_attention` computes exactly that. Asked for the weights, it takes the explicit path
(scores, softmax, weighted sum: every intermediate visible). Otherwise it hands the work to
`torch.nn.functional.scaled_dot_product_attention`, or, when the mask is a sliding window or a chunking
over a long sequence, to the blocked O(T·w) path in `core.local`. The paths agree to rounding error, and a
query with nothing to attend to gets zeros from every path, in the output and in the gradients.

Legend: B batch, H heads, T query length, S key length, Dh head dim, Dv value dim.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from core.masks import Mask, as_mask

__all__ = ["scaled_dot_product_attention", "fused_attention", "masked_softmax", "PositionBias"]

#: `position_bias(q_idx, k_idx) -> (H, *broadcast(q_idx, k_idx))`: an additive score bias computed from
#: absolute query and key positions (see `core.positional.RelativePositionBias`).
PositionBias = Callable[[Tensor, Tensor], Tensor]

#: The local path pays off once it computes at most this fraction of the dense scores.
LOCAL_MAX_FRACTION = 0.25


def masked_softmax(scores: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Softmax over the last dim where only `allowed` entries (and finite scores) take part.

    A row with nothing allowed gives all zeros, and its gradient is zero rather than NaN: the row is
    replaced by zeros *before* the softmax, so no `-inf - -inf` is ever formed, forward or backward.
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_ok = (scores != float("-inf")).any(dim=-1, keepdim=True)
    scores = torch.where(row_ok, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    return torch.softmax(scores, dim=-1) * row_ok


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(
            f"q, k, v must have the same number of dims (..., T, D); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share the last dim; got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length S; got k {tuple(k.shape)} and v {tuple(v.shape)}")


def _dense_terms(
    mask: Mask | Tensor | None,
    position_bias: PositionBias | None,
    T: int,
    S: int,
    q_offset: int,
    k_offset: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor | None, Tensor | None]:
    """The mask as a dense bool tensor and the additive terms (float mask + position bias) as one
    float tensor, each broadcastable to (B, H, T, S) or None."""
    allowed = additive = None
    if isinstance(mask, Mask):
        allowed = mask.dense(device)
    elif isinstance(mask, Tensor):
        additive = mask.to(dtype)
    if position_bias is not None:
        q_idx = torch.arange(T, device=device).unsqueeze(-1) + q_offset  # (T, 1)
        k_idx = torch.arange(S, device=device).unsqueeze(0) + k_offset  # (1, S)
        bias = position_bias(q_idx, k_idx).to(dtype)  # (H, T, S)
        additive = bias if additive is None else additive + bias
    return allowed, additive


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Mask | Tensor | None = None,
    *,
    dropout: float = 0.0,
    scale: float | None = None,
    return_weights: bool = False,
    position_bias: PositionBias | None = None,
    q_offset: int = 0,
    k_offset: int = 0,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""`softmax(q kᵀ · scale + bias) v`, masked.

    Args:
        q (Tensor): queries `(B, H, T, Dh)` (any leading dims).
        k (Tensor): keys `(B, H, S, Dh)`.
        v (Tensor): values `(B, H, S, Dv)`.
        mask (Mask or Tensor, optional): a `core.masks.Mask`, a bool tensor (True = may attend) or a
            float tensor added to the scores; broadcastable to `(B, H, T, S)`. (default: None)
        dropout (float, optional): dropout on the attention weights. Pass 0 at evaluation. (default: 0.0)
        scale (float, optional): score scale. (default: :math:`1/\sqrt{D_h}`)
        return_weights (bool, optional): also return the weights; takes the explicit path.
            (default: False)
        position_bias (callable, optional): `position_bias(q_idx, k_idx) -> (H, ...)`, an additive bias
            from absolute positions, e.g. `core.positional.RelativePositionBias`. (default: None)
        q_offset (int, optional): absolute position of the first query (streaming). (default: 0)
        k_offset (int, optional): absolute position of the first key (streaming). (default: 0)

    Returns:
        `out (B, H, T, Dv)`, or `(out, weights (B, H, T, S))` with `return_weights=True`. The weights
        are the softmax output before dropout.
    """
    _check_qkv(q, k, v)
    T, S, Dh = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(Dh) if scale is None else scale
    mask = as_mask(mask)
    if isinstance(mask, Mask):
        mask.check_size(T, S)

    if not return_weights and isinstance(mask, Mask) and q_offset == k_offset and T == S:
        span = mask.local_span()
        if span is not None and (span[0] + span[1] + span[2]) <= LOCAL_MAX_FRACTION * S:
            from core.local import local_attention

            return local_attention(
                q, k, v, mask, scale=scale, dropout=dropout, position_bias=position_bias,
                q_offset=q_offset, k_offset=k_offset, span=span,
            )

    allowed, additive = _dense_terms(mask, position_bias, T, S, q_offset, k_offset, q.device, q.dtype)

    if return_weights:
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
        if additive is not None:
            scores = scores + additive
        weights = masked_softmax(scores, allowed)
        dropped = F.dropout(weights, p=dropout) if dropout > 0 else weights
        return dropped @ v, weights  # (B, H, T, Dv)

    return fused_attention(q, k, v, allowed, additive, dropout=dropout, scale=scale)


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    allowed: Tensor | None,
    additive: Tensor | None,
    *,
    dropout: float,
    scale: float,
) -> Tensor:
    """`F.scaled_dot_product_attention` with a bool mask and/or an additive bias, NaN-free.

    Rows with nothing to attend are let attend everything (finite, no NaN), then zeroed, so both the
    output and every gradient of such a row are exactly zero.
    """
    attn_mask = allowed
    if additive is not None:
        neg_inf = torch.tensor(float("-inf"), dtype=additive.dtype, device=additive.device)
        attn_mask = additive if allowed is None else torch.where(allowed, additive, neg_inf)
    row_ok = None
    if attn_mask is not None:
        is_bool = attn_mask.dtype == torch.bool
        ok = attn_mask.any(-1, keepdim=True) if is_bool else (attn_mask != float("-inf")).any(-1, keepdim=True)
        if not bool(ok.all()):
            row_ok = ok
            zero = torch.zeros((), dtype=attn_mask.dtype, device=attn_mask.device)
            attn_mask = attn_mask | ~ok if is_bool else torch.where(ok, attn_mask, zero)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale)
    return out if row_ok is None else out * row_ok
