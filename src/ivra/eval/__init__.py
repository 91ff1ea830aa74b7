"""Closed-loop evaluation: a resumable job executor, statistics, reports and the LIBERO A/B harness.

Generic parts (usable by any long job: tabletop demos, sweeps, LIBERO):

* :mod:`ivra.eval.journal` -- append-only JSONL journal of finished work units (resume-safe).
* :mod:`ivra.eval.executor` -- ``execute(job, units, journal_path, executor=inline|local|ray)``.
* :mod:`ivra.eval.stats` -- Wilson intervals, paired A/B difference (Newcombe CI, exact McNemar).
* :mod:`ivra.eval.report` -- Markdown/HTML report and plots from journal records.
* :mod:`ivra.eval.video` -- mp4 (GIF fallback) writing, side-by-side A/B videos.

LIBERO specifics live in :mod:`ivra.eval.libero`; nothing here imports the simulator at import time.
"""

from ivra.eval.executor import execute
from ivra.eval.journal import Journal

__all__ = ["Journal", "execute"]
