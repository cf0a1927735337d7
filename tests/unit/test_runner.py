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


def test_memo_holds_the_reconciler_and_a_shared_wake_registry():
    rec = Reconciler(FakeKube())
    memo = handlers.operator_memo(rec)
    per_object = type(memo)(memo)  # kopf gives each object a shallow copy: the registry is shared
    per_object.wakes[("llm", "tf")] = event = __import__("asyncio").Event()
    handlers._wake(memo, "llm", "tf")
    assert memo.reconciler is rec and event.is_set()
