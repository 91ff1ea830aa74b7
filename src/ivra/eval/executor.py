"""Run many independent work units, journaled and resumable, in-process, in local processes or on Ray.

The whole API is :func:`execute`::

    records = execute(job, units, "runs/x/journal.jsonl", executor="local", workers=2)

* ``units``: a list of JSON-able dicts, each with a unique string ``"key"``; the unit alone must decide
  what is computed (seed, scene, arm ...), so any worker can run it and a rerun reproduces it.
* ``job``: a picklable object with ``setup()`` -- called lazily, once per worker process, before the
  first unit it runs there (build the simulator / load the model there, not in ``__init__``) -- and
  ``run(unit) -> dict`` returning the unit's JSON-able result. A ``"_meta"`` entry of that dict (timings
  and other run-to-run noise) is moved to the record's ``meta["job"]``.

Every attempt is appended to the journal (:mod:`ivra.eval.journal`) the moment it ends::

    {"key": k, "unit": {...}, "status": "ok"|"error", "attempt": 1, "final": true|false,
     "result": {...}|null, "error": "Type: message", "traceback": "...",       # the last two on errors
     "meta": {"elapsed_s": 1.2, "worker": "host:pid", "executor": "local", "finished_at": "..."}}

An exception (or a worker process that dies) is journaled as ``status="error"`` with its traceback and
the unit is retried up to ``retries`` more times; only the last attempt is ``final``. A final error is
*not* a task failure: reports count it separately. A rerun with the same journal skips every unit that
has a final record, so a killed run resumes without losing or duplicating units.

An optional ``teardown()`` of the job is called once in every process where ``setup()`` ran, before that
process ends (close simulators and renderers there, so nothing is left for the interpreter's shutdown).

``lockstep=K`` hands a worker up to K units at a time (fewer when fewer are left than the workers could share).
A job with ``run_lockstep(units) -> [result dict | exception, ...]`` runs them together (the LIBERO job steps K
episodes with one batched policy call per step); any other job runs them one after another. Every unit is still
its own journal record, written when the batch ends: a unit whose entry is an exception is an error record (and
is retried, in a later batch, as above) while the others' results are kept; ``meta["lockstep"]`` names the batch
(``{"batch": id, "size": n}``) and ``meta["elapsed_s"]`` is the batch's time.

``inline``, ``local`` and ``ray`` produce the same records up to order and ``meta``. :func:`error_summary`
and :func:`format_errors` turn the final records into the per-arm error report every CLI prints.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import socket
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ivra.eval.journal import Journal

EXECUTORS = ("inline", "local", "ray")


@runtime_checkable
class Job(Protocol):
    def setup(self) -> None: ...

    def run(self, unit: dict) -> dict: ...


# --------------------------------------------------------------------------------------------------
# what runs inside a worker
_SETUP_DONE: weakref.WeakSet = weakref.WeakSet()
_SETUP_DONE_STRONG: list = []  # for jobs that cannot be weak-referenced
_WORKER_JOB: Any = None  # the job installed in a local worker process


def _ensure_setup(job: Any) -> None:
    try:
        if job in _SETUP_DONE:
            return
    except TypeError:
        if any(j is job for j in _SETUP_DONE_STRONG):
            return
    setup = getattr(job, "setup", None)
    if setup is not None:
        setup()
    try:
        _SETUP_DONE.add(job)
    except TypeError:
        _SETUP_DONE_STRONG.append(job)


def _teardown(job: Any) -> None:
    """Call ``job.teardown()`` once if ``setup()`` ran for it in this process."""
    try:
        was_setup = job in _SETUP_DONE
        if was_setup:
            _SETUP_DONE.discard(job)
    except TypeError:
        was_setup = any(j is job for j in _SETUP_DONE_STRONG)
        _SETUP_DONE_STRONG[:] = [j for j in _SETUP_DONE_STRONG if j is not job]
    teardown = getattr(job, "teardown", None)
    if was_setup and teardown is not None:
        teardown()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _error_fields(exc: BaseException, tb: str | None = None) -> dict:
    return {
        "status": "error",
        "result": None,
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": tb if tb is not None else "".join(traceback.format_exception(exc)),
    }


def _make_record(
    unit: dict, attempt: int, executor: str, outcome: Any, elapsed: float, tb: str | None = None
) -> dict:
    """The journal record of one attempt from its outcome: the job's result dict, or the exception it raised."""
    job_meta = None
    if isinstance(outcome, BaseException):
        rec: dict[str, Any] = _error_fields(outcome, tb)
    elif outcome is not None and not isinstance(outcome, dict):
        rec = _error_fields(TypeError(f"job.run must return a dict, got {type(outcome).__name__}"))
    else:
        job_meta = outcome.pop("_meta", None) if isinstance(outcome, dict) else None
        rec = {"status": "ok", "result": outcome}
    rec.update(
        key=unit["key"],
        unit=unit,
        attempt=attempt,
        meta={
            "elapsed_s": round(elapsed, 4),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "executor": executor,
            "finished_at": _now(),
        },
    )
    if job_meta is not None:
        rec["meta"]["job"] = job_meta
    return rec


