"""argparse ``type=`` converters shared by every ``aos`` command: a bad value is a one-line error."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def positive_float(text: str) -> float:
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not val > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return val


def positive_int(text: str) -> int:
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if val <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return val


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


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def existing_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return path
