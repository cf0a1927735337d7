"""The policies, one per file."""

from __future__ import annotations

from tokenfactory.bench.policies.base import Policy
from tokenfactory.bench.policies.hpa import HPA
from tokenfactory.bench.policies.keda import KedaQueue
from tokenfactory.bench.policies.oracle import Oracle
from tokenfactory.bench.policies.static import StaticPeak
from tokenfactory.bench.policies.static_optimal_mix import StaticMix
from tokenfactory.bench.policies.tokenfactory import TokenFactory

__all__ = ["HPA", "KedaQueue", "Oracle", "Policy", "StaticMix", "StaticPeak", "TokenFactory"]
