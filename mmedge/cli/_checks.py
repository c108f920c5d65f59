"""Argument validators for the CLI: argparse ``type=`` callables (their errors come out as argparse's
one-line "argument --x: ..." with exit status 2) and up-front checks that raise ConfigError.

They run before any model is loaded or any work is done, so a bad argument costs nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path

from mmedge.errors import ConfigError


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def _float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a finite number; give a real value")
    return number


def non_negative(value: str) -> int:
    """A whole number >= 0 (seeds, sample indices, warm-up counts)."""
    number = _int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is negative; give 0 or more")
    return number


def positive(value: str) -> int:
    """A whole number >= 1 (threads, sample counts)."""
    number = _int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} must be at least 1")
    return number


def release_sequence(value: str) -> int:
    """A bundle's release sequence: a whole number in 0..2^53-1 (what every runtime reads exactly)."""
    from mmedge.bundle.publish import MAX_SEQUENCE

    number = _int(value)
    if not 0 <= number <= MAX_SEQUENCE:
        raise argparse.ArgumentTypeError(f"{number} must be in 0..{MAX_SEQUENCE} (2^53-1)")
    return number


def non_negative_float(value: str) -> float:
    """A finite number >= 0 (seconds, sigmas); NaN and infinity are refused."""
    number = _float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number:g} is negative; give 0 or more")
    return number


def fraction(value: str) -> float:
    """A finite number in [0, 1) (an allowed accuracy drop)."""
    number = _float(value)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"{number:g} must be in [0, 1), e.g. 0.01 for one point of accuracy")
    return number


def cpu_list(value: str) -> str:
    """A CPU list such as 4-7 or 0,2,4-5 (it reaches a phone's shell, so nothing else is accepted)."""
    from mmedge.bench.adb import check_cpu_affinity

    try:
        return check_cpu_affinity(value)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a CPU list; give cores like 4-7 or 0,2,4-5") from None


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_parent(path: Path) -> None:
    """The directory that will hold `path` exists or can be created, and is writable."""
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {path}: {anchor} is a file, not a directory; "
                                         f"choose another location")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {anchor} is not writable (permission denied); "
                                         f"choose a writable location")
    try:  # what access() cannot tell (root, a read-only or virtual file system such as /proc): try it
        os.rmdir(tempfile.mkdtemp(prefix=".mmedge-probe-", dir=anchor))
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {path}: nothing can be created in {anchor} "
                                         f"({exc.strerror or exc}); choose another location") from None


def writable_file(value: str) -> str:
    """A file to write: not an existing directory, in a directory that is or can be made writable."""
    path = Path(value)
    if not value or path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory; give a file name in it, "
                                         f"e.g. {Path(value or '.') / 'out'}")
    _check_parent(path)
    return value


def writable_dir(value: str) -> str:
    """A directory to write into: an existing writable directory, or one that can be created."""
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{value} exists and is not a directory; choose another location")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write into {value} (permission denied); "
                                             f"choose a writable location")
        return value
    _check_parent(path)
    return value


def writable_parent(value: str) -> str:
    """A path to create or replace (e.g. a bundle directory): only its parent must be writable."""
    _check_parent(Path(value))
    return value


def config_file(path: str | None, what: str = "config") -> str | None:
    """A JSON config to read: must be a readable UTF-8 file; raises ConfigError saying what to fix."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{path} is a directory; give the {what} JSON file", what)
    if not p.exists():
        return path  # the loader reports "file not found"
    try:
        p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          f"save it as UTF-8 JSON", what) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", what) from None
    return path
