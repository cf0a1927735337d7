"""A real, secured Kubernetes control plane on 127.0.0.1, supervised from Python.

``LocalCluster(state_dir).up()`` runs etcd (TLS, client-cert auth), kube-apiserver (TLS,
client-cert + service-account auth, Node,RBAC authorization, default admission plugins),
kube-controller-manager, kube-scheduler and the kwok controller, each detached in its own process
group with a pid file and a log under the state directory, creates the simulated node pools
(``nodepools.yaml``) and waits until the cluster is usable. ``down()`` stops them and removes the
state. See docs/local-cluster.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import binaries, nodepools, pki, procs

Progress = Callable[[str], None]

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
CLUSTER_NAME = "tokenfactory"
CONTEXT_NAME = "tokenfactory"
KWOK_LEASE_SECONDS = 40
MARKER = ".tokenfactory-cluster"  # only directories holding this file are ever removed by down()

# Start order; down() stops in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PROMETHEUS = "prometheus"


class ClusterError(RuntimeError):
    """The cluster could not be started, or is not in the state an operation needs."""


def default_state_dir() -> Path:
    env = os.environ.get("TOKENFACTORY_CLUSTER_DIR")
    return Path(env) if env else binaries.cache_dir() / "cluster"


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    prometheus: int

    @classmethod
    def pick(cls, apiserver: int | None = None) -> Ports:
        chosen: set[int] = set()

        def one() -> int:
            while True:
                p = procs.free_port()
                if p not in chosen and p != apiserver:
                    chosen.add(p)
                    return p

        return cls(
            etcd=one(), etcd_peer=one(), apiserver=apiserver or one(), controller_manager=one(),
            scheduler=one(), kwok=one(), prometheus=one(),
        )


@dataclass
class Layout:
    """Every path of a cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def nodes(self) -> Path:
        return self.root / "nodes.yaml"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"


