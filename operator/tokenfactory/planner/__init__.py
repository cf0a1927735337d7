"""The planner: how many replicas each GPU pool should run, and why.

Pure: no I/O, no clocks (``now`` is always passed in), frozen dataclasses in and out. Every
decision carries structured reasons (:class:`Reason`: a code and its parameters) and their text,
rendered by :mod:`tokenfactory.planner.explain`, for ``kubectl describe`` and Events.

Public API
----------
``decide(state, inputs, now) -> (Plan, PlannerState)``
    The one call the operator (Auto applies ``plan.replicas``; Recommend only reports it) and the
    benchmark make every interval. ``state`` is ``None`` the first time; feed back the returned
    state next time. ``now`` is any monotone clock in seconds (a simulated clock works).
``plan_for_demand(pools, demand, ...) -> Plan``
    One-shot cheapest plan for a given demand, with no estimators and no stabilization.
``solve(pools, required, ...) -> Solution``
    The exact integer optimiser underneath.
``CapacityEstimator`` / ``DemandEstimator``
    The online estimators ``decide`` uses (usable on their own).

Modules: ``types`` (inputs, solutions, plans, reasons), ``bounds`` + ``solver`` (the exact
optimiser), ``capacity`` (learned capacity), ``demand`` (demand forecast), ``config`` (settings,
inputs and state of ``decide``), ``stabilise`` (hysteresis, stabilisation window, flap guard,
burst deferral, budget/power trimming), ``plans`` (plans and their structured reasons),
``explain`` (the one renderer of reasons as text), ``decide`` (the planning step).

Units: capacities and demand are in the same tokens/s as the GPU profile (the operator chooses
output or total tokens); prices in $/hour; power in kW per replica and MW for the cap.
"""

from __future__ import annotations

from tokenfactory.planner.capacity import CapacityConfig, CapacityEstimator, CapacitySample, CapacityState
from tokenfactory.planner.config import PlannerConfig, PlannerInputs, PlannerState
from tokenfactory.planner.decide import decide, plan_for_demand
from tokenfactory.planner.demand import DemandEstimator, DemandState
from tokenfactory.planner.explain import render
from tokenfactory.planner.solver import solve
from tokenfactory.planner.types import (
    Objectives,
    Observations,
    Plan,
    PoolObservation,
    PoolPlan,
    PoolProfile,
    Reason,
    Solution,
)

__all__ = [
    "PoolProfile",
    "Objectives",
    "PoolObservation",
    "Observations",
    "CapacityConfig",
    "CapacitySample",
    "CapacityState",
    "CapacityEstimator",
    "DemandState",
    "DemandEstimator",
    "PlannerConfig",
    "PlannerInputs",
    "PlannerState",
    "PoolPlan",
    "Plan",
    "Reason",
    "Solution",
    "render",
    "solve",
    "plan_for_demand",
    "decide",
]
