"""Runs the policies over the traces: every run is independent (its own fleet, same engine model and
routing), so they go to a process pool (``workers``), longest first; the per-replica SLO capacities the
oracle and the static-mix search need are measured first, once per pool and request-size template.

Per trace the report holds ``static_peak``, ``static_optimal_mix`` (searched on the simulator),
``hpa`` and ``keda_queue`` (the best of their tuning grids, the grid and the pick shown),
``tokenfactory`` (routing as deployed) and ``tokenfactory@MODE`` for every other routing mode the
simulator offers, and ``oracle``.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tokenfactory.bench import capacity
from tokenfactory.bench.policies import HPA, KedaQueue, Oracle, Policy, StaticPeak, TokenFactory
from tokenfactory.bench.policies import static_optimal_mix
from tokenfactory.bench.run import Run, routing_modes
from tokenfactory.bench.scenario import Setup
from tokenfactory.bench.scoring import pick_best
from tokenfactory.bench.traces import Case, build
from tokenfactory.sim.traces import RequestTrace, Trace

HPA_TARGETS = (0.5, 0.6, 0.7, 0.8, 0.9)  # average utilisation, for an HPA on every pool (hpa_both)
HPA_SINGLE_POOL_TARGETS = (0.7,)  # an HPA on one pool, the others at minReplicas (never the best so far)
KEDA_TARGETS = (2.0, 5.0, 10.0, 20.0)  # waiting requests per replica
SUMMARY = ("cost_dollars", "cost_per_mtok", "slo_attainment", "replica_changes", "tokens_dropped")


def run_policy(setup: Setup, trace: Trace, duration: float, policy: Policy,
               routing: str | None = None) -> tuple[dict, list[dict]]:
    run = Run(setup, trace, duration, routing=routing)
    run.apply(policy.initial(run), warm=True)
    while run.now < duration - 1e-9:
        if run.now > 0:
            target = policy.decide(run)
            if target is not None:
                run.apply(target)
        run.advance()
    res = run.result()
    if policy.note:
        res["note"] = policy.note
    if isinstance(policy, TokenFactory):
        res["planner_holds"] = policy.holds
    return res, run.timeline


# ============================================================================================
# Jobs: one simulated run (or one search / calibration), picklable
# ============================================================================================


@dataclass(frozen=True)
class Job:
    case: Case
    label: str  # the result's name, e.g. "hpa_both@70"
    group: str  # static_peak | static_optimal_mix | hpa | keda_queue | tokenfactory | oracle | calibrate
    routing: str
    params: tuple = ()
    caps: tuple = ()  # ((pool, SLO capacity), ...) for oracle and static_optimal_mix
    keep_timeline: bool = False
    weight: float = 1.0  # relative run time, for scheduling longest first


def _policy(setup: Setup, job: Job) -> Policy:
    st = setup.stabilization
    if job.group == "static_peak":
        return StaticPeak()
    if job.group == "hpa":
        pools, target = job.params
        return HPA(pools, st, name=job.label, target=target)
    if job.group == "keda_queue":
        pools, target = job.params
        return KedaQueue(pools, st, target=target, name=job.label)
    if job.group == "tokenfactory":
        return TokenFactory()
    if job.group == "oracle":
        return Oracle(dict(job.caps), job.routing)
    raise ValueError(f"no policy for job group {job.group!r}")


def execute(setup: Setup, job: Job) -> tuple[Job, Any, list[dict] | None]:
    """Run one job in this process: (job, result, timeline or None)."""
    trace = build(job.case)
    if job.group == "calibrate":
        (pool,) = job.params
        return job, capacity.slo_capacity(setup, pool, trace), None
    if job.group == "static_optimal_mix":
        def simulate(mix: dict[str, int]) -> tuple[dict, list[dict]]:
            pol = static_optimal_mix.StaticMix(mix, name=job.label)
            return run_policy(setup, trace, job.case.duration, pol, job.routing)

        res, tl = static_optimal_mix.search(setup, trace, job.case.duration, dict(job.caps), job.routing, simulate)
    else:
        res, tl = run_policy(setup, trace, job.case.duration, _policy(setup, job), job.routing)
    res["routing"] = job.routing
    return job, res, (tl if job.keep_timeline else None)


_SETUP: Setup | None = None


def _init_worker(setup: Setup) -> None:
    global _SETUP
    _SETUP = setup


def _execute_in_worker(job: Job) -> tuple[Job, Any, list[dict] | None]:
    assert _SETUP is not None
    return execute(_SETUP, job)


# ============================================================================================
# The benchmark: every case, every policy
# ============================================================================================


def template_key(case: Case) -> tuple:
    """Cases whose requests have the same sizes share one calibration (a trace file: its own)."""
    tr = build(case)
    if isinstance(tr, RequestTrace):
        return ("requests", case.spec)
    d = tr(0.0)
    return ("sizes", round(d.prompt_tokens, 3), round(d.output_tokens, 3))


def hpa_variants(setup: Setup) -> list[tuple[str, tuple[str, ...]]]:
    pools = tuple(p.name for p in setup.profiles)
    out: list[tuple[str, tuple[str, ...]]] = [(f"hpa_{p}", (p,)) for p in pools]
    if len(pools) > 1:
        out.append(("hpa_both" if len(pools) == 2 else "hpa_all", pools))
    return out


def first_jobs(setup: Setup, case: Case, routing: str, plot: bool) -> list[Job]:
    """The jobs that need no calibration."""
    pools = tuple(p.name for p in setup.profiles)
    jobs = [Job(case, "static_peak", "static_peak", routing)]
    for name, scaled in hpa_variants(setup):
        for t in (HPA_TARGETS if len(scaled) == len(pools) else HPA_SINGLE_POOL_TARGETS):
            jobs.append(Job(case, f"{name}@{100 * t:.0f}", "hpa", routing, (scaled, t), keep_timeline=plot))
    for t in KEDA_TARGETS:
        jobs.append(Job(case, f"keda_queue@{t:g}", "keda_queue", routing, (pools, t), keep_timeline=plot))
    jobs.append(Job(case, "tokenfactory", "tokenfactory", routing, keep_timeline=plot, weight=1.5))
    for mode in routing_modes():
        if mode != routing:
            jobs.append(Job(case, f"tokenfactory@{mode}", "tokenfactory", mode, weight=1.5))
    return jobs


def calibrated_jobs(case: Case, routing: str, caps: dict[str, float], plot: bool) -> list[Job]:
    c = tuple(sorted(caps.items()))
    return [Job(case, "static_optimal_mix", "static_optimal_mix", routing, caps=c, weight=3.0),
            Job(case, "oracle", "oracle", routing, caps=c, keep_timeline=plot)]


@dataclass
class Outcome:
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # case -> label -> result
    timelines: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    capacities: dict[str, dict[str, float]] = field(default_factory=dict)  # case -> pool -> tok/s


def run_all(setup: Setup, cases: list[Case], routing: str | None = None, workers: int | None = None,
            plot: bool = False, progress=None) -> Outcome:
    """Every policy on every case; ``workers`` processes (default: the CPUs; 1 = in this process)."""
    routing = routing or setup.routing
    workers = workers or os.cpu_count() or 1
    out = Outcome()
    keys = {case.name: template_key(case) for case in cases}
    calib_pending: dict[tuple, set[str]] = {}
    calib: dict[tuple, dict[str, float]] = {}
    jobs: list[Job] = []
    for case in cases:
        k = keys[case.name]
        if k not in calib_pending:
            calib_pending[k] = {p.name for p in setup.profiles}
            calib[k] = {}
            jobs += [Job(case, f"calibrate {p.name}", "calibrate", routing, (p.name,), weight=2.0)
                     for p in setup.profiles]
    for case in cases:
        jobs += first_jobs(setup, case, routing, plot)
    waiting_cases = list(cases)

    def record(job: Job, res: Any, tl: list[dict] | None) -> list[Job]:
        if progress:
            progress(job)
        if job.group == "calibrate":
            k = keys[job.case.name]
            calib[k][job.params[0]] = res
            calib_pending[k].discard(job.params[0])
            ready = [c for c in waiting_cases if keys[c.name] == k] if not calib_pending[k] else []
            for c in ready:
                waiting_cases.remove(c)
                out.capacities[c.name] = dict(calib[k])
            return [j for c in ready for j in calibrated_jobs(c, routing, calib[k], plot)]
        out.results.setdefault(job.case.name, {})[job.label] = res
        if tl is not None:
            out.timelines.setdefault(job.case.name, {})[job.label] = tl
        return []

    if workers <= 1:
        queue = list(jobs)
        while queue:
            queue += record(*execute(setup, queue.pop(0)))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(setup,)) as ex:
            running: set[Future] = set()

            def submit(js: list[Job]) -> None:
                for j in sorted(js, key=lambda j: -j.weight):
                    running.add(ex.submit(_execute_in_worker, j))

            # calibrations first (others wait on them), then the rest longest first
            submit(jobs)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    running.discard(f)
                    submit(record(*f.result()))
    for case in cases:
        assemble(setup, out, case.name)
    return out


def _summary(label: str, r: dict) -> dict:
    return {"variant": label, **{k: r[k] for k in SUMMARY}}


def assemble(setup: Setup, out: Outcome, case: str) -> None:
    """Replace each tuning grid by its best member (grid and pick shown), in report order."""
    res = out.results[case]
    tls = out.timelines.get(case, {})
    for group, prefix in (("hpa", "hpa_"), ("keda_queue", "keda_queue@")):
        grid = sorted(n for n in res if n.startswith(prefix) and "@" in n)
        if not grid:
            continue
        best = pick_best(res, grid)
        res[group] = {**res[best], "variant": best,
                      "grid": [_summary(n, res[n]) for n in grid],
                      "pick": "the cheapest setting with SLO attainment >= 99%, else the highest SLO"}
        if best in tls:
            tls[group] = tls[best]
        for n in grid:
            res.pop(n)
            tls.pop(n, None)
    order = ["static_peak", "static_optimal_mix", "hpa", "keda_queue", "tokenfactory"]
    order += sorted(n for n in res if n.startswith("tokenfactory@")) + ["oracle"]
    out.results[case] = {n: res[n] for n in order if n in res} | {n: r for n, r in res.items() if n not in order}


def run_trace(setup: Setup, trace: Trace, duration: float, workers: int = 1,
              routing: str | None = None) -> tuple[dict[str, dict], dict[str, list[dict]], dict[str, float]]:
    """Every policy on one trace object, in this process by default: (results, timelines, capacities)."""
    case = Case("trace", "-", duration, "-", trace=trace)
    o = run_all(setup, [case], routing=routing, workers=workers, plot=True)
    return o.results["trace"], o.timelines.get("trace", {}), o.capacities["trace"]