def run_unit(job: Any, unit: dict, attempt: int, executor: str) -> dict:
    """Run one attempt of one unit and return its journal record (``final`` is set by the driver)."""
    t0 = time.perf_counter()
    tb = None
    try:
        _ensure_setup(job)
        outcome: Any = job.run(unit)
    except Exception as exc:  # noqa: BLE001 -- every failure of a unit is data, not a crash
        outcome, tb = exc, traceback.format_exc()
    return _make_record(unit, attempt, executor, outcome, time.perf_counter() - t0, tb)


def run_units(job: Any, units: Sequence[dict], attempts: Sequence[int], executor: str) -> list[dict]:
    """Run one attempt of each unit, together when the job has ``run_lockstep``; one record per unit."""
    if not hasattr(job, "run_lockstep"):
        return [run_unit(job, u, a, executor) for u, a in zip(units, attempts)]
    t0 = time.perf_counter()
    try:
        _ensure_setup(job)
        outcomes = list(job.run_lockstep(list(units)))
        if len(outcomes) != len(units):
            raise TypeError(f"job.run_lockstep returned {len(outcomes)} outcomes for {len(units)} units")
    except Exception as exc:  # noqa: BLE001 -- the whole batch failed: each unit's error
        outcomes = [exc] * len(units)
    elapsed = time.perf_counter() - t0
    batch = {"batch": uuid.uuid4().hex[:12], "size": len(units)}
    records = []
    for unit, attempt, outcome in zip(units, attempts, outcomes):
        rec = _make_record(unit, attempt, executor, outcome, elapsed)
        rec["meta"]["lockstep"] = dict(batch)
        records.append(rec)
    return records


def _crash_record(unit: dict, attempt: int, executor: str, why: str) -> dict:
    return {
        "key": unit["key"],
        "unit": unit,
        "attempt": attempt,
        "status": "error",
        "result": None,
        "error": f"WorkerDied: {why}",
        "traceback": why,
        "meta": {"elapsed_s": None, "worker": None, "executor": executor, "finished_at": _now()},
    }


def _local_init(job: Any) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job
    # run in multiprocessing's own exit hook, before the interpreter's atexit handlers (robosuite registers
    # eglTerminate there: a simulator closed after it prints EGL tracebacks)
    mp_util.Finalize(None, _teardown, args=(job,), exitpriority=10)


def _local_run(units: list[dict], attempts: list[int]) -> list[dict]:
    return run_units(_WORKER_JOB, units, attempts, "local")


class _RayWorker:
    """Body of the Ray actor (wrapped with ``ray.remote`` at run time so ray stays optional)."""

    def __init__(self, job: Any):
        self.job = job

    def run(self, units: list[dict], attempts: list[int]) -> list[dict]:
        return run_units(self.job, units, attempts, "ray")

    def teardown(self) -> None:
        _teardown(self.job)


# --------------------------------------------------------------------------------------------------
# the driver
class _Driver:
    def __init__(self, journal: Journal, retries: int, bar: Any, executor: str):
        self.journal = journal
        self.writer = journal.open()
        self.retries = retries
        self.bar = bar
        self.executor = executor
        self.tries_this_run: dict[str, int] = {}
        self.final: dict[str, dict] = {}
        self.n_err = 0

    def record(self, rec: dict) -> bool:
        """Journal an attempt; return True if the unit should be retried."""
        key = rec["key"]
        self.tries_this_run[key] = self.tries_this_run.get(key, 0) + 1
        retry = rec["status"] == "error" and self.tries_this_run[key] <= self.retries
        rec["final"] = not retry
        self.writer.append(rec)
        if rec["final"]:
            self.final[key] = rec
            self.n_err += rec["status"] == "error"
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(errors=self.n_err, refresh=False)
        return retry

    def close(self) -> None:
        self.writer.close()


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="unit", dynamic_ncols=True, smoothing=0.1)


