"""Scaled dot-product attention, as the textbook writes it and as the fused kernels run it.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V        (Vaswani et al., 2017, eq. 1)

`scaled_dot_product_attention` computes exactly that. Asked for the weights, it takes the explicit path
(scores, softmax, weighted sum: every intermediate visible). Otherwise it hands the work to
`torch.nn.functional.scaled_dot_product_attention` (on the CPU over few keys, where that fused kernel is
slower, the same explicit steps: `cpu_explicit_max_keys`), or, when the mask is a sliding window or a chunking
over a long sequence or a 2-D window over a large image, to the blocked O(T·w) paths in `core.local`. The paths
agree to rounding error, and a query with nothing to attend to gets zeros from every path, in the output and in
the gradients.

Legend: B batch, H heads, T query length, S key length, Dh head dim, Dv value dim.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import capture
from core.masks import Mask, as_mask, check_mask

__all__ = [
    "scaled_dot_product_attention", "softmax_attention", "fused_attention", "masked_softmax", "PositionBias",
    "cpu_explicit_max_keys", "softmax_last",
]

#: `position_bias(q_idx, k_idx) -> (H, *broadcast(q_idx, k_idx))`: an additive score bias computed from
#: absolute query and key positions (see `core.positional.RelativePositionBias`). A bias of low rank may
#: also offer `factors(q_idx (T,), k_idx (S,), dtype) -> (F_q (H, T, r), F_k (H, S, r)) | None` with
#: `bias = F_q F_kᵀ` up to a constant per query (see `core.positional.QuadraticPositionBias2d`): the fused
#: path then never builds it.
PositionBias = Callable[[Tensor, Tensor], Tensor]

#: The local path pays off once it computes at most this fraction of the dense scores.
LOCAL_MAX_FRACTION = 0.25
#: The most (batch × heads) rows one CUDA kernel call is given. On an H200 (torch 2.11) the bfloat16 kernels
#: refused 65,536 rows of 16-pixel windows (cuDNN: "mha_graph.execute ... is_good()"; the others: "invalid
#: argument"), which vision's 4 × 4 windows make of a batch of 1,024 32 × 32 images; CUDA caps a launch grid's
#: y and z dimensions at 65,535. Longer batches are cut into calls of at most this many rows.
CUDA_MAX_ROWS = 65_535
#: On the CPU, attention over few keys is computed in the textbook's three steps (scores, softmax, weighted sum)
#: instead of by the fused kernel, which loses there when few keys come in many rows, as g2p's words and
#: vision's 4 × 4 windows do. How many keys count as few grows with the head size, and in bfloat16 or float16
#: (autocast included) with a backward pass to follow, where the kernel's backward is slow. `cpu_explicit_max_keys`
#: applies the rule; `benchmarks/short_attention.py` times both sides on the same inputs and set its numbers
#: (records: benchmarks/results/short_attention*.json).
#: (keys per channel of a head, at least, at most) in each of three regimes:
CPU_EXPLICIT_KEYS = {
    "float32": (2, 32, 64),  # float32 or float64, with or without a backward pass
    "reduced": (2, 32, 128),  # bfloat16 or float16, a forward pass alone (evaluation, decoding)
    "reduced_training": (6, 128, 256),  # bfloat16 or float16 with a backward pass to follow
}
#: Never more than this many keys in any regime; 0 sends every call to the kernel.
CPU_EXPLICIT_MAX_KEYS = 256
#: On the CPU, `torch.softmax` over a last dim shorter than one 64-byte vector (16 float32 or 32 bfloat16 /
#: float16 numbers) takes a slow path (torch 2.14): several times the cost per number of a row one vector long,
#: and a word's letters, a short decoded prefix and one query's few keys all fall there. `softmax_last` pads
#: such rows with `-inf` to the vector's length (their weights are exactly 0) and drops the padding again: the
#: same weights, faster forward and backward from the shortest row listed here up. float64 is left alone:
#: padding did not pay there. `benchmarks/softmax_few_keys.py` times both sides (record:
#: benchmarks/results/softmax_few_keys.json). dtype -> (shortest row padded, length padded to):
CPU_SOFTMAX_PAD = {
    torch.float32: (2, 16),
    torch.bfloat16: (4, 32),
    torch.float16: (6, 32),
}
#: A factored position bias pads q, k and v to a multiple of this many channels (see `_fused_with_factors`):
#: the CPU kernel ran 36 channels faster than 35 or 40 (32 + 3 factor channels, interleaved probe, one thread).
FACTOR_CHANNEL_MULTIPLE = 4


def softmax_last(scores: Tensor) -> Tensor:
    """`torch.softmax(scores, dim=-1)`, computed where it is fastest: on the CPU, rows shorter than one vector
    (`CPU_SOFTMAX_PAD`: from 2 of 16 float32 numbers, 4 of 32 bfloat16, 6 of 32 float16) are padded with `-inf`
    to the vector's length first (their weights are 0) and cut back after, so the kernel takes its vectorised
    path; the result is then a view with the padded row stride. Gradients flow as through the softmax itself."""
    S = scores.shape[-1]
    shortest, width = CPU_SOFTMAX_PAD.get(scores.dtype, (0, 0))
    if scores.device.type == "cpu" and shortest <= S < width:
        padded = F.pad(scores, (0, width - S), value=float("-inf"))
        return torch.softmax(padded, dim=-1)[..., :S]
    return torch.softmax(scores, dim=-1)


def masked_softmax(scores: Tensor, allowed: Tensor | None = None) -> Tensor:
    """Softmax over the last dim where only `allowed` entries (and finite scores) take part.

    A row with nothing allowed gives all zeros, and its gradient is zero rather than NaN: the row is
    replaced by zeros *before* the softmax, so no `-inf - -inf` is ever formed, forward or backward.
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    row_ok = (scores != float("-inf")).any(dim=-1, keepdim=True)
    scores = torch.where(row_ok, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    return softmax_last(scores) * row_ok


def softmax_attention(
    scores: Tensor,
    v: Tensor,
    mask: Mask | Tensor | None = None,
    *,
    dropout: float = 0.0,
    training: bool = False,
    return_weights: bool = False,
    record_as: nn.Module | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The second half of attention, for scores computed anywhere: mask, softmax, dropout, weighted sum.

    Every scoring function hands its scores here: the scaled dot product (`scaled_dot_product_attention`'s
    explicit path), additive/Bahdanau `vᵀ tanh(W q + U k)`, GAT's `LeakyReLU(a_dstᵀ W h_i + a_srcᵀ W h_j)`.
    So they share one masking rule (True = may attend; a float mask is added), one treatment of empty rows
    (a query with nothing to attend to, or whose scores are all `-inf`, gets zeros, in the output and in
    every gradient, never NaN), one dropout, and one capture.

    Args:
        scores (Tensor): attention scores `(B, H, T, S)` (any leading dims, e.g. `(B, T, S)`); `-inf`
            entries are treated as masked.
        v (Tensor): values `(B, H, S, Dv)`, leading dims broadcastable with `scores`.
        mask (Mask or Tensor, optional): a `core.masks.Mask`, a bool tensor (True = may attend) or a
            float tensor added to the scores; broadcastable to `scores`. A `Mask`'s dense form is laid out
            for `(B, H, T, S)`; with 3-D scores `(B, T, S)` its head dim is dropped. (default: None)
        dropout (float, optional): dropout probability on the weights, applied only when `training`.
            (default: 0.0)
        training (bool, optional): apply `dropout` (pass `self.training`). (default: False)
        return_weights (bool, optional): also return the weights. (default: False)
        record_as (nn.Module, optional): inside a `core.capture.capture_attention` block, report the
            weights under this module's name. (default: None: not reported)

    Shapes:
        scores `(B, H, T, S)`, v `(B, H, S, Dv)` -> out `(B, H, T, Dv)`, and weights `(B, H, T, S)` (the
        softmax output before dropout, zero where masked) with `return_weights=True`.
    """
    if scores.dim() < 2 or v.dim() < 2:
        raise ValueError(f"scores must be (..., T, S) and v (..., S, Dv); got {tuple(scores.shape)} and {tuple(v.shape)}")
    if scores.shape[-1] != v.shape[-2]:
        raise ValueError(
            f"scores (..., T, S) and v (..., S, Dv) must share S; got scores {tuple(scores.shape)}, v {tuple(v.shape)}"
        )
    T, S = scores.shape[-2], scores.shape[-1]
    mask = as_mask(mask)
    # A mask's batch must be the scores' B; (B, T, S) scores have no head dim, a Mask's dense form does.
    check_mask(mask, (scores.shape[0], 1, T, S) if scores.dim() == 3 and isinstance(mask, Mask) else scores.shape)
    allowed = None
    if isinstance(mask, Mask):
        allowed = mask.dense(scores.device)
        if allowed.dim() == 4 and scores.dim() == 3:
            allowed = allowed.squeeze(1)  # (B, 1, T, S) -> (B, T, S): no head dim in these scores
    elif isinstance(mask, Tensor):
        scores = scores + mask.to(scores.dtype)
    weights = masked_softmax(scores, allowed)  # (..., T, S)
    dropped = F.dropout(weights, p=dropout) if training and dropout > 0 else weights
    out = dropped @ v  # (..., T, Dv)
    if record_as is not None and capture.is_capturing():
        capture.record(record_as, weights)
    return (out, weights) if return_weights else out


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
            float tensor added to the scores (no NaN); broadcastable to `(B, H, T, S)`, except that a
            batch dim must equal B. Integer masks are refused. (default: None)
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
    check_mask(mask, (*q.shape[:-1], S))

    if not return_weights and isinstance(mask, Mask) and q_offset == k_offset and T == S:
        span = mask.local_span()
        if span is not None and (span[0] + span[1] + span[2]) <= LOCAL_MAX_FRACTION * S:
            from core.local import local_attention

            return local_attention(
                q, k, v, mask, scale=scale, dropout=dropout, position_bias=position_bias,
                q_offset=q_offset, k_offset=k_offset, span=span,
            )

        window = mask.window_2d()
        if window is not None and q_offset == 0 and k_offset == 0:
            from core.local import local_attention_2d, tile_for_radius

            tile = tile_for_radius(window[2], window[3])
            if (tile + 2 * window[2]) * (tile + 2 * window[3]) <= LOCAL_MAX_FRACTION * S:
                return local_attention_2d(q, k, v, mask, scale=scale, dropout=dropout, position_bias=position_bias,
                                          tile=tile)

    if position_bias is not None and not return_weights:
        factors = _bias_factors(position_bias, q, T, S, q_offset, k_offset)
        if factors is not None:
            allowed, additive = _dense_terms(mask, None, T, S, q_offset, k_offset, q.device, q.dtype)
            return _fused_with_factors(q, k, v, *factors, allowed, additive, dropout=dropout, scale=scale)

    allowed, additive = _dense_terms(mask, position_bias, T, S, q_offset, k_offset, q.device, q.dtype)

    if return_weights:
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
        if additive is not None:
            scores = scores + additive
        return softmax_attention(scores, v, allowed, dropout=dropout, training=True, return_weights=True)

    return fused_attention(q, k, v, allowed, additive, dropout=dropout, scale=scale)


def _bias_factors(position_bias: PositionBias, q: Tensor, T: int, S: int, q_offset: int,
                  k_offset: int) -> tuple[Tensor, Tensor] | None:
    """The bias's factors `(F_q (H, T, r), F_k (H, S, r))` where it has them, they are accurate in q's dtype
    and their heads match q's; else None (the bias is then built in full)."""
    factors = getattr(position_bias, "factors", None)
    if factors is None or q.dim() < 3:
        return None
    q_idx = torch.arange(T, device=q.device) + q_offset
    k_idx = torch.arange(S, device=q.device) + k_offset
    dtype = q.dtype
    if torch.is_autocast_enabled(q.device.type):  # the kernel may run in the autocast dtype: judge by that
        dtype = torch.get_autocast_dtype(q.device.type)
    pair = factors(q_idx, k_idx, dtype)
    if pair is None or pair[0].shape[0] not in (1, q.shape[-3]):
        return None
    return pair


def _fused_with_factors(q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, allowed: Tensor | None,
                        additive: Tensor | None, *, dropout: float, scale: float) -> Tensor:
    """`softmax(q kᵀ · scale + F_q F_kᵀ) v` on the fused kernel: `[q, F_q / scale] · [k, F_k]ᵀ · scale` is the
    biased score, so the bias costs r more channels, never a (T, S) tensor. The kernel wants one channel
    count for q, k and v (else it takes the unfused math path), so all three are padded with zero channels,
    which add nothing, to a common width (a multiple of :data:`FACTOR_CHANNEL_MULTIPLE`)."""
    r = fq.shape[-1]
    q2 = torch.cat((q, (fq / scale).expand(*q.shape[:-1], r)), dim=-1)
    k2 = torch.cat((k, fk.expand(*k.shape[:-1], r)), dim=-1)
    Dv = v.shape[-1]
    width = -(-max(q2.shape[-1], Dv) // FACTOR_CHANNEL_MULTIPLE) * FACTOR_CHANNEL_MULTIPLE
    if q2.shape[-1] < width:
        q2, k2 = F.pad(q2, (0, width - q2.shape[-1])), F.pad(k2, (0, width - k2.shape[-1]))
    if Dv < width:
        v = F.pad(v, (0, width - Dv))
    out = fused_attention(q2, k2, v, allowed, additive, dropout=dropout, scale=scale)
    return out[..., :Dv]


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
    if attn_mask is not None and q.dim() == 4 and attn_mask.dim() not in (2, 4) and not attn_mask.requires_grad:
        # The CPU flash kernel takes only 2-D or 4-D masks and silently falls back to the unfused math
        # path (about 3x slower) for a (H, T, S) bias; an expanded view is free and keeps it fused.
        attn_mask = attn_mask.expand(*q.shape[:-1], k.shape[-2])
    out = _sdpa(q, k, v, attn_mask, dropout, scale)
    return out if row_ok is None else out * row_ok


def _sdpa(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout: float, scale: float,
          max_rows: int | None = None) -> Tensor:
    """`F.scaled_dot_product_attention`'s result, computed where it is fastest: on the CPU over at most
    `cpu_explicit_max_keys(...)` keys by the explicit steps (`_explicit_attention`); otherwise by the
    kernel, in calls of at most `max_rows` (batch × heads) rows (default: on CUDA `CUDA_MAX_ROWS`, elsewhere no
    limit): rows are independent, so cutting along the first dim changes nothing but the number of launches.
    Which computation runs on which device is decided here and nowhere else."""
    if q.device.type == "cpu":
        backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        if k.shape[-2] <= cpu_explicit_max_keys(q.dtype, q.shape[-1], backward):
            return _explicit_attention(q, k, v, attn_mask, dropout, scale)
    max_rows = max_rows or (CUDA_MAX_ROWS if q.is_cuda else None)
    rows = math.prod(q.shape[:-2])
    if max_rows is None or rows <= max_rows or q.dim() < 3:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=scale)
    n = q.shape[0]
    per = max(1, max_rows // (rows // n))  # first-dim entries per call
    # a mask with the full first dim is cut with q; a broadcast one (first dim 1, or fewer dims) is shared
    cut_mask = attn_mask is not None and attn_mask.dim() == q.dim() and attn_mask.shape[0] == n
    return torch.cat([
        F.scaled_dot_product_attention(q[i:i + per], k[i:i + per], v[i:i + per],
                                       attn_mask=attn_mask[i:i + per] if cut_mask else attn_mask,
                                       dropout_p=dropout, scale=scale)
        for i in range(0, n, per)
    ])


def cpu_explicit_max_keys(dtype: torch.dtype, head_dim: int, backward: bool) -> int:
    """The most keys the CPU computes in explicit steps rather than by the fused kernel, for inputs of `dtype`
    (judged by the dtype the arithmetic runs in: autocast's where it is on), heads of `head_dim` channels, and
    whether a backward pass will follow: `per_channel × head_dim` keys, at least `floor` and at most `most`, from
    the regime's entry in `CPU_EXPLICIT_KEYS`, and never more than `CPU_EXPLICIT_MAX_KEYS`."""
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    regime = ("reduced_training" if backward else "reduced") if dtype in (torch.bfloat16, torch.float16) else "float32"
    per_channel, floor, most = CPU_EXPLICIT_KEYS[regime]
    return min(CPU_EXPLICIT_MAX_KEYS, most, max(floor, per_channel * head_dim))


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout: float,
                        scale: float) -> Tensor:
    """What `F.scaled_dot_product_attention(q, k, v, attn_mask, dropout, scale=scale)` computes, in three
    steps: `softmax(q kᵀ · scale + mask) v`, a bool `attn_mask` keeping the True entries, a float one added,
    dropout on the weights. Every row must have something to attend to (`fused_attention` sees to it), which is
    why this is not `softmax_attention`: its checks and its guard for empty rows cost measurably more per call
    at the many-rows, few-keys shapes this path is for (vision's 4 × 4 windows). Under
    bfloat16 autocast the products run in bfloat16 like every other there (the kernel accumulates them in
    float32, so its rounding error is smaller). The scale multiplies the smaller of q `(T, Dh)` and the scores
    `(T, S)`: `(q · scale) kᵀ` is the same product, and over more keys than channels it scales fewer numbers,
    forward and backward (a fifth as many at vision's 256 keys in a head of 48 channels)."""
    if k.shape[-2] > q.shape[-1]:  # S > Dh
        scores = (q * scale) @ k.transpose(-2, -1)  # (..., T, S)
    else:
        scores = (q @ k.transpose(-2, -1)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    weights = softmax_last(scores)
    if dropout > 0:
        weights = F.dropout(weights, p=dropout)
    return weights @ v
