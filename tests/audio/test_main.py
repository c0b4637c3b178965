"""The command line: help, synth, stream from a checkpoint, and bad input reaching it (mirrors audio/__main__.py)."""

from dataclasses import asdict

import pytest
import torch

from audio.__main__ import build_parser, main, model_configs
from audio.data import AudioError
from audio.models import AudioConfig, build_model
from core.lab.harness import save_checkpoint

SMALL = dict(dim=32, heads=2, layers=2, ffn_dim=64, stem_channels=4, dropout=0.0)


def checkpoint(tmp_path, **options):
    torch.manual_seed(0)
    config = AudioConfig(task="frame", num_classes=11, attention="truncated", chunk=16, left_chunks=1,
                         **{**SMALL, **options})
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": build_model(config).state_dict(), "config": {"model": asdict(config)}})
    return path


def test_help_explains_every_command(capsys):
    for command in ("compare", "stream", "synth"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    assert "--window-sweep" in capsys.readouterr().out


def test_compare_trains_every_variant_and_baseline_once():
    args = build_parser().parse_args(["compare", "--window-sweep", "2", "8", "--baselines", "gru"])
    base = AudioConfig(window=8)
    models = model_configs(args, base)
    assert [name for name, *_ in models] == ["full", "window(w=8)", "truncated(c=16,L=2)", "window(w=2)", "gru"]
    assert [seeds for *_, seeds in models] == [1, 1, 1, 1, 1]
    args = build_parser().parse_args(["compare", "--seeds", "3", "--window-sweep", "2", "--baselines"])
    assert [seeds for *_, seeds in model_configs(args, base)] == [3, 3, 3, 1]


def test_synth_then_stream_prints_labels_and_timing(tmp_path, capsys):
    wav = tmp_path / "digits.wav"
    assert main(["synth", str(wav), "--seconds", "2"]) == 0
    assert "digits" in capsys.readouterr().out
    assert main(["stream", "--checkpoint", str(checkpoint(tmp_path)), str(wav)]) == 0
    out = capsys.readouterr().out
    assert "digits so far" in out and "real-time factor" in out
    assert out.count(" s  ") >= 2 * 100 // 16  # one line per 160 ms chunk


def test_stream_rejects_bad_audio_naming_the_file(tmp_path, write_wav):
    path = write_wav("short.wav", 0.1 * torch.randn(120))
    with pytest.raises(AudioError, match="short.wav"):
        main(["stream", "--checkpoint", str(checkpoint(tmp_path)), str(path)])


def test_stream_rejects_a_model_with_lookahead(tmp_path, write_wav):
    path = write_wav("ok.wav", 0.1 * torch.randn(4000))
    with pytest.raises(ValueError, match="look-ahead"):
        main(["stream", "--checkpoint", str(checkpoint(tmp_path, lookahead=4)), str(path)])