@dataclass
class ClusterInfo:
    """What clients need: the admin kubeconfig and the apiserver URL."""

    kubeconfig: Path
    server: str
    state_dir: Path
    ca_file: Path
    prometheus_url: str | None = None

    def env(self) -> dict[str, str]:
        """``os.environ`` with ``KUBECONFIG`` pointing at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return kubectl(*args, kubeconfig=self.kubeconfig, check=check, input=input, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Pure generation: kubeconfigs, command lines, kwok configuration.


def kubeconfig_dict(server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str) -> dict:
    import base64

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server,
                                                        "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem),
                                          "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": CONTEXT_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }


def command_lines(layout: Layout, ports: Ports, bin_dir: Path) -> dict[str, list[str]]:
    """argv of every control-plane process (pure: paths and ports in, argv out)."""
    p = pki.Pki(layout.pki)
    b = lambda name: str(bin_dir / name)  # noqa: E731
    kc = lambda name: str(layout.component_kubeconfig(name))  # noqa: E731
    etcd_client = f"https://127.0.0.1:{ports.etcd}"
    etcd_peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return {
        "etcd": [
            b("etcd"),
            "--name=tokenfactory",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_client}",
            f"--advertise-client-urls={etcd_client}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster=tokenfactory={etcd_peer}",
            "--initial-cluster-state=new",
            f"--cert-file={p.crt('etcd-server')}",
            f"--key-file={p.key('etcd-server')}",
            f"--trusted-ca-file={p.crt('etcd-ca')}",
            "--client-cert-auth=true",
            "--quota-backend-bytes=4294967296",
            "--unsafe-no-fsync=true",  # a throwaway cluster: no fsync, much faster on slow disks
            "--log-level=warn",
        ],
        "kube-apiserver": [
            b("kube-apiserver"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--etcd-servers={etcd_client}",
            f"--etcd-cafile={p.crt('etcd-ca')}",
            f"--etcd-certfile={p.crt('apiserver-etcd-client')}",
            f"--etcd-keyfile={p.key('apiserver-etcd-client')}",
            f"--tls-cert-file={p.crt('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.ca_crt}",
            f"--kubelet-client-certificate={p.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
            f"--requestheader-client-ca-file={p.crt('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.crt('front-proxy-client')}",
            f"--proxy-client-key-file={p.key('front-proxy-client')}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--enable-bootstrap-token-auth=true",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The only address is loopback, which an Endpoints object may not hold: keep the
            # `kubernetes` Service without endpoints instead of logging a failure every 10s.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={layout.root / 'apiserver-certs'}",
            "--profiling=false",
            "--event-ttl=1h",
        ],
        "kube-controller-manager": [
            b("kube-controller-manager"),
            f"--kubeconfig={kc('controller-manager')}",
            f"--authentication-kubeconfig={kc('controller-manager')}",
            f"--authorization-kubeconfig={kc('controller-manager')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--tls-cert-file={p.crt('controller-manager')}",
            f"--tls-private-key-file={p.key('controller-manager')}",
            f"--client-ca-file={p.ca_crt}",
            f"--root-ca-file={p.ca_crt}",
            f"--service-account-private-key-file={p.sa_key}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={p.ca_crt}",
            f"--cluster-signing-key-file={p.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-name={CLUSTER_NAME}",
            "--controllers=*,bootstrapsigner,tokencleaner",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kube-scheduler": [
            b("kube-scheduler"),
            f"--kubeconfig={kc('scheduler')}",
            f"--authentication-kubeconfig={kc('scheduler')}",
            f"--authorization-kubeconfig={kc('scheduler')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--tls-cert-file={p.crt('scheduler')}",
            f"--tls-private-key-file={p.key('scheduler')}",
            f"--client-ca-file={p.ca_crt}",
            "--leader-elect=false",
            "--profiling=false",
        ],
        "kwok": [
            b("kwok"),
            f"--kubeconfig={kc('kwok')}",
            f"--config={layout.kwok_config}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector="
            f"{nodepools.KWOK_ANNOTATION}={nodepools.KWOK_ANNOTATION_VALUE}",
            f"--server-address=127.0.0.1:{ports.kwok}",
            f"--node-lease-duration-seconds={KWOK_LEASE_SECONDS}",
            f"--cidr={CLUSTER_CIDR}",
        ],
    }


def stages_path() -> Path:
    return Path(str(resources.files("tokenfactory.localcluster").joinpath("kwok-stages.yaml")))


def kwok_config_documents(stages_file: Path | None = None) -> list[dict]:
    """KwokConfiguration + the Stage objects (from ``kwok-stages.yaml``), as kwok's ``-c`` reads."""
    stages = [d for d in yaml.safe_load_all((stages_file or stages_path()).read_text()) if d]
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "manageAllNodes": False,
            "manageNodesWithAnnotationSelector":
                f"{nodepools.KWOK_ANNOTATION}={nodepools.KWOK_ANNOTATION_VALUE}",
            "cidr": CLUSTER_CIDR,
            "nodeLeaseDurationSeconds": KWOK_LEASE_SECONDS,
            "nodeLeaseParallelism": 8,
            "podPlayStageParallelism": 8,
            "nodePlayStageParallelism": 8,
        },
    }
    return [config, *stages]


# ---------------------------------------------------------------------------------------------
# kubectl


