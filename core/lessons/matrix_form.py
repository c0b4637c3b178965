"""Lesson 2: all queries at once, in the matrix form of the notes.

The notes stack tokens as COLUMNS: an input I of shape (d_in, T), and

    Q = Wq·I,  K = Wk·I,  V = Wv·I,  A = Kᵀ·Q,  Â = softmax(A) over keys (each column sums to 1),  O = V·Â

so A[j, i] = k_j · q_i (row j = key, column i = query) and column i of O is the output of token i.
The notes leave out the √d_k: here A is printed as the notes write it, and Â = softmax(A / √d_k) is what
Vaswani et al. and core compute by default; core with `scale=1.0` reproduces the notes' unscaled Â.

core is batch-first with tokens as ROWS: x = Iᵀ (T, d_in), q = x·Wqᵀ = Qᵀ, scores = q·kᵀ = Aᵀ,
weights = softmax over the last dim = Âᵀ, out = weights·v = (V·Â)ᵀ = Oᵀ. Every matrix is the transpose.

Legend: T tokens (queries), S context tokens (keys), d_in input dim, Dk key dim, Dv value dim.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from core.attention import scaled_dot_product_attention
from core.lessons.base import LessonResult, Log, Table, fmt, header

__all__ = ["matrix_form", "lesson", "TOY_INPUT", "TOY_WQ", "TOY_WK", "TOY_WV"]

TITLE = "The matrix form: Q = Wq·I, K = Wk·I, V = Wv·I, O = V·softmax(Kᵀ·Q)"

_f64 = dict(dtype=torch.float64)
#: Four tokens as columns, three features each (the notes' layout).
TOY_INPUT = torch.tensor([[1, 0, 1, 0],
                          [0, 2, 0, 1],
                          [1, 1, 0, 0]], **_f64)  # (d_in=3, T=4)
TOY_WQ = torch.tensor([[1, 0, 1], [0, 1, 0]], **_f64)  # (Dk=2, d_in)
TOY_WK = torch.tensor([[0, 1, 1], [1, 0, 0]], **_f64)  # (Dk=2, d_in)
TOY_WV = torch.tensor([[1, 1, 0], [0, 0, 1]], **_f64)  # (Dv=2, d_in)


def matrix_form(
    inputs: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    *,
    context: Tensor | None = None,
    scale: float | None = None,
) -> dict[str, Tensor]:
    """Attention in the notes' column layout, written out matrix by matrix.

    Args:
        inputs (Tensor): I, tokens as columns `(d_in, T)`; the queries come from here.
        wq, wk, wv (Tensor): `(Dk, d_in)`, `(Dk, d_in)`, `(Dv, d_in)`.
        context (Tensor, optional): `(d_in, S)` tokens the keys and values come from (cross-attention).
            (default: `inputs`)
        scale (float, optional): factor on A before the softmax. (default: 1/√Dk; the notes use 1)

    Returns:
        dict with I `(d_in, T)`, Q `(Dk, T)`, K `(Dk, S)`, V `(Dv, S)`, A `(S, T)` (unscaled, as the
        notes write it), A_hat `(S, T)` (columns sum to 1) and O `(Dv, T)`.
    """
    context = inputs if context is None else context
    scale = 1.0 / math.sqrt(wq.shape[0]) if scale is None else scale
    Q, K, V = wq @ inputs, wk @ context, wv @ context
    A = K.T @ Q  # (S, T): A[j, i] = k_j · q_i
    A_hat = torch.softmax(A * scale, dim=0)  # over keys: each column (one query) sums to 1
    return {"I": inputs, "Q": Q, "K": K, "V": V, "A": A, "A_hat": A_hat, "O": V @ A_hat}


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    dk = TOY_WQ.shape[0]
    m = matrix_form(TOY_INPUT, TOY_WQ, TOY_WK, TOY_WV)
    notes = matrix_form(TOY_INPUT, TOY_WQ, TOY_WK, TOY_WV, scale=1.0)
    log("Tokens are columns (the notes' layout): column i of I is token i.")
    log.matrix("I  (d_in=3 × T=4)", m["I"])
    log.matrix("Wq (Dk=2 × d_in=3)", TOY_WQ)
    log.matrix("Wk", TOY_WK)
    log.matrix("Wv", TOY_WV)
    log.matrix("Q = Wq·I", m["Q"])
    log.matrix("K = Wk·I", m["K"])
    log.matrix("V = Wv·I", m["V"])
    log.matrix("A = Kᵀ·Q   (row j = key j, column i = query i)", m["A"])
    log.matrix(f"Â = softmax over each column of A/√{dk}   (what core computes; columns sum to 1)", m["A_hat"])
    log.matrix("   the notes' unscaled softmax(A), for comparison", notes["A_hat"])
    log.matrix("O = V·Â   (column i = output of token i)", m["O"])

    # core's convention: batch first, tokens as rows, so every matrix arrives transposed.
    x = TOY_INPUT.T[None]  # (1, T, d_in)
    q, k, v = x @ TOY_WQ.T, x @ TOY_WK.T, x @ TOY_WV.T  # (1, T, Dk), (1, T, Dk), (1, T, Dv)
    out, weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    fused = scaled_dot_product_attention(q, k, v)
    out_notes = scaled_dot_product_attention(q, k, v, scale=1.0)
    gaps = {
        "weights_gap": (weights[0] - m["A_hat"].T).abs().max().item(),
        "output_gap": (out[0] - m["O"].T).abs().max().item(),
        "fused_gap": (fused[0] - m["O"].T).abs().max().item(),
        "unscaled_gap": (out_notes[0] - notes["O"].T).abs().max().item(),
    }
    log("")
    log("core is batch-first with tokens as rows: x = Iᵀ, q = x·Wqᵀ = Qᵀ, weights = Âᵀ, out = Oᵀ.")
    table = Table(
        "core.scaled_dot_product_attention against the matrix form (float64)",
        ["compared", "max |difference|"],
        [
            ["weights vs Âᵀ (explicit path)", fmt(gaps["weights_gap"])],
            ["out vs Oᵀ (explicit path)", fmt(gaps["output_gap"])],
            ["out vs Oᵀ (fused path)", fmt(gaps["fused_gap"])],
            ["scale=1.0 vs the notes' unscaled O", fmt(gaps["unscaled_gap"])],
        ],
    )
    log.table(table)
    return LessonResult(
        name="matrix",
        title=TITLE,
        text="Four tokens as the columns of I. Each projection is one matrix product, A = Kᵀ·Q holds every "
        "query-key score at once (row = key, column = query), the softmax runs down each column, and "
        "O = V·Â gives every token's output in one product. The notes omit the √d_k; core divides by it "
        f"(here √{dk}), and with scale=1.0 it gives the notes' numbers. core works on rows (x = Iᵀ), "
        "so its weights and outputs are Âᵀ and Oᵀ.",
        numbers=gaps | {"O_00": m["O"][0, 0].item(), "A_hat_00": m["A_hat"][0, 0].item()},
        tables=[table],
    )
