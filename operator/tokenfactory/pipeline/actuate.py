"""Stage 4, actuate: bring the rendered children (``render``) to the planned replicas, writing only what
differs, and delete the Deployments of pools no longer in the spec. A failed write is reported (status,
retried next pass), never raised.

Writes happen only when needed (no writes at steady state):

* a child absent from the watch cache is *created* (POST, never apply): if an object of that name is
  already there, the create fails and one GET tells whether it is ours (the cache was behind) or someone
  else's. Someone else's object is never touched: the pass reports ``NameConflict`` (Degraded + a
  Warning Event naming the object);
* a cached child without this TokenFactory's owner reference is likewise a conflict, left alone;
* an owned child is server-side applied only when the desired manifest is not already contained in the
  live object (:func:`contains`), or when it changed since this operator last applied it;
* deletion only ever removes a Deployment that carries this TokenFactory's owner reference.

Then the routing objects of ``spec.routing`` (``routing.py``: Service / HTTPRoute with capacity weights /
InferencePool, and the clean-up of a mode switch), written through :class:`OwnedWrites`: the same rules
(created, never adopted; applied only when they differ; listed from the cache where it holds the kind).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from tokenfactory import api, render, routing
from tokenfactory.kube import owned_by
from tokenfactory.pipeline.model import Actuation, Event, FactoryRef, PoolObservation
from tokenfactory.ports import AlreadyExists, ChildCache, KubeClient

log = logging.getLogger("tokenfactory.pipeline")


def _spec_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return before.get("spec") != after.get("spec") or (before["metadata"].get("labels") != after["metadata"].get("labels"))


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` has the same value in ``live`` (dicts: a subset; lists: same length,
    element by element). Fields the apiserver defaults (or others own) do not count as a difference."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(contains(a, b) for a, b in zip(live, desired))
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(live, str):
        return str(desired) == live
    return live == desired


def digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _generation(obj: Mapping[str, Any] | None) -> int | None:
    gen = ((obj or {}).get("metadata") or {}).get("generation")
    return int(gen) if gen is not None else None


def up_to_date(desired: Mapping[str, Any], live: Mapping[str, Any], last: tuple[str, int | None] | None) -> bool:
    """No write needed: ``live`` already holds ``desired``; or this exact manifest was applied by us and the
    live object's spec has not moved since (its generation is not newer than the one our apply produced,
    e.g. the cache has not caught up yet, or the apiserver normalised a quantity)."""
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "status")}
    if contains(live, body):
        return True
    if last is None or last[0] != digest(desired):
        return False
    gen, applied_gen = _generation(live), last[1]
    return gen is not None and applied_gen is not None and gen <= applied_gen


def conflict_message(kind: str, name: str, ref: FactoryRef, live: Mapping[str, Any] | None) -> str:
    owners = [f"{r.get('kind')}/{r.get('name')}" for r in ((live or {}).get("metadata") or {}).get("ownerReferences") or []]
    whose = f"owned by {', '.join(owners)}" if owners else "not created by this TokenFactory"
    return (f"{kind} {ref.namespace}/{name} already exists and is {whose}; left untouched: "
            f"rename the TokenFactory or remove that {kind}")


async def _write(kube: KubeClient, cache: ChildCache, ref: FactoryRef, manifest: dict[str, Any],
                 applied: dict[tuple[str, str], tuple[str, int | None]]) -> tuple[dict[str, Any] | None, str | None, bool]:
    """(live object after this step, conflict message or None, whether a write happened)."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    key = (kind, name)
    lookup = getattr(cache, "cached", None)  # a KubeClient without a cache: every pass asks the apiserver
    live = lookup(kind, ref.namespace, name) if lookup is not None else None
    if live is None:
        try:
            created = await kube.create(manifest)
        except AlreadyExists:
            live = await kube.get(kind, ref.namespace, name)
            if live is None:  # deleted in between: the next pass creates it
                return None, None, False
        else:
            applied[key] = (digest(manifest), _generation(created))
            return created, None, True
    if not owned_by(live, ref.uid):
        return live, conflict_message(kind, name, ref, live), False
    if up_to_date(manifest, live, applied.get(key)):
        return live, None, False
    result = await kube.apply(manifest)
    applied[key] = (digest(manifest), _generation(result))
    return result, None, True


