"""Attention masks: one convention for the whole project.

A boolean mask means **True = may attend** (the `F.scaled_dot_product_attention` convention); a float
mask is added to the scores. Nothing else is a mask: an integer or uint8 tensor is refused (is a 1 "attend"
or "add one to the score"?), and so is a float mask holding NaN. A mask with a batch dim (a padding mask,
a `(B, H, T, S)` tensor) must have exactly the batch of the queries; a mask without one (`(T, S)`,
`(H, T, S)`) is shared by the whole batch. The constructors below return small `Mask` objects that know their
structure (a band, a chunking, a padding, a graph). They build a dense tensor only when asked, and tell
the attention code which keys a block of queries can reach at all, so a sliding-window or chunked mask
can be served in O(T·w) without ever materialising T×T.

Legend: B batch, H heads, T query length, S key length, N nodes, E edges.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "Mask",
    "BandMask",
    "ChunkMask",
    "Window2dMask",
    "PaddingMask",
    "GraphMask",
    "DenseMask",
    "AndMask",
    "padding_mask",
    "valid_positions",
    "causal_mask",
    "sliding_window_mask",
    "chunked_mask",
    "window2d_mask",
    "adjacency_mask",
    "as_mask",
    "check_mask",
    "to_key_padding_mask",
    "check_edge_index",
]


class Mask:
    """A boolean attention mask that knows its structure.

    Subclasses implement `allows(q_idx, k_idx)`: given broadcastable integer tensors of query and key
    positions, say which pairs may attend. Everything else derives from it.
    """

    #: Query length the mask was built for (None: any).
    q_len: int | None = None
    #: Key length the mask was built for (None: any).
    k_len: int | None = None
    #: Batch size B of a mask that differs per batch element (None: shared by the whole batch).
    batch_size: int | None = None

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        """Bool tensor, True where query `q_idx` may attend key `k_idx`.

        Shapes: the broadcast of `q_idx` and `k_idx`, with `(B, 1)` in front for masks that depend on
        the batch (padding).
        """
        raise NotImplementedError

    def local_span(self) -> tuple[int, int, int] | None:
        """`(block, left, right)` such that the queries of block n (positions `n*block ..
        (n+1)*block - 1`) can only reach keys `n*block - left .. (n+1)*block - 1 + right`;
        None when the reach is unbounded (no local path possible)."""
        return None

    def window_2d(self) -> tuple[int, int, int, int] | None:
        """`(height, width, radius_y, radius_x)` when the tokens are the pixels of a `height × width` grid
        (flattened row-major) and pixel `(y, x)` can only reach pixels `|y' - y| <= radius_y`,
        `|x' - x| <= radius_x`; None otherwise (no 2-D local path possible)."""
        return None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def dense(self, device: torch.device | str | None = None) -> Tensor:
        """Materialise the mask: `(T, S)`, or `(B, 1, T, S)` / `(B, 1, 1, S)` for batch masks."""
        T, S = self.q_len, self.k_len
        if S is None:
            raise ValueError(f"{type(self).__name__} has no key length; combine it with a sized mask")
        device = self.device if device is None else torch.device(device)
        q_idx = torch.arange(1 if T is None else T, device=device).unsqueeze(-1)  # (T, 1)
        k_idx = torch.arange(S, device=device).unsqueeze(0)  # (1, S)
        return self.allows(q_idx, k_idx).to(device)

    def check_size(self, T: int, S: int) -> None:
        """Raise a clear error if this mask was built for other lengths than (T, S)."""
        if (self.q_len is not None and self.q_len != T) or (self.k_len is not None and self.k_len != S):
            raise ValueError(
                f"{type(self).__name__} was built for (T={self.q_len}, S={self.k_len}) "
                f"but attention has T={T} queries and S={S} keys"
            )

    def __and__(self, other: Mask | Tensor) -> Mask:
        return AndMask(self, _as_bool_mask(other))

    def __rand__(self, other: Tensor) -> Mask:
        return AndMask(_as_bool_mask(other), self)


def _check_length(name: str, value: int) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= 0
    except (TypeError, ValueError, RuntimeError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class BandMask(Mask):
    """Query i may attend key j iff `-left <= j - i <= right` (None: unbounded on that side)."""

    def __init__(self, T: int, left: int | None, right: int | None):
        self.q_len = self.k_len = _check_length("T", T)
        self.left = None if left is None else _check_length("left", left)
        self.right = None if right is None else _check_length("right", right)

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        offset = k_idx - q_idx
        ok = torch.ones_like(offset, dtype=torch.bool)
        if self.left is not None:
            ok = ok & (offset >= -self.left)
        if self.right is not None:
            ok = ok & (offset <= self.right)
        return ok

    def local_span(self) -> tuple[int, int, int] | None:
        if self.left is None or self.right is None:
            return None
        # A block about half the window keeps the wasted (computed but masked) scores near 1/3
        # while the batched matmuls stay large enough to be efficient.
        block = max(16, min(256, (self.left + self.right + 1) // 2))
        return block, self.left, self.right

    def __repr__(self) -> str:
        return f"BandMask(T={self.q_len}, left={self.left}, right={self.right})"


class ChunkMask(Mask):
    """Truncated (chunked) attention as streaming speech models use it.

    Frames are grouped into chunks of `chunk` frames; a frame in chunk c attends every frame of chunks
    `c - left_chunks .. c` (all the past when `left_chunks` is None) plus `right` frames of look-ahead
    past the end of its own chunk.
    """

    def __init__(self, T: int, chunk: int, left_chunks: int | None, right: int = 0):
        self.q_len = self.k_len = _check_length("T", T)
        if _check_length("chunk", chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.chunk = int(chunk)
        self.left_chunks = None if left_chunks is None else _check_length("left_chunks", left_chunks)
        self.right = _check_length("right", right)

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        q_chunk = torch.div(q_idx, self.chunk, rounding_mode="floor")
        ok = k_idx < (q_chunk + 1) * self.chunk + self.right
        if self.left_chunks is not None:
            ok = ok & (k_idx >= (q_chunk - self.left_chunks) * self.chunk)
        return ok

    def local_span(self) -> tuple[int, int, int] | None:
        if self.left_chunks is None:
            return None
        return self.chunk, self.left_chunks * self.chunk, self.right

    def __repr__(self) -> str:
        return f"ChunkMask(T={self.q_len}, chunk={self.chunk}, left_chunks={self.left_chunks}, right={self.right})"


class Window2dMask(Mask):
    """A 2-D neighbourhood on an image: the tokens are the pixels of a `height × width` grid, flattened
    row-major (token `y * width + x`), and pixel `(y, x)` may attend pixel `(y', x')` iff
    `|y' - y| <= radius_y` and `|x' - x| <= radius_x`: a `(2 radius_y + 1) × (2 radius_x + 1)` window centred
    on the query, cut at the image border (a convolution's receptive field, as attention)."""

    def __init__(self, height: int, width: int, radius_y: int, radius_x: int | None = None):
        self.height, self.width = _check_length("height", height), _check_length("width", width)
        self.radius_y = _check_length("radius_y", radius_y)
        self.radius_x = self.radius_y if radius_x is None else _check_length("radius_x", radius_x)
        self.q_len = self.k_len = self.height * self.width

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        w = self.width
        dy = torch.div(k_idx, w, rounding_mode="floor") - torch.div(q_idx, w, rounding_mode="floor")
        dx = k_idx % w - q_idx % w
        return (dy.abs() <= self.radius_y) & (dx.abs() <= self.radius_x)

    def window_2d(self) -> tuple[int, int, int, int] | None:
        return self.height, self.width, self.radius_y, self.radius_x

    def __repr__(self) -> str:
        return f"Window2dMask({self.height}x{self.width}, radius_y={self.radius_y}, radius_x={self.radius_x})"


class PaddingMask(Mask):
    """Key j of batch element b is real iff `j < lengths[b]`; padded keys are never attended."""

    def __init__(self, lengths: Tensor, max_len: int | None = None):
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"lengths must be a 1-D integer tensor (B,), got {tuple(lengths.shape)} {lengths.dtype}")
        if len(lengths) and lengths.min() < 0:
            raise ValueError(f"lengths must be >= 0, got {lengths.tolist()}")
        longest = int(lengths.max()) if len(lengths) else 0
        max_len = longest if max_len is None else _check_length("max_len", max_len)
        if longest > max_len:
            raise ValueError(f"a length ({longest}) exceeds max_len ({max_len})")
        self.lengths = lengths
        self.k_len = max_len
        self.batch_size = len(lengths)

    @property
    def device(self) -> torch.device:
        return self.lengths.device

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        shape = (-1, 1) + (1,) * max(q_idx.dim(), k_idx.dim())
        lengths = self.lengths.to(k_idx.device).view(shape)  # (B, 1, 1, ..., 1)
        return k_idx < lengths  # (B, 1, *broadcast)

    def __repr__(self) -> str:
        return f"PaddingMask(lengths={self.lengths.tolist()}, max_len={self.k_len})"


