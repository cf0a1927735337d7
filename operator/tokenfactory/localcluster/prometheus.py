"""A real Prometheus for tests and the demo: the one ``build-binaries.sh prometheus`` builds from its
Go module into the binary cache (v3, with ``kubernetes_sd_configs``), else ``prometheus`` on PATH.

    prom = PrometheusServer(tmp_dir, [("vllm-sim", "127.0.0.1:8000", True)], scrape_interval="2s")
    prom.start()                  # free loopback port, own storage, waits for /-/ready
    prom.url                      # http://127.0.0.1:<port>
    prom.set_targets([...])       # rewrite the config and POST /-/reload
    prom.stop(); prom.start()     # same port and storage again (clients notice the outage)

With ``web=WebSecurity(...)`` it serves HTTPS (optionally requiring client certificates) and/or basic auth
through ``--web.config.file``, as many production Prometheus servers do; its own API calls authenticate too.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import procs


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape target. Tuples ``(job, "host:port", honor_labels)`` convert to this."""

    job: str
    address: str  # host:port
    honor_labels: bool = False
    metrics_path: str = "/metrics"
    scheme: str = "http"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, t: ScrapeTarget | Sequence[Any] | dict) -> ScrapeTarget:
        if isinstance(t, ScrapeTarget):
            return t
        if isinstance(t, dict):
            d = dict(t)
            if isinstance(d.get("labels"), dict):
                d["labels"] = tuple(sorted(d["labels"].items()))
            return cls(**d)
        if isinstance(t, (tuple, list)) and 2 <= len(t) <= 3:
            return cls(str(t[0]), str(t[1]), bool(t[2]) if len(t) == 3 else False)
        raise TypeError(f"not a scrape target: {t!r} (want (job, 'host:port', honor_labels))")

    def _job_key(self) -> tuple:
        return (self.honor_labels, self.metrics_path, self.scheme, self.ca_file, self.cert_file,
                self.key_file)


@dataclass(frozen=True)
class WebSecurity:
    """TLS and basic auth of Prometheus' own web endpoints (``--web.config.file``).

    ``cert_file``/``key_file``: the server certificate, signed by ``ca_file`` (which this class's own
    calls trust). ``client_ca_file``: require client certificates signed by it (``client_cert`` =
    (cert, key) is what this class's own calls present). ``basic_auth`` = (user, password): stored
    bcrypt-hashed in the web config.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    client_ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    basic_auth: tuple[str, str] | None = None

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    def web_config(self) -> dict:
        cfg: dict[str, Any] = {}
        if self.tls:
            tls: dict[str, Any] = {"cert_file": self.cert_file, "key_file": self.key_file}
            if self.client_ca_file:
                tls.update(client_auth_type="RequireAndVerifyClientCert", client_ca_file=self.client_ca_file)
            cfg["tls_server_config"] = tls
        if self.basic_auth:
            user, password = self.basic_auth
            cfg["basic_auth_users"] = {user: bcrypt_hash(password)}
        return cfg

    def client_kwargs(self) -> dict[str, Any]:
        """httpx keyword arguments for calls to this server."""
        out: dict[str, Any] = {}
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.client_cert:
                ctx.load_cert_chain(*self.client_cert)
            out["verify"] = ctx
        if self.basic_auth:
            out["auth"] = self.basic_auth
        return out


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash as Prometheus' web config wants it: the ``bcrypt`` module when installed, else the C
    library's crypt(3) with the Blowfish method ($2b$, glibc/libxcrypt)."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    except ImportError:
        pass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated (removed in Python 3.13); fine for a test helper on 3.11/3.12

    if crypt.METHOD_BLOWFISH not in crypt.methods:  # pragma: no cover - depends on the C library
        raise PrometheusError("no bcrypt available: pip install bcrypt")
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))


def default_binary() -> str:
    """``$TOKENFACTORY_PROMETHEUS``, else the cached build (``~/.cache/tokenfactory/bin/prometheus``),
    else ``prometheus`` on PATH (e.g. Debian's 2.42, which cannot load ``kubernetes_sd_configs``)."""
    from . import binaries

    env = os.environ.get("TOKENFACTORY_PROMETHEUS")
    if env:
        return env
    built = binaries.binary("prometheus")
    if os.access(built, os.X_OK):
        return str(built)
    return shutil.which("prometheus") or "/usr/bin/prometheus"


def render_config(targets: Iterable[ScrapeTarget | Sequence[Any]], scrape_interval: str = "2s",
                  evaluation_interval: str | None = None,
                  external_labels: dict[str, str] | None = None) -> dict:
    """The prometheus.yml document for ``targets`` (grouped into one scrape job per job name)."""
    jobs: dict[str, list[ScrapeTarget]] = {}
    for raw in targets:
        t = ScrapeTarget.of(raw)
        if jobs.get(t.job) and jobs[t.job][0]._job_key() != t._job_key():
            raise ValueError(f"job {t.job!r}: targets disagree on honor_labels/path/scheme/TLS")
        jobs.setdefault(t.job, []).append(t)
    cfg: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval or scrape_interval,
        },
        "scrape_configs": [],
    }
    if external_labels:
        cfg["global"]["external_labels"] = dict(external_labels)
    for job, ts in jobs.items():
        first = ts[0]
        sc: dict[str, Any] = {"job_name": job, "honor_labels": first.honor_labels,
                              "metrics_path": first.metrics_path, "scheme": first.scheme}
        if first.ca_file or first.cert_file:
            tls: dict[str, str | None] = {}
            if first.ca_file:
                tls["ca_file"] = first.ca_file
            if first.cert_file:
                tls["cert_file"] = first.cert_file
                tls["key_file"] = first.key_file
            sc["tls_config"] = tls
        groups: dict[tuple, list[str]] = {}
        for t in ts:
            groups.setdefault(t.labels, []).append(t.address)
        sc["static_configs"] = [
            {"targets": addrs, **({"labels": dict(labels)} if labels else {})}
            for labels, addrs in groups.items()
        ]
        cfg["scrape_configs"].append(sc)
    return cfg


