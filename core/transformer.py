"""Transformer encoder blocks built on `core.multihead` (Vaswani et al. 2017, §3.1).

Post-LN (the paper): `x = LN(x + Attn(x)); x = LN(x + FFN(x))`.
Pre-LN (trains without warm-up and deeper, Xiong et al. 2020): `x = x + Attn(LN(x)); x = x + FFN(LN(x))`.

Legend: B batch, T length, S context length, D model dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.attention import PositionBias
from core.masks import Mask
from core.multihead import MultiHeadAttention

__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


class TransformerEncoderLayer(nn.Module):
    """Self-attention and a position-wise feed-forward network, each with a residual connection.

    Args:
        dim (int): model dim D.
        num_heads (int): attention heads.
        ffn_dim (int, optional): hidden width of the feed-forward net. (default: 4 * dim)
        dropout (float, optional): dropout on the residual branches and inside the FFN. (default: 0.1)
        attn_dropout (float, optional): dropout on the attention weights. (default: 0.0)
        activation (str, optional): "gelu" or "relu". (default: "gelu")
        norm_first (bool, optional): pre-LN if True, post-LN otherwise. (default: True)

    Shapes:
        x `(B, T, D)` -> `(B, T, D)`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        ffn_dim = 4 * dim if ffn_dim is None else ffn_dim
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), _ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Mask | Tensor | None = None,
        position_bias: PositionBias | None = None,
        *,
        context: Tensor | None = None,
        q_offset: int = 0,
        k_offset: int = 0,
    ) -> Tensor:
        """Args:
            x (Tensor): `(B, T, D)` layer input.
            mask, position_bias: as in `MultiHeadAttention`.
            context (Tensor, optional): `(B, S, D)` layer input of the keys when they are not `x`
                (streaming: cached left context followed by the current chunk). (default: x)
            q_offset, k_offset (int, optional): absolute positions of the first query / key.
        """

        def attend(h: Tensor, c: Tensor | None) -> Tensor:
            return self.attn(h, c, mask=mask, position_bias=position_bias, q_offset=q_offset, k_offset=k_offset)

        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(attend(h, None if context is None else self.norm1(context)))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(attend(x, context)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class TransformerEncoder(nn.Module):
    """A stack of `TransformerEncoderLayer`s sharing one mask and one position bias, with a final
    LayerNorm in the pre-LN arrangement.

    Args:
        dim, num_heads: as in `TransformerEncoderLayer`.
        num_layers (int): depth.
        ffn_dim, dropout, attn_dropout, activation, norm_first: as in `TransformerEncoderLayer`.

    Shapes:
        x `(B, T, D)` -> `(B, T, D)`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                dim, num_heads, ffn_dim=ffn_dim, dropout=dropout, attn_dropout=attn_dropout,
                activation=activation, norm_first=norm_first,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(self, x: Tensor, mask: Mask | Tensor | None = None, position_bias: PositionBias | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask, position_bias)
        return self.norm(x)
