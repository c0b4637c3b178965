"""Lesson 5: self-attention without positions cannot see order.

Every output is a weighted sum over *all* inputs with weights computed from the inputs alone, so
permuting the inputs permutes the outputs and changes nothing else: f(P·X) = P·f(X). In "the dog bit
the man" and "the man bit the dog" the word "dog" gets the same vector. Adding a positional encoding
before attention breaks the symmetry.

Legend: T tokens, D model dim.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from core.lessons.base import LessonResult, Log, Table, fmt, header
from core.multihead import MultiHeadAttention
from core.positional import sinusoidal_encoding

__all__ = ["permutation_gap", "random_attention", "lesson"]

TITLE = "Order: without positions, attention is permutation-equivariant"


def random_attention(dim: int = 8, num_heads: int = 2, seed: int = 0) -> MultiHeadAttention:
    """A float64 `MultiHeadAttention` with every weight and bias random (biases too: zeros hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    mha = MultiHeadAttention(dim, num_heads).double().eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.normal_(0.0, 0.5, generator=g)
    return mha


def permutation_gap(attn: nn.Module, x: Tensor, perm: Tensor, positions: Tensor | None = None) -> float:
    """`max |f(x[perm] + pe) - f(x + pe)[perm]|`: 0 when attention only sees the set of inputs.

    Args:
        attn (nn.Module): `(B, T, D) -> (B, T, D)`.
        x (Tensor): `(B, T, D)` token vectors.
        perm (Tensor): `(T,)` a permutation of the positions.
        positions (Tensor, optional): `(T, D)` encoding added *after* permuting (positions stay put).
    """
    pe = 0 if positions is None else positions.to(x.dtype)
    with torch.no_grad():
        permuted_then_attended = attn(x[:, perm] + pe)
        attended_then_permuted = attn(x + pe)[:, perm]
    return (permuted_then_attended - attended_then_permuted).abs().max().item()


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    D = 8
    attn = random_attention(D)
    vocab = {w: i for i, w in enumerate(["the", "dog", "bit", "man"])}
    embedding = torch.randn(len(vocab), D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = "the dog bit the man".split(), "the man bit the dog".split()
    xa = embedding[[vocab[w] for w in a]][None]  # (1, T, D)
    xb = embedding[[vocab[w] for w in b]][None]
    pe = sinusoidal_encoding(len(a), D).double()  # (T, D)
    log(f"One attention layer, D = {D}, 2 heads, every weight and bias random (float64).")
    rows, numbers = [], {}
    with torch.no_grad():
        numbers["output_scale"] = attn(xa)[0].abs().max().item()
    for label, enc in (("no positions", None), ("+ sinusoidal positions", pe)):
        add = 0 if enc is None else enc
        with torch.no_grad():
            ya, yb = attn(xa + add)[0], attn(xb + add)[0]  # (T, D)
        dog_gap = (ya[a.index("dog")] - yb[b.index("dog")]).abs().max().item()
        swap = torch.tensor([0, 4, 2, 3, 1])  # b = a with "dog" and "man" swapped
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(3, 7, D, generator=gen, dtype=torch.float64)  # (B=3, T=7, D)
        perm = torch.randperm(7, generator=gen)
        pe7 = None if enc is None else sinusoidal_encoding(7, D)
        gaps = (dog_gap, permutation_gap(attn, xa, swap, enc), permutation_gap(attn, x, perm, pe7))
        rows.append([label] + [fmt(g) for g in gaps])
        key = "no_positions" if enc is None else "positions"
        numbers |= {f"dog_gap_{key}": gaps[0], f"swap_gap_{key}": gaps[1], f"random_perm_gap_{key}": gaps[2]}
    table = Table(
        "max |difference|, float64",
        ["input", '"dog" in the two sentences', "f(swap·x) vs swap·f(x)", "random perm, B=3, T=7"],
        rows,
    )
    log(f'Sentences "{" ".join(a)}" and "{" ".join(b)}" (one is the other with dog and man swapped):')
    log.table(table)
    log(f"(The outputs themselves reach {numbers['output_scale']:.1f}.) "
        "Without positions the differences are rounding error: the layer sees a bag of words. "
        "With positions added, the same word at another place gets another vector.")
    return LessonResult(
        name="order",
        title=TITLE,
        text="Self-attention mixes all inputs with weights computed from the inputs alone, so permuting "
        "the inputs only permutes the outputs: in \"the dog bit the man\" and \"the man bit the dog\" the "
        "word \"dog\" comes out identical (up to float64 rounding). Adding sinusoidal positions before the "
        "layer makes the outputs depend on where each word stands.",
        numbers=numbers,
        tables=[table],
    )
