"""Kubernetes HPA on average utilisation, and the HPA semantics KEDA shares (:class:`K8sAutoscaler`)."""

from __future__ import annotations

import math
from collections import deque

from tokenfactory.bench.policies.base import Policy, warm_mix
from tokenfactory.bench.run import PoolView, Run


class K8sAutoscaler(Policy):
    """HPA semantics shared by hpa and keda: tolerance on the usage ratio, scale-up at most
    max(2 x current, current + 4) per interval (HPA's default policies), scale-down to the highest
    recommendation of the last ``stabilization`` seconds, clamped to min/max."""

    tolerance = 0.1

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0):
        self.pools = pools
        self.stabilization = stabilization
        self.history: dict[str, deque] = {p: deque() for p in pools}

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        raise NotImplementedError

    def initial(self, run: Run) -> dict[str, int]:
        s = run.setup
        mix = warm_mix(s, run.trace(0.0).output_tokens_per_second)
        mins = s.minimums()
        if len(self.pools) == 1:  # one Deployment scaled; the rest at its floor
            scaled = self.pools[0]
            rest = {**mins, scaled: 0}
            need = run.trace(0.0).output_tokens_per_second * (1 + (s.headroom or 0.0)) - s.capacity(rest)
            p = s.by_name[scaled]
            mix = {**mins, scaled: min(p.max_replicas, max(p.min_replicas, math.ceil(max(0.0, need) / p.capacity)))}
        return mix

    def decide(self, run: Run) -> dict[str, int] | None:
        now = run.now
        out = run.replicas()
        for pool in self.pools:
            p = run.setup.by_name[pool]
            v = run.view(pool)
            cur = v.desired
            rec = self.recommend(run, pool, v)
            if rec is None:
                rec = cur
            rec = min(max(rec, p.min_replicas), p.max_replicas)
            rec = min(rec, max(2 * cur, cur + 4))
            h = self.history[pool]
            h.append((now, rec))
            while h and h[0][0] <= now - self.stabilization:
                h.popleft()
            if rec < cur:
                rec = min(cur, max(r for _, r in h))
            out[pool] = rec
        return out


class HPA(K8sAutoscaler):
    """Kubernetes HPA on average utilisation (delivered / capacity per ready pod, over the metrics
    window), ``target`` utilisation (default 70%): desired = ceil(pods x util / target). As in the HPA
    controller, not-yet-ready pods count as 0% when scaling up (so a scale-up is not repeated while
    pods start)."""

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0, name: str | None = None,
                 target: float = 0.70):
        super().__init__(pools, stabilization)
        self.name = name or "hpa_" + "_".join(pools)
        self.target = target

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        if v.ready == 0:
            return None
        total = sum(v.utilisations)
        ratio = total / v.ready / self.target
        if abs(ratio - 1) <= self.tolerance:
            return v.desired
        if ratio > 1 and v.starting:
            ratio2 = total / (v.ready + v.starting) / self.target
            if ratio2 <= 1 + self.tolerance:
                return v.desired
            return math.ceil(ratio2 * (v.ready + v.starting))
        return math.ceil(ratio * v.ready)

