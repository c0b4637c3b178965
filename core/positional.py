"""Positional information: attention itself is blind to order, so positions come from here.

Absolute encodings are added to the token vectors: sinusoidal (Vaswani et al. 2017, §3.5), learned, and
2-D sinusoidal for pixel grids. The relative scheme is a *learned relative position bias*: one scalar per
head and clipped offset `j - i`, added to the attention scores (Shaw et al. 2018; Raffel et al. 2020).
We pick it over RoPE because it is direction-aware (offset +3 and -3 get different biases, the property
TENER (Yan et al. 2019) found a Transformer tagger needs), because it is an additive score term that every
attention path here takes as is (dense, fused, the blocked local path and streaming with offsets), and
because on a 2-D grid a bias peaked at one offset per head is exactly the construction by which
self-attention reproduces a convolution (Cordonnier et al. 2020). That construction's own form, the
quadratic encoding (`QuadraticPositionBias2d`: a learned centre and sharpness per head), has rank 3, so
attention runs it on the fused kernel as extra query/key channels instead of building a (T, S) bias.

Legend: B batch, T length, D model dim, H heads.
"""

from __future__ import annotations

import math

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
    "QuadraticPositionBias2d",
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


class QuadraticPositionBias2d(nn.Module):
    """Cordonnier et al.'s quadratic encoding: head h adds ``-α_h ‖δ - Δ_h‖²`` to the score of the key at
    offset ``δ = (dy, dx)`` from the query, pixels of a `? × width` grid flattened row-major. ``Δ_h`` (the
    offset head h looks at) and ``α_h > 0`` (how sharply) are learned; with a large ``α_h`` the head attends
    to the one pixel at ``Δ_h``, which is how attention reproduces a convolution (Cordonnier, Loukas & Jaggi,
    ICLR 2020, §3).

    Unlike a learned table (:class:`RelativePositionBias2d`) the bias, up to a constant per query that the
    softmax ignores, has rank 3 as a (T, S) matrix, so attention can run it on the fused kernel without ever
    building it: :meth:`factors` gives ``F_q (H, T, 3)`` and ``F_k (H, S, 3)``, and
    ``core.attention.scaled_dot_product_attention`` appends them to the queries and keys as three extra
    channels. Expanding the square subtracts terms of size ``α ‖p‖²``, so :meth:`factors` declines (returns
    None, and attention builds the bias instead) when the dtype's rounding of those terms could move a score
    by more than :data:`FACTOR_TOLERANCE`.

    Args:
        num_heads (int): H.
        width (int): grid width (pixels per row).
        sharpness (float, optional): initial α of every head. (default: 0.01: −1 at 10 pixels)
        spread (float, optional): initial Δ_h drawn from N(0, spread²) pixels per axis. (default: 1.0)

    Shapes:
        q_idx, k_idx: broadcastable flat pixel indices -> `(H, *broadcast_shape)`.
    """

    #: largest rounding error, in score units, the factored form may add (else attention builds the bias)
    FACTOR_TOLERANCE = 1e-5

    def __init__(self, num_heads: int, width: int, sharpness: float = 0.01, spread: float = 1.0):
        super().__init__()
        if num_heads < 1 or width < 1 or sharpness <= 0:
            raise ValueError(f"QuadraticPositionBias2d needs num_heads >= 1, width >= 1 and sharpness > 0, got "
                             f"{num_heads}, {width} and {sharpness}")
        self.width = width
        self.centre = nn.Parameter(torch.randn(num_heads, 2) * spread)  # Δ_h = (dy, dx) in pixels
        self.log_sharpness = nn.Parameter(torch.full((num_heads,), math.log(sharpness)))

    @property
    def sharpness(self) -> Tensor:
        """α `(H,)`."""
        return self.log_sharpness.exp()

    def _coords(self, idx: Tensor) -> Tensor:
        """Flat indices `(...)` -> `(..., 2)` integer (row, column)."""
        return torch.stack((torch.div(idx, self.width, rounding_mode="floor"), idx % self.width), dim=-1)

    def forward(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        delta = self._coords(k_idx) - self._coords(q_idx)  # (*shape, 2)
        shape = delta.shape[:-1]
        centre = self.centre.view(-1, *([1] * len(shape)), 2)  # (H, 1.., 2)
        alpha = self.sharpness.view(-1, *([1] * len(shape)))
        return -alpha * (delta.to(centre.dtype) - centre).square().sum(-1)  # (H, *shape)

    def factors(self, q_idx: Tensor, k_idx: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        """``(F_q (H, T, 3), F_k (H, S, 3))`` in ``dtype`` such that ``F_q F_kᵀ`` equals ``forward(q_idx[:, None],
        k_idx[None, :])`` up to a constant per query (which the softmax ignores), or None when rounding in
        ``dtype`` could exceed :data:`FACTOR_TOLERANCE`.

        ``-α‖p_k - p_q - Δ‖² = 2α p_q·p_k - α(‖p_k‖² - 2 p_k·Δ) - α(‖p_q‖² + ‖Δ‖² + 2 p_q·Δ)``: the first
        two terms are ``[2α p_q, 1] · [p_k, -α(‖p_k‖² - 2 p_k·Δ)]``, the last depends on the query alone.

        Args:
            q_idx (Tensor): `(T,)` flat query indices; k_idx (Tensor): `(S,)` flat key indices.
        """
        if not dtype.is_floating_point:
            return None
        pq, pk = self._coords(q_idx).to(dtype), self._coords(k_idx).to(dtype)
        both = torch.cat((pq, pk))
        middle = (both.amax(0) + both.amin(0)) / 2  # centring the grid keeps ‖p‖ small; δ is unchanged
        pq, pk = pq - middle, pk - middle
        alpha, centre = self.sharpness.to(dtype), self.centre.to(dtype)  # (H,), (H, 2)
        reach = both.sub(middle).norm(dim=-1).max() + centre.norm(dim=-1).max()
        if float((alpha.max() * reach.square()).detach()) * torch.finfo(dtype).eps > self.FACTOR_TOLERANCE:
            return None
        H, T, S = alpha.shape[0], pq.shape[0], pk.shape[0]
        a = alpha.view(H, 1, 1)
        fq = torch.cat((2 * a * pq, torch.ones(H, T, 1, dtype=dtype, device=pq.device)), dim=-1)  # (H, T, 3)
        key_term = -a.squeeze(-1) * (pk.square().sum(-1) - 2 * centre @ pk.T)  # (H, S)
        fk = torch.cat((pk.expand(H, S, 2), key_term.unsqueeze(-1)), dim=-1)  # (H, S, 3)
        return fq, fk
