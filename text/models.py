"""Sequence taggers: the attention tagger and its two baselines, on one shared word representation.

All three read a sentence the same way (:class:`WordRepresentation`: a lowercased-word embedding, a
capitalisation embedding, a character CNN so that unseen words still get a vector, and embeddings of any
extra feature columns) and differ only in how a word learns about its neighbours:

- :class:`AttentionTagger`: self-attention layers from :mod:`core`; every word sees the whole sentence in
  one parallel step. Order comes from a learned, direction-aware relative position bias per layer
  (``positions="relative"``), or from absolute positions added to the input (``"sinusoidal"``, ``"learned"``).
- :class:`BiLSTMTagger`: walks the sentence word by word, in both directions.
- :class:`CNNTagger`: stacked 1-D convolutions; each layer widens the window by ``kernel - 1`` words.

Each ends in a per-word linear classifier, optionally followed by a linear-chain CRF (:mod:`text.crf`).

Symbol legend: B batch, T sentence length, L word length (characters), F feature columns, D model dim,
H heads, C channels, K labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from core.masks import padding_mask, valid_positions
from core.positional import LearnedPositionalEncoding, RelativePositionBias, SinusoidalPositionalEncoding
from core.transformer import TransformerEncoder
from text.crf import LinearChainCRF
from text.data import IGNORE_INDEX, SHAPES, Batch

MODELS = ("attention", "bilstm", "cnn")
POSITIONS = ("relative", "sinusoidal", "learned", "both", "none")


@dataclass
class TaggerConfig:
    """Everything needed to rebuild a tagger; saved with every checkpoint and metrics file."""

    model: str = "attention"  # one of MODELS
    # sizes of the vocabularies (filled in from the training data)
    num_words: int = 0
    num_chars: int = 0
    num_labels: int = 0
    feature_vocab_sizes: list[int] = field(default_factory=list)  # one per extra feature column
    # word representation, shared by all models
    word_dim: int = 100
    shape_dim: int = 8
    feature_dim: int = 32  # per extra feature column
    char_dim: int = 30
    char_channels: int = 50  # filters of the char CNN; 0 turns the char encoder off
    char_kernel: int = 3
    word_dropout: float = 0.05  # training only: a word id becomes <unk> with this probability
    dropout: float = 0.3  # on the word representation and before the classifier
    crf: bool = True  # CRF output layer instead of per-word softmax
    # attention tagger
    dim: int = 128
    heads: int = 8
    layers: int = 3
    ffn_dim: int = 256
    attn_dropout: float = 0.0  # on the attention weights
    layer_dropout: float = 0.0  # inside each Transformer layer and on each CNN block
    positions: str = "relative"  # one of POSITIONS
    max_distance: int = 16  # relative offsets beyond ±max_distance share a bias
    max_len: int = 512  # positions="learned": the longest sentence it has position vectors for
    local_init: bool = True  # start the relative bias at -slope_h * |offset| (ALiBi's slopes) instead of 0
    # BiLSTM tagger
    hidden: int = 128  # per direction
    lstm_layers: int = 1
    # CNN tagger
    channels: int = 256
    cnn_layers: int = 3
    kernel: int = 5

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")


class CharCNN(nn.Module):
    """A word's vector from its characters: embed, convolve, max-pool over the word (Ma & Hovy 2016).

    Args:
        num_chars (int): character vocabulary size (index 0 is padding).
        char_dim (int): character embedding size.
        channels (int): convolution filters = output size C.
        kernel (int): convolution width in characters.

    Shapes:
        - chars: (B, T, L) long, 0 = padding
        - output: (B, T, C); all zeros for padding words
    """

    def __init__(self, num_chars: int, char_dim: int, channels: int, kernel: int):
        super().__init__()
        self.embed = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, channels, kernel, padding=kernel // 2)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        B, T, L = chars.shape
        # a batch repeats words ("the", ",") and padding: encode each distinct spelling once
        spellings, where = torch.unique(chars.view(B * T, L), dim=0, return_inverse=True)  # (U, L), (B*T,)
        x = self.embed(spellings).transpose(1, 2)  # (U, char_dim, L)
        h = self.conv(x)  # (U, C, L)
        h = h.masked_fill((spellings == 0).unsqueeze(1), float("-inf")).amax(dim=2)  # (U, C)
        h = torch.where(torch.isfinite(h), h, torch.zeros((), dtype=h.dtype))  # padding words: zeros
        return h[where].view(B, T, -1)  # (B, T, C)


class WordRepresentation(nn.Module):
    """Concatenates word, shape, character and feature vectors into one vector per word.

    Shapes:
        - input: a :class:`~text.data.Batch`
        - output: (B, T, out_dim)
    """

    def __init__(self, config: TaggerConfig):
        super().__init__()
        self.word_dropout = config.word_dropout
        self.words = nn.Embedding(config.num_words, config.word_dim, padding_idx=0)
        self.shapes = nn.Embedding(len(SHAPES), config.shape_dim, padding_idx=0)
        self.features = nn.ModuleList(
            nn.Embedding(size, config.feature_dim, padding_idx=0) for size in config.feature_vocab_sizes
        )
        self.chars = (
            CharCNN(config.num_chars, config.char_dim, config.char_channels, config.char_kernel)
            if config.char_channels > 0
            else None
        )
        self.dropout = nn.Dropout(config.dropout)
        self.out_dim = (
            config.word_dim
            + config.shape_dim
            + config.feature_dim * len(config.feature_vocab_sizes)
            + max(config.char_channels, 0)
        )

    def forward(self, batch: Batch) -> torch.Tensor:
        words = batch.words
        if self.training and self.word_dropout > 0:
            # <unk> (index 1) must mean something at test time, so some known words are hidden behind it
            hide = (torch.rand(words.shape, device=words.device) < self.word_dropout) & (words > 0)
            words = words.masked_fill(hide, 1)
        parts = [self.words(words), self.shapes(batch.shapes)]
        parts += [embed(batch.features[..., f]) for f, embed in enumerate(self.features)]
        if self.chars is not None:
            parts.append(self.chars(batch.chars))
        return self.dropout(torch.cat(parts, dim=-1))  # (B, T, out_dim)


class Tagger(nn.Module):
    """Word representation -> context encoder (the subclass's :meth:`encode`) -> labels.

    Shapes:
        - :meth:`emissions`: (B, T, K) label scores
        - :meth:`loss`: scalar, per real word (CRF: sentence negative log-likelihoods summed, divided
          by the number of real words)
        - :meth:`predict`: (B, T) label ids (0 at padding)
    """

    def __init__(self, config: TaggerConfig, encoded_dim: int):
        super().__init__()
        self.config = config
        self.represent = WordRepresentation(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(encoded_dim, config.num_labels)
        self.crf = LinearChainCRF(config.num_labels) if config.crf else None

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, in_dim) word vectors -> (B, T, encoded_dim) words in context."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> torch.Tensor:
        """The training loss (:meth:`loss`): ``forward`` so that ``DistributedDataParallel`` sees the call."""
        return self.loss(batch)

    def emissions(self, batch: Batch) -> torch.Tensor:
        x = self.represent(batch)
        return self.classifier(self.dropout(self.encode(x, batch.lengths)))  # (B, T, K)

    def loss(self, batch: Batch) -> torch.Tensor:
        scores = self.emissions(batch)
        if self.crf is None:
            return F.cross_entropy(scores.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX)
        mask = batch.mask
        return self.crf(scores, batch.labels, mask).sum() / mask.sum()

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        scores = self.emissions(batch)
        mask = batch.mask
        if self.crf is None:
            return scores.argmax(-1) * mask
        return self.crf.decode(scores, mask)


class AttentionTagger(Tagger):
    """Self-attention tagger: a :class:`core.transformer.TransformerEncoder` (pre-norm layers, final LayerNorm).

    Every layer gets its own :class:`core.positional.RelativePositionBias` (one learned scalar per
    head and clipped signed offset), so a head can learn "the word two to my left" as distinct from
    "two to my right": the direction and distance information TENER (Yan et al. 2019) showed a
    Transformer tagger needs to match a BiLSTM.

    Args:
        config (TaggerConfig): uses ``dim``, ``heads``, ``layers``, ``ffn_dim``, ``layer_dropout``,
            ``attn_dropout``, ``positions``, ``max_distance``, ``max_len`` (learned positions).

    Shapes:
        - encode: x (B, T, in_dim), lengths (B,) -> (B, T, D)
    """

    def __init__(self, config: TaggerConfig):
        super().__init__(config, config.dim)
        self.project = nn.Linear(self.represent.out_dim, config.dim)
        self.absolute: nn.Module | None = None
        if config.positions in ("sinusoidal", "both"):
            self.absolute = SinusoidalPositionalEncoding(config.dim)
        elif config.positions == "learned":
            self.absolute = LearnedPositionalEncoding(config.dim, config.max_len)
        self.encoder = TransformerEncoder(
            config.dim, config.heads, config.layers, ffn_dim=config.ffn_dim, dropout=config.layer_dropout,
            attn_dropout=config.attn_dropout, norm_first=True,
        )
        self.relative = (
            nn.ModuleList(RelativePositionBias(config.heads, config.max_distance) for _ in range(config.layers))
            if config.positions in ("relative", "both")
            else None
        )
        if self.relative is not None and config.local_init:
            for bias in self.relative:
                local_bias_init(bias)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.project(x)  # (B, T, D)
        if self.absolute is not None:
            h = self.absolute(h)
        mask = padding_mask(lengths, h.shape[1])  # keys past a sentence's end are hidden
        return self.encoder(h, mask, self.relative)  # one relative bias per layer (or none)


def local_bias_init(bias: RelativePositionBias) -> None:
    """Start head h at ``-slope_h * |offset|`` with slopes 1, 2^-1/2, ..., 2^-(H-1)/2 (ALiBi, Press et al.
    2022, with gentler slopes): the first heads begin by reading their close neighbours, the last
    ones nearly the whole sentence. Learning then makes the bias direction-aware.

    A zero start reaches the same place, but slowly: each step moves the bias by about the learning
    rate, and a head needs a bias of several units to single out the word next to it.
    """
    num_offsets, num_heads = bias.bias.shape
    distance = (torch.arange(num_offsets) - bias.max_distance).abs().float()  # (2M+1,)
    slopes = 2.0 ** (-torch.arange(num_heads).float() / 2)  # (H,)
    with torch.no_grad():
        bias.bias.copy_(-distance[:, None] * slopes[None, :])  # (2M+1, H)


class BiLSTMTagger(Tagger):
    """The RNN baseline: a bidirectional LSTM over the word vectors (Huang et al. 2015; Lample et al. 2016).

    Shapes:
        - encode: x (B, T, in_dim), lengths (B,) -> (B, T, 2 * hidden)
    """

    def __init__(self, config: TaggerConfig):
        super().__init__(config, 2 * config.hidden)
        self.lstm = nn.LSTM(
            self.represent.out_dim,
            config.hidden,
            num_layers=config.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return h  # (B, T, 2 * hidden)


class CNNTagger(Tagger):
    """The CNN baseline: residual stacked 1-D convolutions (window ``cnn_layers * (kernel - 1) + 1``).

    Padding positions are zeroed before every convolution, so they act exactly like the convolution's
    own zero padding and a sentence's outputs do not depend on how much padding its batch has.

    Shapes:
        - encode: x (B, T, in_dim), lengths (B,) -> (B, T, C)
    """

    def __init__(self, config: TaggerConfig):
        super().__init__(config, config.channels)
        self.project = nn.Linear(self.represent.out_dim, config.channels)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.channels, config.channels, config.kernel, padding=config.kernel // 2)
            for _ in range(config.cnn_layers)
        )
        self.inner_dropout = nn.Dropout(config.layer_dropout)
        self.norm = nn.LayerNorm(config.channels)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = valid_positions(lengths, x.shape[1]).to(x.device).unsqueeze(1)  # (B, 1, T)
        h = self.project(x).transpose(1, 2)  # (B, C, T)
        for conv in self.convs:
            h = h + self.inner_dropout(F.relu(conv(h * real)))
        return self.norm(h.transpose(1, 2))  # (B, T, C)


TAGGERS = {"attention": AttentionTagger, "bilstm": BiLSTMTagger, "cnn": CNNTagger}


def build_tagger(config: TaggerConfig) -> Tagger:
    """The tagger ``config.model`` names, freshly initialised."""
    return TAGGERS[config.model](config)
