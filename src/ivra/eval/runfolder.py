"""One configuration per run folder: the check every verb that writes a run folder uses.

``ivra demo``, ``ivra sweep``, ``ivra eval libero``, ``ivra serve --ab blind`` (its A/B folder) and ``ivra trials``
(the stop rule it checks in that folder) record, when they first write a folder, the configuration its results
depend on; a later command into the same folder with another configuration is refused before anything runs or is
written, in one line naming each option that differs (``--ivra: layer 0 -> 1``) and what to do. Options that only
decide *how* a run computes (executor, workers, ...) are not part of a configuration: a resume may change them.

The verbs differ only in where the configuration is stored (``run.json`` for demo and sweep, the LIBERO manifest,
the blind A/B's ``config.json``, ``trials.json``) and in how they name a difference; :func:`refuse_changed` is the
check and :func:`claim` the whole protocol for a folder that stores nothing else.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ivra.cliargs import UsageError

#: what a refused command can do instead (the default advice)
TODO = "to resume that run, rerun with its original options; for the new configuration, pass another --out"


def normalise(value):
    """``value`` as JSON stores it (tuples -> lists, paths -> strings), so a stored and a new one compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint(config) -> str:
    """A short hash of a configuration (any JSON-able value)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def show(value) -> str:
    if value is None:
        return "default"
    if isinstance(value, list) and len(value) > 6:
        return "[" + ", ".join(map(str, value[:3])) + f", ..., {value[-1]}] ({len(value)} values)"
    return json.dumps(value) if isinstance(value, (dict, list, str)) else str(value)


def dict_changes(what: str, old: dict, new: dict) -> list[str]:
    """``"what: key old -> new"`` for each key of two dicts that differs (``absent`` for a missing key)."""
    out = []
    for k in sorted(set(old) | set(new), key=lambda k: (k not in old, k not in new, k)):
        a, b = old.get(k, "absent"), new.get(k, "absent")
        if a != b:
            out.append(f"{what}: {k} {show(a) if k in old else a} -> {show(b) if k in new else b}")
    return out


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def changes(old: dict, new: dict, options: dict[str, str] | None = None) -> list[str]:
    """Each difference between two configurations, ``"--option: old -> new"`` (a dict value: one line per key that
    differs); ``options`` names a key's option where it is not ``--key-with-dashes``."""
    options = options or {}
    out: list[str] = []
    for key in dict.fromkeys([*new, *old]):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        name = options.get(key, option_name(key))
        if isinstance(a, dict) and isinstance(b, dict):
            out += dict_changes(name, a, b)
        else:
            out.append(f"{name}: {show(a)} -> {show(b)}")
    return out


def refusal(out, diffs: list[str], old_fingerprint=None, new_fingerprint=None, todo: str = TODO) -> str:
    """The one-line refusal: what differs (or, when that is not known, the two fingerprints) and what to do."""
    if not diffs:
        return (
            f"{out} holds a run with a different configuration (fingerprint {old_fingerprint} != "
            f"{new_fingerprint}); {todo}"
        )
    return f"{out} holds a run with a different configuration: {'; '.join(diffs)}; {todo}"


def refuse_changed(
    out,
    previous: dict | None,
    current: dict,
    *,
    fingerprints: tuple[str | None, str] | None = None,
    describe: Callable[[dict, dict], list[str]] = changes,
    todo: str = TODO,
) -> None:
    """Raise :class:`UsageError` when ``out`` holds a run (``previous``: its stored configuration, None for a new
    folder) whose configuration is not ``current``. Same or not is decided by ``fingerprints`` (stored, current)
    when given, else by the two configurations; ``describe(previous, current)`` names the differences."""
    if previous is None:
        return
    if fingerprints is not None:
        same = fingerprints[0] == fingerprints[1]
    else:
        same = normalise(previous) == normalise(current)
    if same:
        return
    diffs = describe(normalise(previous), normalise(current)) if previous else []
    old_fp, new_fp = fingerprints if fingerprints else (fingerprint(previous), fingerprint(current))
    raise UsageError(refusal(out, diffs, old_fp, new_fp, todo))


def claim(
    out,
    verb: str,
    config: dict,
    *,
    file: str = "run.json",
    options: dict[str, str] | None = None,
    todo: str = TODO,
) -> Path:
    """Make ``out`` (a folder) the run folder of ``config``: record it in ``out/file`` on first use; refuse a
    different one (:func:`refuse_changed`). Returns the record's path."""
    out = Path(out)
    path = out / file
    config = normalise(config)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            previous = stored["config"]
        except (ValueError, KeyError, TypeError):
            raise UsageError(
                f"{path} is not a run record (expected JSON with a 'config'); move it away or pass another --out"
            ) from None
        refuse_changed(out, previous, config, describe=lambda a, b: changes(a, b, options), todo=todo)
        return path
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "verb": verb,
        "config": config,
        "fingerprint": fingerprint(config),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
