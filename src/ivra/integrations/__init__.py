"""Plug-ins that other evaluation tools load, and readers of other tools' result files.

* :mod:`ivra.integrations.inspect_robots` -- an ``inspect_robots.policies`` entry point (``--policy ivra``: any
  registered ivra policy, a fixed or blind IVRA arm) and an ``inspect_robots.embodiments`` + ``inspect_robots.tasks``
  pair for ivra's tabletop benchmark (``--embodiment ivra-tabletop --task ivra-tabletop``).
* :mod:`ivra.integrations.results` -- the per-episode outcomes of a run made by ivra, vla-eval or inspect-robots,
  keyed by episode identity, for ``ivra compare``.

Every module here imports no torch at import time: a tool imports its plug-ins when it starts (``inspect-robots
list`` imports every registered one), and only the policy it builds may need torch.
"""
