"""The argparse types every domain's command line shares: what they accept and how they refuse."""

import argparse

import pytest

from core.lab.cli import non_negative_float, number_list, positive_int, subset_of


def test_number_list_parses_and_refuses_naming_the_text():
    assert number_list(int)("16, 48,96") == [16, 48, 96]
    assert number_list(float)("0.01,1") == [0.01, 1.0]
    assert number_list(int, minimum=0)("0,3") == [0, 3]
    for parse, text, message in ((number_list(int), "8,x", "comma-separated whole numbers, got '8,x'"),
                                 (number_list(int), ",", "comma-separated whole numbers"),
                                 (number_list(int, minimum=1), "8,0", "whole numbers >= 1, got '8,0'"),
                                 (number_list(float, minimum=0), "0.5,-1", "numbers >= 0"),
                                 (number_list(int), "1.5", "whole numbers")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


def test_subset_positive_and_non_negative_types():
    assert subset_of(["attention", "cnn"])("cnn,attention") == ["cnn", "attention"]
    with pytest.raises(argparse.ArgumentTypeError, match="subset of attention,cnn, got 'vit'"):
        subset_of(["attention", "cnn"])("vit")
    assert positive_int("3") == 3 and non_negative_float("0") == 0.0
    for parse, text in ((positive_int, "0"), (positive_int, "x"), (non_negative_float, "-1"),
                        (non_negative_float, "nan")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_a_bad_list_stops_argparse_naming_the_flag(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dims", type=number_list(int, minimum=1))
    with pytest.raises(SystemExit):
        parser.parse_args(["--dims", "8,0"])
    assert "argument --dims: expected whole numbers >= 1, got '8,0'" in capsys.readouterr().err


def test_a_profile_fills_the_flags_left_at_their_defaults_and_reports_the_ones_given():
    from core.lab.cli import apply_profile

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", type=subset_of(["a", "b", "c"]), default=["a", "b", "c"])
    parser.add_argument("--size", type=int, default=None)
    profile = {"epochs": 3, "models": ["a"], "size": 16, "per_class": 100}  # per_class is no flag: always set
    defaults = parser.parse_args([])

    args = parser.parse_args([])
    assert apply_profile(args, defaults, profile) == []
    assert (args.epochs, args.models, args.size, args.per_class) == (3, ["a"], 16, 100)

    args = parser.parse_args(["--epochs", "5", "--models", "a,c", "--size", "16"])
    kept = apply_profile(args, defaults, profile)
    assert (args.epochs, args.models, args.size) == (5, ["a", "c"], 16)  # given flags win; 16 is the profile's
    assert kept == ["--epochs 5 given with --quick, which would set 3: the floors and budget of --quick are for "
                    "its own settings",
                    "--models a,c given with --quick, which would set a: the floors and budget of --quick are "
                    "for its own settings"]


def test_a_device_this_machine_lacks_is_refused_before_anything_loads(monkeypatch, tmp_path):
    import torch

    from core.lab.cli import UsageError, check_common_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = argparse.Namespace(seeds=1, threads=None, epochs=1, device="cuda", out=str(tmp_path / "out"))
    with pytest.raises(UsageError, match="--device cuda was asked for, but torch sees no CUDA GPU"):
        check_common_args(args)
    args.device = "tpu"
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        check_common_args(args)
    args.device = "cpu"
    check_common_args(args)
