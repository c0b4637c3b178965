"""Grapheme-to-phoneme models: a Transformer encoder–decoder and two LSTM encoder–decoders.

- ``transformer`` (role attention): core's encoder–decoder: self-attention over the letters, a causal
  decoder over the phonemes so far, cross-attention from each phoneme to the letters.
- ``lstm-attention`` (role baseline): a bidirectional LSTM over the letters and an LSTM decoder that, at
  each step, scores every letter with additive (Bahdanau) attention, ``vᵀ tanh(W s_{t-1} + U h_j)``, where
  ``s_{t-1}`` is the decoder's state *before* the step (Bahdanau et al. 2015), and hands the scores to
  ``core.attention.softmax_attention`` for the context vector.
- ``lstm`` (role baseline): the same encoder and decoder, but the context is one fixed vector, a projection
  of the encoder's final states, fed at every step (Cho et al. 2014): the bottleneck that attention removes.

All three share one interface, so training, decoding and metrics do not care which one they hold:

- ``forward(letters, lengths, target_in) -> logits (B, T, V)``: teacher forcing;
- ``start(letters, lengths) -> state``: encode once; ``state`` is a dict of batch-first tensors;
- ``step(tokens (B,), state) -> (logits (B, V), state)``: one decoding step (the generic step protocol of
  ``core.decoding``).

Legend: B batch, S letters, T phonemes, D model dim, H hidden size, V phoneme vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.attention import softmax_attention
from core.decoding import DecoderState, ensemble_step
from core.masks import padding_mask
from core.transformer import EncoderDecoder
from text.g2p.data import BOS, EOS, PAD

__all__ = ["LSTMConfig", "LSTMSeq2Seq", "AdditiveAttention", "TransformerG2PConfig", "TransformerG2P", "G2PEnsemble",
           "MODELS", "ROLES", "default_config", "build_model", "config_from_dict"]


@dataclass
class LSTMConfig:
    """An LSTM encoder–decoder, with or without additive attention."""

    attention: bool = True  # False: the decoder sees only one fixed vector of the word
    embed_dim: int = 64  # letter and phoneme embeddings
    hidden: int = 192  # encoder output (both directions together) and decoder state
    encoder_layers: int = 2  # stacked bidirectional layers
    attention_dim: int = 128  # width of the additive scorer's tanh layer
    dropout: float = 0.2  # between encoder layers, on the decoder output
    max_letters: int = 32  # longest word the model accepts (CMUdict's longest has 28)


class AdditiveAttention(nn.Module):
    """Bahdanau's scorer, ``score(s, h_j) = vᵀ tanh(W s + U h_j)``; the softmax and the weighted sum are
    core's ``softmax_attention``.

    Args:
        query_dim (int): width of the decoder state.
        key_dim (int): width of the encoder outputs.
        dim (int): width of the tanh layer.

    Shapes:
        query `(B, query_dim)`, keys `(B, S, key_dim)` (``precompute`` them once per word) ->
        context `(B, key_dim)`, weights `(B, S)`.
    """

    def __init__(self, query_dim: int, key_dim: int, dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, dim, bias=False)
        self.key = nn.Linear(key_dim, dim)
        self.v = nn.Linear(dim, 1, bias=False)

    def precompute(self, keys: Tensor) -> Tensor:
        """``U h_j`` for every letter: `(B, S, dim)`; the same for every decoding step."""
        return self.key(keys)

    def forward(self, query: Tensor, projected_keys: Tensor, values: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            query (Tensor): `(B, query_dim)` decoder state s_{t-1}.
            projected_keys (Tensor): `(B, S, dim)` from :meth:`precompute`.
            values (Tensor): `(B, S, key_dim)` encoder outputs.
            allowed (Tensor): `(B, 1, S)` bool, True at real letters.
        """
        scores = self.v(torch.tanh(self.query(query).unsqueeze(1) + projected_keys)).transpose(1, 2)  # (B, 1, S)
        context, weights = softmax_attention(scores, values, allowed, return_weights=True, record_as=self)
        return context.squeeze(1), weights.squeeze(1)  # (B, key_dim), (B, S)


