"""Kubernetes access behind a small Protocol: the lightkube adapter for real clusters, a fake for tests.

Why lightkube: it is asyncio-native (kopf runs an asyncio loop; the official client is blocking and
kubernetes-asyncio is a generated, heavy mirror of it), has server-side apply as a first-class call,
and handles the TokenFactory custom resource and its status subresource with generic resources.
Everything crosses this boundary as plain dicts, so the core never sees client types.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections.abc import Mapping
from typing import Any

from tokenfactory import api
from tokenfactory.ports import AlreadyExists, KubeClient

__all__ = ["FIELD_MANAGER", "AlreadyExists", "FakeKube", "KubeClient", "LightkubeClient", "event_manifest", "owned_by"]

FIELD_MANAGER = "tokenfactory"
ROUTE_KINDS = {  # kind -> (group, version, plural): the routing kinds served by CRDs (routing.py)
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "InferencePool": ("inference.networking.k8s.io", "v1", "inferencepools"),
}


class KindNotServed(RuntimeError):
    """The apiserver does not serve this kind (its CRD is not installed)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"the apiserver does not serve {kind}" + (f": {detail}" if detail else ""))
        self.kind = kind


def owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether ``obj`` carries an owner reference to the object with ``uid``."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid for r in refs)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_manifest(involved: Mapping[str, Any], type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    meta = involved["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", api.API_VERSION),
            "kind": involved.get("kind", api.KIND),
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "tokenfactory-operator"},
        "reportingComponent": "tokenfactory.dev/operator",
        "reportingInstance": "tokenfactory-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class LightkubeClient:
    """The real adapter (lightkube.AsyncClient)."""

    def __init__(self, client: Any | None = None, field_manager: str = FIELD_MANAGER):
        from lightkube import AsyncClient
        from lightkube.generic_resource import create_namespaced_resource
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.resources.core_v1 import Event, Pod, Service

        self._client: Any = client or AsyncClient(field_manager=field_manager)
        self._field_manager = field_manager
        self._kinds: dict[str, Any] = {"Deployment": Deployment, "Service": Service, "Pod": Pod}
        for kind, (group, version, plural) in ROUTE_KINDS.items():
            self._kinds[kind] = create_namespaced_resource(group, version, kind, plural)
        self._event = Event
        self._tf = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        from lightkube import codecs

        obj = codecs.from_dict(copy.deepcopy(manifest))
        try:
            live = await self._client.apply(obj, field_manager=self._field_manager, force=True)
        except Exception as err:  # ApiError, or lightkube's HTTP error for a non-JSON 404
            raise _not_served(manifest["kind"], err) from err
        return live.to_dict()

    def _resource(self, kind: str, api_version: str | None = None) -> Any:
        if kind in self._kinds:
            return self._kinds[kind]
        from lightkube.generic_resource import get_generic_resource

        res = get_generic_resource(api_version, kind) if api_version else None
        if res is None:
            raise KeyError(f"{kind} ({api_version}) is not a kind this client knows")
        return res

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        from lightkube import ApiError, codecs

        obj = codecs.from_dict(copy.deepcopy(manifest))
        try:
            live = await self._client.create(obj, namespace=manifest["metadata"].get("namespace"),
                                             field_manager=self._field_manager)
        except ApiError as err:
            if err.status.code == 409:
                raise AlreadyExists(f"{manifest['kind']} {manifest['metadata']['name']} already exists") from None
            raise _not_served(manifest["kind"], err) from err
        except Exception as err:  # lightkube's HTTP error for a non-JSON 404 (kind not served)
            raise _not_served(manifest["kind"], err) from err
        return live.to_dict()

    async def get(self, kind: str, namespace: str, name: str, api_version: str | None = None) -> dict[str, Any] | None:
        from lightkube import ApiError

        try:
            obj = await self._client.get(self._resource(kind, api_version), name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise
        return obj.to_dict()

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        res = self._kinds[kind]
        try:
            return [o.to_dict() async for o in self._client.list(res, namespace=namespace, labels=dict(labels))]
        except Exception as err:  # ApiError, or lightkube's HTTP error for a non-JSON 404
            raise _not_served(kind, err) from err

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        from lightkube import ApiError

        try:
            await self._client.delete(self._kinds[kind], name, namespace=namespace)
        except ApiError as err:
            if err.status.code != 404:
                raise
        except Exception as err:  # a kind whose CRD is gone: nothing of it can exist
            if not isinstance(_not_served(kind, err), KindNotServed):
                raise

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        from lightkube.types import PatchType

        await self._client.patch(self._tf.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE)

    async def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        from lightkube import codecs

        obj = codecs.from_dict(event_manifest(involved, type_, reason, message, _now()))
        await self._client.create(obj, namespace=involved["metadata"].get("namespace") or "default")

    async def close(self) -> None:
        await self._client.close()


def _not_served(kind: str, err: Exception) -> Exception:
    """A 404 for the resource type itself (not for a named object) means its CRD is not installed. The apiserver
    answers that with a plain-text "404 page not found" (lightkube raises the HTTP error) or, from some paths, a
    Status saying it "could not find the requested resource"."""
    if kind not in ROUTE_KINDS:
        return err
    status: Any = getattr(err, "status", None)
    message = str(getattr(status, "message", "") or "")
    if getattr(status, "code", None) == 404 and "could not find the requested resource" in message:
        return KindNotServed(kind, message)
    response: Any = getattr(err, "response", None)
    if status is None and getattr(response, "status_code", None) == 404:
        return KindNotServed(kind, f"{response.request.method} {response.request.url.path}: 404")
    return err


def _matches(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class FakeKube:
    """In-memory KubeClient: applies replace the object's spec (as a sole field manager would), bump
    resourceVersion only on a real change, and record every call for assertions."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, str]] = []
        self.calls: list[tuple[str, str, str, str]] = []
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.fail_next_apply: Exception | None = None
        self.unserved: set[str] = set()  # kinds whose CRDs are "not installed"

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.fail_next_apply is not None:
            err, self.fail_next_apply = self.fail_next_apply, None
            raise err
        kind, meta = manifest["kind"], manifest["metadata"]
        if kind in self.unserved:
            raise KindNotServed(kind)
        key = (kind, meta["namespace"], meta["name"])
        self.calls.append(("apply", *key))
        old = self.objects.get(key)
        new = copy.deepcopy(manifest)
        if old is not None:
            changed = _comparable(old) != _comparable(new)
            new["metadata"]["uid"] = old["metadata"]["uid"]
            new["metadata"]["resourceVersion"] = str(next(self._rv)) if changed else old["metadata"]["resourceVersion"]
            gen = old["metadata"].get("generation", 1)
            spec_changed = old.get("spec") != new.get("spec")
            new["metadata"]["generation"] = gen + 1 if spec_changed else gen
            if "status" in old:
                new["status"] = old["status"]
        else:
            new["metadata"]["uid"] = f"uid-{next(self._uid)}"
            new["metadata"]["resourceVersion"] = str(next(self._rv))
            new["metadata"]["generation"] = 1
        self.objects[key] = new
        return copy.deepcopy(new)

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.fail_next_apply is not None:  # the next write (create or apply) fails
            err, self.fail_next_apply = self.fail_next_apply, None
            raise err
        kind, meta = manifest["kind"], manifest["metadata"]
        if kind in self.unserved:
            raise KindNotServed(kind)
        key = (kind, meta["namespace"], meta["name"])
        self.calls.append(("create", *key))
        if key in self.objects:
            raise AlreadyExists(f"{kind} {meta['name']} already exists")
        new = copy.deepcopy(manifest)
        new["metadata"]["uid"] = f"uid-{next(self._uid)}"
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        new["metadata"]["generation"] = 1
        self.objects[key] = new
        return copy.deepcopy(new)

    async def get(self, kind: str, namespace: str, name: str, api_version: str | None = None) -> dict[str, Any] | None:
        self.calls.append(("get", kind, namespace, name))
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def cached(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """ChildCache: the fake is its own cache (only objects labelled managed-by: tokenfactory, as the watch)."""
        obj = self.objects.get((kind, namespace, name))
        if obj is None or (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "tokenfactory":
            return None
        return copy.deepcopy(obj)

    async def list(self, kind: str, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        if kind in self.unserved:
            raise KindNotServed(kind)
        return [
            copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items()) if k == kind and ns == namespace and _matches(o, labels)
        ]

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", kind, namespace, name))
        self.objects.pop((kind, namespace, name), None)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.calls.append(("patch_status", api.KIND, namespace, name))
        merged = self.statuses.setdefault((namespace, name), {})
        _merge_patch(merged, copy.deepcopy(status))

    async def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append({"name": involved["metadata"]["name"], "type": type_, "reason": reason, "message": message})

    # helpers for tests ------------------------------------------------------------------------
    def edit(self, kind: str, namespace: str, name: str, mutate: Any) -> None:
        """Someone else edits an object, as through the apiserver: a spec change bumps its generation."""
        obj = self.objects[(kind, namespace, name)]
        before = copy.deepcopy(obj.get("spec"))
        mutate(obj)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        if obj.get("spec") != before:
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1

    def set_deployment_status(self, namespace: str, name: str, ready: int, replicas: int | None = None) -> None:
        obj = self.objects[("Deployment", namespace, name)]
        want = obj["spec"]["replicas"] if replicas is None else replicas
        obj["status"] = {"replicas": want, "readyReplicas": ready, "updatedReplicas": want, "availableReplicas": ready,
                         "observedGeneration": 1}

    def add_pod(self, namespace: str, name: str, labels: Mapping[str, str], gpus: int, node: str | None = "node-1",
                ready: bool = True, unschedulable: bool = False) -> None:
        conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
        if unschedulable:
            conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."})
        self.objects[("Pod", namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "uid": f"pod-{name}"},
            "spec": {"nodeName": node, "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running" if node else "Pending", "conditions": conditions},
        }


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in ("uid", "resourceVersion", "generation")}
    return out


def _merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            _merge_patch(target[k], v)
        else:
            target[k] = copy.deepcopy(v) if not isinstance(v, Mapping) else _strip_nulls(v)


def _strip_nulls(v: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_strip_nulls(x) if isinstance(x, Mapping) else x) for k, x in v.items() if x is not None}
