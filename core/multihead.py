"""Multi-head attention: project, split into heads, attend, concatenate, project back.

    MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O,  head_h = Attention(Q W^Q_h, K W^K_h, V W^V_h)

Parameters are laid out as `nn.MultiheadAttention` lays them out (a packed `in_proj_weight` when query, key
and value share the model dim), so weights transfer both ways with `from_torch` / `to_torch`.

Legend: B batch, T query length, S key length, D model dim, H heads, Dh head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import capture
from core.attention import PositionBias, scaled_dot_product_attention
from core.masks import Mask

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    r"""Multi-head self- or cross-attention, batch first.

    Args:
        dim (int): model dim D (queries and output), >= 1.
        num_heads (int): H >= 1; must divide D.
        kdim (int, optional): key feature dim, >= 1. (default: D)
        vdim (int, optional): value feature dim, >= 1. (default: D)
        bias (bool, optional): biases on the projections. (default: True)
        dropout (float, optional): dropout on the attention weights in training, in [0, 1). (default: 0.0)

    Shapes:
        query `(B, T, D)`, key `(B, S, kdim)`, value `(B, S, vdim)` -> `(B, T, D)`,
        and weights `(B, H, T, S)` when asked for.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        kdim = dim if kdim is None else kdim
        vdim = dim if vdim is None else vdim
        for name, value in (("dim", dim), ("num_heads", num_heads), ("kdim", kdim), ("vdim", vdim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MultiHeadAttention: {name} must be an integer >= 1, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"MultiHeadAttention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.kdim, self.vdim = kdim, vdim
        self.dropout = dropout
        self.packed = self.kdim == dim and self.vdim == dim
        if self.packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(dim, dim))
            self.k_proj_weight = nn.Parameter(torch.empty(dim, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(dim, self.vdim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation `nn.MultiheadAttention` uses."""
        for w in self._projection_weights():
            nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _projection_weights(self) -> list[Tensor]:
        if self.packed:
            return [self.in_proj_weight]
        return [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]

    def project_one(self, x: Tensor, role: str) -> Tensor:
        """One input projection, split into heads: `x (B, L, ·)` as the `"query"`, `"key"` or `"value"`
        -> `(B, H, L, Dh)`. What a key/value cache needs: a decoder step projects only its new token, and
        cross-attention projects the encoder output once per sequence."""
        which = ("query", "key", "value").index(role)
        weight = self.in_proj_weight.chunk(3)[which] if self.packed else self._projection_weights()[which]
        bias = None if self.in_proj_bias is None else self.in_proj_bias.chunk(3)[which]
        B, L, _ = x.shape
        return F.linear(x, weight, bias).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def attend_heads(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Mask | Tensor | None = None, *,
        position_bias: PositionBias | None = None, return_weights: bool = False, q_offset: int = 0, k_offset: int = 0,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The second half over projected heads: attention (dropout while training), capture, merge the
        heads, output projection. q `(B, H, T, Dh)`, k/v `(B, H, S, Dh)` -> `(B, T, D)` (and the weights
        `(B, H, T, S)` with `return_weights`)."""
        want_weights = return_weights or capture.is_capturing()
        result = scaled_dot_product_attention(
            q, k, v, mask, dropout=self.dropout if self.training else 0.0, return_weights=want_weights,
            position_bias=position_bias, q_offset=q_offset, k_offset=k_offset,
        )
        out, weights = result if want_weights else (result, None)
        if weights is not None:
            capture.record(self, weights)
        B, H, T, Dh = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(B, T, H * Dh))  # (B, T, D)
        return (out, weights) if return_weights else out

    def project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Input projections, split into heads: `(B, H, T, Dh)`, `(B, H, S, Dh)`, `(B, H, S, Dh)`."""
        B, T, _ = query.shape
        S = key.shape[1]
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        if self.packed and key is query and value is query:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            wq, wk, wv = self.in_proj_weight.chunk(3) if self.packed else self._projection_weights()
            q, k, v = F.linear(query, wq, b[0]), F.linear(key, wk, b[1]), F.linear(value, wv, b[2])
        H, Dh = self.num_heads, self.head_dim
        q = q.view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
        k = k.view(B, S, H, Dh).transpose(1, 2)  # (B, H, S, Dh)
        v = v.view(B, S, H, Dh).transpose(1, 2)  # (B, H, S, Dh)
        return q, k, v

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        mask: Mask | Tensor | None = None,
        position_bias: PositionBias | None = None,
        return_weights: bool = False,
        q_offset: int = 0,
        k_offset: int = 0,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from `query` to `key`/`value` (self-attention when they are omitted).

        Args:
            query (Tensor): `(B, T, D)`.
            key (Tensor, optional): `(B, S, kdim)`; defaults to `query`.
            value (Tensor, optional): `(B, S, vdim)`; defaults to `key`.
            mask (Mask or Tensor, optional): see `core.attention.scaled_dot_product_attention`.
            position_bias (callable, optional): additive bias from absolute positions.
            return_weights (bool, optional): also return `(B, H, T, S)` weights. (default: False)
            q_offset, k_offset (int, optional): absolute positions of the first query / key.
        """
        key = query if key is None else key
        value = key if value is None else value
        if query.dim() != 3 or query.shape[-1] != self.dim:
            raise ValueError(f"query must be (B, T, {self.dim}), got {tuple(query.shape)}")
        if key.dim() != 3 or key.shape[-1] != self.kdim or key.shape[0] != query.shape[0]:
            raise ValueError(f"key must be (B={query.shape[0]}, S, {self.kdim}), got {tuple(key.shape)}")
        if value.shape[:2] != key.shape[:2] or value.shape[-1] != self.vdim:
            raise ValueError(f"value must be (B, S, {self.vdim}) matching key {tuple(key.shape)}, got {tuple(value.shape)}")
        q, k, v = self.project(query, key, value)
        return self.attend_heads(q, k, v, mask, position_bias=position_bias, return_weights=return_weights,
                                 q_offset=q_offset, k_offset=k_offset)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """A `MultiHeadAttention` holding a copy of `mha`'s weights."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn have no counterpart here")
        ours = cls(
            mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim,
            bias=mha.in_proj_bias is not None, dropout=mha.dropout,
        ).to(mha.out_proj.weight.device, mha.out_proj.weight.dtype)
        ours.load_state_dict(_torch_state(mha), strict=True)
        return ours

    def to_torch(self) -> nn.MultiheadAttention:
        """An `nn.MultiheadAttention(batch_first=True)` holding a copy of these weights."""
        mha = nn.MultiheadAttention(
            self.dim, self.num_heads, dropout=self.dropout, bias=self.in_proj_bias is not None,
            kdim=self.kdim, vdim=self.vdim, batch_first=True,
        ).to(self.out_proj.weight.device, self.out_proj.weight.dtype)
        wanted = set(_torch_state(mha))
        mha.load_state_dict({k: v for k, v in self.state_dict().items() if k in wanted}, strict=True)
        return mha


def _torch_state(mha: nn.MultiheadAttention) -> dict[str, Tensor]:
    """`mha`'s parameters under our names (they are the same names; the set differs by layout)."""
    return {k: v for k, v in mha.state_dict().items() if v is not None}
