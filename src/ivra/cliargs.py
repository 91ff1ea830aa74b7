"""Argument checks shared by every ``ivra`` verb: one-line messages naming the bad value and what was expected.

The ``type=`` validators raise :class:`argparse.ArgumentTypeError`, so argparse prints
``ivra demo: error: argument --episodes: expected an integer > 0, got '0'`` and exits with status 2 before any
work starts. Checks that need more than one argument (or a loaded policy) raise :class:`UsageError`, which
:func:`ivra.cli.main` turns into the same kind of line and exit status 2.

Exit statuses of the ``ivra`` command: 0 success; 1 the run finished but something in it failed (errored work
units, a corrupt journal, IVRA could not act); 2 the command was wrong (usage, a bad setting, a missing file).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """A mistake in the command (bad value, unknown name, unusable path): reported in one line, exit status 2."""


def _int(text: str, expected: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer > 0 (counts: episodes, steps, workers, chunk sizes)."""
    value = _int(text, "an integer > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    """An integer >= 0 (seeds, retries, optional counts)."""
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _float(text: str, expected: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = _float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A number in [0, 1] (IVRA's lam)."""
    value = _float(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def open_unit_float(text: str) -> float:
    """A number in (0, 1): a rate, a significance level, the smallest effect of interest."""
    value = _float(text, "a number in (0, 1)")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1] (a fraction of a data set)."""
    value = _float(text, "a number in (0, 1]")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def list_of(item: Callable[[str], object], what: str, unique: bool = True) -> Callable[[str], list]:
    """A ``type=`` for a comma-separated, non-empty list whose items each pass ``item``."""

    def parse(text: str) -> list:
        parts = [p.strip() for p in str(text).split(",")]
        if not any(parts):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        if "" in parts:
            raise argparse.ArgumentTypeError(
                f"empty item in {text!r}: expected a comma-separated list of {what}"
            )
        out = []
        for p in parts:
            try:
                out.append(item(p))
            except (argparse.ArgumentTypeError, ValueError) as exc:
                if len(parts) == 1:
                    raise argparse.ArgumentTypeError(str(exc)) from None
                raise argparse.ArgumentTypeError(f"bad item {p!r} in {text!r}: {exc}") from None
        if unique and len(set(map(repr, out))) != len(out):
            raise argparse.ArgumentTypeError(f"{text!r} lists a value twice")
        return out

    return parse


def integer(text: str) -> int:
    return _int(text, "an integer")


def int_or_none(text: str) -> int | None:
    """An integer, or ``none`` (the adapter's default affinity layer)."""
    if str(text).strip().lower() == "none":
        return None
    return _int(text, "an integer or none")


def choice(choices: Sequence[str], what: str) -> Callable[[str], str]:
    """Like ``choices=`` but with the message shape of the other validators (usable inside :func:`list_of`)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}; expected one of: {', '.join(choices)}"
            )
        return text

    return parse


def ivra_setting(text: str) -> dict:
    """``layer=20,lam=0.3,...`` -> the validated :class:`ivra.IVRAConfig` fields as a dict."""
    from ivra.config import IVRAConfig

    try:
        return IVRAConfig.parse(text).to_dict()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_values(text: str) -> dict:
    """``a=1,b=x`` -> {"a": 1, "b": "x"} (values read as JSON where they parse, else kept as strings)."""
    import json

    out: dict = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"bad setting {part!r}: expected key=value, e.g. device=cuda")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k:
            raise argparse.ArgumentTypeError(f"bad setting {part!r}: empty key")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(path: Path, what: str, text: str) -> None:
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {what} {text!r}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {what} {text!r}: {parent} is not writable")


def out_dir(text: str) -> Path:
    """An output folder: an existing writable folder, or one that can be created (not an existing file)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected an output folder, got ''")
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"expected an output folder, but {text!r} is a file")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"output folder {text!r} is not writable")
        return path
    _check_creatable(path, "output folder", text)
    return path


def out_file(suffixes: Sequence[str] = ()) -> Callable[[str], Path]:
    """A ``type=`` for an output file: not a folder, its folder creatable, its suffix one of ``suffixes``."""

    def parse(text: str) -> Path:
        if not str(text).strip():
            raise argparse.ArgumentTypeError("expected an output file, got ''")
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"expected an output file, but {text!r} is a folder")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"expected a file name ending in {' | '.join(suffixes)}, got {text!r}"
            )
        if path.exists():
            if not os.access(path, os.W_OK):
                raise argparse.ArgumentTypeError(f"output file {text!r} is not writable")
        else:
            _check_creatable(path.parent, "the folder of", text)
        return path

    return parse


def check_executor(name: str) -> None:
    """``--executor ray`` needs ray installed: say so before anything runs."""
    import importlib.util

    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError(
            "--executor ray: ray is not installed (pip install -r requirements/libero-ray.txt), or use local"
        )


DESIGN_HELP = (
    "with --sequential: group (default: an exact group-sequential test at the planned rounds, alpha-spending with "
    "a non-binding futility boundary; fewest episodes, benchmarks/sequential_ab.md) or anytime (an anytime-valid "
    "confidence sequence: valid at any moment, for runs looked at off-plan)"
)


def design_choice(text: str) -> str:
    """A sequential A/B design (``--design``)."""
    from ivra.eval.sequential import DESIGNS

    return choice(DESIGNS, "design")(text)


def default_design() -> str:
    from ivra.eval.sequential import DEFAULT_DESIGN

    return DEFAULT_DESIGN


def check_rounds(design: str, n_rounds: int, how: str) -> None:
    """A group design needs at least two planned rounds (looks); say how to get them, before anything runs."""
    if design == "group" and n_rounds < 2:
        raise UsageError(
            f"--design group: {how} plan {n_rounds} round(s); a group-sequential design needs at least 2 planned "
            "rounds (lower --round, raise the maximum, or use --design anytime)"
        )
