"""Lesson 3: multi-head attention as the notes build it, from zero-block projections.

Head h gets its own projections Wqʰ, Wkʰ, Wvʰ: full D×D matrices whose rows outside head h's block of
Dh = D/H rows are zero, so Qʰ = Wqʰ·I is zero outside that block. Zero rows add nothing to a dot product,
so head h's scores are those of the Dh-dim slice ("split"); each head attends on its own
(scale 1/√Dh, the head dim, not D); the head outputs Oʰ = Vʰ·Âʰ live in disjoint row blocks, so their
sum is their concatenation ("concat"); and O = Wo·concat mixes the heads.

Stacking the heads' blocks gives one matrix per projection, Wq = Σ_h Wqʰ, which is exactly the packed
`in_proj_weight` of `core.multihead.MultiHeadAttention` (and of `nn.MultiheadAttention`): its `view(B, T,
H, Dh)` hands rows h·Dh … (h+1)·Dh − 1 to head h.

Legend (notes' column layout): D model dim, H heads, Dh = D/H, T tokens (queries), S context tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from core.lessons.base import LessonResult, Log, Table, fmt, header
from core.multihead import MultiHeadAttention

__all__ = ["head_block", "multihead_by_hand", "load_multihead", "lesson"]

TITLE = "Multi-head attention: split, attend per head, concatenate, Wo"


def head_block(w: Tensor, head: int, num_heads: int) -> Tensor:
    """`w` (D, ...) with every row outside head `head`'s block of D/H rows set to zero."""
    Dh = w.shape[0] // num_heads
    out = torch.zeros_like(w)
    out[head * Dh : (head + 1) * Dh] = w[head * Dh : (head + 1) * Dh]
    return out