class GraphMask(Mask):
    """Node i may attend node j iff there is an edge j -> i (optionally plus self-loops)."""

    def __init__(self, edge_index: Tensor, num_nodes: int, self_loops: bool = True):
        edge_index = check_edge_index(edge_index, num_nodes)
        self.edge_index = edge_index
        self.num_nodes = self.q_len = self.k_len = int(num_nodes)
        self.self_loops = self_loops
        self._dense: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.edge_index.device

    def adjacency(self) -> Tensor:
        """`(N, N)` bool, `[i, j]` True when i may attend j (target i, source j)."""
        if self._dense is None:
            N = self.num_nodes
            adj = torch.zeros(N, N, dtype=torch.bool, device=self.edge_index.device)
            adj[self.edge_index[1], self.edge_index[0]] = True
            if self.self_loops:
                adj.fill_diagonal_(True)
            self._dense = adj
        return self._dense

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        return self.adjacency().to(q_idx.device)[q_idx, k_idx]

    def __repr__(self) -> str:
        return f"GraphMask(N={self.num_nodes}, E={self.edge_index.shape[1]}, self_loops={self.self_loops})"


class DenseMask(Mask):
    """A plain bool tensor broadcastable to `(B, H, T, S)`, wrapped so it combines with `&`."""

    def __init__(self, mask: Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"DenseMask needs a bool tensor (True = may attend), got {mask.dtype}")
        if mask.dim() < 2:
            raise ValueError(f"a dense mask needs at least (T, S) dims, got shape {tuple(mask.shape)}")
        self.mask = mask
        self.q_len = mask.shape[-2] if mask.shape[-2] != 1 else None
        self.k_len = mask.shape[-1] if mask.shape[-1] != 1 else None
        self.batch_size = mask.shape[-4] if mask.dim() >= 4 else None

    @property
    def device(self) -> torch.device:
        return self.mask.device

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        q_idx = q_idx if self.mask.shape[-2] != 1 else torch.zeros_like(q_idx)
        k_idx = k_idx if self.mask.shape[-1] != 1 else torch.zeros_like(k_idx)
        return self.mask.to(q_idx.device)[..., q_idx, k_idx]

    def dense(self, device: torch.device | str | None = None) -> Tensor:
        return self.mask if device is None else self.mask.to(device)

    def __repr__(self) -> str:
        return f"DenseMask(shape={tuple(self.mask.shape)})"


