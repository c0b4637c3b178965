"""The speech models: a Transformer encoder with full, windowed or truncated self-attention, and two
baselines (a CNN over the spectrogram, a bidirectional GRU).

All three share the front-end (global feature normalisation, SpecAugment while training) and the two
heads: ``task="clip"`` averages the real frames and predicts one digit per clip; ``task="frame"``
predicts a label for every frame (a digit or silence, for connected digits).

In front of its attention layers the attention model has only a small convolution stem that looks four
frames back (never ahead), and positions enter only as a relative bias on the scores. So what decides
which frames a frame can see is the mask, built from ``core.masks``:

- ``full``: every frame sees every frame, O(T²) time and memory;
- ``window``: frame i sees frames ``i - w .. i + w`` (``sliding_window_mask``);
- ``truncated``: chunks of c frames see their own chunk and L chunks of left context, plus r frames of
  look-ahead (``chunked_mask``), which is what lets the model run while audio arrives: with r = 0,
  ``AttentionModel.infer(chunk, state) -> (output, state)`` takes one chunk at a time and equals the
  whole-utterance pass (``audio.streaming`` feeds it from a waveform).

On long inputs core runs the window and truncated masks through its blocked O(T·w) path.

Legend: B batch, T frames, F mel bins, D model dim, H heads, C channels, K classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from core.attention import softmax_attention
from core.masks import Mask, chunked_mask, padding_mask, sliding_window_mask
from core.positional import RelativePositionBias
from core.transformer import TransformerEncoder

MODELS = ("attention", "cnn", "gru")
FEATURE_NORMS = ("global", "utterance", "speaker")
ATTENTIONS = ("full", "window", "truncated")
POOLINGS = ("mean", "attention")
STEMS = ("strided", "cnn", "cnn-bn")
TASKS = ("clip", "frame")


@dataclass
class AudioConfig:
    """Hyper-parameters of every audio model; saved with each checkpoint as a plain dict.

    Args:
        model (str): ``"attention"``, ``"cnn"`` or ``"gru"``.
        task (str): ``"clip"`` (one label per clip) or ``"frame"`` (one label per frame).
        num_classes (int): K; 10 digits, or 11 with silence for the frame task.
        n_mels (int): F, mel bins per frame.
        dim (int): D, width of the attention model (and of the CNN's temporal layers).
        heads (int): attention heads.
        layers (int): encoder layers.
        ffn_dim (int): hidden width of each layer's feed-forward block.
        dropout (float): dropout in the encoder and before the head.
        attention (str): ``"full"``, ``"window"`` or ``"truncated"``.
        window (int): window: each frame sees ``window`` frames on each side.
        chunk (int): truncated: frames per chunk, c.
        left_chunks (int): truncated: chunks of left context, L.
        lookahead (int): truncated: frames of look-ahead past the chunk end, r.
        max_distance (int): relative position bias: offsets beyond this share one bucket.
        stem_channels (int): channels of the attention model's causal convolution stem (0: none).
        stem (str): its layout: ``"strided"``, two 3×3 convolutions with stride 2 along frequency; or
            ``"cnn"``, the CNN baseline's four 3×3 blocks (channels C, C, 2C, 2C, each followed by a 2× max
            pool along frequency), made causal in time; ``"cnn-bn"``, the same with the CNN's batch
            normalisation after each convolution as well (per channel: still causal, still streams).
        conv_channels (int): CNN: channels of the 2-D blocks.
        rnn_hidden (int): GRU: hidden size per direction.
        freq_masks (int), freq_mask_width (int): SpecAugment frequency masks per clip and their max width.
        time_masks (int), time_mask_width (int): SpecAugment time masks per second (at least one per
            clip) and their max width in frames.
        feature_norm (str): ``"global"``: every mel bin normalised with the training set's mean and std;
            ``"utterance"``: with the mean and std of the utterance's own frames (cepstral mean and variance
            normalisation): a voice's or microphone's fixed spectral tilt and loudness are removed, but the
            whole utterance must be there first, so such a model cannot stream; ``"speaker"``: the clips arrive
            normalised with their speaker's statistics (``audio.data.normalise_by_speaker``, done by the data
            pipeline, which needs every clip's speaker), and the training set's statistics are applied on top as
            for ``"global"`` (close to no change); such a model does not stream either.
        cepstra (int): 0 keeps the log-mel frames as they are; K > 0 smooths each frame to its spectral
            envelope first (cepstral liftering: the orthonormal DCT of the F log-mel values, all but the
            first K coefficients set to zero, the inverse DCT), which removes the fine ripple of a voice's
            pitch harmonics and keeps the vocal tract's formants, on the same F mel bins.
        pooling (str): clip task: how frame vectors become one clip vector: ``"mean"`` over the real
            frames, or ``"attention"``: a learned score per frame, softmax over the real frames, the
            weighted sum (one query attending over the frames, through core's ``softmax_attention``).
        vtlp (float): 0 is off; v > 0: vocal tract length perturbation while training (Jaitly & Hinton,
            2013): each clip's frequency axis is warped by a factor drawn uniformly from [1 - v, 1 + v]
            (see ``vtlp_source_bins``), a shorter or longer vocal tract with the clip's timing kept (speed
            perturbation changes both).
        nyquist (float): the highest frequency of the mel filters in Hz (half the sample rate), which VTLP
            needs to place the bins.
    """

    model: str = "attention"
    task: str = "clip"
    num_classes: int = 10
    n_mels: int = 40
    dim: int = 64
    heads: int = 4
    layers: int = 4
    ffn_dim: int = 128
    dropout: float = 0.1
    attention: str = "window"
    window: int = 8
    chunk: int = 16
    left_chunks: int = 2
    lookahead: int = 0
    max_distance: int = 64
    stem_channels: int = 32
    stem: str = "strided"
    conv_channels: int = 32
    rnn_hidden: int = 96
    freq_masks: int = 2
    freq_mask_width: int = 8
    time_masks: int = 2
    time_mask_width: int = 8
    feature_norm: str = "global"
    cepstra: int = 0
    pooling: str = "mean"
    vtlp: float = 0.0
    nyquist: float = 4000.0

    def __post_init__(self):
        for name, value, allowed in (("model", self.model, MODELS), ("task", self.task, TASKS),
                                     ("attention", self.attention, ATTENTIONS),
                                     ("feature_norm", self.feature_norm, FEATURE_NORMS),
                                     ("pooling", self.pooling, POOLINGS), ("stem", self.stem, STEMS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}; expected one of {', '.join(allowed)}")
        if not 0 <= self.cepstra <= self.n_mels:
            raise ValueError(f"cepstra={self.cepstra}: expected 0 (off) to n_mels={self.n_mels}")
        if not 0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp={self.vtlp}: expected 0 (off) up to 0.5 (warp factors in [1 - vtlp, 1 + vtlp])")

    def describe(self) -> str:
        """A short name for tables: ``window(w=8)``, ``truncated(c=16,L=2)``, ``cnn``."""
        if self.model != "attention":
            return self.model
        if self.attention == "window":
            return f"window(w={self.window})"
        if self.attention == "truncated":
            look = f",r={self.lookahead}" if self.lookahead else ""
            return f"truncated(c={self.chunk},L={self.left_chunks}{look})"
        return "full"


def build_model(config: AudioConfig) -> nn.Module:
    return {"attention": AttentionModel, "cnn": ConvModel, "gru": RecurrentModel}[config.model](config)


def structure_mask(config: AudioConfig, T: int) -> Mask | None:
    """Which of T frames each frame may see, before padding: None (all: full), a band, or chunks."""
    if config.attention == "window":
        return sliding_window_mask(T, config.window, config.window)
    if config.attention == "truncated":
        return chunked_mask(T, config.chunk, config.left_chunks, config.lookahead)
    return None


class FrontEnd(nn.Module):
    """Optionally smooth log-mel frames to their envelope (``cepstra=K``), normalise them with
    statistics of the training set (``feature_norm="global"``; also ``"speaker"``, whose clips arrive
    normalised per speaker) or of each utterance's own real frames (``"utterance"``); while training,
    VTLP (``vtlp=v``: each clip's frequency axis warped first) and SpecAugment.

    Masked regions are set to 0, the mean after normalisation. The training statistics are buffers, so
    they travel with the weights.

    Shapes:
        features: (B, T, F), lengths: (B,) (needed for ``"utterance"``; padding never enters the
        statistics) -> (B, T, F)
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.register_buffer("mean", torch.zeros(config.n_mels))
        self.register_buffer("std", torch.ones(config.n_mels))
        # Liftering is the projection onto the first K DCT basis vectors, one (F, F) matrix applied to every
        # frame: frame by frame, so streaming is unchanged. Rebuilt from the config, never saved.
        dct = torchaudio.functional.create_dct(config.cepstra, config.n_mels, norm="ortho") if config.cepstra else None
        self.register_buffer("lifter", dct @ dct.T if dct is not None else None, persistent=False)
        self.freq_masks, self.time_masks = config.freq_masks, config.time_masks
        self.vtlp, self.nyquist = config.vtlp, config.nyquist
        self.per_utterance = config.feature_norm == "utterance"
        self.freq_mask = torchaudio.transforms.FrequencyMasking(config.freq_mask_width, iid_masks=True)
        self.time_mask = torchaudio.transforms.TimeMasking(config.time_mask_width, iid_masks=True)

    @torch.no_grad()
    def set_statistics(self, features: list[Tensor]) -> None:
        frames = self.smooth(torch.cat(features))  # (sum T, F)
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp_min(1e-3))

    def smooth(self, features: Tensor) -> Tensor:
        """(..., F) log-mel frames -> their cepstrally smoothed envelopes (unchanged when ``cepstra=0``)."""
        return features if self.lifter is None else features @ self.lifter.to(features.dtype)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.training and self.vtlp:
            alpha = 1 + self.vtlp * (2 * torch.rand(len(features), device=features.device) - 1)
            features = vtlp(features, alpha, self.nyquist)
        features = self.smooth(features)
        if self.per_utterance:
            if lengths is None:
                raise ValueError("per-utterance feature normalisation needs the lengths of the utterances")
            real = _frame_mask(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)  # (B, T, 1)
            count = real.sum(1, keepdim=True).clamp_min(1)  # (B, 1, 1)
            mean = (features * real).sum(1, keepdim=True) / count  # (B, 1, F)
            var = (((features - mean) * real) ** 2).sum(1, keepdim=True) / count
            x = (features - mean) / var.sqrt().clamp_min(1e-3) * real
        else:
            x = (features - self.mean) / self.std
        if not self.training:
            return x
        spec = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T): torchaudio's layout
        for _ in range(self.freq_masks):
            spec = self.freq_mask(spec)
        for _ in range(self.time_masks * max(1, math.ceil(x.shape[1] / 100))):
            spec = self.time_mask(spec)
        return spec.squeeze(1).transpose(1, 2)  # (B, T, F)


