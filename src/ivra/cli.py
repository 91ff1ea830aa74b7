"""The ``ivra`` command line: one verb per user task.

Each verb lives in the module that owns the capability and contributes ``register(subparsers)``;
this file only wires them together so that ``ivra --help`` stays fast (heavy imports happen in the
verb's handler, not here).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> module providing ``register(subparsers)``
VERBS = {
    "demo": "ivra.tabletop.cli",
    "sweep": "ivra.tabletop.cli",
    "viz": "ivra.tabletop.cli",
    "train": "ivra.minivla.cli",
    "eval": "ivra.eval.cli",
    "doctor": "ivra.eval.cli",
    "bench": "ivra.bench",
    "serve": "ivra.serve.cli",
    "trials": "ivra.serve.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivra", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    seen: set[str] = set()
    for module_name in dict.fromkeys(VERBS.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a capability not built into this install
            if exc.name and exc.name.startswith("ivra"):
                continue
            raise
        module.register(sub)
        seen.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ivra import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
