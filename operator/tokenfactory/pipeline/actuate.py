"""Stage 4, actuate: server-side apply the rendered children (``render``) at the planned replicas and
delete the Deployments of pools no longer in the spec; then the routing objects of ``spec.routing``
(``routing.py``: Service / HTTPRoute with capacity weights / InferencePool, and the clean-up of a mode
switch). A failed apply is reported (status, retried next pass), never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tokenfactory import api, render, routing
from tokenfactory.pipeline.model import Actuation, Event, FactoryRef, PoolObservation
from tokenfactory.ports import KubeClient

log = logging.getLogger("tokenfactory.pipeline")


def _spec_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return before.get("spec") != after.get("spec") or (before["metadata"].get("labels") != after["metadata"].get("labels"))


async def actuate(kube: KubeClient, ref: FactoryRef, spec: api.TokenFactorySpec, replicas: Mapping[str, int],
                  children: Mapping[str, PoolObservation], capacities: Mapping[str, float] | None = None) -> Actuation:
    """``capacities``: learned tokens/s per replica by pool (the HTTPRoute weights use them; else the profile)."""
    owner = render.Owner(name=ref.name, namespace=ref.namespace, uid=ref.uid)
    after = dict(children)
    errors: list[str] = []
    events: list[Event] = []
    for manifest in render.render_deployments(owner, spec, replicas):
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        try:
            live = await kube.apply(manifest)
        except Exception as err:  # noqa: BLE001 - reported in status, retried next pass
            errors.append(f"{kind} {child}: {err}")
            continue
        if kind != "Deployment":
            continue
        pool = manifest["metadata"]["labels"][render.LABEL_POOL]
        before = children[pool].deployment if pool in children else None
        if before is None:
            events.append(Event("Normal", "Created", f"Created Deployment {child} ({manifest['spec']['replicas']} replicas)"))
        elif before["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion") and _spec_changed(before, live):
            events.append(Event("Normal", "Updated", f"Updated Deployment {child}"))
        after[pool] = PoolObservation(pool, live, children[pool].pods if pool in children else ())
    wanted = {p.name for p in spec.pools}
    for pool, obs in sorted(children.items()):
        if pool not in wanted and obs.deployment is not None:
            dep = obs.deployment["metadata"]["name"]
            await kube.delete("Deployment", ref.namespace, dep)
            events.append(Event("Normal", "Deleted", f"Deleted Deployment {dep}: pool {pool} is no longer in the spec"))
    # --- routing (routing.py): Service / HTTPRoute / InferencePool objects, weights, mode-switch clean-up ---
    ready = {pool: obs.ready_replicas for pool, obs in after.items()}
    routed = await routing.reconcile(kube, routing.plan(owner, spec, ready, capacities), ref.namespace, ref.name, ref.uid)
    verdict = routing.assess(routed, ref.previous_conditions.get(routing.CONDITION, {}).get("reason"))
    errors += routed.errors
    events += [Event(*e) for e in verdict.events]
    # --- end routing ---
    return Actuation(children=after, errors=tuple(errors), events=tuple(events), routing=routed, routed=verdict)
