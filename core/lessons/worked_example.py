"""Lesson 1: one query against two keys, by hand, then by the library.

The textbook numbers: q = (1, 2) against keys k1 = (1, 1), k2 = (0, 1), values = keys, d_k = 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from core.attention import scaled_dot_product_attention
from core.lessons.base import LessonResult, Log, header

__all__ = ["worked_example", "lesson"]

TITLE = "Scaled dot-product attention by hand"


def worked_example(log: Log | None = None) -> dict[str, list[float]]:
    """The textbook numbers, computed by hand, printed step by step and checked against the library.

    Returns:
        `{"scores": [2], "weights": [2], "output": [2]}` for the one query.
    """
    log = log or Log(print)
    q = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # one query, d_k = 2
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # two keys
    v = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # values = keys, as in the textbook
    d_k = q.shape[-1]

    log("Scaled dot-product attention: softmax(q kᵀ / √d_k) v")
    log(f"  q = {q[0].tolist()},  keys k1 = {k[0].tolist()}, k2 = {k[1].tolist()},  d_k = {d_k}")
    raw = q @ k.T
    log(f"1. dot products  q·k1 = {raw[0, 0]:.0f},  q·k2 = {raw[0, 1]:.0f}")
    scores = raw / math.sqrt(d_k)
    log(f"2. scale by 1/√{d_k}: {raw[0, 0]:.0f}/√2 = {scores[0, 0]:.4f},  {raw[0, 1]:.0f}/√2 = {scores[0, 1]:.4f}")
    exp = scores.exp()
    weights = exp / exp.sum(-1, keepdim=True)
    log(f"3. softmax: e^{scores[0, 0]:.4f} = {exp[0, 0]:.4f}, e^{scores[0, 1]:.4f} = {exp[0, 1]:.4f}, "
        f"sum {exp.sum():.4f} -> weights {weights[0, 0]:.4f}, {weights[0, 1]:.4f}")
    out = weights @ v
    log(f"4. weighted sum of values: {weights[0, 0]:.4f}·{v[0].tolist()} + {weights[0, 1]:.4f}·{v[1].tolist()} "
        f"= [{out[0, 0]:.4f}, {out[0, 1]:.4f}]")

    lib_out, lib_weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    fused = scaled_dot_product_attention(q, k, v)
    if not (torch.allclose(lib_weights, weights) and torch.allclose(lib_out, out) and torch.allclose(fused, out)):
        raise AssertionError("core.scaled_dot_product_attention disagrees with the hand computation")
    log("   core.scaled_dot_product_attention (explicit and fused paths) gives the same numbers.")
    return {"scores": scores[0].tolist(), "weights": weights[0].tolist(), "output": out[0].tolist()}


def lesson(log: Log, fig_dir: Path | None, quick: bool = True) -> LessonResult:
    header(log, TITLE)
    r = worked_example(log)
    return LessonResult(
        name="worked",
        title=TITLE,
        text="One query q = (1, 2) scores two keys (1, 1) and (0, 1) by dot product, divides by √d_k = √2, "
        "turns the scores into weights with a softmax and returns the weighted sum of the values. "
        "The library's explicit and fused paths give the same numbers.",
        numbers={
            "score_1": r["scores"][0], "score_2": r["scores"][1],
            "weight_1": r["weights"][0], "weight_2": r["weights"][1],
            "output_1": r["output"][0], "output_2": r["output"][1],
        },
    )
