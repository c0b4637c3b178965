"""Running the truncated-attention model while audio is still arriving.

The model streams by itself: ``AttentionModel.infer(chunk, state) -> (output, state)`` takes one chunk of
frames and keeps, per layer, the left context the next chunk needs (see its docstring). This module
supplies what lies around it: log-mel frames computed from audio that arrives in pieces, timing, and the
check that streaming equals the whole-utterance pass.

Features stream exactly too: frames are computed without centre padding (``audio.data.LogMel``), so
frame t depends only on samples ``[t * hop, t * hop + win)`` and ``StreamingFeatures`` emits a frame as
soon as its last sample has arrived.

Legend: T frames, F mel bins, D model dim, K classes, N samples.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from audio.data import HOP_SECONDS, LogMel
from audio.models import AttentionModel

__all__ = ["StreamingFeatures", "StreamTiming", "check_streaming", "stream_waveform"]


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


@dataclass
class StreamTiming:
    """Compute time per chunk while streaming."""

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


@torch.no_grad()
def check_streaming(model: AttentionModel, features: Tensor) -> dict[str, float]:
    """Stream ``features (T, F)`` chunk by chunk through ``model.infer`` and compare with the whole pass.

    Returns the largest absolute difference of the logits, and the compute time per chunk and the
    real-time factor of the model part (features precomputed; ``stream_waveform`` adds their cost).
    """
    model.eval()
    offline = model(features.unsqueeze(0), torch.tensor([features.shape[0]]))[0]  # (T, K) or (K,)
    timing = StreamTiming(features.shape[0] * HOP_SECONDS)
    outputs, state = [], model.init_state()
    for piece in features.split(model.config.chunk):
        started = time.perf_counter()
        output, state = model.infer(piece, state)
        outputs.append(output)
        timing.chunk_seconds.append(time.perf_counter() - started)
    streamed = torch.cat(outputs) if model.config.task == "frame" else outputs[-1]
    return {"max_abs_diff": float((streamed - offline).abs().max()), **timing.summary()}


def stream_waveform(model: AttentionModel, waveform: Tensor, logmel: LogMel,
                    sample_rate: int) -> Generator[tuple[int, Tensor], None, StreamTiming]:
    """Feed ``waveform (N,)`` in pieces of one chunk of audio, as a microphone would deliver it.

    Yields ``(first_frame, logits)`` whenever a chunk is complete (the last, partial chunk when the audio
    ends); the ``StreamTiming`` comes back as the generator's return value.
    """
    model.eval()
    state = model.init_state()  # refuses a model that cannot stream, before any audio is read
    chunk = model.config.chunk
    features = StreamingFeatures(logmel)
    timing = StreamTiming(waveform.numel() / sample_rate)
    piece = chunk * logmel.hop
    pending = torch.zeros(0, logmel.mel.n_mels)
    for start in range(0, waveform.numel(), piece):
        started = time.perf_counter()
        pending = torch.cat([pending, features.push(waveform[start:start + piece])])
        last = start + piece >= waveform.numel()
        outputs = []
        while pending.shape[0] >= chunk or (last and pending.shape[0] > 0):
            frames, pending = pending[:chunk], pending[chunk:]
            first = state.position
            output, state = model.infer(frames, state)
            outputs.append((first, output))
        timing.chunk_seconds.append(time.perf_counter() - started)
        yield from outputs
    return timing
