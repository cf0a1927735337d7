"""The reconcile step for one TokenFactory: spec + what the cluster holds -> applies, deletes, status, events.

Level-triggered and idempotent: every call re-derives everything from the object and the cluster (plus
a little per-factory memory for the autoscaler and for not repeating Events), server-side applies the
rendered children, deletes the Deployments of pools that are gone and writes a status that tells the
truth. Kubernetes access goes through ``kube.KubeClient``; metrics, cost and planning come in through
``measure.Measurer`` so this module stays I/O-free apart from its adapters.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenfactory import api, render, routing
from tokenfactory.kube import KubeClient

log = logging.getLogger("tokenfactory.controller")


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FactoryMemory:
    """What the operator remembers about one factory between reconciles (lost on restart, and that is safe:
    replicas are re-read from the cluster and the autoscaler starts cautious)."""

    desired: dict[str, int] = field(default_factory=dict)
    last_event_keys: set[tuple[str, str]] = field(default_factory=set)
    last_measure: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # autoscaler / metrics state, owned by measure.py


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class PoolObservation:
    name: str
    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]]

    @property
    def spec_replicas(self) -> int | None:
        if self.deployment is None:
            return None
        return int(self.deployment.get("spec", {}).get("replicas", 0))

    @property
    def ready_replicas(self) -> int:
        return int(((self.deployment or {}).get("status") or {}).get("readyReplicas") or 0)

    @property
    def updated_replicas(self) -> int:
        return int(((self.deployment or {}).get("status") or {}).get("updatedReplicas") or 0)

    def scheduled_gpus(self) -> int:
        """GPUs held by the pool's pods that a node has accepted (what is being paid for)."""
        total = 0
        for pod in self.pods:
            if not pod.get("spec", {}).get("nodeName"):
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if pod.get("metadata", {}).get("deletionTimestamp"):
                continue
            for c in pod["spec"].get("containers", []):
                limits = (c.get("resources") or {}).get("limits") or {}
                total += int(str(limits.get(render.GPU_RESOURCE, "0")))
        return total

    def unschedulable(self) -> list[str]:
        out = []
        for pod in self.pods:
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
                    out.append(cond.get("message") or "unschedulable")
        return out


def condition(type_: str, status: bool | None, reason: str, message: str, generation: int | None,
              previous: Mapping[str, Mapping[str, Any]], now: dt.datetime) -> dict[str, Any]:
    value = "Unknown" if status is None else ("True" if status else "False")
    prev = previous.get(type_)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since or rfc3339(now),
        "observedGeneration": generation,
    }


def current_replicas(spec: api.TokenFactorySpec, memory: FactoryMemory, status: Mapping[str, Any] | None,
                     observed: Mapping[str, PoolObservation]) -> dict[str, int]:
    """Where each pool's replica count stands: the operator's own memory, else the last status, else the live
    Deployment, else minReplicas; always clamped to the pool's (possibly new) bounds."""
    known: dict[str, int] = {}
    status_pools = {p.get("name"): p for p in (status or {}).get("pools") or []}
    for pool in spec.pools:
        if pool.name in memory.desired:
            known[pool.name] = memory.desired[pool.name]
        elif pool.name in status_pools and status_pools[pool.name].get("desiredReplicas") is not None:
            known[pool.name] = int(status_pools[pool.name]["desiredReplicas"])
        elif observed.get(pool.name) and observed[pool.name].spec_replicas is not None:
            known[pool.name] = observed[pool.name].spec_replicas  # type: ignore[assignment]
    return render.clamp_replicas(spec, known)


