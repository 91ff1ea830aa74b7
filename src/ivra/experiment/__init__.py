"""``ivra.experiment``: the paired baseline-vs-IVRA experiment of the shipped tiny policy on the tabletop.

It sits above both the benchmark (:mod:`ivra.tabletop`, which knows nothing of policies) and the policy
(:mod:`ivra.minivla`), and runs through the generic executor (:mod:`ivra.eval.executor`):

* :mod:`ivra.experiment.ab` -- work units, the executor job, paired summaries per split and per task family.
* :mod:`ivra.experiment.cli` -- the verbs ``ivra demo`` (test-split A/B), ``ivra sweep`` (grid on the validation
  split) and ``ivra viz`` (affinity overlays of one observation).
"""
