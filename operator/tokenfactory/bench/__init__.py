"""The autoscaling benchmark: every policy drives the same fast-forwarded fleet simulator for the
two-pool DeepSeek-R1 example and is scored on what the simulator says happened (see docs/benchmarks.md).

Tooling, not part of the operator: no operator module imports this package. Run it with
``python -m tokenfactory.bench`` or the ``tokenfactory-bench`` console script (``bench/autoscale.py``
is a thin entry for a checkout).

Layout: :mod:`.scenario` (the example factory as the operator resolves it, and the one spec + metrics ->
planner inputs mapping), :mod:`.run` (one simulated run and its scorekeeping), :mod:`.policies` (one
file per policy), :mod:`.driver` (runs policies over a trace), :mod:`.scoring` (best-variant pick and
targets), :mod:`.traces` (the standard traces), :mod:`.report` (text table and plots), :mod:`.cli`.
"""