class Reconciler:
    """Runs one reconcile of one factory. ``measurer`` (optional) reads metrics, prices the fleet and plans."""

    def __init__(self, kube: KubeClient, measurer: Any | None = None):
        self.kube = kube
        self.measurer = measurer

    async def observe(self, namespace: str, name: str) -> dict[str, PoolObservation]:
        selector = {render.LABEL_FACTORY: name, "app.kubernetes.io/managed-by": render.MANAGED_BY}
        deployments = await self.kube.list("Deployment", namespace, selector)
        pods = await self.kube.list("Pod", namespace, selector)
        out: dict[str, PoolObservation] = {}
        for d in deployments:
            pool = (d["metadata"].get("labels") or {}).get(render.LABEL_POOL)
            if pool:
                out.setdefault(pool, PoolObservation(pool, None, [])).deployment = d
        for p in pods:
            pool = (p["metadata"].get("labels") or {}).get(render.LABEL_POOL)
            if pool:
                out.setdefault(pool, PoolObservation(pool, None, [])).pods.append(p)
        return out

    async def reconcile(self, obj: Mapping[str, Any], memory: FactoryMemory, now: dt.datetime,
                        measure: bool = False) -> list[Event]:
        """One pass. Returns the Events it emitted. Never raises for a bad spec (that is a status, not a crash)."""
        meta = obj["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        generation = meta.get("generation")
        old_status = obj.get("status") or {}
        prev_conditions = {c["type"]: c for c in old_status.get("conditions") or [] if "type" in c}
        events: list[Event] = []

        try:
            spec = api.parse_spec(obj.get("spec"))
        except api.SpecError as err:
            message = "spec cannot be served, nothing was changed: " + "; ".join(err.problems)
            status = {
                "observedGeneration": generation,
                "conditions": [
                    condition("Ready", False, "InvalidSpec", message, generation, prev_conditions, now),
                    condition("Progressing", False, "InvalidSpec", "waiting for a valid spec", generation, prev_conditions, now),
                    condition("Degraded", True, "InvalidSpec", message, generation, prev_conditions, now),
                ],
            }
            events.append(Event("Warning", "InvalidSpec", message))
            await self._write(obj, memory, status, events)
            return events

        observed = await self.observe(namespace, name)
        replicas = current_replicas(spec, memory, old_status, observed)
        if self.measurer is not None and measure:
            try:
                result = await self.measurer.measure(obj, spec, replicas, observed, memory, now)
            except Exception:  # noqa: BLE001 - a measuring bug must not stop reconciling the children
                log.exception("%s/%s: measuring failed; keeping replicas and the last figures", namespace, name)
            else:
                replicas = render.clamp_replicas(spec, result.replicas)
                memory.extra["figures"] = result.status
                events.extend(result.events)
        figures: dict[str, Any] = dict(memory.extra.get("figures") or {})
        memory.desired = dict(replicas)

        owner = render.Owner(name=name, namespace=namespace, uid=meta.get("uid", ""))
        apply_errors: list[str] = []
        for manifest in render.render_deployments(owner, spec, replicas):
            kind, child = manifest["kind"], manifest["metadata"]["name"]
            before = None
            if kind == "Deployment":
                pool = manifest["metadata"]["labels"][render.LABEL_POOL]
                before = observed.get(pool).deployment if observed.get(pool) else None
            try:
                live = await self.kube.apply(manifest)
            except Exception as err:  # noqa: BLE001 - reported in status, retried next pass
                apply_errors.append(f"{kind} {child}: {err}")
                continue
            if kind == "Deployment":
                if before is None:
                    events.append(Event("Normal", "Created", f"Created Deployment {child} ({manifest['spec']['replicas']} replicas)"))
                elif before["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion") and _spec_changed(before, live):
                    events.append(Event("Normal", "Updated", f"Updated Deployment {child}"))
                observed[pool] = PoolObservation(pool, live, observed[pool].pods if pool in observed else [])

        # --- routing (routing.py): Service / HTTPRoute / InferencePool objects, weights, mode-switch clean-up ---
        routed = await routing.reconcile(
            self.kube, routing.plan(owner, spec, {p: o.ready_replicas for p, o in observed.items()},
                                    routing.learned_capacities(getattr(memory.extra.get("measure"), "planner_state", None))),
            namespace, name, owner.uid)
        apply_errors += routed.errors
        # --- end routing ---

        wanted_pools = {p.name for p in spec.pools}
        for pool, obs in sorted(observed.items()):
            if pool not in wanted_pools and obs.deployment is not None:
                dep = obs.deployment["metadata"]["name"]
                await self.kube.delete("Deployment", namespace, dep)
                events.append(Event("Normal", "Deleted", f"Deleted Deployment {dep}: pool {pool} is no longer in the spec"))

        status = self._status(spec, name, generation, replicas, observed, prev_conditions, apply_errors, now)
        pool_figures = figures.pop("poolFigures", {})
        extra_conditions = figures.pop("conditions", [])
        for entry in status["pools"]:
            entry.update(pool_figures.get(entry["name"], {}))
        status.update(figures)
        status["conditions"] = status["conditions"] + extra_conditions
        # --- routing status (routing.py): status.routing, pools[].routeWeight, the Routed condition ---
        verdict = routing.into_status(status, routed, prev_conditions.get(routing.CONDITION, {}).get("reason"))
        status["conditions"].append(condition(routing.CONDITION, verdict.status, verdict.reason, verdict.message,
                                              generation, prev_conditions, now))
        events.extend(Event(*e) for e in verdict.events)
        # --- end routing status ---
        await self._write(obj, memory, status, events)
        return events

    def _status(self, spec: api.TokenFactorySpec, name: str, generation: int | None, replicas: Mapping[str, int],
                observed: Mapping[str, PoolObservation], prev: Mapping[str, Mapping[str, Any]],
                apply_errors: list[str], now: dt.datetime) -> dict[str, Any]:
        pools = []
        not_ready, rolling, unschedulable = [], [], []
        for p in spec.pools:
            obs = observed.get(p.name) or PoolObservation(p.name, None, [])
            pools.append({
                "name": p.name,
                "gpuType": p.gpu_type.lower(),
                "deployment": render.deployment_name(name, p.name),
                "desiredReplicas": replicas[p.name],
                "readyReplicas": obs.ready_replicas,
                "gpus": obs.scheduled_gpus(),
            })
            if obs.ready_replicas < replicas[p.name]:
                not_ready.append(f"{p.name} {obs.ready_replicas}/{replicas[p.name]} ready")
            if obs.deployment is None or obs.updated_replicas < replicas[p.name] or obs.ready_replicas != replicas[p.name]:
                rolling.append(p.name)
            for msg in obs.unschedulable()[:1]:
                unschedulable.append(f"pool {p.name}: {len(obs.unschedulable())} pod(s) cannot be scheduled: {msg}")
        total_ready = sum(p["readyReplicas"] for p in pools)
        total_desired = sum(p["desiredReplicas"] for p in pools)
        if apply_errors:
            degraded = condition("Degraded", True, "ApplyFailed", "; ".join(apply_errors), generation, prev, now)
        elif unschedulable:
            degraded = condition("Degraded", True, "Unschedulable", "; ".join(unschedulable), generation, prev, now)
        else:
            degraded = condition("Degraded", False, "AsExpected", "all children applied", generation, prev, now)
        if not_ready or apply_errors:
            ready = condition("Ready", False, "PoolsNotReady", ", ".join(not_ready) or "apply failed", generation, prev, now)
        else:
            ready = condition("Ready", True, "AllPoolsReady", f"{total_ready}/{total_desired} replicas ready", generation, prev, now)
        if rolling:
            progressing = condition("Progressing", True, "Reconciling", "pools converging: " + ", ".join(rolling), generation, prev, now)
        else:
            progressing = condition("Progressing", False, "Converged", "every pool is at its desired replicas", generation, prev, now)
        return {
            "observedGeneration": generation,
            "conditions": [ready, progressing, degraded],
            "replicas": f"{total_ready}/{total_desired}",
            "readyReplicas": total_ready,
            "desiredReplicas": total_desired,
            "gpus": sum(p["gpus"] for p in pools),
            "pools": pools,
        }

    async def _write(self, obj: Mapping[str, Any], memory: FactoryMemory, status: dict[str, Any], events: list[Event]) -> None:
        meta = obj["metadata"]
        name, namespace = meta["name"], meta.get("namespace") or "default"
        for e in events:
            key = (e.reason, e.message)
            if e.type == "Warning" and key in memory.last_event_keys:
                continue  # the same warning again: it is in status already, do not spam Events
            await self.kube.emit_event(obj, e.type, e.reason, e.message)
        memory.last_event_keys = {(e.reason, e.message) for e in events if e.type == "Warning"}
        old = dict(obj.get("status") or {})
        patch = dict(status)
        # Fields the operator wrote before but no longer has a value for are removed (merge-patch null).
        for k in old:
            if k not in patch:
                patch[k] = None
        if _same(old, status):
            return
        await self.kube.patch_status(namespace, name, patch)


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return {k: v for k, v in old.items() if v is not None} == {k: v for k, v in new.items() if v is not None}


def _spec_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    return before.get("spec") != after.get("spec") or (before["metadata"].get("labels") != after["metadata"].get("labels"))
