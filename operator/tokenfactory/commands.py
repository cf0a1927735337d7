"""Core sub-commands: run (the operator), crd, render, validate."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tokenfactory.clitools import (
    EXIT_INVALID,
    EXIT_OK,
    CommandError,
    add_file_flag,
    add_output_flag,
    command,
    emit,
    epilog,
    format_objects,
    to_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the operator against the current Kubernetes context",
        description=(
            "Run the TokenFactory operator: reconcile every TokenFactory into one vLLM Deployment per pool and a "
            "Service, read token throughput and latency from Prometheus, export live cost metrics and plan replicas. "
            "Uses $KUBECONFIG / ~/.kube/config, or the pod's service account in a cluster."
        ),
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch only this namespace (repeatable); default: all namespaces")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces, cluster-wide (the default without -n)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)")
    p.add_argument("--metrics-port", type=int, default=8080, help="port for the Prometheus /metrics endpoint (default 8080; 0 disables)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="address for /metrics (default 0.0.0.0)")
    p.add_argument("--health-port", type=int, default=8081, help="port for the /healthz liveness endpoint (default 8081; 0 disables)")
    p.add_argument("--health-address", default="0.0.0.0", help="address for /healthz (default 0.0.0.0; the kubelet probes the pod IP)")
    p.add_argument("--prometheus-url", default=os.environ.get("TOKENFACTORY_PROMETHEUS_URL"),
                   help="the Prometheus the operator reads (default: $TOKENFACTORY_PROMETHEUS_URL); a TokenFactory's "
                        "spec.metrics.prometheusUrl is used instead only when it is allowed by --prometheus-url-allow")
    p.add_argument("--prometheus-url-allow", action="append", metavar="URL",
                   default=[u for u in os.environ.get("TOKENFACTORY_PROMETHEUS_URL_ALLOW", "").replace(",", " ").split() if u],
                   help="a Prometheus URL a TokenFactory may name in spec.metrics.prometheusUrl (repeatable; exact match, "
                        "trailing slash ignored; default: $TOKENFACTORY_PROMETHEUS_URL_ALLOW, comma-separated). Any other "
                        "URL is refused (MetricsAvailable=False, PrometheusURLNotAllowed) and never fetched")
    p.add_argument("--admission-policy", metavar="NAME", default=os.environ.get("TOKENFACTORY_ADMISSION_POLICY") or None,
                   help="the author-rights ValidatingAdmissionPolicy to rely on (its binding has the same name; default: "
                        "$TOKENFACTORY_ADMISSION_POLICY). The operator re-checks each spec against the policy's "
                        "TokenFactoryAllowList, and refuses Secret/ConfigMap references, non-default images, "
                        "tolerations and --trust-remote-code when the policy is not installed. Unset: no re-check (development)")
    p.add_argument("--prometheus-timeout", type=float, default=5.0, help="seconds before a Prometheus query counts as failed (default 5)")
    auth = p.add_argument_group(
        "Prometheus client (Prometheus, Mimir, Thanos, Cortex behind auth/TLS)",
        "Secrets come from files (mount a Secret), never from flags. Each flag defaults to the environment "
        "variable named in its help.")
    auth.add_argument("--prometheus-bearer-token-file", metavar="FILE",
                      help="send 'Authorization: Bearer <file content>', re-read on every query "
                           "($TOKENFACTORY_PROMETHEUS_BEARER_TOKEN_FILE)")
    auth.add_argument("--prometheus-username", metavar="NAME",
                      help="basic auth user name, with --prometheus-password-file ($TOKENFACTORY_PROMETHEUS_USERNAME)")
    auth.add_argument("--prometheus-password-file", metavar="FILE",
                      help="basic auth password file ($TOKENFACTORY_PROMETHEUS_PASSWORD_FILE)")
    auth.add_argument("--prometheus-ca-file", metavar="FILE",
                      help="PEM CA bundle to verify Prometheus' certificate with instead of the system CAs "
                           "($TOKENFACTORY_PROMETHEUS_CA_FILE)")
    auth.add_argument("--prometheus-cert-file", metavar="FILE",
                      help="TLS client certificate (PEM), with --prometheus-key-file ($TOKENFACTORY_PROMETHEUS_CERT_FILE)")
    auth.add_argument("--prometheus-key-file", metavar="FILE",
                      help="TLS client key (PEM) ($TOKENFACTORY_PROMETHEUS_KEY_FILE)")
    auth.add_argument("--prometheus-insecure-skip-verify", action="store_true", default=None,
                      help="do not verify Prometheus' TLS certificate (testing only; "
                           "$TOKENFACTORY_PROMETHEUS_INSECURE_SKIP_VERIFY=true)")
    auth.add_argument("--prometheus-header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="extra request header, repeatable, e.g. 'X-Scope-OrgID: tenant-a' for Mimir/Cortex/Thanos "
                           "($TOKENFACTORY_PROMETHEUS_HEADERS, one 'Name: value' per line)")
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

    p = sub.add_parser("crd", help="print the TokenFactory CRD generated from the API models",
                       description="Print the CustomResourceDefinition generated from tokenfactory.api. "
                                   "`kubectl apply -f -` it, or compare with crds/ (a test fails on drift).",
                       epilog=epilog("example: tokenfactory crd -f crds/tokenfactory.dev_tokenfactories.yaml"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_flag(p, ["yaml", "json", "name"], "yaml")
    add_file_flag(p)
    p.add_argument("--kind", choices=["TokenFactory", "TokenFactoryAllowList"], default="TokenFactory",
                   help="which CRD: TokenFactory (default) or TokenFactoryAllowList (the admission policy's allow-lists)")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("render", help="print the Deployments and routing objects a TokenFactory file turns into (offline)",
                       description="Validate a TokenFactory manifest with the same models the operator uses and print "
                                   "the manifests it reconciles into (one Deployment per pool plus the routing objects of "
                                   "spec.routing.mode: the Service; or one Service per pool and the HTTPRoute, its weights "
                                   "as if every pool's minReplicas were ready; or the InferencePool). "
                                   "Needs no cluster.",
                       epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="TokenFactory YAML file ('-' for stdin); may hold several documents")
    p.add_argument("--namespace", default=None, help="namespace to render into (default: the file's, else 'default')")
    add_output_flag(p, ["yaml", "json", "name"], "yaml")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("validate", help="check TokenFactory files offline, with field paths for every problem",
                       description="Validate TokenFactory manifests against the schema, the cross-field rules the "
                                   "apiserver enforces (CEL) and the GPU sheet. Notes (not errors) say where a pool's "
                                   "throughput is the GPU sheet's figure for another model.",
                       epilog=epilog("Exit status 1 when any file is invalid. With -o json the report goes to stdout "
                                     "either way: {valid, files: [{file, valid, problems, factories}]}."),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="YAML files ('-' for stdin)")
    add_output_flag(p, ["text", "json"], "text")
    p.set_defaults(func=cmd_validate)


# ------------------------------------------------------------------------------------------- crd


@command("crd")
def cmd_crd(args: argparse.Namespace) -> int:
    import yaml

    from tokenfactory.crd import crd_yaml

    text = crd_yaml(args.kind)
    if args.output != "yaml":
        text = format_objects([yaml.safe_load(text)], args.output)
    emit(text, args.file)
    return 0


# ------------------------------------------------------------------------------ render/validate


def _load_documents(path: str) -> list[Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise CommandError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not a text file (not UTF-8); want a TokenFactory YAML manifest") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CommandError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not docs:
        raise CommandError(f"{path}: no YAML documents")
    return docs


def _parse_docs(path: str) -> tuple[list[Any], list[str]]:
    """(factories, problems) of one file; a file that cannot be read or parsed raises CommandError."""
    from tokenfactory import api

    factories, problems = [], []
    for i, doc in enumerate(_load_documents(path)):
        where = f"{path}" + (f" (document {i + 1})" if i else "")
        try:
            factories.append(api.parse_object(doc))
        except api.SpecError as err:
            problems += [f"{where}: {p}" for p in err.problems]
    return factories, problems


def _validate_docs(path: str) -> list[Any]:
    factories, problems = _parse_docs(path)
    if problems:
        raise CommandError("\n".join(problems))
    return factories


def _factory_report(tf: Any) -> dict[str, Any]:
    from tokenfactory import gpusheet

    pools = tf.spec.resolve_pools()
    note = gpusheet.throughput_note(tf.spec.model.name, pools)
    return {
        "name": tf.name,
        "namespace": tf.namespace,
        "model": tf.spec.model.name,
        "pools": [{
            "name": p.name, "gpuType": p.gpu_type, "gpusPerReplica": p.gpus_per_replica,
            "minReplicas": p.min_replicas, "maxReplicas": p.max_replicas,
            "pricePerGpuHour": p.price_per_gpu_hour, "tokensPerSecondPerGpu": p.tokens_per_second_per_gpu,
            "kilowattsPerGpu": p.kilowatts_per_gpu, "sources": dict(p.sources),
        } for p in pools],
        "notes": [note] if note else [],
    }


@command("validate")
def cmd_validate(args: argparse.Namespace) -> int:
    files: list[dict[str, Any]] = []
    for path in args.files:
        try:
            factories, problems = _parse_docs(path)
        except CommandError as err:
            factories, problems = [], [err.message]
        files.append({"file": path, "valid": not problems, "problems": problems,
                      "factories": [_factory_report(tf) for tf in factories] if not problems else []})
    valid = all(f["valid"] for f in files)
    if args.output == "json":
        sys.stdout.write(to_json({"valid": valid, "files": files}))
    else:
        for f in files:
            for problem in f["problems"]:
                print(f"invalid: {problem}", file=sys.stderr)
            for tf in f["factories"]:
                pools = ", ".join(f"{p['name']} ({p['gpuType']}, ${p['pricePerGpuHour']:.2f}/GPU-h)" for p in tf["pools"])
                print(f"valid: {f['file']}: TokenFactory {tf['name']}: pools {pools}")
                for note in tf["notes"]:
                    print(f"note: {f['file']}: TokenFactory {tf['name']}: {note}")
    return EXIT_OK if valid else EXIT_INVALID


@command("render")
def cmd_render(args: argparse.Namespace) -> int:
    from tokenfactory import render, routing

    out = []
    for tf in _validate_docs(args.file):
        owner = render.Owner(name=tf.name, namespace=args.namespace or tf.namespace, uid="<uid of the TokenFactory>")
        replicas = render.clamp_replicas(tf.spec, {})
        out += render.render(owner, tf.spec, replicas, routing.plan(owner, tf.spec, replicas).weights)
    sys.stdout.write(format_objects(out, args.output))
    return 0


# ------------------------------------------------------------------------------------------- run


def prometheus_auth(args: argparse.Namespace, env: dict[str, str] | None = None) -> Any:
    """The Prometheus client settings: flags over environment variables; raises CommandError when unusable."""
    from dataclasses import replace

    from tokenfactory.metrics_source import AuthConfigError, PrometheusAuth, parse_header

    try:
        auth = PrometheusAuth.from_env(os.environ if env is None else env)
        flags = {k: getattr(args, f"prometheus_{k}") for k in ("bearer_token_file", "username", "password_file",
                                                               "ca_file", "cert_file", "key_file")}
        auth = replace(auth, **{k: v for k, v in flags.items() if v})
        if args.prometheus_insecure_skip_verify:
            auth = replace(auth, insecure_skip_verify=True)
        if args.prometheus_header:
            auth = replace(auth, headers=auth.headers + tuple(parse_header(h) for h in args.prometheus_header))
        auth.check()
    except AuthConfigError as err:
        raise CommandError(f"Prometheus client: {err}") from None
    return auth


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from tokenfactory.metrics_source import AUTH_ENV
    from tokenfactory.runner import run_operator

    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    # Every PrometheusSource of this process reads its settings from the environment (PrometheusAuth.from_env).
    auth = prometheus_auth(args)
    for key in AUTH_ENV.values():
        os.environ.pop(key, None)
    os.environ.update(auth.to_env())
    if not auth.empty:
        print(f"tokenfactory run: Prometheus client: {auth.describe()}", file=sys.stderr)
    return run_operator(
        namespaces=[] if args.all_namespaces else list(args.namespace),  # no namespace: the whole cluster
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        health_port=args.health_port,
        health_address=args.health_address,
        prometheus_url=args.prometheus_url,
        allowed_prometheus_urls=frozenset(args.prometheus_url_allow),
        admission_policy=args.admission_policy,
        prometheus_timeout=args.prometheus_timeout,
        log_format=args.log_format,
        verbose=args.verbose,
        leader_elect=args.leader_elect,
        lease={"namespace": args.lease_namespace, "name": args.lease_name, "lease_duration": args.lease_duration,
               "renew_deadline": args.lease_renew_deadline, "retry_period": args.lease_retry_period},
        concurrency=args.concurrency,
    )