class OwnedWrites:
    """The KubeClient ``routing.reconcile`` writes through: ``apply`` is :func:`_write` (create, or compare and
    apply only what differs; never someone else's object: that is recorded in ``conflicts``), ``list`` reads the
    watch cache for the kinds it holds."""

    def __init__(self, kube: KubeClient, cache: Any, ref: FactoryRef,
                 applied: dict[tuple[str, str], tuple[str, int | None]]):
        self.kube, self.cache, self.ref, self.applied = kube, cache, ref, applied
        self.conflicts: list[str] = []
        self.writes = 0

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        live, conflict, wrote = await _write(self.kube, self.cache, self.ref, manifest, self.applied)
        self.writes += wrote
        if conflict is not None:
            self.conflicts.append(conflict)
        return live or {}

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        kinds = getattr(self.cache, "kinds", None)
        if kinds is not None and kind in kinds:
            return await self.cache.list(kind, namespace, labels)
        return await self.kube.list(kind, namespace, labels)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.writes += 1
        await self.kube.delete(kind, namespace, name)

    def __getattr__(self, name: str) -> Any:  # anything else routing may need
        return getattr(self.kube, name)


async def actuate(kube: KubeClient, ref: FactoryRef, spec: api.TokenFactorySpec, replicas: Mapping[str, int],
                  children: Mapping[str, PoolObservation], capacities: Mapping[str, float] | None = None,
                  cache: ChildCache | None = None,
                  applied: dict[tuple[str, str], tuple[str, int | None]] | None = None) -> Actuation:
    """``capacities``: learned tokens/s per replica by pool (the HTTPRoute weights use them; else the profile).
    ``cache`` answers "is it there, and is it ours" without a request (``kube`` itself when it is a fake);
    ``applied`` (the factory's memory) remembers the digest and resulting generation of each write."""
    owner = render.Owner(name=ref.name, namespace=ref.namespace, uid=ref.uid)
    cache = cache if cache is not None else kube  # type: ignore[assignment]
    applied = applied if applied is not None else {}
    after = dict(children)
    errors: list[str] = []
    conflicts: list[str] = []
    events: list[Event] = []
    writes = 0
    manifests = render.render_deployments(owner, spec, replicas)
    # the children are independent: their writes (if any) go out together, one round trip per pass
    results = await asyncio.gather(*(_write(kube, cache, ref, m, applied) for m in manifests),  # type: ignore[arg-type]
                                   return_exceptions=True)
    for manifest, result in zip(manifests, results):
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            errors.append(f"{kind} {child}: {result}")  # reported in status, retried next pass
            continue
        live, conflict, wrote = result
        writes += wrote
        if conflict is not None:
            conflicts.append(conflict)
            continue
        if kind != "Deployment" or live is None:
            continue
        pool = manifest["metadata"]["labels"][render.LABEL_POOL]
        before = children[pool].deployment if pool in children else None
        if before is None:
            if wrote:
                events.append(Event("Normal", "Created", f"Created Deployment {child} ({manifest['spec']['replicas']} replicas)"))
        elif wrote and before["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion") and _spec_changed(before, live):
            events.append(Event("Normal", "Updated", f"Updated Deployment {child}"))
        after[pool] = PoolObservation(pool, live, children[pool].pods if pool in children else ())
    wanted = {p.name for p in spec.pools}
    for pool, obs in sorted(children.items()):
        if pool not in wanted and obs.deployment is not None:
            dep = obs.deployment["metadata"]["name"]
            if not owned_by(obs.deployment, ref.uid):
                continue  # labelled like ours but not ours: never deleted
            await kube.delete("Deployment", ref.namespace, dep)
            writes += 1
            events.append(Event("Normal", "Deleted", f"Deleted Deployment {dep}: pool {pool} is no longer in the spec"))
    # --- routing (routing.py): Service / HTTPRoute / InferencePool objects, weights, mode-switch clean-up ---
    ready = {pool: obs.ready_replicas for pool, obs in after.items()}
    writer = OwnedWrites(kube, cache, ref, applied)
    routed = await routing.reconcile(writer, routing.plan(owner, spec, ready, capacities),
                                     ref.namespace, ref.name, ref.uid)
    verdict = routing.assess(routed, ref.previous_conditions.get(routing.CONDITION, {}).get("reason"))
    errors += routed.errors
    conflicts += writer.conflicts
    writes += writer.writes
    events += [Event(*e) for e in verdict.events]
    # --- end routing ---
    events += [Event("Warning", "NameConflict", c) for c in conflicts]
    return Actuation(children=after, errors=tuple(errors), events=tuple(events), conflicts=tuple(conflicts), writes=writes,
                     routing=routed, routed=verdict)