def execute(
    job: Any,
    units: Sequence[dict],
    journal_path: str | os.PathLike,
    *,
    executor: str = "inline",
    workers: int = 1,
    retries: int = 1,
    desc: str = "units",
    progress: bool = True,
    rerun_errors: bool = False,
    ray_address: str | None = None,
    ray_resources: dict | None = None,
    lockstep: int = 1,
) -> list[dict]:
    """Run every unit not yet final in the journal; return the final records of *all* units, in order.

    ``executor``: ``inline`` (this process; the job's ``setup()`` runs once here), ``local`` (``workers``
    processes started with the *spawn* method), ``ray`` (``workers`` Ray actors; ``ray.init()`` starts a
    local cluster unless ``ray_address`` is given; ``ray_resources`` are the actor options, default
    ``{"num_cpus": 1}``, e.g. ``{"num_gpus": 0.5}`` to share a GPU). ``retries``: extra attempts after
    an error. ``rerun_errors``: also rerun units whose final record is an error. ``lockstep``: units handed to a
    worker at a time (see the module docstring).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    keys = [u.get("key") for u in units]
    if any(not isinstance(k, str) or not k for k in keys):
        raise ValueError("every unit needs a non-empty string 'key'")
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"unit keys must be unique; duplicated: {dup}")
    workers = max(1, int(workers))
    if int(lockstep) < 1:
        raise ValueError(f"lockstep must be >= 1 (units per worker at a time), got {lockstep}")
    lockstep = int(lockstep)

    journal = Journal(journal_path)
    done = journal.final_records()
    if rerun_errors:
        done = {k: r for k, r in done.items() if r.get("status") == "ok"}
    prior = journal.attempts()
    pending = [u for u in units if u["key"] not in done]
    n_skip = len(units) - len(pending)

    bar = _progress(len(units), n_skip, desc, progress)
    driver = _Driver(journal, retries, bar, executor)
    try:
        if pending:
            attempt0 = {u["key"]: prior.get(u["key"], 0) for u in pending}
            if executor == "inline":
                try:
                    _run_inline(job, pending, attempt0, driver, lockstep)
                finally:
                    _teardown(job)
            elif executor == "local":
                _run_local(job, pending, attempt0, driver, workers, lockstep)
            else:
                _run_ray(job, pending, attempt0, driver, workers, ray_address, ray_resources, lockstep)
    finally:
        driver.close()
        if bar is not None:
            bar.close()

    final = {**done, **driver.final}
    return [final[k] for k in keys if k in final]


def _arm_of(rec: dict) -> str:
    unit = rec.get("unit") or {}
    return str(unit.get("arm", (rec.get("result") or {}).get("arm", "-")))


def error_summary(records: Sequence[dict]) -> list[dict]:
    """Per arm (``unit["arm"]``, in first-seen order) with at least one final error:
    ``{"arm", "units", "errors", "first_error", "first_key"}``; empty when every unit succeeded."""
    per: dict[str, dict] = {}
    for rec in records:
        row = per.setdefault(_arm_of(rec), {"units": 0, "errors": 0, "first_error": None, "first_key": None})
        row["units"] += 1
        if rec.get("status") != "ok":
            row["errors"] += 1
            if row["first_error"] is None:
                row["first_error"] = rec.get("error") or "unknown error"
                row["first_key"] = rec.get("key")
    return [{"arm": arm, **row} for arm, row in per.items() if row["errors"]]


def format_errors(summary: Sequence[dict], journal: str | os.PathLike | None = None) -> str:
    """The lines a CLI prints (to stderr) when units ended in an error; '' when none did."""
    if not summary:
        return ""
    n = sum(row["errors"] for row in summary)
    lines = [f"error: {n} work unit(s) ended in an error and are not counted:"]
    for row in summary:
        first = str(row["first_error"]).strip().splitlines()[0] if row["first_error"] else "?"
        lines.append(
            f"  arm {row['arm']}: {row['errors']} of {row['units']} unit(s) failed; first ({row['first_key']}): {first}"
        )
    where = f" (tracebacks in {journal})" if journal else ""
    lines.append(f"  fix the cause, then rerun the same command with --rerun-errors to run them again{where}")
    return "\n".join(lines)


def _next_attempt(driver: _Driver, attempt0: dict[str, int], key: str) -> int:
    return attempt0[key] + driver.tries_this_run.get(key, 0) + 1


def _take(queue: deque, lockstep: int, free_workers: int) -> list[dict]:
    """The next batch for a worker: up to ``lockstep`` units, no more than its share of what is left."""
    size = min(lockstep, max(1, -(-len(queue) // max(1, free_workers))))
    return [queue.popleft() for _ in range(min(size, len(queue)))]


def _attempts(driver: _Driver, attempt0: dict[str, int], batch: list[dict]) -> list[int]:
    return [_next_attempt(driver, attempt0, u["key"]) for u in batch]


def _record_all(driver: _Driver, queue: deque, batch: list[dict], records: list[dict]) -> None:
    """Journal each unit's record; the units to retry go back to the queue."""
    for unit, rec in zip(batch, records):
        if driver.record(rec):
            queue.append(unit)


