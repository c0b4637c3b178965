"""The Free Spoken Digit Dataset: reading wav files, log-mel features, the split rules, batching.

Speech becomes a sequence of frame vectors: one log-mel vector every 10 ms, so one second of audio is
100 frames. Frames are computed without centre padding (frame t covers samples
``[t * hop, t * hop + win)``), which is what lets ``audio.streaming`` compute exactly the same frames
from audio that is still arriving.

Legend: B batch, T frames, F mel bins, N samples.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import soundfile
import torch
import torchaudio
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from core.lab.datasets import cache_dir, content_key, require_dataset, resolve_data_root
from core.lab.harness import atomic_open

SAMPLE_RATE = 8000
WIN_SECONDS = 0.025
HOP_SECONDS = 0.010
NUM_DIGITS = 10
SILENCE = NUM_DIGITS  # frame label for "no digit" in the connected-digit task
IGNORE_INDEX = -100  # label of padded frames; cross-entropy skips it
FEATURE_CACHE_VERSION = 2  # bump when wav_features changes, so cached features are recomputed

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class AudioError(ValueError):
    """A wav file that cannot become model input. The message always names the file."""


@dataclass(frozen=True)
class Recording:
    """One FSDD clip, ``{digit}_{speaker}_{index}.wav``."""

    path: Path
    digit: int
    speaker: str
    index: int


def parse_recording(path: str | Path) -> Recording:
    path = Path(path)
    match = _NAME.match(path.name)
    if match is None:
        raise AudioError(f"{path}: not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav)")
    return Recording(path, int(match[1]), match[2], int(match[3]))


def list_recordings(data_dir: str | Path | None = None) -> list[Recording]:
    """Every recording of ``<data root>/fsdd/recordings``, sorted by file name."""
    root = require_dataset(
        resolve_data_root(data_dir),
        name="Free Spoken Digit Dataset",
        subdir="fsdd",
        expected=["recordings/*.wav"],
        layout="recordings/{digit}_{speaker}_{index}.wav (3000 files, 8 kHz mono)",
        url=FSDD_URL,
    )
    paths = sorted((root / "recordings").glob("*.wav"))
    return [parse_recording(p) for p in paths]


def speakers(recordings: list[Recording]) -> list[str]:
    return sorted({r.speaker for r in recordings})


def split_recordings(
    recordings: list[Recording], split: str = "standard", *, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[Recording]]:
    """The train / val / test split rules.

    Args:
        recordings (list[Recording]): the clips to divide.
        split (str, default "standard"): ``"standard"`` is the dataset's own rule (index 0-4 of every
            speaker and digit is test, the rest train); ``"speaker:NAME"`` holds speaker NAME out
            entirely as the test set and trains on everyone else.
        val_fraction (float, default 0.1): share of the training clips carved out for validation.
        seed (int, default 0): seeds the validation carve-out; the test set never depends on it.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``; every recording lies in exactly one list.
    """
    if split == "standard":
        test = [r for r in recordings if r.index < 5]
        pool = [r for r in recordings if r.index >= 5]
    elif split.startswith("speaker:"):
        name = split.removeprefix("speaker:")
        known = speakers(recordings)
        if name not in known:
            raise ValueError(f"--split {split}: unknown speaker {name!r}; speakers are {', '.join(known)}")
        test = [r for r in recordings if r.speaker == name]
        pool = [r for r in recordings if r.speaker != name]
    else:
        raise ValueError(f"--split {split!r}: expected 'standard' or 'speaker:NAME'")
    pool = sorted(pool, key=lambda r: r.path.name)
    random.Random(seed).shuffle(pool)
    num_val = round(val_fraction * len(pool))
    return {"train": pool[num_val:], "val": pool[:num_val], "test": test}


def loso_folds(recordings: list[Recording], *, validation: str = "speaker", val_fraction: float = 0.1,
               seed: int = 0) -> dict[str, dict[str, list[Recording]]]:
    """Leave-one-speaker-out: one fold per speaker, ``{speaker: {"train", "val", "test"}}``.

    Fold ``s`` tests on every clip of speaker ``s`` (a voice the model has never heard) and trains on
    other speakers; nothing speaker ``s`` said chooses an epoch or a model. Validation:

    - ``"speaker"`` (default): every clip of one more held-out voice, the speaker after ``s`` in name order
      (cyclically), and training on the remaining speakers: validation then measures what test measures,
      accuracy on a new voice, so it can choose between front-ends and models;
    - ``"recordings"``: ``val_fraction`` of the training speakers' clips (seeded by ``seed``): more voices to
      train on, but validation only measures familiar voices.
    """
    names = speakers(recordings)
    if validation == "recordings":
        return {name: split_recordings(recordings, f"speaker:{name}", val_fraction=val_fraction, seed=seed)
                for name in names}
    if validation != "speaker":
        raise ValueError(f"LOSO validation is 'speaker' or 'recordings', got {validation!r}")
    if len(names) < 3:
        raise ValueError(f"leave-one-speaker-out with a validation speaker needs >= 3 speakers, got {names}")
    folds = {}
    for i, name in enumerate(names):
        held = names[(i + 1) % len(names)]
        folds[name] = {"train": [r for r in recordings if r.speaker not in (name, held)],
                       "val": [r for r in recordings if r.speaker == held],
                       "test": [r for r in recordings if r.speaker == name]}
    return folds


def read_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Decode a wav file to a mono float waveform at ``sample_rate``.

    Multi-channel files are averaged to mono and other sample rates are resampled; a file that cannot
    be decoded, holds no samples, or holds non-finite samples raises ``AudioError`` naming it.

    Shapes:
        output: (N,)
    """
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{path}: cannot decode as audio ({error})") from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    waveform = torch.from_numpy(data).mean(dim=1)  # (N,): channels averaged to mono
    if not torch.isfinite(waveform).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if rate != sample_rate:
        waveform = torchaudio.functional.resample(waveform, rate, sample_rate)
    return waveform


