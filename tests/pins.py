"""The installed versions of an environment against its pins (requirements/*.txt): the environments are made with
uv (scripts/uv.sh, noxfile.py), and these tests hold each to the versions pip used to give it.

A requirement pin (``name==1.2`` in a requirements file or a file it ``-r`` includes) must be installed at that
version; a constraint pin (a ``-c`` file: an environment's frozen versions) must match wherever the package is
installed. ``==`` accepts a local build label (``2.13.0`` is met by ``2.13.0+cpu``, as pip and uv read it);
``===`` does not.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(===|==)\s*([^\s;#]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(name: str, _seen: set | None = None) -> tuple[dict, dict]:
    """(requirement pins, constraint pins) of ``requirements/<name>``: {normalised name: (operator, version)}."""
    seen = _seen if _seen is not None else set()
    if name in seen:
        return {}, {}
    seen.add(name)
    required: dict = {}
    constrained: dict = {}
    for line in (REQUIREMENTS / name).read_text().splitlines():
        line = line.strip()
        if line.startswith(("-r ", "-c ")):
            req, con = read_pins(line.split()[1], seen)
            if line.startswith("-r "):
                required.update(req)
                constrained.update(con)
            else:
                constrained.update(req)
                constrained.update(con)
            continue
        m = _PIN.match(line)
        if m:
            required[_norm(m.group(1))] = (m.group(3), m.group(4))
    return required, constrained


def installed() -> dict[str, str]:
    return {_norm(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def matches(op: str, pin: str, version: str) -> bool:
    if op == "===":
        return version == pin
    return version == pin or version.split("+", 1)[0] == pin


def mismatches(*files: str) -> list[str]:
    """One line per pin the environment does not meet (empty: every pin met)."""
    have = installed()
    bad = []
    for name in files:
        required, constrained = read_pins(name)
        for pkg, (op, pin) in sorted(required.items()):
            if pkg not in have:
                bad.append(f"{name}: {pkg}{op}{pin} is not installed")
            elif not matches(op, pin, have[pkg]):
                bad.append(f"{name}: {pkg}{op}{pin}, installed {have[pkg]}")
        for pkg, (op, pin) in sorted(constrained.items()):
            if pkg in have and pkg not in required and not matches(op, pin, have[pkg]):
                bad.append(f"{name} (constraint): {pkg}{op}{pin}, installed {have[pkg]}")
    return bad


def pin_test(*files: str, libero: bool = True):
    """A test function for one environment: every pin of ``files`` (and of libero.txt where LIBERO is installed)
    is met."""

    def test_installed_versions_are_the_pinned_ones():
        import importlib.util

        names = [*files, *(["libero.txt"] if libero and importlib.util.find_spec("libero") else [])]
        assert mismatches(*names) == []

    return test_installed_versions_are_the_pinned_ones


if __name__ == "__main__":  # python tests/pins.py FILE...: the mismatches of this interpreter's environment
    import sys

    lines = mismatches(*sys.argv[1:])
    print("\n".join(lines) or "all pins met")
    sys.exit(1 if lines else 0)
