"""KEDA on vllm:num_requests_waiting (an HPA with an AverageValue external metric)."""

from __future__ import annotations

import math

from tokenfactory.bench.policies.hpa import K8sAutoscaler
from tokenfactory.bench.run import PoolView, Run


class KedaQueue(K8sAutoscaler):
    """KEDA (HPA with an AverageValue external metric) on vllm:num_requests_waiting: one
    ScaledObject per pool, ``target`` waiting requests per replica: desired = ceil(waiting / target),
    at least minReplicas (KEDA's activation never goes below minReplicaCount = 1)."""

    name = "keda_queue"

    def __init__(self, pools: tuple[str, ...], stabilization: float = 300.0, target: float = 10.0,
                 name: str | None = None):
        super().__init__(pools, stabilization)
        self.target = target
        if name:
            self.name = name

    def recommend(self, run: Run, pool: str, v: PoolView) -> int | None:
        if v.ready == 0:
            return None
        ratio = v.waiting / (self.target * v.ready)
        if abs(ratio - 1) <= self.tolerance:
            return v.desired
        return math.ceil(v.waiting / self.target)