def _run_inline(
    job: Any, pending: list[dict], attempt0: dict[str, int], driver: _Driver, lockstep: int = 1
) -> None:
    queue = deque(pending)
    while queue:
        batch = _take(queue, lockstep, 1)
        _record_all(driver, queue, batch, run_units(job, batch, _attempts(driver, attempt0, batch), "inline"))


def _run_local(
    job: Any, pending: list[dict], attempt0: dict[str, int], driver: _Driver, workers: int, lockstep: int = 1
) -> None:
    queue = deque(pending)
    ctx = mp.get_context("spawn")
    while queue:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_local_init, initargs=(job,)
        )
        inflight: dict[Any, tuple[list[dict], list[int]]] = {}
        broken = False
        try:
            while queue or inflight:
                while queue and len(inflight) < workers and not broken:
                    batch = _take(queue, lockstep, workers - len(inflight))
                    attempts = _attempts(driver, attempt0, batch)
                    try:
                        inflight[pool.submit(_local_run, batch, attempts)] = (batch, attempts)
                    except BrokenProcessPool:
                        queue.extendleft(reversed(batch))
                        broken = True
                if not inflight:
                    break
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    batch, attempts = inflight.pop(fut)
                    try:
                        recs = fut.result()
                    except BrokenProcessPool as exc:
                        broken = True
                        recs = [_crash_record(u, a, "local", f"worker process died ({exc})") for u, a in zip(batch, attempts)]  # fmt: skip
                    except Exception as exc:  # noqa: BLE001 -- e.g. an unpicklable result
                        recs = []
                        for u, a in zip(batch, attempts):
                            rec = _crash_record(u, a, "local", f"{type(exc).__name__}: {exc}")
                            rec["error"] = f"{type(exc).__name__}: {exc}"
                            rec["traceback"] = "".join(traceback.format_exception(exc))
                            recs.append(rec)
                    _record_all(driver, queue, batch, recs)
                if broken and not inflight:
                    break  # start a fresh pool for what is left
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_pythonpath() -> str:
    """Make the worker processes of a local Ray cluster able to import ``ivra`` even from a checkout."""
    import ivra

    src = str(Path(ivra.__file__).resolve().parents[1])
    parts = [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    return os.pathsep.join(parts)


def _run_ray(
    job: Any,
    pending: list[dict],
    attempt0: dict[str, int],
    driver: _Driver,
    workers: int,
    address: str | None,
    resources: dict | None,
    lockstep: int = 1,
) -> None:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            "executor='ray' needs ray: bash scripts/setup.sh dev (pins ray[serve]==2.60.0; or IVRA_WITH_RAY=1 bash scripts/setup_libero.sh)"
        ) from exc
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": True,
        }
        if address:
            kwargs["address"] = address
        else:
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": _ray_pythonpath()}}
        ray.init(**kwargs)
    actor_cls = ray.remote(**(resources or {"num_cpus": 1}))(_RayWorker)
    job_ref = ray.put(job)

    idle = deque(actor_cls.remote(job_ref) for _ in range(workers))
    queue = deque(pending)
    inflight: dict[Any, tuple[Any, list[dict], list[int]]] = {}
    try:
        while queue or inflight:
            while queue and idle:
                actor = idle.popleft()
                batch = _take(queue, lockstep, len(idle) + 1)
                attempts = _attempts(driver, attempt0, batch)
                inflight[actor.run.remote(batch, attempts)] = (actor, batch, attempts)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, batch, attempts = inflight.pop(ref)
                try:
                    recs = ray.get(ref)
                    idle.append(actor)
                except (RayActorError, WorkerCrashedError) as exc:
                    why = f"ray actor died ({type(exc).__name__}: {exc})"
                    recs = [_crash_record(u, a, "ray", why) for u, a in zip(batch, attempts)]
                    ray.kill(actor, no_restart=True)
                    idle.append(actor_cls.remote(job_ref))
                except RayTaskError as exc:  # an error outside run_units' own try (e.g. pickling)
                    recs = []
                    for u, a in zip(batch, attempts):
                        rec = _crash_record(u, a, "ray", str(exc))
                        rec["error"] = f"RayTaskError: {str(exc).splitlines()[0] if str(exc) else ''}"
                        recs.append(rec)
                    idle.append(actor)
                _record_all(driver, queue, batch, recs)
    finally:
        for ref in list(inflight):
            ray.cancel(ref, force=True)
        try:  # let idle actors close their simulators before they are killed
            ray.get([actor.teardown.remote() for actor in idle], timeout=120)
        except Exception:  # noqa: BLE001 -- best effort; the actors are killed either way
            pass
        for actor in list(idle) + [a for a, _, _ in inflight.values()]:
            ray.kill(actor, no_restart=True)
