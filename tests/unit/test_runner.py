"""`tokenfactory run` wiring: namespace scope, kopf memo, clean-up of the clients."""

from __future__ import annotations

import pytest

from tokenfactory import cli, handlers, runner
from tokenfactory.kube import FakeKube
from tokenfactory.metrics_source import FakeMetricsSource, SourcesByUrl
from tokenfactory.pipeline import Reconciler


@pytest.fixture
def captured(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run_operator", lambda **kw: calls.append(kw) or 0)
    return calls


@pytest.mark.parametrize("argv, namespaces", [
    ([], []),
    (["-A"], []),
    (["--all-namespaces"], []),
    (["-n", "llm", "--namespace", "batch"], ["llm", "batch"]),
])
def test_run_scope(captured, argv, namespaces):
    assert cli.main(["run", *argv]) == 0
    assert captured[0]["namespaces"] == namespaces


def test_run_refuses_both_scopes(captured, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "-A", "-n", "llm"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert captured == []


class ClosingKube(FakeKube):
    closed = False

    async def close(self) -> None:
        self.closed = True


class ClosingSource(FakeMetricsSource):
    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_cleanup_closes_the_clients_and_stops_the_exporter():
    kube, source, stopped = ClosingKube(), ClosingSource(), []
    rec = Reconciler(kube, sources=SourcesByUrl(preset={"http://prom:9090": source}))
    memo = handlers.operator_memo(rec, on_shutdown=lambda: stopped.append(True))
    await handlers._cleanup(memo=memo)
    assert kube.closed and source.closed and stopped == [True]


def test_run_passes_leader_election_flags(captured):
    assert cli.main(["run", "--lease-duration", "6", "--lease-renew-deadline", "4", "--lease-retry-period", "1",
                     "--lease-namespace", "ops", "--concurrency", "3"]) == 0
    kw = captured[0]
    assert kw["leader_elect"] is True and kw["concurrency"] == 3
    assert kw["lease"] == {"namespace": "ops", "name": "tokenfactory-operator", "lease_duration": 6.0,
                           "renew_deadline": 4.0, "retry_period": 1.0}
    assert cli.main(["run", "--no-leader-elect"]) == 0 and captured[1]["leader_elect"] is False


def test_lease_namespace_order(monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert runner.lease_namespace(None, []) == "default"
    assert runner.lease_namespace(None, ["llm", "b"]) == "llm"
    monkeypatch.setenv("POD_NAMESPACE", "tokenfactory-system")
    assert runner.lease_namespace(None, ["llm"]) == "tokenfactory-system"
    assert runner.lease_namespace("ops", ["llm"]) == "ops"


def test_memo_holds_the_reconciler_and_the_controller():
    rec = Reconciler(FakeKube())
    memo = handlers.operator_memo(rec, controller="the queue")
    per_object = type(memo)(memo)  # kopf gives each object a shallow copy: the controller is shared
    assert per_object.reconciler is rec and per_object.controller == "the queue"


def test_kopf_request_retries_never_run_out():
    import itertools

    delays = list(itertools.islice(iter(handlers.RetryForever()), 50))
    assert len(delays) == 50 and max(delays) <= 2.0
    assert list(itertools.islice(iter(handlers.RetryForever()), 2)) == [0.5, 1.0]  # re-iterable: fresh per request


def test_one_log_line_per_outage():
    import logging

    f = runner._OnePerOutage(quiet_seconds=30)

    def rec(msg, at):
        r = logging.LogRecord("kopf", logging.ERROR, __file__, 1, msg, (), None)
        r.created = at
        return r

    seen = [f.filter(rec(f"Request attempt #{i} failed; will retry: GET /apis -> refused", 100 + 2 * i)) for i in range(20)]
    assert seen.count(True) == 1 and seen[0]
    assert f.filter(rec("something else", 120))
    assert f.filter(rec("Request attempt #1 failed; will retry: GET /apis", 200))  # a new outage: one line again
