"""Share one local cluster between concurrent test sessions (or demos) without pulling it away
from under each other.

``shared_cluster(lc)`` registers the calling process as a user of the cluster, starts the cluster
when needed, and on exit stops it only when (a) a ``shared_cluster`` started it, not a person
running ``tokenfactory cluster up``, and (b) no other live process still uses it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from . import procs
from .cluster import ClusterInfo, LocalCluster, Progress

STARTED_BY_SESSION = ".started-by-session"


def _users_dir(lc: LocalCluster) -> Path:
    # Next to the state directory, which `down` removes.
    return lc.state_dir.parent / f".{lc.state_dir.name}.users"


def _live_users(users: Path) -> list[int]:
    out = []
    for f in users.glob("*"):
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if procs.alive(pid):
            out.append(pid)
        else:
            f.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def shared_cluster(lc: LocalCluster, progress: Progress | None = None, keep: bool = False,
                   timeout: float = 180) -> Iterator[ClusterInfo]:
    """Yield a ready cluster; see the module docstring for who stops it. ``keep`` never stops."""
    users = _users_dir(lc)
    users.mkdir(parents=True, exist_ok=True)
    lock = users / ".lock"
    me = os.getpid()
    with procs.file_lock(lock):
        others = [p for p in _live_users(users) if p != me]
        # Ours to stop later only if no cluster state was there at all: a stopped or crashed
        # cluster of someone's `tokenfactory cluster up` gets resumed, and left running.
        fresh = not lc.is_running() and not (lc.state_dir / "state.json").exists() and not others
        (users / str(me)).write_text("")
    try:
        try:
            info = lc.up(progress=progress, timeout=timeout)
        except BaseException:
            if fresh:  # stop what we started, keep the logs for the post-mortem
                lc.down(progress=progress, keep_state=True)
            raise
        if fresh:
            (lc.state_dir / STARTED_BY_SESSION).write_text(f"{me}\n")
        yield info
    finally:
        with procs.file_lock(lock):
            (users / str(me)).unlink(missing_ok=True)
            if not keep and not _live_users(users) and (lc.state_dir / STARTED_BY_SESSION).exists():
                lc.down(progress=progress)
