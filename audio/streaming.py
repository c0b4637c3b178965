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
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from audio.connected import decode_frames
from audio.data import HOP_SECONDS, SAMPLE_RATE, SILENCE, AudioError, LogMel
from audio.models import AttentionModel, AudioConfig, build_model
from core.lab.harness import load_checkpoint

__all__ = ["StreamingFeatures", "StreamTiming", "check_streaming", "stream_waveform", "load_streaming_model",
           "stream_lines"]


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


def load_streaming_model(checkpoint: str | Path) -> AttentionModel:
    """The model of a ``best.pt`` written by ``python -m audio compare``, in eval mode.

    Raises:
        ValueError: the model cannot stream (not truncated attention, or look-ahead), naming the file.
    """
    stored = load_checkpoint(checkpoint)
    config = AudioConfig(**stored["config"]["config"])
    model = build_model(config)
    model.load_state_dict(stored["model"])
    if not isinstance(model, AttentionModel):
        raise ValueError(f"{checkpoint}: streaming needs a truncated-attention model, got {config.describe()}")
    try:
        model.eval().init_state()
    except ValueError as error:
        raise ValueError(f"{checkpoint}: {error}") from None
    return model


def stream_lines(model: AttentionModel, waveform: Tensor, *, name: str = "audio") -> Iterator[str]:
    """What ``python -m audio stream`` prints: a header, one line per chunk as it is settled (the frame
    labels and the digits so far, or the clip's best guess so far), then latency and real-time factor.

    Raises:
        AudioError: the waveform is shorter than one analysis window.
    """
    config, logmel = model.config, LogMel(model.config.n_mels)
    if logmel.num_frames(waveform.numel()) < 1:
        raise AudioError(f"{name}: {waveform.numel() / SAMPLE_RATE * 1000:.1f} ms is shorter than one window")
    chunk_ms = config.chunk * logmel.hop * 1000 // SAMPLE_RATE
    yield f"{name}: {waveform.numel() / SAMPLE_RATE:.2f} s; {config.describe()}, chunks of {chunk_ms} ms"
    stream, labels = stream_waveform(model, waveform, logmel, SAMPLE_RATE), []
    while True:
        try:
            first, logits = next(stream)
        except StopIteration as done:
            summary = done.value.summary()
            break
        start = first * logmel.hop / SAMPLE_RATE
        if config.task == "frame":
            labels.append(logits.argmax(-1))
            shown = "".join("_" if label == SILENCE else str(label) for label in labels[-1].tolist())
            yield f"{start:7.2f} s  {shown}  digits so far: {''.join(map(str, decode_frames(torch.cat(labels))))}"
        else:
            probs = logits.softmax(-1)
            yield f"{start:7.2f} s  best guess {int(probs.argmax())} (p={float(probs.max()):.2f})"
    yield (f"per chunk: mean {summary['chunk_ms_mean']:.1f} ms, max {summary['chunk_ms_max']:.1f} ms (audio per chunk "
           f"{chunk_ms} ms); real-time factor {summary['real_time_factor']:.3f} on {torch.get_num_threads()} thread(s)")
