"""Split rules, wav reading and its bad inputs, features and batching (mirrors audio/data.py)."""

import math
import os

import pytest
import torch

import audio.data
from audio.data import (IGNORE_INDEX, SAMPLE_RATE, AudioError, ClipDataset, LogMel, change_speed, clip_features,
                        collate, length_batches, parse_recording, read_wav, speakers, split_recordings, wav_features)
from audio.train import Batches


def names(part):
    return {r.path.name for r in part}


def test_fsdd_is_complete(recordings):
    assert len(recordings) == 3000
    assert speakers(recordings) == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def test_standard_split_follows_the_dataset_rule(recordings):
    split = split_recordings(recordings, "standard", seed=0)
    assert len(split["test"]) == 300 and all(r.index < 5 for r in split["test"])
    assert all(r.index >= 5 for r in split["train"] + split["val"])
    assert len(split["val"]) == 270 and len(split["train"]) == 2430


@pytest.mark.parametrize("rule", ["standard", "speaker:theo"])
def test_no_recording_in_two_splits(recordings, rule):
    split = split_recordings(recordings, rule, seed=3)
    train, val, test = names(split["train"]), names(split["val"]), names(split["test"])
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == len(recordings)


def test_held_out_speaker_is_absent_from_training(recordings):
    split = split_recordings(recordings, "speaker:jackson", seed=0)
    assert {r.speaker for r in split["test"]} == {"jackson"} and len(split["test"]) == 500
    assert "jackson" not in {r.speaker for r in split["train"] + split["val"]}


def test_validation_carve_out_is_seeded(recordings):
    a, b = split_recordings(recordings, seed=1), split_recordings(recordings, seed=1)
    c = split_recordings(recordings, seed=2)
    assert names(a["val"]) == names(b["val"])
    assert names(a["val"]) != names(c["val"])
    assert names(a["test"]) == names(c["test"])  # the test set never depends on the seed


@pytest.mark.parametrize("rule", ["speaker:nobody", "random"])
def test_bad_split_rule_is_rejected(recordings, rule):
    with pytest.raises(ValueError, match="split"):
        split_recordings(recordings, rule)


def test_file_names_are_parsed_and_checked():
    r = parse_recording("/x/7_theo_12.wav")
    assert (r.digit, r.speaker, r.index) == (7, "theo", 12)
    with pytest.raises(AudioError, match="notes.wav"):
        parse_recording("/x/notes.wav")


def test_real_recording_decodes_to_mono_8khz(recordings):
    waveform = read_wav(recordings[0].path)
    assert waveform.dim() == 1 and waveform.numel() > 1000 and waveform.abs().max() > 0.01


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF this is not audio")
    with pytest.raises(AudioError, match="broken.wav"):
        read_wav(path)


def test_empty_wav_names_the_file(write_wav):
    path = write_wav("empty.wav", torch.zeros(0))
    with pytest.raises(AudioError, match="empty.wav.*empty"):
        read_wav(path)


def test_other_sample_rate_is_resampled(write_wav):
    t = torch.arange(16000) / 16000
    path = write_wav("wide.wav", 0.5 * torch.sin(2 * math.pi * 440 * t), rate=16000)
    waveform = read_wav(path)
    assert waveform.numel() == SAMPLE_RATE  # one second at 8 kHz
    spectrum = torch.fft.rfft(waveform).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # still a 440 Hz tone


def test_stereo_is_averaged_to_mono(write_wav):
    left, right = torch.full((800,), 0.5), torch.full((800,), -0.25)
    path = write_wav("stereo.wav", torch.stack([left, right], dim=1), subtype="FLOAT")
    waveform = read_wav(path)
    assert waveform.shape == (800,)
    assert torch.allclose(waveform, torch.full((800,), 0.125))


def test_clip_shorter_than_one_window_is_rejected(write_wav):
    path = write_wav("tiny.wav", 0.1 * torch.randn(100))  # 12.5 ms < one 25 ms window
    with pytest.raises(AudioError, match="tiny.wav.*shorter than one"):
        wav_features(path, LogMel())


