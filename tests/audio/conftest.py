"""Fixtures shared by the audio tests: the FSDD recordings (from the data root) and small wav files."""

import pytest
import soundfile
import torch

from audio.data import list_recordings


@pytest.fixture(scope="session")
def recordings():
    return list_recordings()


@pytest.fixture
def write_wav(tmp_path):
    """Write ``samples`` (N,) or (N, channels) to ``tmp_path/name`` and return the path."""

    def write(name, samples, rate=8000, subtype="PCM_16"):
        path = tmp_path / name
        soundfile.write(path, torch.as_tensor(samples).numpy(), rate, subtype=subtype)
        return path

    return write