def kubectl(*args: str, kubeconfig: Path | str, check: bool = True, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the cached kubectl against ``kubeconfig``; raises ClusterError (with stderr) on failure
    when ``check``."""
    exe = binaries.binary("kubectl")
    if not exe.exists():
        raise ClusterError(f"{exe} is missing: run `tokenfactory cluster up` (it builds it)")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, input=input,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Kubectl:
    """kubectl bound to one kubeconfig: ``k("get", "pods")`` returns stdout, raising ClusterError
    on failure; ``k.run(...)`` returns the CompletedProcess without checking; ``k.json(...)``
    parses ``-o json``; ``k.apply(obj_or_yaml)`` applies manifests from memory."""

    def __init__(self, kubeconfig: Path | str, timeout: float = 60) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.timeout = timeout

    def __call__(self, *args: str, input: str | None = None, timeout: float | None = None) -> str:
        return kubectl(*args, kubeconfig=self.kubeconfig, input=input,
                       timeout=timeout or self.timeout).stdout

    def run(self, *args: str, input: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess:
        return kubectl(*args, kubeconfig=self.kubeconfig, check=False, input=input,
                       timeout=timeout or self.timeout)

    def json(self, *args: str, timeout: float | None = None) -> Any:
        return json.loads(self(*args, "-o", "json", timeout=timeout))

    def apply(self, manifest: dict | list | str, namespace: str | None = None) -> str:
        if isinstance(manifest, dict):
            text = yaml.safe_dump(manifest)
        elif isinstance(manifest, list):
            text = yaml.safe_dump_all(manifest)
        else:
            text = manifest
        ns = ["-n", namespace] if namespace else []
        return self("apply", *ns, "-f", "-", input=text)

    def __repr__(self) -> str:
        return f"Kubectl(kubeconfig={str(self.kubeconfig)!r})"


# ---------------------------------------------------------------------------------------------
# The supervisor


@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    log: Path


@dataclass
class LocalCluster:
    """A local control plane whose state (certs, etcd data, logs, pids) lives in ``state_dir``."""

    state_dir: Path = field(default_factory=default_state_dir)
    nodepools_file: Path | None = None
    apiserver_port: int | None = None

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).expanduser().absolute()
        self.layout = Layout(self.state_dir)

    # -- state ------------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.layout.state.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.layout.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.layout.state)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def _bin_dir(self, state: dict | None = None) -> Path:
        return Path((state or {}).get("bin_dir") or binaries.bin_dir())

    def _components(self, state: dict | None) -> list[str]:
        return list((state or {}).get("components") or COMPONENTS)

    def status(self) -> list[ComponentStatus]:
        state = self._read_state()
        out = []
        for name in self._components(state):
            pid = procs.read_pid(self.layout.pid(name))
            expect = (state or {}).get("argv0", {}).get(name)
            out.append(ComponentStatus(name, pid, procs.alive(pid, expect), self.layout.log(name)))
        return out

    def is_running(self) -> bool:
        """All components of a started cluster are alive (not a health check; see ``healthy``)."""
        if self._read_state() is None:
            return False
        st = self.status()
        return bool(st) and all(s.running for s in st)

    def info(self) -> ClusterInfo:
        state = self._read_state()
        if state is None:
            raise ClusterError(f"no cluster in {self.state_dir} (run `tokenfactory cluster up`)")
        prom = state.get("prometheus_url")
        return ClusterInfo(
            kubeconfig=self.layout.kubeconfig,
            server=state["server"],
            state_dir=self.state_dir,
            ca_file=pki.Pki(self.layout.pki).ca_crt,
            prometheus_url=prom,
        )

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return kubectl(*args, kubeconfig=self.layout.kubeconfig, check=check, input=input,
                       timeout=timeout)

    # -- HTTP to the components -------------------------------------------------------------
    def _ssl(self, client: str | None, ca: str = "ca") -> ssl.SSLContext:
        p = pki.Pki(self.layout.pki)
        ctx = ssl.create_default_context(cafile=str(p.crt(ca)))
        if client:
            ctx.load_cert_chain(str(p.crt(client)), str(p.key(client)))
        return ctx

    def api(self, timeout: float = 10) -> httpx.Client:
        """An httpx client for the apiserver, authenticated as the admin (system:masters)."""
        state = self._read_state() or {}
        return httpx.Client(base_url=state.get("server", ""), verify=self._ssl("admin"),
                            timeout=timeout)

    def healthy(self) -> bool:
        try:
            with self.api(timeout=3) as c:
                return c.get("/readyz").status_code == 200
        except (httpx.HTTPError, OSError, ssl.SSLError):
            return False

    # -- up ---------------------------------------------------------------------------------
    def up(self, progress: Progress | None = print, timeout: float = 180,
           build: bool = True, with_prometheus: bool = False) -> ClusterInfo:
        """Start the cluster (building binaries first if needed) and wait until it is ready.

        A no-op when it already runs. When a previous cluster's state is there but some of its
        processes died, only those are restarted (same certificates, ports and etcd data).
        """
        say = progress or (lambda _m: None)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with procs.file_lock(self.layout.lock):
            return self._up(say, timeout, build, with_prometheus)

    def _up(self, say: Progress, timeout: float, build: bool, with_prometheus: bool) -> ClusterInfo:
        t0 = time.monotonic()
        state = self._read_state()
        if state is not None:
            st = {s.name: s for s in self.status()}
            want_prom = with_prometheus or PROMETHEUS in st
            if all(s.running for s in st.values()) and (not want_prom or PROMETHEUS in st):
                if self.healthy():
                    say(f"cluster already running in {self.state_dir} (apiserver {state['server']})"
                        "; nothing to do")
                    return self.info()
            dead = [n for n, s in st.items() if not s.running]
            busy = [f"{k}={v}" for k, v in (state.get("ports") or {}).items()
                    if procs.port_open(v)]
            if len(dead) == len(st) and busy:
                # Nothing of it runs (a crash or a reboot) and its ports went to someone else.
                say(f"stale cluster state in {self.state_dir} (nothing runs and ports "
                    f"{', '.join(busy)} are taken now): starting afresh")
                self._wipe()
                state = None
            elif dead:
                say(f"restarting stopped components of the cluster in {self.state_dir}: "
                    f"{', '.join(dead)}")
        if build:
            binaries.ensure((*binaries.CLUSTER_COMPONENTS, "crds"), progress=say)
        elif binaries.missing():
            raise ClusterError(f"binaries missing in {binaries.bin_dir()}: {binaries.missing()} "
                               "(run without --no-build, or build-binaries.sh)")
        bin_dir = binaries.bin_dir()
        if state is None:
            state = self._prepare(bin_dir, say)
        if with_prometheus and PROMETHEUS not in state["components"]:
            state["components"].append(PROMETHEUS)
            self._write_state(state)
        ports = Ports(**state["ports"])
        argv = command_lines(self.layout, ports, Path(state["bin_dir"]))
        state["argv0"] = {n: a[0] for n, a in argv.items()}
        self._write_state(state)
        status = {s.name: s for s in self.status()}
        deadline = time.monotonic() + timeout

        def start(name: str) -> None:
            if status.get(name) and status[name].running:
                return
            procs.start_detached(argv[name], self.layout.log(name), self.layout.pid(name),
                                 cwd=self.state_dir)
            say(f"started {name} (log: {self.layout.log(name)})")

        start("etcd")
        self._wait(say, "etcd", deadline, self._etcd_healthy)
        start("kube-apiserver")
        self._wait(say, "kube-apiserver /readyz", deadline, self.healthy,
                   watch=("etcd", "kube-apiserver"))
        self._install_crds(say)
        if not (status.get("kwok") and status["kwok"].running):
            # A kwok that died (a crash, or the session that ran it was killed) still holds the node
            # leases; a new kwok would leave every node (and every pod on it) alone until they expire.
            self.kubectl("delete", "leases", "--all", "-n", "kube-node-lease", "--ignore-not-found")
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            start(name)
        self._create_nodes(say)
        self._wait(say, "kube-controller-manager /healthz", deadline,
                   lambda: self._component_healthy(ports.controller_manager))
        self._wait(say, "kube-scheduler /healthz", deadline,
                   lambda: self._component_healthy(ports.scheduler))
        self._wait(say, "default ServiceAccount in namespace default", deadline,
                   self._default_sa_exists)
        n_nodes = len(nodepools.node_names(self._pools()))
        self._wait(say, f"{n_nodes} nodes Ready and untainted by the node controller", deadline,
                   self._nodes_ready)
        if PROMETHEUS in state["components"]:
            state["prometheus_url"] = self._start_prometheus(ports, say)
        state["ready_seconds"] = round(time.monotonic() - t0, 1)
        state["ready_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write_state(state)
        say(f"cluster ready in {state['ready_seconds']}s: apiserver {state['server']}, "
            f"{n_nodes} nodes")
        return self.info()

    def _install_crds(self, say: Progress) -> None:
        """Install the Gateway API and Inference Extension CRDs cached from their Go modules (server-side apply:
        the HTTPRoute CRD is too large for kubectl's last-applied annotation) and wait until they are served."""
        if binaries.crds_missing():
            say(f"Gateway API / Inference Extension CRDs not cached ({', '.join(binaries.crds_missing())}; "
                "build-binaries.sh crds fetches them): not installing them")
            return
        files = binaries.crd_files()
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager", "tokenfactory-cluster"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args, timeout=120)
        names = {yaml.safe_load(f.read_text())["metadata"]["name"] for f in files}

        def established() -> bool:  # (kubectl wait fails outright while a new CRD has no status yet)
            res = self.kubectl("get", "crd", "-o", "json", check=False)
            if res.returncode != 0:
                return False
            ok = {c["metadata"]["name"] for c in json.loads(res.stdout)["items"]
                  if any(x.get("type") == "Established" and x.get("status") == "True"
                         for x in (c.get("status") or {}).get("conditions") or [])}
            return names <= ok

        self._wait(say, f"{len(names)} Gateway API / Inference Extension CRDs Established",
                   time.monotonic() + 60, established, watch=("kube-apiserver",))
        say(f"installed {len(files)} CRDs: " + ", ".join(
            f"{n} v{v}" for n, v in binaries.crd_versions().items()))

    def _wipe(self) -> None:
        """Delete the state directory's content (the lock file stays: we hold it)."""
        for child in self.state_dir.iterdir():
            if child.name == self.layout.lock.name:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def _pools(self) -> list[nodepools.NodePool]:
        # The file the cluster was created with wins over the default on later calls.
        path = self.nodepools_file or (self._read_state() or {}).get("nodepools_file")
        return nodepools.load_nodepools(path)

    def _prepare(self, bin_dir: Path, say: Progress) -> dict[str, Any]:
        """First start: certificates, kubeconfigs, kwok config, ports; returns the new state."""
        lay = self.layout
        (lay.root / MARKER).write_text("state directory of a `tokenfactory cluster`\n")
        say(f"generating certificates in {lay.pki}")
        p = pki.generate(lay.pki, service_ip=SERVICE_IP)
        ports = Ports.pick(self.apiserver_port)
        if self.apiserver_port and procs.port_open(self.apiserver_port):
            raise ClusterError(f"port {self.apiserver_port} is already in use on 127.0.0.1")
        server = f"https://127.0.0.1:{ports.apiserver}"
        ca = p.ca_crt.read_bytes()
        for name, user, target in (
            ("admin", "kubernetes-admin", lay.kubeconfig),
            ("controller-manager", "system:kube-controller-manager",
             lay.component_kubeconfig("controller-manager")),
            ("scheduler", "system:kube-scheduler", lay.component_kubeconfig("scheduler")),
            ("kwok", "kwok-controller", lay.component_kubeconfig("kwok")),
        ):
            target.parent.mkdir(parents=True, exist_ok=True)
            doc = kubeconfig_dict(server, ca, p.crt(name).read_bytes(), p.key(name).read_bytes(), user)
            target.write_text(yaml.safe_dump(doc, sort_keys=False))
            target.chmod(0o600)
        lay.kwok_config.write_text(yaml.safe_dump_all(kwok_config_documents(), sort_keys=False))
        lay.nodes.write_text(yaml.safe_dump_all(nodepools.node_manifests(self._pools()),
                                                sort_keys=False))
        lay.etcd_data.mkdir(parents=True, exist_ok=True)
        lay.etcd_data.chmod(0o700)
        state = {
            "version": 1,
            "server": server,
            "ports": dataclasses.asdict(ports),
            "bin_dir": str(bin_dir),
            "components": list(COMPONENTS),
            "nodepools_file": str(Path(self.nodepools_file).absolute()) if self.nodepools_file else None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._write_state(state)
        return state

    def _wait(self, say: Progress, what: str, deadline: float, check: Callable[[], bool],
              watch: Sequence[str] | None = None) -> None:
        say(f"waiting for {what}")
        watch = list(watch or [n for n in COMPONENTS if self.layout.pid(n).exists()])
        while True:
            if check():
                return
            for s in self.status():
                if s.name in watch and not s.running:
                    raise ClusterError(
                        f"{s.name} exited while waiting for {what}; end of {s.log}:\n"
                        + procs.log_tail(s.log)
                    )
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {s.name} ({s.log}) ---\n{procs.log_tail(s.log, 10)}"
                                 for s in self.status())
                raise ClusterError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.3)

    def _etcd_healthy(self) -> bool:
        state = self._read_state() or {}
        port = state.get("ports", {}).get("etcd")
        try:
            r = httpx.get(f"https://127.0.0.1:{port}/health",
                          verify=self._ssl("apiserver-etcd-client", ca="etcd-ca"), timeout=2)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, OSError, ssl.SSLError, ValueError):
            return False

    def _component_healthy(self, port: int) -> bool:
        try:
            r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=self._ssl(None), timeout=2)
            return r.status_code == 200
        except (httpx.HTTPError, OSError, ssl.SSLError):
            return False

    def _default_sa_exists(self) -> bool:
        try:
            with self.api(timeout=3) as c:
                return c.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def _create_nodes(self, say: Progress) -> None:
        nodes = nodepools.node_manifests(self._pools())
        created = 0
        with self.api() as c:
            for node in nodes:
                r = c.post("/api/v1/nodes", json=node)
                if r.status_code == 201:
                    created += 1
                elif r.status_code != 409:
                    raise ClusterError(f"creating node {node['metadata']['name']}: "
                                       f"{r.status_code} {r.text[:300]}")
        say(f"nodes: {created} created, {len(nodes) - created} already there")

    def _nodes_ready(self) -> bool:
        names = set(nodepools.node_names(self._pools()))
        try:
            with self.api(timeout=5) as c:
                r = c.get("/api/v1/nodes")
        except (httpx.HTTPError, OSError):
            return False
        if r.status_code != 200:
            return False
        ready = set()
        for n in r.json().get("items", []):
            conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions") or []}
            taints = {t["key"] for t in n.get("spec", {}).get("taints") or []}
            if conds.get("Ready") == "True" and not taints & {
                "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"
            }:
                ready.add(n["metadata"]["name"])
        return names <= ready

    def _start_prometheus(self, ports: Ports, say: Progress) -> str:
        from .prometheus import PrometheusServer, ScrapeTarget

        p = pki.Pki(self.layout.pki)
        tls: dict[str, Any] = dict(scheme="https", ca_file=str(p.ca_crt), cert_file=str(p.crt("admin")),
                                   key_file=str(p.key("admin")))
        targets = [
            ScrapeTarget("prometheus", f"127.0.0.1:{ports.prometheus}"),
            ScrapeTarget("kube-apiserver", f"127.0.0.1:{ports.apiserver}", **tls),
            ScrapeTarget("kube-controller-manager", f"127.0.0.1:{ports.controller_manager}", **tls),
            ScrapeTarget("kube-scheduler", f"127.0.0.1:{ports.scheduler}", **tls),
            ScrapeTarget("kwok", f"127.0.0.1:{ports.kwok}"),
        ]
        prom = PrometheusServer(self.layout.prometheus, targets, scrape_interval="5s",
                                port=ports.prometheus, pid_file=self.layout.pid(PROMETHEUS),
                                log_file=self.layout.log(PROMETHEUS))
        if prom.is_running():
            return prom.url
        prom.start()
        say(f"started prometheus at {prom.url} (log: {self.layout.log(PROMETHEUS)})")
        return prom.url

    # -- down -------------------------------------------------------------------------------
    def down(self, progress: Progress | None = print, keep_state: bool = False) -> bool:
        """Stop every process this cluster started and remove its state directory.

        Returns False when there was nothing to stop or remove.
        """
        say = progress or (lambda _m: None)
        if not self.state_dir.exists():
            say(f"no cluster in {self.state_dir}")
            return False
        with procs.file_lock(self.layout.lock):
            state = self._read_state() or {}
            argv0 = state.get("argv0", {})
            names = self._components(state)
            extra = [f.stem for f in sorted((self.layout.root / "pids").glob("*.pid"))
                     if f.stem not in names]
            stopped = []
            for name in reversed(names + extra):
                pid_file = self.layout.pid(name)
                pid = procs.read_pid(pid_file)
                if procs.stop(pid, argv0.get(name)):
                    stopped.append(name)
                pid_file.unlink(missing_ok=True)
            say(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
            if keep_state:
                return True
            if (self.layout.root / MARKER).exists():
                shutil.rmtree(self.state_dir, ignore_errors=True)
                say(f"removed {self.state_dir}")
            else:
                say(f"{self.state_dir} does not look like a cluster state directory; left as is")
        return True
