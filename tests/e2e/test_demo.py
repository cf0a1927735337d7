"""`tokenfactory demo` as a newcomer (or CI) runs it: headless, one minute, against the e2e cluster.

The demo reuses the running cluster of the same state directory (TOKENFACTORY_CLUSTER_DIR) and
leaves it running; it starts its own Prometheus, simulator and operator and must leave none of them
behind. Its summary.json must hold sane figures and its plot must be a PNG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenfactory.localcluster import procs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        args = procs.cmdline(int(d.name))
        line = " ".join(args)
        if text in line and procs.alive(int(d.name)):
            out.append((int(d.name), line))
    return out


def test_headless_demo_runs_reports_and_cleans_up(cluster, kubectl, namespace, tmp_path):
    out = tmp_path / "demo-out"
    env = {**os.environ, "TOKENFACTORY_CLUSTER_DIR": str(cluster.state_dir)}
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "tokenfactory.cli", "demo", "--headless", "--duration", "60", "--output-dir", str(out),
         "--namespace", namespace],
        capture_output=True, text=True, env=env, timeout=420,
    )
    wall = time.monotonic() - t0
    log = res.stdout[-6000:] + "\n--- stderr ---\n" + res.stderr[-3000:]
    assert res.returncode == 0, log
    assert wall < 300, f"a 60 s demo took {wall:.0f}s:\n{log}"
    # headless output is plain lines: progress for the long steps, a summary at the end
    assert "waiting for the first pod of each pool to be Ready" in res.stdout
    assert "time compressed 1,440x" in res.stdout and "scaling.interval 30s -> 1s" in res.stdout, \
        "the demo says how it compressed the time settings"
    assert "\x1b[" not in res.stdout, "headless output has no terminal escapes"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["totalDollars"] > 0, summary
    assert summary["costPerMillionTokens"] > 0, summary
    assert summary["deliveredTokens"] > 0, summary
    assert isinstance(summary["decisions"], int) and summary["decisions"] >= 0
    assert summary["decisions"] == len(summary["decisionLog"])
    assert summary["sloAttainment"] is None or 0 <= summary["sloAttainment"] <= 1
    assert summary["durationSeconds"] >= 50, summary
    assert {"gb300", "h200"} <= set(summary["pools"]), summary["pools"]
    assert summary["pools"]["gb300"]["tokens"] > 0
    # what the run itself measured: per pool, $/Mtok is the dollars its GPUs cost over the tokens they
    # delivered, and per delivered token GB300 is far cheaper than H200 (both pools keep a replica serving)
    gb, h = summary["pools"]["gb300"], summary["pools"]["h200"]
    assert gb["tokens"] > 0 and h["tokens"] > 0, summary["pools"]
    for p in (gb, h):
        assert p["costPerMillionTokens"] == pytest.approx(p["dollars"] / p["tokens"] * 1e6, rel=1e-3), p
    assert gb["costPerMillionTokens"] < h["costPerMillionTokens"] / 5, (gb, h)

    png = out / "demo.png"
    assert png.exists() and png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 10_000

    # nothing the demo started is left: its pids are gone, and no process refers to its output folder
    pids = json.loads((out / "pids.json").read_text())
    assert {"prometheus", "operator", "sim"} <= set(pids)
    left = {name: pid for name, pid in pids.items() if name != "demo" and procs.alive(pid)}
    assert not left, f"demo processes still running: {left}"
    assert not _processes_mentioning(str(out)), _processes_mentioning(str(out))
    assert not [p for p in _processes_mentioning(f"--namespace {namespace}") if "tokenfactory.cli" in p[1]]

    # the cluster it found running is still running, and the factory is gone from the namespace
    assert kubectl.run("get", "nodes").returncode == 0
    assert "deepseek-r1" not in kubectl("get", "tokenfactories", "-n", namespace, "-o", "name")