class LogMel(nn.Module):
    """Log-mel spectrogram with a 25 ms window and 10 ms hop, no centre padding.

    Args:
        n_mels (int, default 40): mel bins F.
        sample_rate (int, default 8000): the waveform's rate.

    Shapes:
        waveform: (N,) or (B, N)
        output: (T, F) or (B, T, F) with ``T = 1 + (N - win) // hop``
    """

    def __init__(self, n_mels: int = 40, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.win = round(WIN_SECONDS * sample_rate)
        self.hop = round(HOP_SECONDS * sample_rate)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=self.win,  # a frame spans exactly its window: streaming knows when it is complete
            win_length=self.win,
            hop_length=self.hop,
            n_mels=n_mels,
            center=False,
        )

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else 1 + (num_samples - self.win) // self.hop

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.shape[-1] < self.win:
            raise AudioError(f"{waveform.shape[-1]} samples is shorter than one {self.win}-sample window")
        mel = self.mel(waveform)  # (..., F, T)
        return torch.log(mel + 1e-6).transpose(-1, -2)  # (..., T, F)


def change_speed(waveform: Tensor, speed: float) -> Tensor:
    """The waveform played ``speed`` times faster (Kaldi's and sox's speed perturbation): taken as sampled
    at ``SAMPLE_RATE * speed`` and resampled to ``SAMPLE_RATE``, so duration scales by ``1 / speed`` and every
    frequency (pitch, formants) by ``speed``: a shorter or longer vocal tract. The source rate is rounded
    to whole hundreds of Hz (speed in steps of 1/80 at 8 kHz): rates such as 7200 -> 8000 share a large
    divisor, which keeps torchaudio's polyphase filter small (7304 -> 8000 would need 1000 phases).

    Shapes:
        waveform: (N,) -> (about N / speed,)
    """
    if speed == 1:
        return waveform
    if not 0.5 <= speed <= 2:
        raise ValueError(f"speed {speed} is outside [0.5, 2]")
    return torchaudio.functional.resample(waveform, round(SAMPLE_RATE * speed / 100) * 100, SAMPLE_RATE)


def wav_features(path: str | Path, logmel: LogMel, speed: float = 1.0) -> Tensor:
    """Read ``path`` and return its log-mel frames ``(T, F)`` (of the clip played ``speed`` times faster);
    a clip shorter than one window raises."""
    waveform = change_speed(read_wav(path), speed)
    if logmel.num_frames(waveform.numel()) < 1:
        raise AudioError(
            f"{path}: {waveform.numel() / SAMPLE_RATE * 1000:.1f} ms of audio is shorter than one "
            f"{WIN_SECONDS * 1000:.0f} ms analysis window"
        )
    return logmel(waveform)


class ClipDataset(Dataset):
    """Whole clips with one digit label each (the ``digits`` task).

    ``variants`` (optional) holds other versions of every clip (the clips at other speeds, for speed
    perturbation): ``variants[v][i]`` is version ``v + 1`` of clip ``i``, version 0 being ``features[i]``.
    Indexing returns version 0; ``item(i, v)`` any version (training batches draw one at random).
    """

    def __init__(self, features: list[Tensor], labels: list[int], variants: list[list[Tensor]] | None = None):
        self.features, self.labels, self.variants = features, labels, variants or []
        if any(len(v) != len(features) for v in self.variants):
            raise ValueError("every variant needs one version of every clip")

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.features[i], torch.tensor(self.labels[i])

    @property
    def versions(self) -> int:
        """How many versions each clip has (1 without variants)."""
        return 1 + len(self.variants)

    def item(self, i: int, version: int) -> tuple[Tensor, Tensor]:
        features = self.features[i] if version == 0 else self.variants[version - 1][i]
        return features, torch.tensor(self.labels[i])


class FrameDataset(Dataset):
    """Long utterances with one label per frame (the ``connected`` task)."""

    def __init__(self, features: list[Tensor], frame_labels: list[Tensor]):
        self.features, self.frame_labels = features, frame_labels

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.features[i], self.frame_labels[i]


