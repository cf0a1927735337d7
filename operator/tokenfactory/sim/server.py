"""Real-time driving and HTTP serving of a :class:`~tokenfactory.sim.fleet.Fleet`.

``RealtimeRunner`` steps the fleet on the wall clock (fleet time = ``clock()``, epoch seconds by
default, so pod Ready timestamps from the cluster line up). ``SimServer`` serves ``/metrics``
(Prometheus text, vLLM names), ``/truth`` (JSON ground truth) and ``/healthz`` from a
``ThreadingHTTPServer``. Both share the runner's lock.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tokenfactory.sim.exposition import CONTENT_TYPE, render
from tokenfactory.sim.fleet import EngineSpec, Fleet


class RealtimeRunner:
    """Steps ``fleet`` every ``tick`` seconds of ``clock`` in a daemon thread."""

    def __init__(self, fleet: Fleet, *, tick: float = 1.0, clock: Callable[[], float] = time.time):
        self.fleet = fleet
        self.tick = tick
        self.clock = clock
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def step_now(self) -> None:
        with self.lock:
            now = self.clock()
            dt = now - self.fleet.now
            if dt > 0:
                # a long pause (suspended laptop...) is caught up in tick-sized steps
                self.fleet.run(now, max(self.tick, dt / 100.0))

    def set_engines(self, specs: Iterable[EngineSpec]) -> None:
        with self.lock:
            self.fleet.set_engines(list(specs), self.clock())

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.step_now()
            except Exception:  # pragma: no cover - keep serving; count it
                self.errors += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sim-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


class SimServer:
    def __init__(self, runner: RealtimeRunner, host: str = "127.0.0.1", port: int = 0, lazy_counters: bool = False):
        self.runner = runner
        self.lazy_counters = lazy_counters
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    with server_self.runner.lock:
                        body = render(server_self.runner.fleet, lazy_counters=server_self.lazy_counters)
                    self._send(200, body, CONTENT_TYPE)
                elif path == "/truth":
                    with server_self.runner.lock:
                        data = _json_safe(server_self.runner.fleet.truth())
                    self._send(200, json.dumps(data, indent=1).encode(), "application/json")
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sim-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
