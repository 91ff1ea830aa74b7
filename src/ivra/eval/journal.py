"""Append-only JSONL journal of finished work units.

One line per *attempt* of a unit, written and ``fsync``-ed as soon as the attempt ends, so a run that is
killed at any moment loses at most the units that were in flight. Line format (see
:func:`ivra.eval.executor.execute`)::

    {"key": "...", "unit": {...}, "status": "ok" | "error", "attempt": 1, "final": true,
     "result": {...} | null, "error": "ValueError: ..." (errors only), "traceback": "..." (errors only),
     "meta": {"elapsed_s": ..., "worker": "host:pid", "executor": "local", "finished_at": "..."}}

A unit is *done* once a ``final`` line exists for its key (``status`` ok, or error after the retries); a unit
rerun after a final error has several, and the latest is its result.
Everything that varies between otherwise identical runs (timing, worker id, date) is under ``meta``.

A kill can leave a truncated last line; readers skip it and the writer cuts it off before appending,
so the file stays valid JSONL.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

VOLATILE_FIELDS = ("meta",)


class JournalError(ValueError):
    """A journal line that is not a record (not the torn tail of a killed run): names the file, the line and
    how to recover."""

    def __init__(self, path: Path, line: int, why: str):
        self.path, self.line = path, line
        super().__init__(
            f"{path}, line {line}: corrupt journal line ({why}). To recover, delete that line "
            f"(sed -i '{line}d' {path}) and rerun: the unit it recorded runs again; or move the file away "
            "to start the run over"
        )


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths sneak into records easily; store them as plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(record: dict) -> str:
    return json.dumps(record, sort_keys=True, default=_json_default, allow_nan=True)


class Journal:
    """A JSONL file of attempt records; safe to reopen after a crash."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- reading ---------------------------------------------------------------------------------
    def iter_records(self) -> Iterator[dict]:
        """All well-formed lines, in file order (a torn last line is skipped with a warning)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            lines = fh.read().split(b"\n")
        for i, raw in enumerate(lines):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if i == len(lines) - 1:  # the torn tail of a killed writer
                    warnings.warn(f"{self.path}: skipping a truncated last line", stacklevel=2)
                    continue
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise JournalError(self.path, i + 1, f"not JSON: {why}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
                raise JournalError(self.path, i + 1, "not a record with a 'key'")
            yield rec

    def records(self) -> list[dict]:
        return list(self.iter_records())

    def final_records(self) -> dict[str, dict]:
        """key -> its latest final record: a unit rerun after a final error (``--rerun-errors``) is what its last
        run gave."""
        out: dict[str, dict] = {}
        for rec in self.iter_records():
            if rec.get("final"):
                out.pop(rec["key"], None)  # keep the order of the latest
                out[rec["key"]] = rec
        return out

    def done_keys(self) -> set[str]:
        return set(self.final_records())

    def attempts(self) -> dict[str, int]:
        """key -> number of attempts already journaled (final or not)."""
        out: dict[str, int] = {}
        for rec in self.iter_records():
            out[rec["key"]] = max(out.get(rec["key"], 0), int(rec.get("attempt", 1)))
        return out

    # -- writing ---------------------------------------------------------------------------------
    def _repair_tail(self) -> None:
        """Cut a torn last line (no trailing newline) so the next append starts on a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # find the last newline and truncate after it
            block = 1 << 16
            pos = size
            cut = 0
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    cut = start + idx + 1
                    break
                pos = start
            warnings.warn(f"{self.path}: removing a truncated last line ({size - cut} bytes)", stacklevel=3)
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    def open(self) -> JournalWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        return JournalWriter(self.path)

    def append(self, record: dict) -> None:
        with self.open() as w:
            w.append(record)


class JournalWriter:
    """Keeps the file open; every :meth:`append` is flushed and fsync-ed before it returns."""

    def __init__(self, path: Path):
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        if "key" not in record:
            raise ValueError("journal records need a 'key'")
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def extend(self, records: Iterable[dict]) -> None:
        for r in records:
            self.append(r)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def strip_volatile(record: dict) -> dict:
    """The record without the fields that legitimately differ between runs (for comparisons)."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}
