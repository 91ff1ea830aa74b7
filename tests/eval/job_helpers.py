"""Jobs for the executor tests, importable by spawned workers as ``job_helpers`` (this folder is on sys.path)."""

from __future__ import annotations

from ivra.eval.toy import ToyJob


class LockstepToy(ToyJob):
    """:class:`ivra.eval.toy.ToyJob` whose units run as lockstep batches (``run_lockstep``): a unit that raises is
    that unit's outcome, the others' results are kept; a batch holding a ``break_batch`` key raises as a whole.
    ``batch_sizes`` (in this process) lists the batches it was handed."""

    def __init__(self, *args, break_batch: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.break_batch = tuple(break_batch)
        self.batch_sizes: list[int] = []

    def run_lockstep(self, units: list[dict]) -> list:
        self.batch_sizes.append(len(units))
        if any(u["key"] in self.break_batch for u in units):
            raise RuntimeError("the whole batch broke")
        outs: list = []
        for unit in units:
            try:
                outs.append(self.run(unit))
            except Exception as exc:  # noqa: BLE001 -- the unit's own outcome
                outs.append(exc)
        return outs
