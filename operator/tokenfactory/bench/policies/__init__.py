"""The policies, one per file; :func:`make_policies` lists what one benchmark run compares."""

from __future__ import annotations

from typing import Callable

from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.policies.hpa import HPA
from tokenfactory.bench.policies.keda import KedaQueue
from tokenfactory.bench.policies.oracle import Oracle
from tokenfactory.bench.policies.static import StaticPeak
from tokenfactory.bench.policies.static_optimal_mix import StaticOptimalMix
from tokenfactory.bench.policies.tokenfactory import TokenFactory
from tokenfactory.bench.scenario import Setup

__all__ = ["HPA", "KedaQueue", "Oracle", "Policy", "StaticOptimalMix", "StaticPeak", "TokenFactory", "make_policies"]


def make_policies(setup: Setup) -> list[Callable[[], Policy]]:
    pools = tuple(p.name for p in setup.profiles)
    st = setup.stabilization
    out: list[Callable[[], Policy]] = [StaticPeak, StaticOptimalMix]
    for p in pools:
        out.append(lambda p=p: HPA((p,), st))
    out.append(lambda: HPA(pools, st, name="hpa_both"))
    out.append(lambda: KedaQueue(pools, st))
    out.append(TokenFactory)
    out.append(Oracle)
    return out

