"""Transformer encoder and decoder blocks built on `core.multihead` (Vaswani et al. 2017, §3.1), and the
encoder–decoder that joins them.

Post-LN (the paper): `x = LN(x + Attn(x)); x = LN(x + FFN(x))`.
Pre-LN (trains without warm-up and deeper, Xiong et al. 2020): `x = x + Attn(LN(x)); x = x + FFN(LN(x))`.

The decoder layer adds a second attention between the two: its queries are the decoder's states, its keys
and values the encoder's output ("memory"). Its self-attention is causal, so the prediction at position t
cannot see the answer at t+1. `TransformerDecoder.step` decodes one token at a time with a key/value cache
(`core.decoding`), equal to the full causal pass.

Legend: B batch, T target length, S source (memory) length, D model dim, H heads, Dh head dim, V vocabulary,
t tokens decoded so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from core.attention import PositionBias
from core.decoding import DecoderState, LayerCache, SearchResult, beam_search, greedy_search
from core.masks import DenseMask, Mask, causal_mask, padding_mask
from core.multihead import MultiHeadAttention
from core.positional import SinusoidalPositionalEncoding

__all__ = [
    "TransformerEncoderLayer",
    "TransformerEncoder",
    "TransformerDecoderLayer",
    "TransformerDecoder",
    "EncoderDecoder",
    "decoder_masks",
]

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

    def forward(self, x: Tensor, mask: Mask | Tensor | None = None,
                position_bias: PositionBias | Sequence[PositionBias] | None = None) -> Tensor:
        """`position_bias`: one module shared by every layer, or a sequence (e.g. `nn.ModuleList`) with one
        per layer."""
        per_layer = isinstance(position_bias, (list, tuple, nn.ModuleList))
        if per_layer and len(position_bias) != len(self.layers):
            raise ValueError(f"got {len(position_bias)} position biases for {len(self.layers)} layers")
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, position_bias[i] if per_layer else position_bias)
        return self.norm(x)


# --- decoder ------------------------------------------------------------------------------------


def decoder_masks(
    T: int, S: int, tgt_lengths: Tensor | None = None, memory_lengths: Tensor | None = None
) -> tuple[Mask, Mask | None]:
    """The decoder's two masks: causal (and target padding) for self-attention, memory padding for
    cross-attention.

    Args:
        T (int): target length.
        S (int): memory length.
        tgt_lengths (LongTensor, optional): `(B,)` true target lengths. (default: None)
        memory_lengths (LongTensor, optional): `(B,)` true memory lengths. (default: None)

    Returns:
        `(self_mask, memory_mask)`: dense `(T, T)` or `(B, 1, T, T)`, and `(B, 1, 1, S)` or None.
    """
    self_mask: Mask = causal_mask(T)
    if tgt_lengths is not None:
        self_mask = self_mask & padding_mask(tgt_lengths, T)
    memory_mask = None if memory_lengths is None else padding_mask(memory_lengths, S)
    return self_mask, memory_mask


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention over the encoder output, and a feed-forward network, each with
    a residual connection; the arrangement of `nn.TransformerDecoderLayer` (weights transfer one to one).

    Post-LN: `x = LN1(x + SelfAttn(x)); x = LN2(x + CrossAttn(x, memory)); x = LN3(x + FFN(x))`.
    Pre-LN: `x = x + SelfAttn(LN1(x)); x = x + CrossAttn(LN2(x), memory); x = x + FFN(LN3(x))`
    (the memory enters unnormalised: the encoder's final LayerNorm has normalised it).

    Args:
        dim (int): model dim D.
        num_heads (int): attention heads, in both attentions.
        ffn_dim (int, optional): hidden width of the feed-forward net. (default: 4 * dim)
        dropout (float, optional): dropout on the residual branches and inside the FFN. (default: 0.1)
        attn_dropout (float, optional): dropout on the attention weights. (default: 0.0)
        activation (str, optional): "gelu" or "relu". (default: "gelu")
        norm_first (bool, optional): pre-LN if True, post-LN otherwise. (default: True)

    Shapes:
        x `(B, T, D)`, memory `(B, S, D)` -> `(B, T, D)`.
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
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout=attn_dropout)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), _ACTIVATIONS[activation](), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Mask | Tensor | None = None,
        memory_mask: Mask | Tensor | None = None,
    ) -> Tensor:
        """Args:
            x (Tensor): `(B, T, D)` target-side input.
            memory (Tensor): `(B, S, D)` encoder output.
            self_mask (Mask or Tensor, optional): self-attention mask, `(T, T)`-shaped; pass
                `causal_mask(T)` (and `& padding_mask(tgt_lengths, T)`), see `decoder_masks`. (default: None)
            memory_mask (Mask or Tensor, optional): cross-attention mask, e.g. `padding_mask(memory_lengths, S)`.
                (default: None)
        """
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.dropout1(self.self_attn(h, mask=self_mask))
            x = x + self.dropout2(self.cross_attn(self.norm2(x), memory, mask=memory_mask))
            return x + self.dropout3(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, mask=self_mask)))
        x = self.norm2(x + self.dropout2(self.cross_attn(x, memory, mask=memory_mask)))
        return self.norm3(x + self.dropout3(self.ffn(x)))

    def init_cache(self, memory: Tensor) -> LayerCache:
        """The cache before the first token: empty self-attention keys/values, and the cross-attention
        keys/values of `memory (B, S, D)` projected once."""
        B = memory.shape[0]
        H, Dh = self.self_attn.num_heads, self.self_attn.head_dim
        empty = memory.new_zeros(B, H, 0, Dh)  # (B, H, 0, Dh)
        # project_one's heads are a transposed view, which the CPU's fused kernel reads more slowly; every step
        # reads these, so they are laid out (B, H, S, Dh) once here.
        cross_k = self.cross_attn.project_one(memory, "key").contiguous()  # (B, H, S, Dh)
        cross_v = self.cross_attn.project_one(memory, "value").contiguous()  # (B, H, S, Dh)
        return LayerCache(empty, empty, cross_k, cross_v)

    def step(self, x: Tensor, cache: LayerCache, memory_mask: Mask | Tensor | None = None) -> tuple[Tensor, LayerCache]:
        """Process the next token(s) given the cache of everything before them.

        Only `x` is projected: its keys and values are appended to the cache and it attends the whole
        cached prefix (itself included; among several new tokens, causally).

        Args:
            x (Tensor): `(B, T_new, D)` the new tokens' layer input (usually T_new = 1).
            cache (LayerCache): from `init_cache` or the previous `step`.
            memory_mask (Mask or Tensor, optional): cross-attention mask, as in `forward`.

        Returns:
            `(y (B, T_new, D), cache)`, the cache extended by T_new tokens.
        """
        past, T_new = cache.self_k.shape[-2], x.shape[1]
        self_mask = None
        if T_new > 1:
            q_idx = torch.arange(T_new, device=x.device).unsqueeze(1) + past  # (T_new, 1)
            k_idx = torch.arange(past + T_new, device=x.device).unsqueeze(0)  # (1, t)
            self_mask = DenseMask(k_idx <= q_idx)  # (T_new, t)

        def self_attend(h: Tensor) -> tuple[Tensor, LayerCache]:
            q, k, v = self.self_attn.project(h, h, h)  # (B, H, T_new, Dh) each
            k = torch.cat((cache.self_k, k), dim=2)  # (B, H, t, Dh)
            v = torch.cat((cache.self_v, v), dim=2)  # (B, H, t, Dh)
            new_cache = LayerCache(k, v, cache.cross_k, cache.cross_v)
            return self.self_attn.attend_heads(q, k, v, self_mask), new_cache

        def cross_attend(h: Tensor) -> Tensor:
            q = self.cross_attn.project_one(h, "query")  # (B, H, T_new, Dh)
            return self.cross_attn.attend_heads(q, cache.cross_k, cache.cross_v, memory_mask)

        if self.norm_first:
            a, cache = self_attend(self.norm1(x))
            x = x + self.dropout1(a)
            x = x + self.dropout2(cross_attend(self.norm2(x)))
            return x + self.dropout3(self.ffn(self.norm3(x))), cache
        a, cache = self_attend(x)
        x = self.norm1(x + self.dropout1(a))
        x = self.norm2(x + self.dropout2(cross_attend(x)))
        return self.norm3(x + self.dropout3(self.ffn(x))), cache


class TransformerDecoder(nn.Module):
    """A stack of `TransformerDecoderLayer`s, with a final LayerNorm in the pre-LN arrangement.

    Args:
        dim, num_heads: as in `TransformerDecoderLayer`.
        num_layers (int): depth.
        ffn_dim, dropout, attn_dropout, activation, norm_first: as in `TransformerDecoderLayer`.

    Shapes:
        x `(B, T, D)`, memory `(B, S, D)` -> `(B, T, D)`.
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
            TransformerDecoderLayer(
                dim, num_heads, ffn_dim=ffn_dim, dropout=dropout, attn_dropout=attn_dropout,
                activation=activation, norm_first=norm_first,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(
        self, x: Tensor, memory: Tensor, *, tgt_lengths: Tensor | None = None, memory_lengths: Tensor | None = None
    ) -> Tensor:
        """The full causal pass (teacher forcing).

        Args:
            x (Tensor): `(B, T, D)` target-side inputs (embedded, shifted right: BOS first).
            memory (Tensor): `(B, S, D)` encoder output.
            tgt_lengths (LongTensor, optional): `(B,)` true target lengths. (default: None: no padding)
            memory_lengths (LongTensor, optional): `(B,)` true memory lengths. (default: None: no padding)
        """
        self_mask, memory_mask = decoder_masks(x.shape[1], memory.shape[1], tgt_lengths, memory_lengths)
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask)
        return self.norm(x)

    def init_state(self, memory: Tensor, memory_lengths: Tensor | None = None) -> DecoderState:
        """The decoding state before the first token: every layer's cross-attention keys and values,
        projected once from `memory (B, S, D)`."""
        return DecoderState([layer.init_cache(memory) for layer in self.layers], memory_lengths, 0)

    def step(self, x: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Decode the next token(s) with the key/value cache; equal to the matching rows of `forward`.

        Args:
            x (Tensor): `(B, T_new, D)` inputs at positions `state.position ..` (usually T_new = 1).
            state (DecoderState): from `init_state` or the previous `step`.

        Returns:
            `(y (B, T_new, D), state)`, the state advanced by T_new tokens.
        """
        memory_mask = state.memory_mask()
        caches = []
        for layer, cache in zip(self.layers, state.layers):
            x, cache = layer.step(x, cache, memory_mask)
            caches.append(cache)
        return self.norm(x), DecoderState(caches, state.memory_lengths, state.position + x.shape[1])


class EncoderDecoder(nn.Module):
    """A sequence-to-sequence Transformer: token embeddings with sinusoidal positions, core's
    `TransformerEncoder` over the source, `TransformerDecoder` over the target, a linear output layer.

    Args:
        src_vocab (int): source vocabulary size.
        tgt_vocab (int): target vocabulary size V (including BOS and EOS).
        dim (int, optional): model dim D. (default: 256)
        num_heads (int, optional): heads in every attention. (default: 4)
        encoder_layers (int, optional): encoder depth. (default: 3)
        decoder_layers (int, optional): decoder depth. (default: 3)
        ffn_dim (int, optional): feed-forward width. (default: 4 * dim)
        dropout (float, optional): dropout on embeddings, residual branches and inside the FFN. (default: 0.1)
        attn_dropout (float, optional): dropout on attention weights. (default: 0.0)
        activation (str, optional): "gelu" or "relu". (default: "gelu")
        norm_first (bool, optional): pre-LN if True. (default: True)
        bos_id (int, optional): target start token. (default: 1)
        eos_id (int, optional): target end token. (default: 2)

    Shapes:
        src `(B, S)`, src_lengths `(B,)`, tgt_in `(B, T)`, tgt_lengths `(B,)` -> logits `(B, T, V)`.
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        *,
        dim: int = 256,
        num_heads: int = 4,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
        bos_id: int = 1,
        eos_id: int = 2,
    ):
        super().__init__()
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < tgt_vocab:
                raise ValueError(f"{name}={value} is not a token of the target vocabulary (size {tgt_vocab})")
        self.dim, self.bos_id, self.eos_id = dim, bos_id, eos_id
        self.src_embed = nn.Embedding(src_vocab, dim)
        self.tgt_embed = nn.Embedding(tgt_vocab, dim)
        self.positions = SinusoidalPositionalEncoding(dim)
        self.embed_dropout = nn.Dropout(dropout)
        options = dict(ffn_dim=ffn_dim, dropout=dropout, attn_dropout=attn_dropout, activation=activation,
                       norm_first=norm_first)
        self.encoder = TransformerEncoder(dim, num_heads, encoder_layers, **options)
        self.decoder = TransformerDecoder(dim, num_heads, decoder_layers, **options)
        self.output = nn.Linear(dim, tgt_vocab)
        # The embeddings are scaled by sqrt(D) before the sinusoidal positions (values in [-1, 1]) are added;
        # from nn.Embedding's N(0, 1) start they would be sqrt(D) times larger than the positions and drown
        # them. N(0, 1/D), as Vaswani et al.'s shared embeddings start, puts both on one scale.
        for embedding in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embedding.weight, std=dim ** -0.5)

    def _embed(self, embedding: nn.Embedding, tokens: Tensor, offset: int = 0) -> Tensor:
        x = embedding(tokens) * math.sqrt(self.dim)  # (B, T, D)
        return self.embed_dropout(self.positions(x, offset))

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> Tensor:
        """The memory: `src (B, S)` token ids, `src_lengths (B,)` -> `(B, S, D)`."""
        mask = None if src_lengths is None else padding_mask(src_lengths, src.shape[1])
        return self.encoder(self._embed(self.src_embed, src), mask)

    def decode(
        self, tgt_in: Tensor, memory: Tensor, memory_lengths: Tensor | None = None, tgt_lengths: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits: `tgt_in (B, T)` (BOS first), `memory (B, S, D)` -> `(B, T, V)`."""
        x = self._embed(self.tgt_embed, tgt_in)
        return self.output(self.decoder(x, memory, tgt_lengths=tgt_lengths, memory_lengths=memory_lengths))

    def forward(
        self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor, tgt_lengths: Tensor | None = None
    ) -> Tensor:
        """Logits `(B, T, V)` for the next token at every target position (teacher forcing).

        Args:
            src (LongTensor): `(B, S)` source token ids, padded.
            src_lengths (LongTensor or None): `(B,)` true source lengths.
            tgt_in (LongTensor): `(B, T)` target token ids shifted right (BOS, y_1, ..., y_{T-1}), padded.
            tgt_lengths (LongTensor, optional): `(B,)` true lengths of `tgt_in`. (default: None)
        """
        return self.decode(tgt_in, self.encode(src, src_lengths), src_lengths, tgt_lengths)

    def init_state(self, memory: Tensor, memory_lengths: Tensor | None = None) -> DecoderState:
        """The decoding state for `memory (B, S, D)` (from `encode`); see `TransformerDecoder.init_state`."""
        return self.decoder.init_state(memory, memory_lengths)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoding step with the key/value cache: the step function of `core.decoding`'s searches.

        Args:
            tokens (LongTensor): `(B,)` the previous token of each sequence (BOS at the first step).
            state (DecoderState): from `init_state` or the previous `step`.

        Returns:
            `(logits (B, V), state)` for the next token.
        """
        x = self._embed(self.tgt_embed, tokens.unsqueeze(1), state.position)  # (B, 1, D)
        y, state = self.decoder.step(x, state)
        return self.output(y.squeeze(1)), state  # (B, V)

    @torch.no_grad()
    def generate(
        self,
        src: Tensor,
        src_lengths: Tensor | None,
        *,
        max_len: int,
        num_beams: int = 1,
        length_penalty: float = 0.0,
    ) -> SearchResult:
        """Encode `src (B, S)` and decode every source: greedy for `num_beams=1` (and `length_penalty=0`),
        beam search otherwise (`core.decoding`).

        Args:
            src (LongTensor): `(B, S)` source token ids, padded.
            src_lengths (LongTensor or None): `(B,)` true source lengths.
            max_len (int): most tokens generated, EOS included.
            num_beams (int, optional): beam width K. (default: 1: greedy)
            length_penalty (float, optional): length-normalisation exponent of beam search. (default: 0.0)
        """
        memory = self.encode(src, src_lengths)
        state = self.init_state(memory, src_lengths)
        options = dict(bos_id=self.bos_id, eos_id=self.eos_id, max_len=max_len, device=src.device)
        if num_beams == 1 and length_penalty == 0:
            return greedy_search(self.step, state, src.shape[0], **options)
        return beam_search(
            self.step, state, src.shape[0], num_beams=num_beams, length_penalty=length_penalty, **options
        )
