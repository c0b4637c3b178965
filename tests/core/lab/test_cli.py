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
