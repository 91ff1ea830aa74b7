"""The ``ivra`` command line: one verb per user task.

Each verb lives in the module that owns the capability and contributes ``register(subparsers)``;
this file only wires them together so that ``ivra --help`` stays fast (heavy imports happen in the
verb's handler, not here).

Exit statuses: 0 success; 1 the run finished but something in it failed (errored work units, a corrupt
journal, IVRA could not act); 2 the command was wrong (usage, a bad setting, an unknown name, a missing file).
Expected errors are answered in one line; anything else is a bug and keeps its traceback (``--debug`` shows
the traceback of expected errors too).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings

# verb -> module providing ``register(subparsers)``
VERBS = {
    "demo": "ivra.experiment.cli",
    "sweep": "ivra.experiment.cli",
    "viz": "ivra.experiment.cli",
    "train": "ivra.minivla.cli",
    "eval": "ivra.eval.cli",
    "doctor": "ivra.eval.cli",
    "plan": "ivra.eval.plancli",
    "compare": "ivra.eval.comparecli",
    "bench": "ivra.bench",
    "serve": "ivra.serve.cli",
    "trials": "ivra.serve.cli",
}


_NEGATIVE_LIST = re.compile(r"^-\d")  # no ivra option starts with a digit


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it (``default ...``): ``off`` for a
    flag, ``none`` for an option that is unset unless given."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is argparse.SUPPRESS
            or action.required
            or isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
            or (not action.option_strings and action.nargs not in ("?", "*"))
        ):
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None or action.default == []:
            return f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, with usage mistakes answered in one line (``ivra demo: error: ...``) and exit status 2, and every
    default in ``--help``; the subcommand parsers inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # argparse takes "-1,-2" (not a plain negative number) for an option: glue values that start with
        # "-<digit>" to their option, so that `--affinity-layers -1,-2` means what it says
        args = list(sys.argv[1:] if args is None else args)
        out: list[str] = []
        for tok in args:
            if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_LIST.match(tok):
                out[-1] = f"{out[-1]}={tok}"
            else:
                out.append(tok)
        return super().parse_known_args(out, namespace)

    def error(self, message: str):  # noqa: D102 -- argparse API
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with ``verb`` (one of :data:`VERBS`) only the module that registers it: a command imports
    what its own verb needs, not every verb's (torch, scipy), so that even a refused option is answered at once."""
    parser = Parser(prog="ivra", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of expected errors too")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    seen: set[str] = set()
    modules = [VERBS[verb]] if verb in VERBS else VERBS.values()
    for module_name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a capability not built into this install
            if exc.name and exc.name.startswith("ivra"):
                continue
            raise
        module.register(sub)
        seen.add(module_name)
    _describe_verbs(parser)
    return parser


def _describe_verbs(parser: argparse.ArgumentParser) -> None:
    """A verb (or sub-verb) registered without a description gets its one-line help as one, so that
    ``ivra VERB --help`` says what the verb does."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not sub.description and helps.get(name):
                    sub.description = helps[name][0].upper() + helps[name][1:] + "."
                _describe_verbs(sub)


def _expected_errors() -> dict[type, int]:
    """Errors that are the user's to fix (one line) -> exit status."""
    from ivra.cliargs import UsageError
    from ivra.config import ConfigError
    from ivra.eval.journal import JournalError

    errors: dict[type, int] = {
        UsageError: 2,
        ConfigError: 2,
        FileNotFoundError: 2,
        NotADirectoryError: 2,
        IsADirectoryError: 2,
        PermissionError: 2,
        JournalError: 1,
    }
    # an IVRAError exists only where the adapters were imported; importing them here would import torch for every
    # refusal
    adapters = sys.modules.get("ivra.adapters.base")
    if adapters is not None:
        errors[adapters.IVRAError] = 1
    try:
        from ivra.eval.libero.install import LiberoMissing

        errors[LiberoMissing] = 2
    except ImportError:  # pragma: no cover -- a build without the LIBERO harness
        pass
    return errors


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as ``warning: message`` (no source paths, no code line) for the person at the terminal."""
    print(f"warning: {message}", file=file or sys.stderr)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split("\n"))  # one line, whatever the message


def _verb(argv: list[str]) -> str | None:
    """The verb of a command line (its first word that is not a top-level flag), if it is one of :data:`VERBS`."""
    word = next((a for a in argv if a not in ("--debug", "--version")), None)
    return word if word in VERBS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_verb(argv))
    args = parser.parse_args(argv)
    if args.version:
        from ivra import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = " ".join(
        filter(None, ["ivra", args.verb, getattr(args, "benchmark", None), getattr(args, "stage", None)])
    )
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        expected = _expected_errors()  # (imported only now: the adapters import torch)
        if not isinstance(exc, tuple(expected)):
            raise
        status = next(code for cls, code in expected.items() if isinstance(exc, cls))
        if args.debug:  # the traceback too, and the same exit status
            import traceback

            traceback.print_exc()
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
