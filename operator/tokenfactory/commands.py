"""Core sub-commands: run (the operator), crd, render, validate."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator against the current Kubernetes context",
        description=(
            "Run the TokenFactory operator: reconcile every TokenFactory into one vLLM Deployment per pool and a "
            "Service, read token throughput and latency from Prometheus, export live cost metrics and plan replicas. "
            "Uses $KUBECONFIG / ~/.kube/config, or the pod's service account in a cluster."
        ),
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces, cluster-wide (the default without -n)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)")
    p.add_argument("--metrics-port", type=int, default=8080, help="port for the Prometheus /metrics endpoint (default 8080; 0 disables)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="address for /metrics (default 0.0.0.0)")
    p.add_argument("--health-port", type=int, default=8081, help="port for the /healthz liveness endpoint (default 8081; 0 disables)")
    p.add_argument("--prometheus-url", default=os.environ.get("TOKENFACTORY_PROMETHEUS_URL"),
                   help="Prometheus base URL used when a TokenFactory sets no spec.metrics.prometheusUrl "
                        "(default: $TOKENFACTORY_PROMETHEUS_URL)")
    p.add_argument("--prometheus-timeout", type=float, default=5.0, help="seconds before a Prometheus query counts as failed (default 5)")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log format (default text)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ha = p.add_argument_group("high availability (several replicas: only the holder of a Lease acts)")
    ha.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                    help="elect a leader on a coordination.k8s.io Lease before acting (default on; "
                         "--no-leader-elect only for a single replica)")
    ha.add_argument("--lease-name", default="tokenfactory-operator", help="name of the Lease (default tokenfactory-operator)")
    ha.add_argument("--lease-namespace", default=None,
                    help="namespace of the Lease (default: $POD_NAMESPACE, else the first -n namespace, else default)")
    ha.add_argument("--lease-duration", type=float, default=15.0,
                    help="seconds a Lease not renewed stays valid; a killed leader is replaced after about this long (default 15)")
    ha.add_argument("--lease-renew-deadline", type=float, default=10.0,
                    help="seconds the leader keeps acting without renewing before it stops (default 10; < --lease-duration)")
    ha.add_argument("--lease-retry-period", type=float, default=2.0,
                    help="seconds between Lease renewals and takeover attempts (default 2; < --lease-renew-deadline)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="factories reconciled at the same time (workers of the work queue; default 8)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("crd", help="print the TokenFactory CRD (YAML) generated from the API models",
                       description="Print the CustomResourceDefinition generated from tokenfactory.api. "
                                   "`kubectl apply -f -` it, or compare with crds/ (a test fails on drift).")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("render", help="print the Deployments and Service a TokenFactory file turns into (offline)",
                       description="Validate a TokenFactory manifest with the same models the operator uses and print "
                                   "the manifests it reconciles into (one Deployment per pool plus the Service), as YAML. "
                                   "Needs no cluster. Exit code 2 on invalid input.")
    p.add_argument("file", help="TokenFactory YAML file ('-' for stdin); may hold several documents")
    p.add_argument("--namespace", default=None, help="namespace to render into (default: the file's, else 'default')")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("validate", help="check TokenFactory files offline, with field paths for every problem",
                       description="Validate TokenFactory manifests against the schema, the cross-field rules the "
                                   "apiserver enforces (CEL) and the GPU sheet. Exit code 0 when all are valid, 2 otherwise.")
    p.add_argument("files", nargs="+", help="YAML files ('-' for stdin)")
    p.set_defaults(func=cmd_validate)


# ------------------------------------------------------------------------------------------- crd


def cmd_crd(args: argparse.Namespace) -> int:
    from tokenfactory.crd import crd_yaml

    text = crd_yaml()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# ------------------------------------------------------------------------------ render/validate


def _load_documents(path: str) -> list[Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise _InputError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise _InputError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not docs:
        raise _InputError(f"{path}: no YAML documents")
    return docs


class _InputError(Exception):
    pass


def _validate_docs(path: str) -> list[Any]:
    from tokenfactory import api

    factories, problems = [], []
    for i, doc in enumerate(_load_documents(path)):
        where = f"{path}" + (f" (document {i + 1})" if i else "")
        try:
            factories.append(api.parse_object(doc))
        except api.SpecError as err:
            problems += [f"{where}: {p}" for p in err.problems]
    if problems:
        raise _InputError("\n".join(problems))
    return factories


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            factories = _validate_docs(path)
        except _InputError as err:
            print(f"invalid: {err}", file=sys.stderr)
            failed = True
            continue
        for tf in factories:
            pools = ", ".join(f"{p.name} ({p.gpu_type}, ${p.price_per_gpu_hour:.2f}/GPU-h)" for p in tf.spec.resolve_pools())
            print(f"valid: {path}: TokenFactory {tf.name}: pools {pools}")
    return EXIT_BAD_INPUT if failed else 0


def cmd_render(args: argparse.Namespace) -> int:
    import yaml

    from tokenfactory import render

    try:
        factories = _validate_docs(args.file)
    except _InputError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = []
    for tf in factories:
        owner = render.Owner(name=tf.name, namespace=args.namespace or tf.namespace, uid="<uid of the TokenFactory>")
        out += render.render(owner, tf.spec)
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False, width=120))
    return 0


# ------------------------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from tokenfactory.runner import run_operator

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    return run_operator(
        namespaces=[] if args.all_namespaces else list(args.namespace),  # no namespace: the whole cluster
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        health_port=args.health_port,
        prometheus_url=args.prometheus_url,
        prometheus_timeout=args.prometheus_timeout,
        log_format=args.log_format,
        verbose=args.verbose,
        leader_elect=args.leader_elect,
        lease={"namespace": args.lease_namespace, "name": args.lease_name, "lease_duration": args.lease_duration,
               "renew_deadline": args.lease_renew_deadline, "retry_period": args.lease_retry_period},
        concurrency=args.concurrency,
    )
