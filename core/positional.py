"""Positional information: attention itself is blind to order, so positions come from here.

Absolute encodings are added to the token vectors: sinusoidal (Vaswani et al. 2017, §3.5), learned, and
2-D sinusoidal for pixel grids. The relative scheme is a *learned relative position bias*: one scalar per
head and clipped offset `j - i`, added to the attention scores (Shaw et al. 2018; Raffel et al. 2020).
We pick it over RoPE because it is direction-aware (offset +3 and -3 get different biases, the property
TENER (Yan et al. 2019) found a Transformer tagger needs), because it is an additive score term that every
attention path here takes as is (dense, fused, the blocked local path and streaming with offsets), and
because on a 2-D grid a bias peaked at one offset per head is exactly the construction by which
self-attention reproduces a convolution (Cordonnier et al. 2020).

Legend: B batch, T length, D model dim, H heads.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "sinusoidal_encoding",
    "sinusoidal_encoding_2d",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "SinusoidalPositionalEncoding2d",
    "RelativePositionBias",
    "RelativePositionBias2d",
]


def sinusoidal_encoding(length: int, dim: int, base: float = 10000.0) -> Tensor:
    """`PE[pos, 2i] = sin(pos / base^(2i/dim))`, `PE[pos, 2i+1] = cos(pos / base^(2i/dim))`.

    Returns:
        `(length, dim)` float32.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dim >= 2, got {dim}")
    if length < 0:
        raise ValueError(f"sinusoidal encoding length must be >= 0, got {length}")
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (D/2,)
    angles = pos * inv_freq  # (T, D/2)
    pe = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (T, D): sin, cos interleaved
    return pe.float()


def sinusoidal_encoding_2d(height: int, width: int, dim: int, base: float = 10000.0) -> Tensor:
    """2-D sinusoidal encoding for a `height × width` grid, flattened row-major: the first half of the
    dims encodes the row, the second half the column.

    Returns:
        `(height * width, dim)`.
    """
    if dim < 4 or dim % 4:
        raise ValueError(f"2-D sinusoidal encoding needs dim divisible by 4, got {dim}")
    rows = sinusoidal_encoding(height, dim // 2, base)  # (Hh, D/2)
    cols = sinusoidal_encoding(width, dim // 2, base)  # (W, D/2)
    grid = torch.cat(
        (rows.unsqueeze(1).expand(height, width, -1), cols.unsqueeze(0).expand(height, width, -1)), dim=-1
    )  # (Hh, W, D)
    return grid.reshape(height * width, dim)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding to `(B, T, D)` inputs. Any length works (the table grows).

    Args:
        dim (int): model dim D (even).
        max_len (int, optional): rows precomputed. (default: 1024)
        base (float, optional): wavelength base. (default: 10000.0)
    """

    def __init__(self, dim: int, max_len: int = 1024, base: float = 10000.0):
        super().__init__()
        self.dim, self.base = dim, base
        self.register_buffer("pe", sinusoidal_encoding(max_len, dim, base), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T = x.shape[1]
        if offset < 0:
            raise ValueError(f"offset (position of the first token) must be >= 0, got {offset}")
        if offset + T > self.pe.shape[0]:
            self.pe = sinusoidal_encoding(2 * (offset + T), self.dim, self.base).to(self.pe.device)
        return x + self.pe[offset : offset + T].to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """A learned vector per absolute position, added to `(B, T, D)` inputs.

    Args:
        dim (int): model dim D.
        max_len (int): positions it has vectors for; longer inputs are an error.
    """

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        if dim < 1 or max_len < 1:
            raise ValueError(f"LearnedPositionalEncoding needs dim >= 1 and max_len >= 1, got {dim} and {max_len}")
        self.embedding = nn.Embedding(max_len, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        T, max_len = x.shape[1], self.embedding.num_embeddings
        if offset < 0:
            raise ValueError(f"offset (position of the first token) must be >= 0, got {offset}")
        if offset + T > max_len:
            raise ValueError(f"input reaches position {offset + T} but the learned encoding has {max_len}")
        return x + self.embedding.weight[offset : offset + T]


class SinusoidalPositionalEncoding2d(nn.Module):
    """Adds the 2-D sinusoidal encoding to pixel tokens `(B, height*width, D)`."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim, self.base = dim, base
        self._cache: dict[tuple[int, int], Tensor] = {}

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        if x.shape[1] != height * width:
            raise ValueError(f"got {x.shape[1]} tokens for a {height}×{width} grid")
        if (height, width) not in self._cache:
            self._cache[(height, width)] = sinusoidal_encoding_2d(height, width, self.dim, self.base)
        return x + self._cache[(height, width)].to(x.device, x.dtype)


class RelativePositionBias(nn.Module):
    """A learned, direction-aware bias per head on the offset `j - i`, clipped to ±max_distance.

    Called by the attention code as `bias(q_idx, k_idx)` with broadcastable absolute positions.

    Args:
        num_heads (int): H.
        max_distance (int, optional): offsets beyond ±max_distance share the edge bias. (default: 64)

    Shapes:
        q_idx, k_idx: broadcastable integer tensors -> `(H, *broadcast_shape)`.
    """

    def __init__(self, num_heads: int, max_distance: int = 64):
        super().__init__()
        if num_heads < 1 or max_distance < 0:
            raise ValueError(
                f"RelativePositionBias needs num_heads >= 1 and max_distance >= 0, got {num_heads} and {max_distance}"
            )
        self.max_distance = max_distance
        self.bias = nn.Parameter(torch.zeros(2 * max_distance + 1, num_heads))

    def forward(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        offset = (k_idx - q_idx).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.bias[offset].movedim(-1, 0)  # (H, *shape)


class RelativePositionBias2d(nn.Module):
    """A learned bias per head on 2-D offsets `(dy, dx)` between pixels of a `? × width` grid whose
    tokens are flattened row-major; each offset component is clipped to ±max_distance.

    Shapes:
        q_idx, k_idx: broadcastable flat pixel indices -> `(H, *broadcast_shape)`.
    """

    def __init__(self, num_heads: int, max_distance: int, width: int):
        super().__init__()
        if num_heads < 1 or max_distance < 0 or width < 1:
            raise ValueError(
                f"RelativePositionBias2d needs num_heads >= 1, max_distance >= 0 and width >= 1, got "
                f"{num_heads}, {max_distance} and {width}"
            )
        self.max_distance, self.width = max_distance, width
        side = 2 * max_distance + 1
        self.bias = nn.Parameter(torch.zeros(side * side, num_heads))

    def offsets(self, q_idx: Tensor, k_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Clipped `(dy, dx)` from query to key."""
        m = self.max_distance
        dy = (torch.div(k_idx, self.width, rounding_mode="floor") - torch.div(q_idx, self.width, rounding_mode="floor"))
        dx = k_idx % self.width - q_idx % self.width
        return dy.clamp(-m, m), dx.clamp(-m, m)

    def forward(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        m = self.max_distance
        dy, dx = self.offsets(q_idx, k_idx)
        return self.bias[(dy + m) * (2 * m + 1) + (dx + m)].movedim(-1, 0)  # (H, *shape)