class LSTMSeq2Seq(nn.Module):
    """Bidirectional LSTM encoder, LSTM-cell decoder; additive attention or one fixed context vector.

    Args:
        config (LSTMConfig): sizes and options.
        num_letters (int): letter vocabulary size (PAD included).
        num_phonemes (int): phoneme vocabulary size V (PAD, BOS, EOS included).

    Shapes:
        letters `(B, S)`, lengths `(B,)`, target_in `(B, T)` -> logits `(B, T, V)`.
    """

    def __init__(self, config: LSTMConfig, num_letters: int, num_phonemes: int):
        super().__init__()
        if config.hidden % 2:
            raise ValueError(f"hidden must be even (two directions), got {config.hidden}")
        self.config = config
        H = config.hidden
        self.letter_embedding = nn.Embedding(num_letters, config.embed_dim, padding_idx=PAD)
        self.encoder = nn.LSTM(config.embed_dim, H // 2, num_layers=config.encoder_layers, batch_first=True,
                               bidirectional=True, dropout=config.dropout if config.encoder_layers > 1 else 0.0)
        self.bridge = nn.Linear(H, 2 * H)  # final states of both directions -> decoder (h0, c0) / fixed context
        self.phoneme_embedding = nn.Embedding(num_phonemes, config.embed_dim, padding_idx=PAD)
        self.cell = nn.LSTMCell(config.embed_dim + H, H)
        self.attention = AdditiveAttention(H, H, config.attention_dim) if config.attention else None
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(2 * H, num_phonemes)  # [s_t; context_t] -> phoneme scores

    def start(self, letters: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Encode the words; the decoder's initial state.

        Returns:
            dict: ``h``, ``c`` `(B, H)` decoder state; ``memory`` `(B, S, H)` encoder outputs;
            ``keys`` `(B, S, attention_dim)` projected memory; ``allowed`` `(B, 1, S)`; ``fixed`` `(B, H)`
            the word's one vector (used as the context without attention).
        """
        B, S = letters.shape
        packed = pack_padded_sequence(self.letter_embedding(letters), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, (h_n, _) = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, H)
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # last layer, forward and backward: (B, H)
        h0, fixed = torch.tanh(self.bridge(final)).chunk(2, dim=-1)  # (B, H) each
        state = {"h": h0, "c": torch.zeros_like(h0), "memory": memory, "fixed": fixed,
                 "allowed": padding_mask(lengths, S).dense(letters.device).view(B, 1, S)}
        if self.attention is not None:
            state["keys"] = self.attention.precompute(memory)
        return state

    def step(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One decoding step.

        Args:
            tokens (Tensor): `(B,)` the previous phoneme (BOS first).
            state (dict): from :meth:`start` or the previous step.

        Returns:
            tuple[Tensor, dict]: logits `(B, V)` and the next state.
        """
        context = self._context(state)
        h, c = self.cell(torch.cat([self.phoneme_embedding(tokens), context], dim=-1), (state["h"], state["c"]))
        logits = self.output(self.dropout(torch.cat([h, context], dim=-1)))
        return logits, {**state, "h": h, "c": c}

    def _context(self, state: dict[str, Tensor]) -> Tensor:
        if self.attention is None:
            return state["fixed"]
        # the query is the state *before* this step (s_{t-1}), as in Bahdanau et al.
        return self.attention(state["h"], state["keys"], state["memory"], state["allowed"])[0]

    def forward(self, letters: Tensor, lengths: Tensor, target_in: Tensor) -> Tensor:
        """Teacher forcing: logits `(B, T, V)` for every position of ``target_in`` `(B, T)`."""
        state = self.start(letters, lengths)
        logits = []
        for t in range(target_in.shape[1]):
            step_logits, state = self.step(target_in[:, t], state)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)  # (B, T, V)


