"""`--help` of every verb and sub-verb prints its usage and exits 0, and every option says what it is for."""

from __future__ import annotations

import argparse
import re

import pytest

from ivra.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = dict(_parsers(build_parser()))


def test_every_verb_is_walked():
    verbs = {path[0] for path in PARSERS if path}
    assert {"demo", "sweep", "viz", "train", "eval", "doctor", "bench", "serve", "trials"} <= verbs
    assert ("eval", "libero") in PARSERS and ("train", "policy") in PARSERS


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: " ".join(p) or "ivra")
def test_help_prints_usage_and_exits_0(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('ivra', *path))}")


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: " ".join(p) or "ivra")
def test_every_option_has_help(path):
    parser = PARSERS[path]
    missing = [
        a.option_strings[0] if a.option_strings else a.dest
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not a.help
    ]
    assert not missing, f"ivra {' '.join(path)}: options without help: {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--sequential", "--delta", "0"],
        ["eval", "libero", "--suite", "libero_spatial", "--ab", "--sequential", "--delta", "1"],
        ["trials", "--delta", "0"],
        ["plan", "--alpha", "1"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_sequential_margins_and_rates_outside_0_1_are_usage_errors(argv, capsys):
    """`--delta 0` used to run a whole round, then end in a ValueError traceback from the stop rule."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "expected a number in (0, 1)" in capsys.readouterr().err


def _scalar(value) -> str | None:
    """How a default shows in a help text, for the defaults a reader could be misled about (numbers, names)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, str)) for v in value):
        return ",".join(map(str, value))
    return None


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: " ".join(p) or "ivra")
def test_every_option_shows_its_default(path):
    """docs/cli.md: `ivra VERB --help` lists every option with its default; a number or name default must be the
    one the help states (`ivra demo --episodes` said "(README: 1000)" with a default of 200)."""
    parser = PARSERS[path]
    formatter = parser._get_formatter()
    wrong = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction | argparse._SubParsersAction) or a.required:
            continue
        if not a.option_strings and a.nargs not in ("?", "*"):
            continue
        text = " ".join(formatter._expand_help(a).split())
        name = a.option_strings[0] if a.option_strings else a.dest
        shown = _scalar(a.default)
        if "default" not in text.lower():
            wrong.append(f"{name}: no default in {text!r}")
            continue
        forms = {shown, f"{a.default:g}"} if isinstance(a.default, float) else {shown}
        if shown is not None and not any(f in text for f in forms):
            wrong.append(f"{name}: default {shown} not in {text!r}")
        if isinstance(a.default, (int, float)) and not isinstance(a.default, bool):
            stated = re.findall(r"default:? (-?[\d.e+-]+)", text)
            if stated and all(float(x.rstrip(".")) != float(a.default) for x in stated):
                wrong.append(f"{name}: help states default {stated}, the default is {a.default}")
    assert not wrong, f"ivra {' '.join(path)}: " + "; ".join(wrong)


@pytest.mark.parametrize("path", [p for p in PARSERS if p], ids=" ".join)
def test_every_verb_has_a_description(path):
    parser = PARSERS[path]
    assert parser.description, f"ivra {' '.join(path)} --help has no description line"