VTLP_BOUNDARY = 0.6  # F_hi / Nyquist: Jaitly & Hinton (2013) warp linearly up to 4,800 Hz of 8,000 Hz


def _mel(hz: Tensor) -> Tensor:
    return 2595 * torch.log10(1 + hz / 700)  # HTK's mel scale, torchaudio's MelSpectrogram default


def vtlp_source_bins(alpha: Tensor, n_mels: int, nyquist: float) -> Tensor:
    """Where each warped mel bin reads from: fractional bin positions in the unwarped frame.

    Vocal tract length perturbation maps a frequency f to ``alpha * f`` up to a boundary
    ``F_hi * min(alpha, 1)`` (``F_hi = VTLP_BOUNDARY * nyquist``) and linearly from there to ``nyquist``,
    which stays fixed, so the warped spectrum at f' is the original at the inverse of that map. The
    bins are those of ``torchaudio.transforms.MelSpectrogram`` (HTK mel, ``0 .. nyquist``, centres at
    ``n_mels`` equal steps inside).

    Shapes:
        alpha: (B,) warp factors -> (B, F) positions in ``[0, F - 1]``
    """
    top = _mel(torch.tensor(float(nyquist), dtype=alpha.dtype, device=alpha.device))
    steps = torch.arange(1, n_mels + 1, dtype=alpha.dtype, device=alpha.device)
    centres = 700 * (10 ** (top * steps / (n_mels + 1) / 2595) - 1)  # (F,) Hz
    f, a = centres, alpha.unsqueeze(-1)  # (F,), (B, 1)
    hi = VTLP_BOUNDARY * nyquist * a.clamp(max=1)  # where the warped axis leaves the line f' = alpha f
    low = hi / a  # ... and the frequency it comes from
    source = torch.where(f <= hi, f / a, nyquist - (nyquist - f) * (nyquist - low) / (nyquist - hi))
    return (_mel(source) / top * (n_mels + 1) - 1).clamp(0, n_mels - 1)


