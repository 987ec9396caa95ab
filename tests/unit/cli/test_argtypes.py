"""aos_gateway.cli.argtypes: the converters every command's options share."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from aos_gateway.cli import argtypes


@pytest.mark.parametrize(
    ("convert", "text", "words"),
    [
        (argtypes.positive_float, "fast", "not a number"),
        (argtypes.positive_float, "0", "must be > 0"),
        (argtypes.positive_float, "nan", "must be > 0"),
        (argtypes.positive_int, "1.5", "not a whole number"),
        (argtypes.positive_int, "-3", "must be > 0"),
        (argtypes.port, "0", "1..65535"),
        (argtypes.port_or_zero, "65536", "0..65535"),
        (argtypes.port, "http", "not a port"),
        (argtypes.existing_file, "/no/such/file", "no such file"),
        (argtypes.existing_dir, "/no/such/dir", "no such folder"),
    ],
)
def test_bad_values_raise_a_one_line_argparse_error(convert: object, text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        convert(text)  # type: ignore[operator]


def test_good_values_convert(tmp_path: Path) -> None:
    assert argtypes.positive_float("2.5") == 2.5
    assert argtypes.positive_int("7") == 7
    assert argtypes.port_or_zero("0") == 0
    assert argtypes.int_between(1, 10, "number of minutes")("10") == 10
    assert argtypes.existing_dir(str(tmp_path)) == tmp_path


@pytest.mark.parametrize(
    ("convert", "text", "words"),
    [
        (argtypes.non_negative_float, "-1", "must be >= 0"),
        (argtypes.non_negative_float, "nan", "must be >= 0"),
        (argtypes.non_negative_float, "soon", "not a number"),
        (argtypes.non_negative_int, "-5", "must be >= 0"),
        (argtypes.non_negative_int, "2.5", "not a whole number"),
    ],
)
def test_negative_values_are_refused_where_zero_is_allowed(convert: object, text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        convert(text)  # type: ignore[operator]


def test_zero_is_allowed_by_the_non_negative_converters() -> None:
    assert argtypes.non_negative_float("0") == 0.0
    assert argtypes.non_negative_int("0") == 0


def test_a_folder_is_not_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder, not a file"):
        argtypes.existing_file(str(tmp_path))


def test_a_new_file_needs_an_existing_folder_and_must_not_be_one(tmp_path: Path) -> None:
    assert argtypes.new_file(str(tmp_path / "state.npz")) == tmp_path / "state.npz"
    with pytest.raises(argparse.ArgumentTypeError, match="no such folder"):
        argtypes.new_file(str(tmp_path / "missing" / "state.npz"))
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder, not a file"):
        argtypes.new_file(str(tmp_path))