class PrometheusServer:
    """A Prometheus process on 127.0.0.1 with its own config and storage under ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        targets: Iterable[ScrapeTarget | Sequence[Any]] = (),
        scrape_interval: str = "2s",
        port: int | None = None,
        binary: str | None = None,
        retention: str = "2d",
        pid_file: Path | None = None,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
        web: WebSecurity | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.targets = [ScrapeTarget.of(t) for t in targets]
        self.scrape_interval = scrape_interval
        self.port = port
        self.binary = binary or default_binary()
        self.retention = retention
        self.pid_file = Path(pid_file) if pid_file else self.directory / "prometheus.pid"
        self.log_file = Path(log_file) if log_file else self.directory / "prometheus.log"
        self.extra_args = list(extra_args)
        self.web = web

    # -- paths & config ---------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def storage_dir(self) -> Path:
        return self.directory / "data"

    @property
    def web_config_file(self) -> Path:
        return self.directory / "web.yml"

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("not started yet: no port chosen")
        scheme = "https" if self.web is not None and self.web.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _client_kwargs(self) -> dict[str, Any]:
        return self.web.client_kwargs() if self.web is not None else {}

    def config(self) -> dict:
        return render_config(self.targets, self.scrape_interval)

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        tmp.replace(self.config_file)
        if self.web is not None:
            self.web_config_file.write_text(yaml.safe_dump(self.web.web_config(), sort_keys=False))
        return self.config_file

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.storage_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
            *([f"--web.config.file={self.web_config_file}"] if self.web is not None else []),
            *self.extra_args,
        ]

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return procs.read_pid(self.pid_file)

    def is_running(self) -> bool:
        return procs.alive(self.pid, self.binary)

    def start(self, timeout: float = 30) -> PrometheusServer:
        """Start (or do nothing if running) and wait for ``/-/ready``. Reuses the port and the
        storage of an earlier start."""
        if self.is_running():
            return self
        if not Path(self.binary).exists():
            raise PrometheusError(f"prometheus binary not found at {self.binary} (build it: bash "
                                  "operator/tokenfactory/localcluster/build-binaries.sh prometheus, or set "
                                  "TOKENFACTORY_PROMETHEUS)")
        if self.port is None:
            self.port = procs.free_port()
        self.write_config()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while procs.port_open(self.port):  # the previous instance may still be releasing it
            if time.monotonic() > deadline:
                raise PrometheusError(f"port {self.port} is in use by something else")
            time.sleep(0.1)
        procs.start_detached(self.argv(), self.log_file, self.pid_file, cwd=self.directory)
        self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise PrometheusError(f"prometheus exited; end of {self.log_file}:\n"
                                      + procs.log_tail(self.log_file))
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1, **self._client_kwargs()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready after {timeout:.0f}s; end of log:\n"
                                      + procs.log_tail(self.log_file))
            time.sleep(0.1)

    def stop(self, timeout: float = 15) -> bool:
        """Stop it (SIGTERM, then SIGKILL). True when it was running."""
        was = procs.stop(self.pid, self.binary, timeout=timeout)
        self.pid_file.unlink(missing_ok=True)
        return was

    def restart(self, timeout: float = 30) -> PrometheusServer:
        self.stop()
        return self.start(timeout)

    def reload(self) -> None:
        """Rewrite the config from ``self.targets`` and ask the running server to reload it."""
        self.write_config()
        if not self.is_running():
            return
        r = httpx.post(f"{self.url}/-/reload", timeout=10, **self._client_kwargs())
        if r.status_code != 200:
            raise PrometheusError(f"reload failed: {r.status_code} {r.text.strip()}")

    def set_targets(self, targets: Iterable[ScrapeTarget | Sequence[Any]],
                    scrape_interval: str | None = None) -> None:
        self.targets = [ScrapeTarget.of(t) for t in targets]
        if scrape_interval:
            self.scrape_interval = scrape_interval
        self.reload()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API helpers -------------------------------------------------------------------
    def _get(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10, **self._client_kwargs())
        body = r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        """Instant query; returns the ``result`` list (vector samples)."""
        return self._get("/api/v1/query", query=promql)["result"]

    def active_targets(self) -> list[dict]:
        return self._get("/api/v1/targets", state="active")["activeTargets"]

    def wait_targets_up(self, jobs: Iterable[str] | None = None, timeout: float = 30) -> list[dict]:
        """Wait until every active target (of ``jobs``, if given) has health ``up``."""
        want = set(jobs) if jobs is not None else None
        deadline = time.monotonic() + timeout
        last: list[dict] = []
        while time.monotonic() < deadline:
            try:
                last = [t for t in self.active_targets()
                        if want is None or t["labels"].get("job") in want]
            except (httpx.HTTPError, PrometheusError, ValueError):
                last = []
            seen = {t["labels"].get("job") for t in last}
            if last and all(t["health"] == "up" for t in last) and (want is None or want <= seen):
                return last
            time.sleep(0.2)
        raise PrometheusError(
            "targets not up: " + ", ".join(
                f"{t['labels'].get('job')}@{t['scrapeUrl']}={t['health']} {t.get('lastError', '')}"
                for t in last
            ) or "no targets"
        )