def vtlp(features: Tensor, alpha: Tensor, nyquist: float) -> Tensor:
    """Warp every clip's log-mel frames along frequency by its factor (``vtlp_source_bins``), linear
    interpolation between neighbouring bins; time is untouched.

    Shapes:
        features: (B, T, F), alpha: (B,) -> (B, T, F)
    """
    B, T, F_ = features.shape
    position = vtlp_source_bins(alpha.to(features.dtype), F_, nyquist)  # (B, F)
    below = position.floor().clamp(max=F_ - 2)
    weight = (position - below).unsqueeze(1)  # (B, 1, F)
    index = below.long().unsqueeze(1).expand(B, T, F_)
    return features.gather(2, index) * (1 - weight) + features.gather(2, index + 1) * weight


def _frame_mask(lengths: Tensor, T: int) -> Tensor:
    return padding_mask(lengths, T).dense().view(len(lengths), T)  # (B, T), True on real frames


class Head(nn.Module):
    """Frame vectors to logits: per frame, or pooled over each clip's real frames (mean or attention).

    Args:
        dim (int): D. num_classes (int): K. task (str): ``"clip"`` or ``"frame"``. dropout (float): before
            the output layer. norm (bool): a LayerNorm first (default: ``True``; ``False`` when the encoder
            ends in one). pooling (str): clip task: ``"mean"`` or ``"attention"`` (see ``AudioConfig``).

    Shapes:
        x: (B, T, D), lengths: (B,) -> (B, K) for ``clip``, (B, T, K) for ``frame``
    """

    def __init__(self, dim: int, num_classes: int, task: str, dropout: float, norm: bool = True,
                 pooling: str = "mean"):
        super().__init__()
        self.task = task
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()  # the attention encoder ends in its own
        self.score = nn.Linear(dim, 1) if task == "clip" and pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x = self.norm(x)
        if self.task == "clip":
            x = self.pool(x, lengths)  # (B, D)
        return self.out(self.dropout(x))

    def pool(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, D)`` normalised frame vectors -> ``(B, D)``: their mean, or their attention-weighted sum."""
        if self.score is None:
            real = _frame_mask(lengths, x.shape[1]).unsqueeze(-1)  # (B, T, 1)
            return (x * real).sum(1) / lengths.clamp_min(1).unsqueeze(-1).to(x.dtype)
        scores = self.score(x).transpose(1, 2)  # (B, 1, T): one query's score for every frame
        keys = padding_mask(lengths, x.shape[1]).dense(x.device).squeeze(1)  # (B, 1, T), True on real frames
        return softmax_attention(scores, x, keys, record_as=self).squeeze(1)  # (B, 1, D) -> (B, D)


class CausalConvStem(nn.Module):
    """2-D convolutions over (frequency, time) that look only backwards in time, then a projection.

    A small convolutional stem learns time-frequency shapes that single frames cannot show (what a CNN
    gets for free). Every kernel covers the current frame and the 2 frames before it, never a later one,
    so it adds no look-ahead: streaming only has to keep the last ``context`` input frames (2 per layer).
    ``stem="strided"``: two layers, each halving frequency by its stride; ``stem="cnn"``: the CNN
    baseline's four blocks, each halving frequency by a max pool (more invariant to where in frequency a
    shape sits, as a different voice moves it); ``stem="cnn-bn"``: those blocks with the CNN's batch
    normalisation too (a per-channel affine map once trained, so it adds no look-ahead).
    ``stem_channels=0`` replaces it by a frame-wise linear projection.

    Shapes:
        x: (B, T, F) -> (B, T, D)
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        C, freq = config.stem_channels, config.n_mels
        self.pool = config.stem in ("cnn", "cnn-bn")
        widths = ((C, C, 2 * C, 2 * C) if self.pool else (C, C)) if C else ()
        stride = (1, 1) if self.pool else (2, 1)
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=stride)
                                   for c_in, c_out in zip((1,) + widths, widths))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in widths) if config.stem == "cnn-bn" else None
        for _ in self.convs:
            freq = freq // 2 if self.pool else (freq + 2 - 3) // 2 + 1
        self.context = 2 * len(self.convs)  # input frames before t that output t depends on
        self.project = nn.Linear(widths[-1] * freq if C else config.n_mels, config.dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.convs:
            x = x.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
            for i, conv in enumerate(self.convs):
                x = conv(F.pad(x, (2, 0, 1, 1)))  # time padded on the left only: causal
                x = F.gelu(self.norms[i](x) if self.norms is not None else x)
                if self.pool:
                    x = F.max_pool2d(x, (2, 1))  # (B, C', F'/2, T)
            x = x.flatten(1, 2).transpose(1, 2)  # (B, T, C' * F')
        return self.dropout(self.project(x))


@dataclass
class StreamState:
    """What ``AttentionModel.infer`` carries from one chunk to the next.

    Attributes:
        stem (Tensor): ``(1, S0, F)`` the last normalised input frames the causal stem still needs.
        layers (list[Tensor]): per encoder layer, ``(1, S, D)``: that layer's input over the last L * c
            frames, the left context the next chunk's queries attend to.
        position (int): frames consumed so far (the absolute position of the next chunk's first frame).
        pooled (Tensor): ``(D,)`` clip task: the sum of the final frame vectors so far; with attention
            pooling their sum weighted by ``exp(score - pool_max)`` (an online softmax, as flash attention
            keeps it).
        pool_max (float): attention pooling: the largest frame score so far (``-inf`` before any frame).
        pool_sum (float): attention pooling: the sum of ``exp(score - pool_max)`` over the frames so far.
        finished (bool): a chunk shorter than c has ended the stream.
    """

    stem: Tensor
    layers: list[Tensor]
    position: int = 0
    pooled: Tensor = field(default_factory=lambda: torch.zeros(0))
    finished: bool = False
    pool_max: float = -math.inf
    pool_sum: float = 0.0


class AttentionModel(nn.Module):
    """Causal convolution stem, core's ``TransformerEncoder`` under the chosen mask, head.

    Args:
        config (AudioConfig): see its fields; ``attention``, ``window``, ``chunk``, ``left_chunks`` and
            ``lookahead`` choose the mask.

    Shapes:
        features: (B, T, F), lengths: (B,) -> (B, K) or (B, T, K)
        infer: chunk (n, F) with 1 <= n <= c -> (n, K) per frame, or (K,) the clip logits so far
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.config = config
        self.frontend = FrontEnd(config)
        self.input = CausalConvStem(config)
        self.position_bias = RelativePositionBias(config.heads, config.max_distance)
        self.encoder = TransformerEncoder(config.dim, config.heads, config.layers, ffn_dim=config.ffn_dim,
                                          dropout=config.dropout)
        self.head = Head(config.dim, config.num_classes, config.task, config.dropout, norm=False,
                         pooling=config.pooling)

    def attention_mask(self, T: int, lengths: Tensor) -> Mask:
        keys = padding_mask(lengths, T)
        structure = structure_mask(self.config, T)
        return keys if structure is None else structure & keys

    def encode(self, features: Tensor, lengths: Tensor) -> Tensor:
        """Frame vectors after the encoder's final norm, ``(B, T, D)``."""
        x = self.input(self.frontend(features, lengths))  # (B, T, D)
        return self.encoder(x, self.attention_mask(x.shape[1], lengths), self.position_bias)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.encode(features, lengths), lengths)

    # --- streaming ------------------------------------------------------------------------------

    def check_streamable(self) -> None:
        """Raise ``ValueError`` unless this model can stream: truncated attention without look-ahead.

        With r frames of look-ahead in every layer a chunk's output would depend on frames of the next
        chunk at every layer, so it could only be finalised ``layers * r`` frames later, with recomputation.
        """
        config = self.config
        if config.attention != "truncated":
            raise ValueError(f"streaming needs a truncated-attention model, got {config.describe()}")
        if config.feature_norm == "utterance":
            raise ValueError("this model normalises features with statistics of the whole utterance "
                             "(feature_norm='utterance'), which a stream has not heard yet; streaming needs 'global'")
        if config.feature_norm == "speaker":
            raise ValueError("this model expects features normalised with their speaker's statistics "
                             "(feature_norm='speaker'), which a stream does not have; streaming needs 'global'")
        if config.lookahead:
            raise ValueError(
                f"{config.describe()} has {config.lookahead} frames of look-ahead in every layer; streaming "
                "supports r=0 only (with look-ahead a chunk could only be finalised layers*r frames later)")

    def init_state(self) -> StreamState:
        """The state before the first chunk (checks that the model can stream)."""
        self.check_streamable()
        D, device = self.config.dim, self.frontend.mean.device
        return StreamState(stem=torch.zeros(1, 0, self.config.n_mels, device=device),
                           layers=[torch.zeros(1, 0, D, device=device) for _ in self.encoder.layers],
                           pooled=torch.zeros(D, device=device))

    @torch.no_grad()
    def infer(self, chunk: Tensor, state: StreamState | None = None) -> tuple[Tensor, StreamState]:
        """Run one chunk of frames, with the left context kept in ``state``; equal to the offline pass.

        Under ``chunked_mask(T, c, L, r=0)`` the frames of chunk n see exactly chunks ``n - L .. n``, so a
        layer's output for chunk n needs only that layer's input for the chunk and the L chunks before it,
        and those never change once computed. Each layer therefore keeps its last ``L * c`` input frames
        and runs the chunk's queries against ``[cached; chunk]``: the block's mask comes from the same
        ``chunked_mask`` at absolute positions and ``q_offset`` / ``k_offset`` give the relative position
        bias the true offsets. The stem looks back ``self.input.context`` frames, so those are cached too.

        Args:
            chunk (Tensor): ``(n, F)`` log-mel frames, exactly c of them (fewer only for the last chunk).
            state (StreamState, optional): from the previous call; ``None`` starts a stream.

        Returns:
            ``(output, state)``: ``(n, K)`` logits of the chunk's frames (frame task), or ``(K,)`` the clip
            logits over every frame so far (clip task; after the last chunk they equal the offline ones).
        """
        if self.training:
            raise ValueError("infer runs the model as in evaluation (no dropout, no SpecAugment): call .eval() first")
        state = self.init_state() if state is None else state
        c, n = self.config.chunk, chunk.shape[0]
        if state.finished:
            raise ValueError("a chunk shorter than the chunk size ends the stream; start another with state=None")
        if not 0 < n <= c:
            raise ValueError(f"infer takes 1 to {c} frames (one chunk), got {n}")
        frames = torch.cat([state.stem, self.frontend(chunk.unsqueeze(0))], dim=1)  # (1, S0 + n, F)
        x = self.input(frames)[:, -n:]  # (1, n, D)
        position, context = state.position, self.config.left_chunks * c
        structure = chunked_mask(position + n, c, self.config.left_chunks)
        layers = []
        for layer, cache in zip(self.encoder.layers, state.layers):
            start = position - cache.shape[1]  # absolute position of the first cached frame
            q_idx = torch.arange(position, position + n, device=x.device).unsqueeze(1)  # (n, 1)
            k_idx = torch.arange(start, position + n, device=x.device).unsqueeze(0)  # (1, S + n)
            keys = torch.cat([cache, x], dim=1)  # (1, S + n, D): this layer's input, cached then new
            layers.append(keys[:, max(0, keys.shape[1] - context):])
            x = layer(x, mask=structure.allows(q_idx, k_idx), position_bias=self.position_bias, context=keys,
                      q_offset=position, k_offset=start)
        x = self.encoder.norm(x)  # (1, n, D)
        new = StreamState(stem=frames[:, max(0, frames.shape[1] - self.input.context):], layers=layers,
                          position=position + n, pooled=state.pooled, finished=n < c)
        if self.config.task == "frame":
            return self.head(x, torch.tensor([n], device=x.device))[0], new  # (n, K)
        final = self.head.norm(x)[0]  # (n, D)
        if self.head.score is None:
            new.pooled = state.pooled + final.sum(0)  # (D,)
            return self.head.out(new.pooled / new.position), new  # (K,)
        # Attention pooling, one chunk at a time: rescale what was summed under the old maximum score.
        scores = self.head.score(final).squeeze(-1)  # (n,)
        new.pool_max = max(state.pool_max, scores.max().item())
        rescale = math.exp(state.pool_max - new.pool_max)  # 0 before the first chunk
        weights = torch.exp(scores - new.pool_max)  # (n,)
        new.pool_sum = state.pool_sum * rescale + weights.sum().item()
        new.pooled = state.pooled * rescale + weights @ final  # (D,)
        return self.head.out(new.pooled / new.pool_sum), new  # (K,)