@dataclass
class TransformerG2PConfig:
    """Core's Transformer encoder–decoder, sized for a 2-core CPU budget (see docs/text-g2p.md)."""

    dim: int = 128  # model dim D
    heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    ffn_dim: int = 512
    dropout: float = 0.0  # embeddings, residual branches, inside the FFN (0.1 lost on validation)
    attn_dropout: float = 0.0
    max_letters: int = 32  # longest word the model accepts (CMUdict's longest has 28)


class TransformerG2P(EncoderDecoder):
    """`core.transformer.EncoderDecoder` over letters and phonemes, with the interface the LSTM models share.

    Args:
        config (TransformerG2PConfig): sizes.
        num_letters (int): letter vocabulary size (PAD included).
        num_phonemes (int): phoneme vocabulary size V (PAD, BOS, EOS included).

    Shapes:
        letters `(B, S)`, lengths `(B,)`, target_in `(B, T)` -> logits `(B, T, V)`.
    """

    def __init__(self, config: TransformerG2PConfig, num_letters: int, num_phonemes: int):
        super().__init__(num_letters, num_phonemes, dim=config.dim, num_heads=config.heads,
                         encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
                         ffn_dim=config.ffn_dim, dropout=config.dropout, attn_dropout=config.attn_dropout,
                         bos_id=BOS, eos_id=EOS)
        self.config = config  # EncoderDecoder starts the embeddings at N(0, 1/D), on the positions' scale

    def forward(self, letters: Tensor, lengths: Tensor, target_in: Tensor) -> Tensor:
        # no target lengths: the causal mask already keeps every real position off the padding after it,
        # and the loss ignores the padded positions
        return super().forward(letters, lengths, target_in)

    def start(self, letters: Tensor, lengths: Tensor) -> DecoderState:
        """Encode the words; the decoding state with the cross-attention keys and values cached."""
        return self.init_state(self.encode(letters, lengths), lengths)


class G2PEnsemble(nn.Module):
    """Several trained models decoding as one: at each step the normalised mean of their log-probabilities
    (``core.decoding.ensemble_step``). Decoding only (``start`` and ``step``); the members keep their own
    weights, so an ensemble of k models costs k times one model's decoding.

    Args:
        members: models with the shared interface, trained on the same phoneme vocabulary.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self._step = ensemble_step([m.step for m in self.members])

    def start(self, letters: Tensor, lengths: Tensor) -> tuple:
        """Encode the words once per member; the state is the tuple of the members' states."""
        return tuple(m.start(letters, lengths) for m in self.members)

    def step(self, tokens: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """Log-probabilities `(B, V)` of the next phoneme under the ensemble, and the members' new states."""
        return self._step(tokens, state)


MODELS = {"transformer": TransformerG2PConfig, "lstm-attention": LSTMConfig, "lstm": LSTMConfig}
ROLES = {"transformer": "attention", "lstm-attention": "baseline", "lstm": "baseline"}


def default_config(name: str) -> TransformerG2PConfig | LSTMConfig:
    """The configuration ``compare`` trains ``name`` with."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return LSTMConfig(attention=False) if name == "lstm" else MODELS[name]()


def config_from_dict(name: str, values: dict) -> TransformerG2PConfig | LSTMConfig:
    """The config of ``name`` from a checkpoint's plain dict."""
    return MODELS[name](**values)


def build_model(name: str, config: TransformerG2PConfig | LSTMConfig, num_letters: int,
                num_phonemes: int) -> TransformerG2P | LSTMSeq2Seq:
    """A fresh model ``name`` (one of :data:`MODELS`)."""
    if name == "transformer":
        return TransformerG2P(config, num_letters, num_phonemes)
    if name in ("lstm", "lstm-attention"):
        if config.attention != (name == "lstm-attention"):
            raise ValueError(f"{name} needs LSTMConfig(attention={name == 'lstm-attention'}), got {config}")
        return LSTMSeq2Seq(config, num_letters, num_phonemes)
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
