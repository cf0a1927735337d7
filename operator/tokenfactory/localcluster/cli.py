"""``tokenfactory cluster up | down | status | kubeconfig``: the local control plane."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from tokenfactory.clitools import EXIT_STATUS_HELP

DESCRIPTION = textwrap.dedent(
    """\
    A real, secured Kubernetes control plane on 127.0.0.1 with simulated GPU node pools.

    `up` builds the binaries from Go modules if they are not cached yet (etcd, kube-apiserver,
    kube-controller-manager, kube-scheduler, kubectl, kwok, and Prometheus for the tests; see
    build-binaries.sh), then runs
    etcd (TLS), kube-apiserver (TLS, client certificates, Node,RBAC), kube-controller-manager,
    kube-scheduler and the kwok controller as detached processes, creates the node pools of
    nodepools.yaml (24 x 8 H200, 18 x 4 GB300, 3 CPU nodes) and waits until the cluster is usable.
    Pods scheduled on those nodes become Running and Ready without running anything.

    State (certificates, etcd data, logs, pid files, kubeconfig) lives in --state-dir, default
    $TOKENFACTORY_CLUSTER_DIR or ~/.cache/tokenfactory/cluster; binaries in
    $TOKENFACTORY_CACHE/bin (default ~/.cache/tokenfactory/bin).
    """
)


def _state_dir_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="cluster state directory (default: $TOKENFACTORY_CLUSTER_DIR or "
        "~/.cache/tokenfactory/cluster)",
    )
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    parent = _state_dir_parent()
    cluster = subparsers.add_parser(
        "cluster",
        help="run a real local Kubernetes control plane with simulated GPU nodes",
        description=DESCRIPTION,
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    cluster.set_defaults(func=lambda args: (cluster.print_help(), 2)[1])

    up = sub.add_parser(
        "up",
        parents=[parent],
        help="start the cluster (build binaries if missing) and wait until it is ready",
        description="Start the local cluster and wait until the apiserver is ready, every node is "
        "Ready and the default ServiceAccount exists. A no-op when it already runs; restarts only "
        "the components that died otherwise. Prints how to point kubectl at it.",
        epilog=EXIT_STATUS_HELP,
    )
    up.add_argument("--timeout", type=float, default=180, metavar="SECONDS",
                    help="how long to wait for readiness once binaries are there (default 180)")
    up.add_argument("--no-build", action="store_true",
                    help="fail instead of building missing binaries")
    up.add_argument("--with-prometheus", action="store_true",
                    help="also run a Prometheus (stopped by `down`) scraping the control plane")
    up.add_argument("--apiserver-port", type=int, default=None, metavar="PORT",
                    help="fixed apiserver port on 127.0.0.1 (default: a free one)")
    up.add_argument("--nodepools", default=None, metavar="FILE",
                    help="node pools file (default: the packaged nodepools.yaml)")
    up.add_argument("-q", "--quiet", action="store_true", help="print only the final instructions")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down",
        parents=[parent],
        help="stop every process of the cluster and remove its state",
        description="Stop every process the cluster started (SIGTERM to each process group, "
        "SIGKILL after 15s) and delete the state directory (certificates, etcd data, logs).",
        epilog=EXIT_STATUS_HELP,
    )
    down.add_argument("--keep-state", action="store_true",
                      help="stop the processes but keep the state directory (a later `up` resumes)")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser(
        "status",
        parents=[parent],
        help="show which components run, with pids, ports and logs",
        description="Show each component's pid and whether it runs, the apiserver URL and its "
        "health.",
        epilog="exit status: 0 when everything runs and the apiserver is ready, 1 otherwise (or no cluster), "
        "2 usage error (unknown or malformed flags)",
    )
    status.add_argument("-o", "--output", choices=["text", "json"], default="text", metavar="FORMAT",
                        help="output format: text or json (default text)")
    status.add_argument("--json", dest="output", action="store_const", const="json",
                        help="same as -o json (kept for older scripts)")
    status.set_defaults(func=cmd_status)

    kc = sub.add_parser(
        "kubeconfig",
        parents=[parent],
        help="print the admin kubeconfig's path (or its content with --print)",
        description="Print the path of the admin kubeconfig (client certificate in "
        "O=system:masters). Use: export KUBECONFIG=$(tokenfactory cluster kubeconfig)",
        epilog=EXIT_STATUS_HELP,
    )
    kc.add_argument("--print", dest="content", action="store_true",
                    help="print the kubeconfig file itself")
    kc.set_defaults(func=cmd_kubeconfig)


def _say(msg: str) -> None:
    """Progress line; a closed stdout (`| head`) must not abort a half-started cluster."""
    try:
        print(f"[cluster] {msg}", flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _cluster(args: argparse.Namespace, **kw):
    from .cluster import LocalCluster, default_state_dir

    return LocalCluster(args.state_dir or default_state_dir(), **kw)


def cmd_up(args: argparse.Namespace) -> int:
    from .binaries import BuildError
    from .cluster import ClusterError

    lc = _cluster(args, apiserver_port=args.apiserver_port, nodepools_file=args.nodepools)
    progress = None if args.quiet else _say
    try:
        info = lc.up(progress=progress, timeout=args.timeout, build=not args.no_build,
                     with_prometheus=args.with_prometheus)
    except BuildError as exc:
        print(f"cluster up failed while building binaries: {exc}", file=sys.stderr)
        return 1
    except ClusterError as exc:
        print(f"cluster up failed: {exc}", file=sys.stderr)
        print(f"logs: {lc.layout.logs}; clean up with: tokenfactory cluster down"
              + (f" --state-dir {args.state_dir}" if args.state_dir else ""), file=sys.stderr)
        return 1
    print()
    print(f"Cluster is up: {info.server}")
    print("Point kubectl (and the operator) at it with:")
    print(f"  export KUBECONFIG={info.kubeconfig}")
    print(f"  {_bin_dir() / 'kubectl'} get nodes")
    if info.prometheus_url:
        print(f"Prometheus: {info.prometheus_url}")
    return 0


def _bin_dir():
    from .binaries import bin_dir

    return bin_dir()


def cmd_down(args: argparse.Namespace) -> int:
    lc = _cluster(args)
    lc.down(progress=_say, keep_state=args.keep_state)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lc = _cluster(args)
    state = lc._read_state()
    if state is None:
        if args.output == "json":
            print(json.dumps({"state_dir": str(lc.state_dir), "exists": False}))
        else:
            print(f"no cluster in {lc.state_dir}")
        return 1
    comps = lc.status()
    healthy = lc.healthy()
    ok = healthy and all(c.running for c in comps)
    if args.output == "json":
        print(json.dumps({
            "state_dir": str(lc.state_dir),
            "exists": True,
            "server": state.get("server"),
            "kubeconfig": str(lc.kubeconfig),
            "apiserver_ready": healthy,
            "ports": state.get("ports"),
            "prometheus_url": state.get("prometheus_url"),
            "components": [{"name": c.name, "pid": c.pid, "running": c.running, "log": str(c.log)}
                           for c in comps],
        }, indent=2))
        return 0 if ok else 1
    print(f"state dir:  {lc.state_dir}")
    print(f"apiserver:  {state.get('server')}  ({'ready' if healthy else 'NOT ready'})")
    print(f"kubeconfig: {lc.kubeconfig}")
    if state.get("prometheus_url"):
        print(f"prometheus: {state['prometheus_url']}")
    ports = state.get("ports") or {}
    print("ports:      " + ", ".join(f"{k}={v}" for k, v in ports.items()))
    for c in comps:
        print(f"  {c.name:<24} {'running' if c.running else 'STOPPED':<8} pid {c.pid or '-':<8} {c.log}")
    return 0 if ok else 1


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    lc = _cluster(args)
    if not lc.kubeconfig.exists():
        print(f"no cluster in {lc.state_dir} (run `tokenfactory cluster up`)", file=sys.stderr)
        return 1
    if args.content:
        sys.stdout.write(lc.kubeconfig.read_text())
    else:
        print(lc.kubeconfig)
    return 0
