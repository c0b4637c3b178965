"""The command line: help, compare end to end, synth, stream from a checkpoint, and bad input reaching it
(mirrors audio/__main__.py); the --quick profile on the shared FSDD recordings."""

import json
from dataclasses import asdict

import pytest
import torch

from audio.__main__ import QUICK_FLOOR, build_parser, main, model_specs, resolve_split_defaults
from audio.models import AudioConfig, build_model
from core.lab.harness import save_checkpoint
from core.lab.runner import check_metrics_payload

SMALL = dict(dim=32, heads=2, layers=2, ffn_dim=64, stem_channels=4, dropout=0.0)


def checkpoint(tmp_path, **options):
    torch.manual_seed(0)
    config = AudioConfig(task="frame", num_classes=11, attention="truncated", chunk=16, left_chunks=1,
                         **{**SMALL, **options})
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": build_model(config).state_dict(), "config": {"config": asdict(config)}})
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
    specs = model_specs(args, base)
    assert [s.name for s in specs] == ["full", "window(w=8)", "truncated(c=16,L=2)", "window(w=2)", "gru"]
    assert [s.seeds for s in specs] == [None, None, None, 1, None]
    assert [s.role for s in specs] == ["attention"] * 4 + ["baseline"]


def test_compare_end_to_end_learns_and_follows_the_contract(tmp_path):
    # Every 40th training clip and tiny models: the whole pipeline in seconds (the quick profile below learns).
    out = tmp_path / "run"
    main(["compare", "--train-every", "40", "--attention", "truncated", "window", "--baselines", "gru",
          "--window-sweep", "2", "--dim", "16", "--layers", "1", "--heads", "2", "--epochs", "2",
          "--dropout", "0.2", "--spec-augment", "0,1", "--threads", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    rows = {r["model"]: r for r in metrics["results"]}
    assert set(rows) == {"truncated(c=16,L=2)", "window(w=8)", "window(w=2)", "gru"}
    saved = torch.load(out / "gru" / "seed0" / "best.pt", weights_only=True)["config"]["config"]
    assert (saved["dropout"], saved["freq_masks"], saved["time_masks"]) == (0.2, 0, 1)
    for row in rows.values():
        assert set(row["metrics"]) == {"val_accuracy", "test_accuracy"} and "test_seconds" in row["bookkeeping"]
        assert row["bookkeeping"]["epochs"] == 2
    chosen = metrics["headline_attention"]
    # One seed: the sweep's extra window ran as many seeds as the rest, so it is a candidate too.
    attention = ("truncated(c=16,L=2)", "window(w=8)", "window(w=2)")
    assert chosen["chosen_on"] == "val_accuracy" and chosen["model"] in attention
    best = max(attention, key=lambda n: rows[n]["metrics"]["val_accuracy"])
    assert rows[chosen["model"]]["metrics"]["val_accuracy"] == rows[best]["metrics"]["val_accuracy"]
    assert metrics["streaming"]["max_abs_diff"] < 1e-4
    report = (out / "report.md").read_text()
    assert "chosen on validation" in report and "test_accuracy" in report
    assert "mean pooling; dropout 0.2; SpecAugment: 0 frequency masks per clip" in report
    for figure in ("learning_curves.png", "accuracy_vs_window.png", "time_vs_length.png", "memory_vs_length.png",
                   "attention_window-w-8.png", "attention_truncated-c-16-l-2.png"):
        assert (out / figure).stat().st_size > 0, figure
    # stream reads the truncated model's best.pt as written by compare
    checkpoint = out / "truncated-c-16-l-2" / "seed0" / "best.pt"
    assert checkpoint.exists(), sorted(p.name for p in out.iterdir())


def test_bad_flags_are_one_line_errors_before_anything_runs(tmp_path):
    for flags, message in ((["--epochs", "0"], None), (["--split", "speaker:nobody"], "unknown speaker"),
                           (["--quick", "--task", "connected"], "digits"),
                           (["--speed-perturb", "0.9,1"], "other than 1"), (["--speed-perturb", "3"], r"\[0.5, 2\]"),
                           (["--speed-perturb", "0.9", "--task", "connected"], "digits task"),
                           (["--spec-augment", "1,2,3"], "two counts F,T"), (["--spec-augment", "-1,2"], None),
                           (["--dropout", "-0.1"], None), (["--cepstra", "41"], "0 \\(off\\) to 40"),
                           (["--vtlp", "0.5"], "--vtlp takes 0 \\(off\\) up to 0.5"), (["--vtlp", "-0.1"], None),
                           (["--mixup", "0.4", "--task", "connected"], "--mixup mixes clips"), (["--mixup", "-1"], None)):
        with pytest.raises(SystemExit, match=f"error: .*{message}" if message else None):
            main(["compare", *flags, "--out", str(tmp_path / "bad")])
    assert f"{QUICK_FLOOR:.0%}" in build_parser()._subparsers._group_actions[0].choices["compare"].format_help()


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
    with pytest.raises(SystemExit, match="^error: .*short.wav"):
        main(["stream", "--checkpoint", str(checkpoint(tmp_path)), str(path)])


def test_stream_rejects_a_model_with_lookahead(tmp_path, write_wav):
    path = write_wav("ok.wav", 0.1 * torch.randn(4000))
    with pytest.raises(SystemExit, match="^error: .*look-ahead"):
        main(["stream", "--checkpoint", str(checkpoint(tmp_path, lookahead=4)), str(path)])


def test_quick_profile_learns_above_its_floor(tmp_path):
    """`compare --quick` on the real recordings: windowed attention at or above the stated floor."""
    out = tmp_path / "quick"
    main(["compare", "--quick", "--threads", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    accuracy = {r["model"]: r["metrics"]["test_accuracy"] for r in metrics["results"]}
    assert set(accuracy) == {"window(w=8)", "cnn"}
    assert accuracy["window(w=8)"] >= QUICK_FLOOR, accuracy
    figures = {p.name for p in out.glob("*.png")}
    assert {"learning_curves.png", "time_vs_length.png", "attention_window-w-8.png"} <= figures


def test_loso_end_to_end_reports_every_held_out_speaker(tmp_path):
    # Every 40th training clip, tiny models, one epoch: the protocol's plumbing, not its accuracy.
    out = tmp_path / "loso"
    main(["compare", "--split", "loso", "--train-every", "40", "--attention", "window", "--baselines", "cnn",
          "--feature-norm", "utterance", "--dim", "16", "--layers", "1", "--heads", "2", "--epochs", "1",
          "--mixup", "0.4", "--threads", "1", "--out", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert check_metrics_payload(metrics) == []
    speakers = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert {r["model"] for r in metrics["results"]} == {f"{m} | {s}" for m in ("window(w=8)", "cnn") for s in speakers}
    for model in ("window(w=8)", "cnn"):
        loso = metrics["loso"][model]
        assert set(loso["per_speaker_test_accuracy"]) == speakers and loso["folds"] == 6
        values = list(loso["per_speaker_test_accuracy"].values())
        assert abs(loso["mean_test_accuracy"] - sum(values) / 6) < 1e-9 and loso["min_test_accuracy"] == min(values)
    assert {c["feature_norm"] for c in metrics["config"]["models"].values()} == {"utterance"}
    report = (out / "report.md").read_text()
    assert "leave one speaker out" in report and "LOSO window(w=8)" in report and "Beta(0.4, 0.4)" in report
    assert (out / "loso_accuracy.png").stat().st_size > 0


def test_loso_refuses_the_connected_task(tmp_path):
    with pytest.raises(SystemExit, match="error: .*loso runs the digits task"):
        main(["compare", "--split", "loso", "--task", "connected", "--out", str(tmp_path / "bad")])


def test_speaker_normalisation_is_refused_for_the_connected_task(tmp_path):
    with pytest.raises(SystemExit, match="error: --feature-norm speaker .* digits task"):
        main(["compare", "--task", "connected", "--feature-norm", "speaker", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="error: --speaker-clips .* needs --feature-norm speaker \\(got utterance\\)"):
        main(["compare", "--split", "loso", "--speaker-clips", "10", "--out", str(tmp_path / "bad")])


def test_leave_one_speaker_out_gets_the_recipe_its_validation_chose_and_a_given_flag_wins():
    def resolved(*flags):
        args = build_parser().parse_args(["compare", *flags])
        resolve_split_defaults(args)
        return args.feature_norm, args.stem, args.spec_augment, args.layers

    assert resolved("--split", "loso") == ("utterance", "cnn-bn", [1, 1], 2)
    assert resolved() == resolved("--split", "speaker:theo") == ("global", "strided", [2, 2], 4)
    assert resolved("--split", "loso", "--feature-norm", "global", "--spec-augment", "2,2", "--layers", "4") == (
        "global", "cnn-bn", [2, 2], 4)
    assert resolved("--stem", "cnn") == ("global", "cnn", [2, 2], 4)
    help_text = build_parser()._subparsers._group_actions[0].choices["compare"].format_help()
    assert "utterance with --split loso" in " ".join(help_text.split())
