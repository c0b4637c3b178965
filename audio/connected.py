"""Connected digits: long utterances built from FSDD clips, labelled per frame, scored by digit error rate.

An utterance is a random digit string spoken by random FSDD clips of one split, joined with pauses
and laid over low steady noise. Every frame whose centre falls inside a clip carries that clip's digit;
every other frame is ``SILENCE``. Pauses between digits are never shorter than ``min_gap_seconds``, so
two equal neighbouring digits stay two runs and the string can be read back off the frame labels.

Generation is deterministic given the seed and the recordings, and its result (features, frame labels,
digit strings) is cached outside the data folder, under ``core.lab.datasets.cache_dir``.

Legend: T frames, F mel bins, N samples.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import soundfile
import torch
from torch import Tensor
from tqdm import tqdm

from audio.data import SAMPLE_RATE, SILENCE, LogMel, Recording, list_recordings, read_wav, split_recordings
from core.lab.datasets import cache_dir, content_key


@dataclass(frozen=True)
class ConnectedConfig:
    """How connected-digit utterances are drawn.

    Args:
        count (int): utterances to generate.
        min_seconds (float), max_seconds (float): each utterance's length is drawn uniformly in between;
            digits are added until it is reached.
        min_gap_seconds (float, default 0.1), max_gap_seconds (float, default 0.5): pause between digits.
        noise_db (float, default -30.0): noise level relative to the speech level (every clip is scaled
            to the same RMS, then given a random gain within ``gain_db``).
        gain_db (float, default 6.0): random per-clip gain range, +-dB.
        seed (int, default 0): the whole set follows from it.
    """

    count: int
    min_seconds: float
    max_seconds: float
    min_gap_seconds: float = 0.1
    max_gap_seconds: float = 0.5
    noise_db: float = -30.0
    gain_db: float = 6.0
    seed: int = 0


@dataclass
class Utterance:
    waveform: Tensor  # (N,)
    digits: list[int]
    spans: list[tuple[int, int]]  # sample span [start, end) of each digit


_SPEECH_RMS = 0.05


def synthesize(recordings: list[Recording], seconds: float, rng: random.Random, config: ConnectedConfig,
               waveforms: dict | None = None) -> Utterance:
    """One utterance of about ``seconds`` seconds from ``recordings`` (all from one split)."""
    waveforms = {} if waveforms is None else waveforms
    pieces, digits, spans = [], [], []
    position = 0

    def pause(low: float, high: float) -> None:
        nonlocal position
        n = round(rng.uniform(low, high) * SAMPLE_RATE)
        pieces.append(torch.zeros(n))
        position += n

    pause(config.min_gap_seconds, config.max_gap_seconds)
    while position < seconds * SAMPLE_RATE:
        recording = rng.choice(recordings)
        if recording.path not in waveforms:
            waveforms[recording.path] = read_wav(recording.path)
        clip = waveforms[recording.path]
        gain = 10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20)
        clip = clip * (gain * _SPEECH_RMS / clip.pow(2).mean().sqrt().clamp_min(1e-8))
        pieces.append(clip)
        digits.append(recording.digit)
        spans.append((position, position + clip.numel()))
        position += clip.numel()
        pause(config.min_gap_seconds, config.max_gap_seconds)
    waveform = torch.cat(pieces)
    noise = torch.Generator().manual_seed(rng.getrandbits(62))
    waveform = waveform + _SPEECH_RMS * 10 ** (config.noise_db / 20) * torch.randn(waveform.numel(), generator=noise)
    return Utterance(waveform, digits, spans)


def write_utterance(path: str | Path, seconds: float, *, seed: int = 0, split: str = "standard",
                    data_dir: str | None = None) -> str:
    """Write one connected-digit utterance of about ``seconds`` made from ``split``'s test recordings to
    ``path`` (8 kHz wav); returns a line naming its length and digit string."""
    recordings = split_recordings(list_recordings(data_dir), split)["test"]
    config = ConnectedConfig(count=1, min_seconds=seconds, max_seconds=seconds, seed=seed)
    utterance = synthesize(recordings, seconds, random.Random(seed), config)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, utterance.waveform.clamp(-1, 1).numpy(), SAMPLE_RATE)
    return f"{path}: {utterance.waveform.numel() / SAMPLE_RATE:.2f} s, digits {''.join(map(str, utterance.digits))}"


def frame_labels(spans: list[tuple[int, int]], digits: list[int], num_frames: int, logmel: LogMel) -> Tensor:
    """Label frame t with the digit whose sample span contains the frame's centre, else ``SILENCE``.

    Shapes:
        output: (T,)
    """
    centres = torch.arange(num_frames) * logmel.hop + logmel.win // 2  # (T,)
    labels = torch.full((num_frames,), SILENCE, dtype=torch.long)
    for (start, end), digit in zip(spans, digits):
        labels[(centres >= start) & (centres < end)] = digit
    return labels


def make_connected_set(recordings: list[Recording], config: ConnectedConfig, logmel: LogMel,
                       *, name: str = "connected", progress: bool = True) -> dict:
    """Generate (or load from the cache) ``config.count`` utterances from ``recordings`` (``progress``: a
    bar while generating).

    Returns:
        ``{"features": [(T, F)], "labels": [(T,)], "digits": [[int]], "seconds": [float]}``
    """
    # Keyed by each wav's resolved path, size and time: a replaced recording or another tree is regenerated.
    digest = content_key(sorted((r.path for r in recordings), key=lambda p: p.name),
                         {"config": asdict(config), "n_mels": logmel.mel.n_mels, "win": logmel.win, "hop": logmel.hop})
    path = cache_dir("fsdd-connected") / f"{name}-{digest}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    rng = random.Random(config.seed)
    waveforms: dict = {}
    out = {"features": [], "labels": [], "digits": [], "seconds": []}
    for _ in tqdm(range(config.count), desc=f"generating {name}", leave=False, disable=not progress):
        seconds = rng.uniform(config.min_seconds, config.max_seconds)
        utterance = synthesize(recordings, seconds, rng, config, waveforms)
        features = logmel(utterance.waveform)  # (T, F)
        out["features"].append(features)
        out["labels"].append(frame_labels(utterance.spans, utterance.digits, features.shape[0], logmel))
        out["digits"].append(utterance.digits)
        out["seconds"].append(utterance.waveform.numel() / SAMPLE_RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    torch.save(out, partial)
    partial.replace(path)
    return out


def decode_frames(labels: Tensor, min_run: int = 5) -> list[int]:
    """Read a digit string off per-frame labels.

    Runs of equal labels are collapsed; runs shorter than ``min_run`` frames are dropped as blips (and the
    runs they split are merged again); silence runs separate digits and are then dropped.
    """
    runs: list[list[int]] = []  # [label, length]
    for label in labels.tolist():
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    kept: list[int] = []
    for label, length in runs:
        if length >= min_run and (not kept or kept[-1] != label):
            kept.append(label)
    return [label for label in kept if label != SILENCE]


def edit_distance(hypothesis: list[int], reference: list[int]) -> int:
    """Levenshtein distance: substitutions, insertions and deletions, each costing 1."""
    previous = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, 1):
        current = [i]
        for j, r in enumerate(reference, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (h != r)))
        previous = current
    return previous[-1]


def digit_error_rate(hypotheses: list[list[int]], references: list[list[int]]) -> float:
    """Total edit distance over total reference digits (as word error rate is computed)."""
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    return errors / max(1, sum(len(r) for r in references))
