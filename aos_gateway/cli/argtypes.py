"""argparse ``type=`` converters shared by every ``aos`` command: a bad value is a one-line error."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_N = TypeVar("_N", int, float)


def _bounded(convert: Callable[[str], _N], noun: str, ok: Callable[[_N], bool], rule: str) -> Callable[[str], _N]:
    """A converter: ``convert`` the text (else "not a <noun>"), then check ``ok`` (else "must be <rule>")."""

    def parse(text: str) -> _N:
        try:
            val = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {noun}: {text!r}") from None
        if not ok(val):  # a NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return val

    return parse


positive_float = _bounded(float, "number", lambda v: v > 0, "> 0")
positive_int = _bounded(int, "whole number", lambda v: v > 0, "> 0")
#: a cost cap, a wait where 0 means "do not"
non_negative_float = _bounded(float, "number", lambda v: v >= 0, ">= 0")
#: a seed, a count where 0 means "none"
non_negative_int = _bounded(int, "whole number", lambda v: v >= 0, ">= 0")
#: a probability or a rate of success
probability = _bounded(float, "number", lambda v: 0 <= v <= 1, "a probability, 0..1")


def int_between(low: int, high: int, what: str) -> Callable[[str], int]:
    """A whole number in [low, high], e.g. ``int_between(1, 65535, "port")``."""

    def parse(text: str) -> int:
        try:
            val = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None
        if not low <= val <= high:
            raise argparse.ArgumentTypeError(f"a {what} is {low}..{high}, got {val}")
        return val

    parse.__name__ = what.replace(" ", "_")  # argparse names the type in its own messages
    return parse


#: a port to listen on; 0: any free one
port_or_zero = int_between(0, 65535, "port")
port = int_between(1, 65535, "port")


def file_problem(path: Path) -> str | None:
    """Why ``path`` is no file to read, or None (commands that check a path after parsing use it too)."""
    if path.is_dir():
        return "is a folder, not a file"
    if not path.is_file():
        return "no such file"
    return None


def new_file_problem(path: Path) -> str | None:
    """Why ``path`` is no file to write (a folder, or in a folder that is missing or not writable), or None."""
    if path.is_dir():
        return "is a folder, not a file"
    parent = path.parent
    if not parent.is_dir():
        return f"no such folder {parent}"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in folder {parent}"
    return None


def existing_file(text: str) -> Path:
    path = Path(text)
    problem = file_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return path


def new_file(text: str) -> Path:
    """A file to write: its folder must exist and it must not be a folder (checked before any work)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    path = Path(text)
    problem = new_file_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{text}: {problem}")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if path.is_file():
        raise argparse.ArgumentTypeError(f"is a file, not a folder: {text}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return path


def ascending_counts(text: str) -> list[int]:
    """Whole numbers >= 0 separated by commas, strictly ascending (so no repeats), e.g. ``0,1000,5000``."""
    parts = [p.strip() for p in text.split(",")]
    vals: list[int] = []
    for p in parts:
        try:
            val = int(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {p!r} in {text!r} (e.g. 0,1000,5000)") from None
        if val < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {val} in {text!r}")
        if vals and val <= vals[-1]:
            raise argparse.ArgumentTypeError(f"must be ascending without repeats, got {text!r}")
        vals.append(val)
    return vals


def tenant(text: str) -> str:
    """A tenant name: not empty, no spaces, slashes or control characters, at most 128 characters
    (it names Kafka principals, key files and dashboard rows; an empty one silently became 'default')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a tenant name cannot be empty")
    bad = sorted({c for c in text if c.isspace() or c in "/\\" or not c.isprintable()})
    if bad:
        raise argparse.ArgumentTypeError(f"a tenant name has no spaces, slashes or control characters: {text!r}")
    if len(text) > 128:
        raise argparse.ArgumentTypeError(f"a tenant name has at most 128 characters, got {len(text)}")
    return text
