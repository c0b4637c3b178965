"""Lesson: the decoder's causal mask, "so a prediction cannot see the next answer".

A decoder is trained on the whole target at once (teacher forcing): position t reads the answers 1..t-1
and must predict answer t. Self-attention would let position t read every position, the answer it is
asked for among them; the causal mask (`core.masks.causal_mask`: query i attends keys j <= i) takes the
future away. The lesson changes the *later* tokens of a sequence and measures how much each earlier
output moves: nothing with the mask, a lot without it.

Legend: T tokens, D model dim.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.lab.plots import plot_attention
from core.lessons.base import LessonResult, Log, Table, fmt, header
from core.lessons.order import random_attention
from core.masks import causal_mask

__all__ = ["future_leak", "lesson"]

TITLE = "The causal mask: a decoder position cannot see the tokens after it"


def future_leak(attn: torch.nn.Module, x: torch.Tensor, t: int, masked: bool, seed: int = 3) -> float:
    """`max |f(x)[:, :t] - f(x')[:, :t]|` where `x'` is `x` with every token from position t on replaced:
    how much the first t outputs depend on what comes after them (0 under the causal mask)."""
    T = x.shape[1]
    changed = x.clone()
    changed[:, t:] = torch.randn(changed[:, t:].shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    mask = causal_mask(T) if masked else None
    with torch.no_grad():
        return (attn(x, mask=mask)[:, :t] - attn(changed, mask=mask)[:, :t]).abs().max().item()


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    D, tokens = 8, "<s> k æ t </s>".split()
    T = len(tokens)
    attn = random_attention(D)
    x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log(f"One attention layer, D = {D}, 2 heads, every weight and bias random (float64); a target of {T} tokens "
        f"({' '.join(tokens)}). The causal mask, True = may attend:")
    log(str(causal_mask(T).dense().int().tolist()))
    rows, numbers = [], {}
    for t in range(1, T):
        gaps = [future_leak(attn, x, t, masked) for masked in (True, False)]
        rows.append([f"tokens {t + 1}..{T} replaced", fmt(gaps[0]), fmt(gaps[1])])
        numbers[f"leak_masked_t{t}"], numbers[f"leak_unmasked_t{t}"] = gaps
    table = Table("how much the outputs before position t move, max |difference|",
                  ["change", "with the causal mask", "without a mask"], rows)
    log.table(table)
    log("With the mask the earlier outputs do not move at all: position t is computed from tokens 1..t only, "
        "which is what lets a decoder train on every position of a target at once and then generate one token "
        "at a time with the same weights.")
    figures = []
    if fig_dir is not None:
        with torch.no_grad():
            _, weights = attn(x, mask=causal_mask(T), return_weights=True)  # (1, H, T, T)
        path = fig_dir / "causal_mask.png"
        plot_attention(weights[0, 0].float(), x_labels=tokens, y_labels=tokens,
                       title="decoder self-attention under the causal mask (head 1)", path=path)
        figures.append(path)
    return LessonResult(
        name="causal",
        title=TITLE,
        text="A decoder reads the target shifted right and must predict each next token; the causal mask lets "
        "position t attend only positions up to t. Replacing every later token leaves the earlier outputs "
        "exactly unchanged with the mask, and moves them without it. The weights under the mask form a lower "
        "triangle.",
        numbers=numbers,
        tables=[table],
        figures=figures,
    )
