"""Running the truncated-attention model while audio is still arriving.

Under ``chunked_mask(T, c, L, r=0)`` the frames of chunk n see exactly chunks ``n - L .. n``. So a layer's
output for chunk n needs only that layer's input for the chunk and for the L chunks before it, and
those inputs never change once computed. ``StreamingEncoder`` therefore keeps, per layer, the last
``L * c`` frames of that layer's input and runs each new chunk's queries against
``[cached frames; chunk]`` with core's attention: an explicit bool mask for that block (built from the
same ``chunked_mask`` at absolute positions) and ``q_offset`` / ``k_offset`` so the relative position
bias sees the true offsets. The convolution stem in front looks only backwards, so it needs just its
last few input frames cached. The result equals the whole-utterance pass up to float rounding.

Look-ahead (r > 0) is not streamed: with r frames of look-ahead in every layer, a chunk's output would
depend on frames of the next chunk at every layer, so it could only be finalised ``layers * r`` frames
later, with recomputation. ``StreamingEncoder`` rejects such a model with an error saying so.

Features stream exactly too: frames are computed without centre padding (``audio.data.LogMel``), so
frame t depends only on samples ``[t * hop, t * hop + win)`` and ``StreamingFeatures`` emits a frame as
soon as its last sample has arrived.

Legend: T frames, F mel bins, D model dim, K classes, N samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from audio.data import HOP_SECONDS, LogMel
from audio.models import AttentionModel
from core.masks import chunked_mask


class StreamingFeatures:
    """Log-mel frames from audio that arrives in pieces; the same frames ``LogMel`` gives offline."""

    def __init__(self, logmel: LogMel):
        self.logmel = logmel
        self.buffer = torch.zeros(0)
        self.emitted = 0  # frames emitted so far
        self.consumed = 0  # samples dropped from the front of the buffer

    def push(self, samples: Tensor) -> Tensor:
        """Add samples ``(N,)``; return the frames that became complete, ``(T_new, F)`` (T_new may be 0)."""
        self.buffer = torch.cat([self.buffer, samples])
        available = self.logmel.num_frames(self.consumed + self.buffer.numel()) - self.emitted
        if available <= 0:
            return torch.zeros(0, self.logmel.mel.n_mels)
        start = self.emitted * self.logmel.hop - self.consumed
        end = start + (available - 1) * self.logmel.hop + self.logmel.win
        frames = self.logmel(self.buffer[start:end])  # (T_new, F)
        self.emitted += available
        drop = self.emitted * self.logmel.hop - self.consumed  # samples no future frame needs
        self.buffer = self.buffer[drop:]
        self.consumed += drop
        return frames


class StreamingEncoder:
    """A truncated-attention ``AttentionModel`` run chunk by chunk with cached left context.

    Args:
        model (AttentionModel): trained with ``attention="truncated"`` and ``lookahead=0``.

    ``push(features)`` takes exactly one chunk of c frames (a shorter one only as the last chunk) and
    returns the logits that chunk settles: ``(n, K)`` per frame for the frame task, or the clip logits
    ``(K,)`` over all frames so far for the clip task (after the last chunk they equal the offline ones).
    """

    def __init__(self, model: AttentionModel):
        config = model.config
        if config.model != "attention" or config.attention != "truncated":
            raise ValueError(f"streaming needs a truncated-attention model, got {config.describe()}")
        if config.lookahead:
            raise ValueError(
                f"{config.describe()} has {config.lookahead} frames of look-ahead in every layer; streaming "
                "supports r=0 only (with look-ahead a chunk could only be finalised layers*r frames later)"
            )
        self.model = model.eval()
        self.chunk, self.context = config.chunk, config.left_chunks * config.chunk
        self.reset()

    def reset(self) -> None:
        D = self.model.config.dim
        self.stem_cache = torch.zeros(1, 0, self.model.config.n_mels)  # last normalised input frames
        self.caches = [torch.zeros(1, 0, D) for _ in self.model.layers]  # per layer: (1, S_cached, D)
        self.position = 0
        self.finished = False
        self.pooled = torch.zeros(D)  # clip task: sum of normalised frame vectors so far

    @torch.no_grad()
    def push(self, features: Tensor) -> Tensor:
        n = features.shape[0]
        if self.finished:
            raise ValueError("a chunk shorter than the chunk size ends the stream; call reset() to start another")
        if not 0 < n <= self.chunk:
            raise ValueError(f"push takes 1 to {self.chunk} frames (one chunk), got {n}")
        self.finished = n < self.chunk
        model = self.model
        # The stem looks `context` frames back: run it over those cached frames and the chunk, keep the
        # chunk's outputs (at the very start there is nothing cached, just as offline).
        frames = torch.cat([self.stem_cache, model.frontend(features.unsqueeze(0))], dim=1)  # (1, S + n, F)
        self.stem_cache = frames[:, max(0, frames.shape[1] - model.input.context):]
        x = model.input(frames)[:, -n:]  # (1, n, D)
        structure = chunked_mask(self.position + n, self.chunk, model.config.left_chunks)
        for i, layer in enumerate(model.layers):
            cache = self.caches[i]
            start = self.position - cache.shape[1]  # absolute position of the first cached frame
            q_idx = torch.arange(self.position, self.position + n).unsqueeze(1)  # (n, 1)
            k_idx = torch.arange(start, self.position + n).unsqueeze(0)  # (1, S + n)
            block = structure.allows(q_idx, k_idx)  # (n, S + n)
            keys = torch.cat([cache, x], dim=1)  # (1, S + n, D): this layer's input, cached then new
            self.caches[i] = keys[:, max(0, keys.shape[1] - self.context):]
            x = layer(x, mask=block, position_bias=model.position_bias, context=keys,
                      q_offset=self.position, k_offset=start)
        self.position += n
        if model.config.task == "frame":
            return model.head(x, torch.tensor([n]))[0]  # (n, K)
        self.pooled += model.head.norm(x)[0].sum(0)
        return model.head.out(self.pooled / self.position)  # (K,)


@torch.no_grad()
def stream_features(model: AttentionModel, features: Tensor) -> Tensor:
    """Run ``features (T, F)`` through a ``StreamingEncoder`` chunk by chunk; per-frame logits ``(T, K)``
    (frame task) or the clip logits after each chunk ``(num_chunks, K)`` (clip task)."""
    encoder = StreamingEncoder(model)
    outputs = [encoder.push(piece) for piece in features.split(encoder.chunk)]
    return torch.cat(outputs) if model.config.task == "frame" else torch.stack(outputs)


@torch.no_grad()
def check_streaming(model: AttentionModel, features: Tensor) -> dict[str, float]:
    """Stream ``features (T, F)`` chunk by chunk and compare with the whole-utterance pass.

    Returns the largest absolute difference of the logits, and the compute time per chunk and the
    real-time factor of the model part (features precomputed; ``stream_waveform`` adds their cost).
    """
    model.eval()
    offline = model(features.unsqueeze(0), torch.tensor([features.shape[0]]))[0]  # (T, K) or (K,)
    encoder = StreamingEncoder(model)
    timing = StreamTiming(features.shape[0] * HOP_SECONDS)
    outputs = []
    for piece in features.split(encoder.chunk):
        started = time.perf_counter()
        outputs.append(encoder.push(piece))
        timing.chunk_seconds.append(time.perf_counter() - started)
    streamed = torch.cat(outputs) if model.config.task == "frame" else outputs[-1]
    return {"max_abs_diff": float((streamed - offline).abs().max()), **timing.summary()}


@dataclass
class StreamTiming:
    """Compute time per chunk while streaming a waveform."""

    audio_seconds: float
    chunk_seconds: list[float] = field(default_factory=list)  # compute time of each chunk

    @property
    def real_time_factor(self) -> float:
        """Compute time over audio time: below 1 keeps up with live audio."""
        return sum(self.chunk_seconds) / self.audio_seconds

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.chunk_seconds)
        return {
            "audio_seconds": self.audio_seconds,
            "chunks": len(ordered),
            "chunk_ms_mean": 1000 * sum(ordered) / len(ordered),
            "chunk_ms_p50": 1000 * ordered[len(ordered) // 2],
            "chunk_ms_max": 1000 * ordered[-1],
            "real_time_factor": self.real_time_factor,
        }


def stream_waveform(model: AttentionModel, waveform: Tensor, logmel: LogMel, sample_rate: int):
    """Feed ``waveform (N,)`` in pieces of one chunk of audio, as a microphone would deliver it.

    Yields ``(first_frame, logits)`` whenever a chunk is complete (the last, partial chunk when the audio
    ends); the ``StreamTiming`` comes back as the generator's return value.
    """
    encoder = StreamingEncoder(model)
    features = StreamingFeatures(logmel)
    timing = StreamTiming(waveform.numel() / sample_rate)
    piece = encoder.chunk * logmel.hop
    pending = torch.zeros(0, logmel.mel.n_mels)
    for start in range(0, waveform.numel(), piece):
        started = time.perf_counter()
        pending = torch.cat([pending, features.push(waveform[start:start + piece])])
        last = start + piece >= waveform.numel()
        outputs = []
        while pending.shape[0] >= encoder.chunk or (last and pending.shape[0] > 0):
            chunk, pending = pending[:encoder.chunk], pending[encoder.chunk:]
            outputs.append((encoder.position, encoder.push(chunk)))
        timing.chunk_seconds.append(time.perf_counter() - started)
        yield from outputs
    return timing
