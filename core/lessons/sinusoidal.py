"""Lesson 6: the sinusoidal encoding moves by a fixed rotation.

`PE[p] = (sin pω₀, cos pω₀, sin pω₁, cos pω₁, …)` with ωᵢ = base^(−2i/D) (core.positional's layout,
sin and cos interleaved). By the angle-addition formulas each (sin, cos) pair of PE[p + k] is the pair of
PE[p] rotated by the angle kωᵢ:

    ⎡sin (p+k)ω⎤   ⎡ cos kω   sin kω⎤ ⎡sin pω⎤
    ⎣cos (p+k)ω⎦ = ⎣−sin kω   cos kω⎦ ⎣cos pω⎦

so PE[p + k] = M_k · PE[p] with M_k block-diagonal, built from k alone: the same matrix for every p.
M_k is orthogonal, hence PE[p]·PE[p + k] = Σᵢ cos kωᵢ depends on the offset k only, which is what lets
attention on these vectors pick out relative positions.

Legend: T positions, D encoding dim.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from core.attention import scaled_dot_product_attention
from core.lab.plots import plot_attention, plot_positional_encoding
from core.lessons.base import LessonResult, Log, Table, fmt, header
from core.positional import sinusoidal_encoding

__all__ = ["shift_matrix", "lesson", "SENTENCE"]

TITLE = "Sinusoidal positions: a shift by k is a fixed rotation M_k"
SENTENCE = "the cat sat on the mat because it was tired".split()


def shift_matrix(k: int, dim: int, base: float = 10000.0) -> Tensor:
    """The `(dim, dim)` float64 block rotation with `sinusoidal_encoding[p + k] = M_k @ sinusoidal_encoding[p]`.

    Args:
        k (int): the shift (any integer, negative too).
        dim (int): encoding dim D (even).
        base (float, optional): wavelength base, as in `core.positional.sinusoidal_encoding`. (default: 10000.0)
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}")
    angle = k * base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
    c, s = angle.cos(), angle.sin()
    blocks = torch.stack((torch.stack((c, s), -1), torch.stack((-s, c), -1)), -2)  # (D/2, 2, 2)
    return torch.block_diag(*blocks)  # (D, D)


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    L, D = 100, 64
    pe = sinusoidal_encoding(L, D).double()  # (L, D); the table is float32, so agreement is to ~1e-7
    log.matrix("M_1 for D = 4 (two 2×2 rotations, by ω₀ = 1 and ω₁ = 1/100)", shift_matrix(1, 4))
    rows, numbers = [], {}
    for k in (1, 7, 30):
        M = shift_matrix(k, D)
        predicted = pe[: L - k] @ M.T  # row p: M_k · PE[p], for every p at once
        gap = (pe[k:] - predicted).abs().max().item()
        orth = (M.T @ M - torch.eye(D, dtype=torch.float64)).abs().max().item()
        dots = [(pe[p] @ pe[p + k]).item() for p in (0, 17, 50)]
        cos_sum = M.diagonal()[0::2].sum().item()  # Σᵢ cos kωᵢ, the dot product predicted for every p
        rows.append([str(k), fmt(gap), fmt(orth)] + [fmt(d, 4) for d in dots] + [fmt(cos_sum, 4)])
        numbers |= {f"shift_gap_k{k}": gap, f"orthogonality_gap_k{k}": orth, f"dot_spread_k{k}": max(dots) - min(dots)}
    table = Table(
        f"D = {D}, positions 0 … {L - 1}; one M_k for all p (float32 table)",
        ["k", "max |PE[p+k] − M_k·PE[p]|", "max |M_kᵀM_k − I|", "PE[0]·PE[k]", "PE[17]·PE[17+k]",
         "PE[50]·PE[50+k]", "Σ cos kωᵢ"],
        rows,
    )
    log.table(table)
    log("The dot product of two positions depends only on their offset k (last four columns agree).")

    figures = []
    if fig_dir is not None:
        figures.append(fig_dir / "positional_encoding.png")
        title = f"Sinusoidal positional encoding (D = {D}: sin in even dims, cos in odd dims)"
        plot_positional_encoding(sinusoidal_encoding(L, D), title=title, path=figures[-1])
        # With the encodings as queries and keys, attention can only use position: each word attends to
        # itself and its neighbours, the band a Transformer starts from before it learns content.
        enc = sinusoidal_encoding(len(SENTENCE), D)[None]  # (1, T, D)
        _, weights = scaled_dot_product_attention(enc, enc, enc, return_weights=True)
        figures.append(fig_dir / "attention_positions.png")
        plot_attention(weights[0], x_labels=SENTENCE, y_labels=SENTENCE, annotate=False,
                       title="Attention from sinusoidal positions alone", path=figures[-1])
    return LessonResult(
        name="sinusoidal",
        title=TITLE,
        text="Each (sin, cos) pair of the encoding is a point on a circle turning at its own speed ωᵢ, so "
        "moving k positions rotates every pair by kωᵢ: PE[p + k] = M_k·PE[p] with one block-rotation M_k "
        "that does not depend on p (checked for every p to the float32 precision of the table). Because "
        "M_k is a rotation, PE[p]·PE[p + k] depends only on k, and attention over pure positions already "
        "prefers near neighbours.",
        numbers=numbers,
        tables=[table],
        figures=figures,
    )
