"""Connected-digit generation, frame labels, decoding and the digit error rate (mirrors audio/connected.py)."""

import random

import torch

from audio.connected import (ConnectedConfig, decode_frames, digit_error_rate, edit_distance, frame_labels,
                             make_connected_set, synthesize)
from audio.data import SAMPLE_RATE, SILENCE, LogMel, split_recordings

S = SILENCE


def test_decode_collapses_runs_and_drops_silence_and_blips():
    labels = torch.tensor([S] * 6 + [3] * 8 + [S] * 6 + [3] * 7 + [5] * 2 + [3] * 6 + [S] * 5 + [7] * 9)
    assert decode_frames(labels, min_run=5) == [3, 3, 7]  # the 2-frame "5" is a blip inside the second 3
    assert decode_frames(labels, min_run=1) == [3, 3, 5, 3, 7]


def test_edit_distance_and_digit_error_rate():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 3], [1, 2, 3]) == 1
    assert edit_distance([4, 1, 2, 9], [1, 2, 3]) == 2
    assert digit_error_rate([[1, 2], [5]], [[1, 2, 3], [5]]) == 0.25


def test_frame_labels_follow_sample_spans():
    logmel = LogMel()
    labels = frame_labels([(800, 1600)], [4], num_frames=30, logmel=logmel)
    centres = torch.arange(30) * 80 + 100
    assert torch.equal(labels == 4, (centres >= 800) & (centres < 1600))
    assert set(labels.tolist()) == {4, S}


def test_utterance_is_long_enough_and_labels_read_back(recordings):
    test = split_recordings(recordings)["test"]
    config = ConnectedConfig(count=1, min_seconds=4, max_seconds=4)
    utterance = synthesize(test, 4.0, random.Random(1), config)
    assert utterance.waveform.numel() >= 4 * SAMPLE_RATE and torch.isfinite(utterance.waveform).all()
    logmel = LogMel()
    T = logmel.num_frames(utterance.waveform.numel())
    labels = frame_labels(utterance.spans, utterance.digits, T, logmel)
    assert decode_frames(labels, min_run=1) == utterance.digits


def test_generation_is_deterministic_and_cached_outside_the_data(recordings, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path))
    test = split_recordings(recordings)["test"][:40]
    config = ConnectedConfig(count=2, min_seconds=3, max_seconds=5, seed=7)
    first = make_connected_set(test, config, LogMel(), name="t")
    assert len(list(tmp_path.rglob("*.pt"))) == 1
    for path in tmp_path.rglob("*.pt"):
        path.unlink()
    again = make_connected_set(test, config, LogMel(), name="t")
    assert first["digits"] == again["digits"]
    assert all(torch.equal(a, b) for a, b in zip(first["features"], again["features"]))
    assert all(3 <= s <= 5 + 2.5 for s in first["seconds"])
    other = make_connected_set(test, ConnectedConfig(count=2, min_seconds=3, max_seconds=5, seed=8), LogMel(), name="t")
    assert other["digits"] != first["digits"]