class ConvModel(nn.Module):
    """CNN baseline: 2-D convolution blocks over the spectrogram, then dilated 1-D convolutions in time.

    The 2-D blocks pool only along frequency, so every frame keeps its own vector and the same network
    serves the clip and the frame task; the dilated layers (dilation 1, 2, 4, 8) widen its view in time
    to about +-35 frames.

    Shapes:
        features: (B, T, F), lengths: (B,) -> (B, K) or (B, T, K)
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        C, D = config.conv_channels, config.dim
        self.frontend = FrontEnd(config)
        blocks, channels, freq = [], 1, config.n_mels
        for out in (C, C, 2 * C, 2 * C):
            blocks.append(nn.Sequential(nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(),
                                        nn.MaxPool2d((2, 1))))
            channels, freq = out, freq // 2
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Conv1d(channels * freq, D, 1)
        self.temporal = nn.ModuleList(
            nn.Sequential(nn.Conv1d(D, D, 3, padding=d, dilation=d), nn.BatchNorm1d(D), nn.ReLU(),
                          nn.Dropout(config.dropout))
            for d in (1, 2, 4, 8)
        )
        self.head = Head(D, config.num_classes, config.task, config.dropout, pooling=config.pooling)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        real = _frame_mask(lengths, features.shape[1]).unsqueeze(1)  # (B, 1, T)
        # Padded frames are held at zero after every layer, as the convolutions' own padding is, so a
        # clip's outputs do not depend on how much padding its batch has.
        x = (self.frontend(features, lengths).transpose(1, 2) * real).unsqueeze(1)  # (B, 1, F, T)
        for block in self.blocks:
            x = block(x) * real.unsqueeze(1)  # (B, C', F', T)
        x = self.project(x.flatten(1, 2)) * real  # (B, D, T)
        for layer in self.temporal:
            x = (x + layer(x)) * real
        return self.head(x.transpose(1, 2), lengths)  # x: (B, T, D)


class RecurrentModel(nn.Module):
    """Bidirectional GRU baseline (two layers), reading the padded batch as packed sequences.

    Shapes:
        features: (B, T, F), lengths: (B,) -> (B, K) or (B, T, K)
    """

    def __init__(self, config: AudioConfig):
        super().__init__()
        self.frontend = FrontEnd(config)
        self.rnn = nn.GRU(config.n_mels, config.rnn_hidden, num_layers=2, batch_first=True,
                          bidirectional=True, dropout=config.dropout)
        self.head = Head(2 * config.rnn_hidden, config.num_classes, config.task, config.dropout,
                         pooling=config.pooling)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        x = self.frontend(features, lengths)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        x, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=features.shape[1])  # (B, T, 2h)
        return self.head(x, lengths)