def collate(batch: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Pad a list of ``(features (T, F), label)`` to a batch.

    Labels are either one class per clip or one class per frame; per-frame labels are padded with
    ``IGNORE_INDEX``.

    Shapes:
        output: ``features`` (B, T, F), ``lengths`` (B,), ``labels`` (B,) or (B, T)
    """
    features, labels = zip(*batch)
    lengths = torch.tensor([f.shape[0] for f in features])
    padded = nn.utils.rnn.pad_sequence(list(features), batch_first=True)  # (B, T, F)
    if labels[0].dim() == 0:
        targets = torch.stack(labels)  # (B,)
    else:
        targets = nn.utils.rnn.pad_sequence(list(labels), batch_first=True, padding_value=IGNORE_INDEX)
    return {"features": padded, "lengths": lengths, "labels": targets}


def length_batches(lengths: list[int], max_frames: int, *, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Group indices of similar length so that each padded batch holds at most ``max_frames`` frames.

    Sorting by length keeps padding small for the long connected-digit utterances; batches are then
    shuffled (seeded) so training does not see them in length order.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > max_frames:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


def speaker_statistics(features: list[Tensor], speaker_of: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per speaker, the mean and std ``(F,)`` of every mel bin over all the frames of that speaker's clips.

    Args:
        features (list[Tensor]): ``(T, F)`` log-mel frames of every clip.
        speaker_of (list[str]): the speaker of each clip.
    """
    if len(features) != len(speaker_of):
        raise ValueError(f"{len(features)} clips but {len(speaker_of)} speakers")
    stats = {}
    for name in sorted(set(speaker_of)):
        frames = torch.cat([f for f, s in zip(features, speaker_of) if s == name])  # (sum T, F)
        stats[name] = frames.mean(0), frames.std(0).clamp_min(1e-3)
    return stats


def normalise_by_speaker(features: list[Tensor], speaker_of: list[str],
                         statistics: dict[str, tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Speaker-level mean and variance normalisation (Kaldi's ``apply-cmvn`` with ``utt2spk``): every mel bin
    of every clip normalised with its speaker's ``speaker_statistics``.

    A voice's fixed colouring goes, as with per-utterance normalisation, but a clip keeps what sets its
    digit apart from the same speaker's other clips (a one-digit clip's own mean is mostly that digit). The
    statistics use no labels; a held-out speaker's come from its own recordings, which adapts to that voice:
    a deployment would need some recordings of a new voice before it could normalise them.
    """
    missing = sorted(set(speaker_of) - set(statistics))
    if missing:
        raise ValueError(f"no statistics for speaker(s) {', '.join(missing)}")
    return [(f - statistics[s][0]) / statistics[s][1] for f, s in zip(features, speaker_of, strict=True)]


def enrolment(recordings: list[Recording], per_speaker: int | None, seed: int) -> list[int]:
    """Indices into ``recordings`` of the clips that give each speaker's statistics: all of them, or
    ``per_speaker`` of each speaker's, drawn with ``seed`` from its clips in name order (all when it has fewer)."""
    if per_speaker is None:
        return list(range(len(recordings)))
    if per_speaker < 1:
        raise ValueError(f"speaker statistics need at least one clip per speaker, got {per_speaker}")
    rng, chosen = random.Random(seed), []
    for name in sorted({r.speaker for r in recordings}):
        mine = sorted((i for i, r in enumerate(recordings) if r.speaker == name), key=lambda i: recordings[i].path.name)
        chosen += sorted(rng.sample(mine, min(per_speaker, len(mine))))
    return chosen


def clip_features(recordings: list[Recording], logmel: LogMel, progress: bool = True, speed: float = 1.0
                  ) -> list[Tensor]:
    """Log-mel frames ``(T, F)`` of every recording, cached outside the data folder.

    Decoding 3000 clips takes several seconds on a small CPU; the cache makes later runs start at once.
    One cache file per feature setting; inside it each clip is keyed by ``core.lab.datasets.content_key``
    of its wav (resolved path, size, modification time), so a recording replaced under the same name, or
    another data tree with the same file names, is decoded again rather than served stale. ``progress``
    shows a bar while decoding (``--no-progress`` hides it). ``speed`` != 1: the frames of every clip played
    that many times faster (``change_speed``), cached on their own.
    """
    setting = {"version": FEATURE_CACHE_VERSION, "n_mels": logmel.mel.n_mels, "win": logmel.win, "hop": logmel.hop,
               "sample_rate": SAMPLE_RATE, **({"speed": speed} if speed != 1 else {})}
    path = cache_dir("fsdd") / f"logmel-{content_key([], setting)}.pt"
    cached: dict[str, Tensor] = torch.load(path, weights_only=True) if path.exists() else {}
    keys = [content_key([r.path]) for r in recordings]
    missing = [(key, r) for key, r in zip(keys, recordings) if key not in cached]
    desc = "log-mel features" + (f" (speed {speed:g})" if speed != 1 else "")
    for key, recording in tqdm(missing, desc=desc, leave=False, disable=not (missing and progress)):
        cached[key] = wav_features(recording.path, logmel, speed)
    if missing:
        with atomic_open(path) as f:  # a temp file of its own: concurrent runs cannot collide
            torch.save(cached, f)
    return [cached[key] for key in keys]