def test_logmel_frames_are_10ms_and_uncentred():
    logmel = LogMel()
    features = logmel(torch.randn(SAMPLE_RATE))
    assert features.shape == (logmel.num_frames(SAMPLE_RATE), 40)
    assert logmel.num_frames(SAMPLE_RATE) == 1 + (SAMPLE_RATE - 200) // 80 == 98
    # Frame t depends only on samples [t * hop, t * hop + win): a suffix gives the same later frames.
    wave = torch.randn(4000)
    assert torch.allclose(logmel(wave)[5:], logmel(wave[5 * 80:]), atol=1e-5)


def test_collate_pads_features_and_frame_labels():
    batch = collate([(torch.ones(3, 4), torch.tensor([1, 2, 3])), (torch.ones(5, 4), torch.tensor([4, 5, 6, 7, 8]))])
    assert batch["features"].shape == (2, 5, 4) and batch["lengths"].tolist() == [3, 5]
    assert batch["labels"][0].tolist() == [1, 2, 3, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["features"][0, 3:].abs().sum() == 0


def test_length_batches_respect_the_frame_budget():
    lengths = [10, 200, 30, 50, 40, 1000, 20]
    batches = length_batches(lengths, 100, shuffle=True, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 100


def _tone(hz, seconds=0.3):
    t = torch.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.5 * torch.sin(2 * math.pi * hz * t)


def test_feature_cache_rereads_a_recording_replaced_under_the_same_name(write_wav, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    decoded = []
    monkeypatch.setattr(audio.data, "wav_features",
                        lambda path, logmel, speed=1.0: decoded.append(path.name) or wav_features(path, logmel, speed))
    logmel = LogMel()
    clips = [parse_recording(write_wav("3_theo_0.wav", _tone(300))), parse_recording(write_wav("4_theo_0.wav", _tone(900)))]
    first = clip_features(clips, logmel)
    assert decoded == ["3_theo_0.wav", "4_theo_0.wav"]
    assert all(torch.equal(a, b) for a, b in zip(clip_features(clips, logmel), first))  # served from the cache
    assert len(decoded) == 2
    # Another recording under the same name (same length, so same size too); its time moves on.
    path = write_wav("3_theo_0.wav", _tone(2000))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    again = clip_features(clips, logmel)
    assert decoded[2:] == ["3_theo_0.wav"]
    assert not torch.allclose(again[0], first[0]) and torch.equal(again[1], first[1])
    torch.testing.assert_close(again[0], wav_features(path, logmel))


def test_feature_cache_tells_trees_with_the_same_names_apart(tmp_path, monkeypatch):
    import soundfile

    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    clips = []
    for tree, hz in (("a", 300), ("b", 2000)):
        (tmp_path / tree).mkdir()
        soundfile.write(tmp_path / tree / "3_theo_0.wav", _tone(hz).numpy(), SAMPLE_RATE, subtype="PCM_16")
        clips.append(parse_recording(tmp_path / tree / "3_theo_0.wav"))
    a, b = clip_features(clips, LogMel())
    assert not torch.allclose(a, b)
    # ... and feature settings apart: another mel count is another cache entry.
    assert clip_features(clips[:1], LogMel(n_mels=20))[0].shape[1] == 20


def test_loso_folds_hold_each_speaker_out_once_and_validate_on_the_others(recordings):
    from audio.data import loso_folds

    names = sorted({r.speaker for r in recordings})
    for validation in ("speaker", "recordings"):
        folds = loso_folds(recordings, validation=validation, seed=3)
        assert sorted(folds) == names
        for speaker, split in folds.items():
            assert {r.speaker for r in split["test"]} == {speaker}
            assert len(split["test"]) == sum(r.speaker == speaker for r in recordings)
            assert speaker not in {r.speaker for r in split["train"] + split["val"]}
            paths = [r.path for part in split.values() for r in part]
            assert len(paths) == len(set(paths)) == len(recordings)
            val_speakers = {r.speaker for r in split["val"]}
            if validation == "speaker":  # one more voice, never trained on
                assert val_speakers == {names[(names.index(speaker) + 1) % len(names)]}
                assert not val_speakers & {r.speaker for r in split["train"]}
            else:
                assert 0.08 < len(split["val"]) / (len(split["train"]) + len(split["val"])) < 0.12
    held = [next(iter({r.speaker for r in f["val"]})) for f in loso_folds(recordings).values()]
    assert sorted(held) == names  # every speaker validates exactly one fold


def _peak_hz(waveform):
    spectrum = torch.fft.rfft(waveform).abs()
    return int(spectrum.argmax()) * SAMPLE_RATE / len(waveform)


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_change_scales_duration_and_every_frequency(speed):
    tone = _tone(1000, seconds=1.0)
    faster = change_speed(tone, speed)
    assert abs(len(faster) - len(tone) / speed) <= 1
    assert abs(_peak_hz(faster) - 1000 * speed) <= 2  # a 1000 Hz tone played at 1.1x sounds at 1100 Hz
    assert change_speed(tone, 1.0) is tone
    with pytest.raises(ValueError, match="outside"):
        change_speed(tone, 3.0)


def test_speed_variants_are_cached_apart_from_the_originals(write_wav, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    clips = [parse_recording(write_wav("3_theo_0.wav", _tone(300, seconds=0.5)))]
    normal, slow = clip_features(clips, LogMel()), clip_features(clips, LogMel(), speed=0.9)
    assert slow[0].shape[0] > normal[0].shape[0]  # played slower: more frames
    assert torch.equal(clip_features(clips, LogMel())[0], normal[0])  # the original's cache entry is untouched


def test_shuffled_batches_draw_one_version_per_clip_and_rank_shares_agree():
    features = [torch.full((4 + i % 3, 2), float(i)) for i in range(12)]
    variants = [[f + 100 for f in features], [f + 200 for f in features]]
    dataset = ClipDataset(features, list(range(12)), variants)
    assert dataset.versions == 3 and torch.equal(dataset.item(5, 2)[0], features[5] + 200)

    def drawn(batches):  # (clip, version) of every item of one epoch
        return [(int(lab), int(f[0, 0]) // 100) for b in batches for f, lab in zip(b["features"], b["labels"])]

    epoch = drawn(Batches(dataset, 20, shuffle=True, seed=3))
    assert sorted(clip for clip, _ in epoch) == list(range(12))  # every clip once per epoch
    assert {v for _, v in epoch} == {0, 1, 2}  # in all three versions
    assert epoch == drawn(Batches(dataset, 20, shuffle=True, seed=3))  # seeded by the generator fit checkpoints
    assert {v for _, v in drawn(Batches(dataset, 20, shuffle=False))} == {0}  # evaluation: the clips as recorded
    shares = [drawn(Batches(dataset, 20, shuffle=True, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert set(shares[0]) | set(shares[1]) == set(epoch)  # processes split one draw, never draw apart
    with pytest.raises(ValueError, match="every variant"):
        ClipDataset(features, list(range(12)), [features[:3]])


def test_speaker_normalisation_removes_each_voices_colouring_and_keeps_each_clips_own_mean():
    from audio.data import normalise_by_speaker, speaker_statistics
    g = torch.Generator().manual_seed(0)
    lengths = {"a": [12, 30, 7], "b": [20, 5]}  # unequal: statistics are over frames, not clips
    clips = [(s, 2.0 * torch.randn(n, 6, generator=g) + torch.randn(6, generator=g)) for s in lengths for n in lengths[s]]
    speaker_of = [s for s, _ in clips]
    plain = [c for _, c in clips]
    stats = speaker_statistics(plain, speaker_of)
    frames_a = torch.cat([c for s, c in clips if s == "a"])
    assert torch.allclose(stats["a"][0], frames_a.mean(0)) and torch.allclose(stats["a"][1], frames_a.std(0))
    normalised = normalise_by_speaker(plain, speaker_of, stats)
    for name in lengths:  # every speaker's frames together: mean 0, std 1 per bin
        mine = torch.cat([c for c, s in zip(normalised, speaker_of) if s == name])
        assert mine.mean(0).abs().max() < 1e-5 and (mine.std(0) - 1).abs().max() < 1e-5

    # a voice (or microphone) that scales each band by a fixed gain adds a constant per bin to its log-mel
    # frames, and a louder one multiplies their spread: neither survives
    colour = {"a": 3.0 * torch.randn(6, generator=g), "b": -torch.randn(6, generator=g)}
    coloured = [1.5 * c + colour[s] for c, s in zip(plain, speaker_of)]
    again = normalise_by_speaker(coloured, speaker_of, speaker_statistics(coloured, speaker_of))
    assert max((x - y).abs().max().item() for x, y in zip(normalised, again)) < 1e-4

    # unlike per-utterance normalisation, a clip keeps how it differs from its speaker's other clips
    assert normalised[0].mean(0).abs().max() > 0.1
    with pytest.raises(ValueError, match="no statistics for speaker"):
        normalise_by_speaker(plain, ["c"] * len(plain), stats)
    with pytest.raises(ValueError, match="5 clips but 1 speakers"):
        speaker_statistics(plain, ["a"])


def test_speaker_normalised_folds_use_each_speakers_own_clips(recordings):
    from audio.data import speaker_statistics
    from audio.train import load_tasks
    plain = load_tasks("digits", "loso", train_every=25, progress=False)
    normed = load_tasks("digits", "loso", train_every=25, speaker_norm=True, progress=False)
    assert normed.keys() == plain.keys()
    fold = next(iter(plain))
    assert normed[fold].identity["feature_norm"] == "speaker" and "feature_norm" not in plain[fold].identity
    test_raw, test_normed = plain[fold].datasets["test"], normed[fold].datasets["test"]
    raw = [test_raw[i][0] for i in range(len(test_raw))]  # every clip of the held-out speaker
    mean, std = speaker_statistics(raw, [fold] * len(raw))[fold]
    for i in (0, len(raw) - 1):
        assert torch.allclose(test_normed[i][0], (raw[i] - mean) / std, atol=1e-5)
        assert torch.equal(test_normed[i][1], test_raw[i][1])  # labels untouched


def test_speaker_statistics_from_a_few_enrolled_clips(recordings):
    from audio.data import enrolment
    from audio.train import load_tasks
    chosen = enrolment(recordings, 10, seed=0)
    by_speaker = {}
    for i in chosen:
        by_speaker.setdefault(recordings[i].speaker, []).append(i)
    assert sorted(by_speaker) == sorted({r.speaker for r in recordings})
    assert all(len(v) == 10 for v in by_speaker.values())
    assert enrolment(recordings, 10, seed=0) == chosen != enrolment(recordings, 10, seed=1)
    assert enrolment(recordings, None, seed=0) == list(range(len(recordings)))
    with pytest.raises(ValueError, match="at least one clip"):
        enrolment(recordings, 0, seed=0)

    all_clips = load_tasks("digits", "loso", train_every=25, speaker_norm=True, progress=False)
    few = load_tasks("digits", "loso", train_every=25, speaker_norm=True, speaker_clips=5, progress=False)
    fold = next(iter(few))
    assert few[fold].identity["speaker_clips"] == 5 and all_clips[fold].identity["speaker_clips"] is None
    test_all, test_few = all_clips[fold].datasets["test"], few[fold].datasets["test"]
    assert len(test_all) == len(test_few)  # every clip still scored
    assert not torch.allclose(test_all[0][0], test_few[0][0])  # ... under statistics of five of them
