"""One way to get attention weights out of any model built on core, for plots.

    with capture_attention(model) as maps:
        model(x)
    maps[0].name, maps[0].weights   # "encoder.layers.0.attn", (B, H, T, S)

Outside the context manager nothing is recorded and nothing extra is computed: layers check one flag.
While it is active, `MultiHeadAttention` takes the explicit path (so the weights exist) and reports them;
layers that compute attention some other way (e.g. sparse graph attention) call `record` themselves.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from torch import Tensor, nn

__all__ = ["AttentionMap", "capture_attention", "is_capturing", "record"]


@dataclass
class AttentionMap:
    """One layer's attention weights from one forward call."""

    name: str  #: the module's qualified name in the captured model
    weights: Tensor  #: detached; `(B, H, T, S)` for dense attention, `(E, H)` for edge attention


_active: list[tuple[dict[int, str], list[AttentionMap]]] = []


def is_capturing() -> bool:
    """True inside a `capture_attention` block."""
    return bool(_active)


def record(module: nn.Module, weights: Tensor) -> None:
    """Report a layer's attention weights to the innermost active capture (no-op outside one)."""
    if _active:
        names, maps = _active[-1]
        maps.append(AttentionMap(names.get(id(module), type(module).__name__), weights.detach()))


@contextmanager
def capture_attention(model: nn.Module | None = None) -> Iterator[list[AttentionMap]]:
    """Collect every attention layer's weights during the block, in call order.

    Args:
        model (nn.Module, optional): used only to name the layers. (default: None)
    """
    names = {id(m): name for name, m in model.named_modules()} if model is not None else {}
    maps: list[AttentionMap] = []
    _active.append((names, maps))
    try:
        yield maps
    finally:
        _active.pop()