class AndMask(Mask):
    """Key j is allowed for query i iff every part allows it."""

    def __init__(self, *parts: Mask):
        flat: list[Mask] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, AndMask) else [part])
        self.parts = flat
        q_lens = {p.q_len for p in flat if p.q_len is not None}
        k_lens = {p.k_len for p in flat if p.k_len is not None}
        batches = {p.batch_size for p in flat if p.batch_size is not None}
        if len(q_lens) > 1 or len(k_lens) > 1:
            raise ValueError(f"cannot combine masks of different sizes: {flat}")
        if len(batches) > 1:
            raise ValueError(f"cannot combine masks of different batch sizes {sorted(batches)}: {flat}")
        self.q_len = q_lens.pop() if q_lens else None
        self.k_len = k_lens.pop() if k_lens else None
        self.batch_size = batches.pop() if batches else None

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    def allows(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        ok = self.parts[0].allows(q_idx, k_idx)
        for part in self.parts[1:]:
            ok = ok & part.allows(q_idx, k_idx)
        return ok

    def local_span(self) -> tuple[int, int, int] | None:
        # Any one bounded part bounds the conjunction; take the narrowest.
        spans = [s for s in (p.local_span() for p in self.parts) if s is not None]
        return min(spans, key=lambda s: s[0] + s[1] + s[2]) if spans else None

    def window_2d(self) -> tuple[int, int, int, int] | None:
        # A 2-D window bounds the conjunction; the other parts are applied inside each tile's keys.
        windows = [w for w in (p.window_2d() for p in self.parts) if w is not None]
        if len({w[:2] for w in windows}) > 1:
            raise ValueError(f"cannot combine 2-D windows over different grids: {self.parts}")
        return min(windows, key=lambda w: (2 * w[2] + 1) * (2 * w[3] + 1)) if windows else None

    def __repr__(self) -> str:
        return " & ".join(map(repr, self.parts))


# --- constructors -------------------------------------------------------------------------------


def padding_mask(lengths: Tensor, max_len: int | None = None) -> PaddingMask:
    """Mask padded keys: key j of batch element b is real iff `j < lengths[b]`.

    Args:
        lengths (LongTensor): `(B,)` true lengths.
        max_len (int, optional): padded length S; defaults to `lengths.max()`.

    Shapes: `dense()` is `(B, 1, 1, S)`.
    """
    return PaddingMask(lengths, max_len)


def valid_positions(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Which positions of a padded batch are real: the one converter from lengths to a per-position mask
    (loss masks, CRF masks, zeroing padding before a convolution).

    Args:
        lengths (LongTensor): `(B,)` true lengths.
        max_len (int, optional): padded length T; defaults to `lengths.max()`.

    Shapes: `(B, T)` bool on `lengths`' device, True on real positions.
    """
    B = lengths.shape[0]
    return padding_mask(lengths, max_len).dense(device=lengths.device).view(B, -1)  # (B, 1, 1, T) -> (B, T)


def causal_mask(T: int) -> BandMask:
    """Query i attends keys `j <= i`. `dense()` is `(T, T)`."""
    return BandMask(T, left=None, right=0)


def sliding_window_mask(T: int, left: int, right: int) -> BandMask:
    """Query i attends keys `i - left .. i + right`. `dense()` is `(T, T)`."""
    return BandMask(T, left=left, right=right)


def chunked_mask(T: int, chunk: int, left_chunks: int | None, right: int = 0) -> ChunkMask:
    """Truncated attention: chunks of `chunk` frames, each seeing `left_chunks` chunks of left context
    (None: all of it) and `right` frames of look-ahead. `dense()` is `(T, T)`."""
    return ChunkMask(T, chunk, left_chunks, right)


def window2d_mask(height: int, width: int, size: int | tuple[int, int]) -> Window2dMask:
    """A `size × size` (or `(size_y, size_x)`) neighbourhood around every pixel of a `height × width`
    image whose pixels are the tokens, row-major; sizes are odd. `dense()` is `(T, T)`, T = height·width."""
    size_y, size_x = (size, size) if isinstance(size, int) else size
    for name, value in (("size_y", size_y), ("size_x", size_x)):
        if _check_length(name, value) % 2 != 1:
            raise ValueError(f"a 2-D window is centred on its pixel, so its size must be odd; got {name}={value}")
    return Window2dMask(height, width, size_y // 2, size_x // 2)


def adjacency_mask(edge_index: Tensor, num_nodes: int, self_loops: bool = True) -> GraphMask:
    """Graph attention: node i attends node j iff there is an edge j -> i.

    Args:
        edge_index (LongTensor): `(2, E)`, row 0 sources, row 1 targets (PyG's convention).
        num_nodes (int): N.
        self_loops (bool, optional): every node also attends itself. (default: True)

    Shapes: `dense()` is `(N, N)`.
    """
    return GraphMask(edge_index, num_nodes, self_loops)


def check_edge_index(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Validate an edge list: `(2, E)` integer ids in `[0, num_nodes)`. Returns it unchanged."""
    _check_length("num_nodes", num_nodes)
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a tensor, got {type(edge_index).__name__}")
    if edge_index.dtype.is_floating_point or edge_index.dtype.is_complex or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must hold integer node ids, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0:
            raise ValueError(f"edge_index holds a negative node id ({lo})")
        if hi >= num_nodes:
            raise ValueError(f"edge_index holds node id {hi}, out of range for num_nodes={num_nodes}")
    return edge_index


def as_mask(mask: Mask | Tensor | None) -> Mask | Tensor | None:
    """Normalise what callers pass as a mask: a `Mask`, a bool tensor (wrapped), a float tensor
    (kept: it is an additive bias, not a boolean mask), or None.

    Raises:
        TypeError: for any other dtype. An integer or uint8 0/1 tensor is refused rather than guessed:
            added to the scores it would shift them by one instead of masking.
        ValueError: for a float mask holding NaN (it would turn whole rows of the output into NaN).
    """
    if mask is None or isinstance(mask, Mask):
        return mask
    if not isinstance(mask, Tensor):
        raise TypeError(f"a mask must be a core.masks.Mask, a bool tensor or a float tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return DenseMask(mask)
    if not mask.dtype.is_floating_point:
        raise TypeError(
            f"a mask tensor must be bool (True = may attend) or floating point (added to the scores), got "
            f"dtype {mask.dtype}; for a 0/1 mask pass `mask.bool()`, for a bias pass `mask.float()`"
        )
    if torch.isnan(mask).any():
        raise ValueError(f"the float mask {tuple(mask.shape)} holds NaN; mask with -inf (or a bool mask) instead")
    return mask


def _as_bool_mask(mask: Mask | Tensor) -> Mask:
    """`as_mask` for `&`: a float tensor is a bias, which has no logical and."""
    mask = as_mask(mask)
    if not isinstance(mask, Mask):
        raise TypeError(f"only boolean masks combine with &; got a {type(mask).__name__} of dtype {mask.dtype}")
    return mask


def check_mask(mask: Mask | Tensor | None, scores_shape: tuple[int, ...] | torch.Size) -> None:
    """Raise a clear error unless `mask` (already through `as_mask`) fits scores of `scores_shape`.

    The last two dims must be T (or 1) and S (or 1), the head dim (-3) H or 1, and a batch dim (-4 and
    further left) exactly the scores': a batch-1 mask on a batch of 2 is an error, not a broadcast.

    Args:
        mask (Mask, Tensor or None): the mask.
        scores_shape (tuple): shape of the scores it masks, `(*lead, T, S)`, e.g. `(B, H, T, S)`.
    """
    if mask is None:
        return
    scores = tuple(scores_shape)
    T, S = scores[-2], scores[-1]
    if isinstance(mask, Mask):
        mask.check_size(T, S)
        if mask.batch_size is not None and (len(scores) < 4 or scores[-4] != mask.batch_size):
            batch = f"a batch of {scores[-4]}" if len(scores) >= 4 else f"scores {scores} without a batch dim"
            raise ValueError(f"{mask!r} is for a batch of {mask.batch_size} but attention has {batch}")
        return
    shape = tuple(mask.shape)
    if len(shape) > len(scores):
        raise ValueError(f"mask {shape} has more dims than the scores {scores}")
    for dim in range(1, len(shape) + 1):
        size, want = shape[-dim], scores[-dim]
        if size != want and (dim >= 4 or size != 1):
            what = {1: "keys S", 2: "queries T", 3: "heads H"}.get(dim, "batch")
            raise ValueError(
                f"mask {shape} does not fit the scores {scores}: dim {-dim} ({what}) is {size}, must be {want}"
                + (" (a mask with a batch dim must match the batch exactly)" if dim >= 4 else " or 1")
            )


def to_key_padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """The one converter to `nn.MultiheadAttention`'s `key_padding_mask`, whose convention is the
    opposite of ours (True = ignore). Returns `(B, S)`."""
    return ~padding_mask(lengths, max_len).dense().view(len(lengths), -1)