def multihead_by_hand(
    inputs: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    num_heads: int,
    *,
    context: Tensor | None = None,
    biases: dict[str, Tensor] | None = None,
) -> dict[str, Tensor | list[Tensor]]:
    """Multi-head attention in the notes' column layout, one zero-block head at a time.

    Args:
        inputs (Tensor): I, tokens as columns `(D, T)`.
        wq, wk, wv (Tensor): `(D, D)` each, head h owning rows `h·Dh … (h+1)·Dh − 1`.
        wo (Tensor): `(D, D)` output projection.
        num_heads (int): H; must divide D.
        context (Tensor, optional): `(D, S)` tokens for keys and values. (default: `inputs`)
        biases (dict, optional): `"q", "k", "v", "o"` -> `(D,)` bias vectors. (default: none)

    Returns:
        dict with per-head lists `Wq_h, Q_h, K_h, V_h, A_hat_h, O_h` (each head's matrices, zero outside
        its block; `A_hat_h` is `(S, T)`), `concat` `(D, T)` and `O` `(D, T)`.
    """
    D = wq.shape[0]
    if D % num_heads:
        raise ValueError(f"D ({D}) must be divisible by num_heads ({num_heads})")
    context = inputs if context is None else context
    zero = torch.zeros(D, dtype=inputs.dtype)
    b = {name: zero for name in "qkvo"} | (biases or {})
    scale = 1.0 / math.sqrt(D // num_heads)  # the head dim: zero rows add nothing to the scores
    parts: dict[str, list[Tensor]] = {key: [] for key in ("Wq_h", "Q_h", "K_h", "V_h", "A_hat_h", "O_h")}
    for h in range(num_heads):
        wq_h, wk_h, wv_h = (head_block(w, h, num_heads) for w in (wq, wk, wv))
        Q = wq_h @ inputs + head_block(b["q"], h, num_heads)[:, None]  # (D, T), zero outside block h
        K = wk_h @ context + head_block(b["k"], h, num_heads)[:, None]  # (D, S)
        V = wv_h @ context + head_block(b["v"], h, num_heads)[:, None]  # (D, S)
        A_hat = torch.softmax((K.T @ Q) * scale, dim=0)  # (S, T), columns sum to 1
        for key, value in zip(parts, (wq_h, Q, K, V, A_hat, V @ A_hat)):
            parts[key].append(value)
    concat = sum(parts["O_h"])  # disjoint row blocks: the sum is the concatenation, (D, T)
    return parts | {"concat": concat, "O": wo @ concat + b["o"][:, None]}


def load_multihead(
    wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor, num_heads: int, biases: dict[str, Tensor] | None = None
) -> MultiHeadAttention:
    """A `MultiHeadAttention` (dtype of `wq`) holding these weights: `in_proj_weight = [Wq; Wk; Wv]`."""
    D = wq.shape[0]
    mha = MultiHeadAttention(D, num_heads, bias=biases is not None).to(wq.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat((wq, wk, wv)))  # (3D, D)
        mha.out_proj.weight.copy_(wo)
        if biases is not None:
            mha.in_proj_bias.copy_(torch.cat((biases["q"], biases["k"], biases["v"])))  # (3D,)
            mha.out_proj.bias.copy_(biases["o"])
    return mha.eval()


def toy_weights(D: int = 4, seed: int = 0) -> dict[str, Tensor]:
    """Small integer weights (-1, 0 or 1) and a four-token input, float64."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randint(-1, 2, shape, generator=g).double()  # noqa: E731
    return {"I": draw(D, 4), "wq": draw(D, D), "wk": draw(D, D), "wv": draw(D, D), "wo": draw(D, D)}


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    H, w = 2, toy_weights()
    D = w["wq"].shape[0]
    m = multihead_by_hand(w["I"], w["wq"], w["wk"], w["wv"], w["wo"], H)
    log(f"D = {D}, H = {H} heads of Dh = {D // H}; tokens are the columns of I; no biases (as in the notes).")
    log.matrix("I", w["I"])
    log.matrix("Wq¹ (head 1: rows 3-4 zero)", m["Wq_h"][0])
    log.matrix("Wq² (head 2: rows 1-2 zero)", m["Wq_h"][1])
    log("  Wkʰ and Wvʰ are built the same way from")
    log.matrix("Wk = Wk¹ + Wk²", w["wk"])
    log.matrix("Wv = Wv¹ + Wv²", w["wv"])
    for h in range(H):
        n = "¹²"[h]
        log(f"  head {h + 1}:")
        log.matrix(f"Q{n} = Wq{n}·I", m["Q_h"][h])
        log.matrix(f"K{n} = Wk{n}·I", m["K_h"][h])
        log.matrix(f"Â{n} = softmax over columns of K{n}ᵀ·Q{n} / √{D // H}", m["A_hat_h"][h])
        log.matrix(f"O{n} = V{n}·Â{n}", m["O_h"][h])
    log.matrix("concat = O¹ + O²   (disjoint rows: the sum is the concatenation)", m["concat"])
    log.matrix("Wo", w["wo"])
    log.matrix("O = Wo·concat", m["O"])

    # The same weights in the library layer; it is batch first with tokens as rows, so x = Iᵀ.
    mha = load_multihead(w["wq"], w["wk"], w["wv"], w["wo"], H)
    with torch.no_grad():
        out, weights = mha(w["I"].T[None], return_weights=True)  # (1, T, D), (1, H, T, S)
    gaps = {
        "output_gap": (out[0] - m["O"].T).abs().max().item(),
        "weights_gap": max((weights[0, h] - m["A_hat_h"][h].T).abs().max().item() for h in range(H)),
    }
    split_gap = max(
        ((w["wq"] @ w["I"])[h * (D // H) : (h + 1) * (D // H)] - m["Q_h"][h][h * (D // H) : (h + 1) * (D // H)])
        .abs().max().item() for h in range(H)
    )
    table = Table(
        "core.multihead.MultiHeadAttention with in_proj_weight = [Wq; Wk; Wv], out_proj = Wo (float64)",
        ["compared", "max |difference|"],
        [
            ["layer output vs Oᵀ", fmt(gaps["output_gap"])],
            ["layer weights (per head) vs Âʰᵀ", fmt(gaps["weights_gap"])],
            ["zero-block Qʰ vs rows of Wq·I (the split)", fmt(split_gap)],
        ],
    )
    log("")
    log.table(table)
    return LessonResult(
        name="multihead",
        title=TITLE,
        text=f"Two heads over D = {D}: each head's projections are full matrices with the other head's rows "
        "zero, so each head scores with its own Dh-dim slice (split), attends on its own with scale 1/√Dh, "
        "and the head outputs occupy disjoint rows, so adding them concatenates them; Wo then mixes the "
        "heads. Summing the zero-block matrices gives the packed projection the library layer holds, and "
        "the layer reproduces the hand computation in float64.",
        numbers=gaps | {"split_gap": split_gap},
        tables=[table],
    )
