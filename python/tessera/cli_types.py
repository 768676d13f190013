"""argparse types that check a command-line value where it is read, so `--world-size 0` or
`--device-memory abc` is refused naming the flag (argparse adds it), never taken as something else."""
from __future__ import annotations

import argparse
import math


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if kind is int and not -2 ** 63 <= value < 2 ** 63:  # torch and C++ take int64 (an OverflowError later)
        raise argparse.ArgumentTypeError(f"expected an integer that fits in int64, got {text!r:.40}")
    return value


def _at_least(kind, low: float, text: str):
    value = _number(text, kind)
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _at_least(int, 1, text)


def non_negative_int(text: str) -> int:
    return _at_least(int, 0, text)


def non_negative_float(text: str) -> float:
    return _at_least(float, 0, text)


def memory_size(text: str) -> int:
    """Bytes of '24GB', '80GiB', '1000000'."""
    from .models.weights import parse_size

    try:
        value = parse_size(text, what="memory size")
    except ValueError as e:  # parse_size refuses 0 and below too
        raise argparse.ArgumentTypeError(str(e).partition(": ")[2] or str(e))
    return value
