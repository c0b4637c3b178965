"""`python -m core`: scaled dot-product attention worked by hand, then by the library.

Prints the textbook example step by step (q = (1, 2) against keys (1, 1) and (0, 1)) and writes two
heatmaps: attention over a sentence driven by sinusoidal positions alone, and the encoding itself.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from core.attention import scaled_dot_product_attention
from core.lab.plots import plot_attention, plot_positional_encoding
from core.positional import sinusoidal_encoding

SENTENCE = "the cat sat on the mat because it was tired".split()


def worked_example() -> dict[str, list[float]]:
    """The textbook numbers, computed by hand and checked against the library."""
    q = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # one query, d_k = 2
    k = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # two keys
    v = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # values = keys, as in the textbook
    d_k = q.shape[-1]

    print("Scaled dot-product attention: softmax(q kᵀ / √d_k) v")
    print(f"  q = {q[0].tolist()},  keys k1 = {k[0].tolist()}, k2 = {k[1].tolist()},  d_k = {d_k}")
    raw = q @ k.T
    print(f"1. dot products  q·k1 = {raw[0, 0]:.0f},  q·k2 = {raw[0, 1]:.0f}")
    scores = raw / math.sqrt(d_k)
    print(f"2. scale by 1/√{d_k}: {raw[0, 0]:.0f}/√2 = {scores[0, 0]:.4f},  {raw[0, 1]:.0f}/√2 = {scores[0, 1]:.4f}")
    exp = scores.exp()
    weights = exp / exp.sum(-1, keepdim=True)
    print(f"3. softmax: e^{scores[0, 0]:.4f} = {exp[0, 0]:.4f}, e^{scores[0, 1]:.4f} = {exp[0, 1]:.4f}, "
          f"sum {exp.sum():.4f} -> weights {weights[0, 0]:.4f}, {weights[0, 1]:.4f}")
    out = weights @ v
    print(f"4. weighted sum of values: {weights[0, 0]:.4f}·{v[0].tolist()} + {weights[0, 1]:.4f}·{v[1].tolist()} "
          f"= [{out[0, 0]:.4f}, {out[0, 1]:.4f}]")

    lib_out, lib_weights = scaled_dot_product_attention(q, k, v, return_weights=True)
    fused = scaled_dot_product_attention(q, k, v)
    assert torch.allclose(lib_weights, weights) and torch.allclose(lib_out, out) and torch.allclose(fused, out)
    print("   core.scaled_dot_product_attention (explicit and fused paths) gives the same numbers.")
    return {"scores": scores[0].tolist(), "weights": weights[0].tolist(), "output": out[0].tolist()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Work the textbook attention example step by step and draw two heatmaps: "
        "attention over a sentence driven by positions alone, and the sinusoidal encoding.",
    )
    parser.add_argument("--out", default="runs/core", help="folder for the heatmaps (default: runs/core)")
    parser.add_argument("--dim", type=int, default=64, help="encoding dim for the heatmaps (default: 64)")
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    worked_example()
    out = Path(args.out)
    pe = sinusoidal_encoding(len(SENTENCE), args.dim)
    # With the positional encodings as queries and keys, attention can only use position: each word
    # attends to itself and its neighbours, the band a Transformer starts from before it learns content.
    _, weights = scaled_dot_product_attention(pe[None], pe[None], pe[None], return_weights=True)
    plot_attention(weights[0], x_labels=SENTENCE, y_labels=SENTENCE, annotate=False,
                   title="Attention from sinusoidal positions alone", path=out / "attention_positions.png")
    plot_positional_encoding(sinusoidal_encoding(100, args.dim), path=out / "positional_encoding.png")
    print(f"\nwrote {out / 'attention_positions.png'} and {out / 'positional_encoding.png'}")


if __name__ == "__main__":
    main()
