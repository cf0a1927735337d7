"""``tokenfactory dashboard`` and ``tokenfactory alerts``: print the generated Grafana dashboard and
Prometheus alerting rules (committed under deploy/ and charts/tokenfactory/files/; tests fail on drift)."""

from __future__ import annotations

import argparse

from tokenfactory.clitools import EXIT_STATUS_HELP, add_file_flag, command, emit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="print the Grafana dashboard (JSON) generated from code",
                       description="Print the TokenFactory Grafana dashboard JSON model. The committed copies are "
                                   "deploy/grafana/tokenfactory-dashboard.json and charts/tokenfactory/files/ "
                                   "(a test fails on drift): regenerate with -f for each.",
                       epilog=EXIT_STATUS_HELP)
    add_file_flag(p, repeatable=True)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("alerts", help="print the Prometheus alerting rules (YAML) generated from code",
                       description="Print the TokenFactory Prometheus rules file (groups:). The committed copies are "
                                   "deploy/prometheus/tokenfactory-alerts.yaml and charts/tokenfactory/files/ "
                                   "(a test fails on drift). Check with `promtool check rules FILE`.",
                       epilog=EXIT_STATUS_HELP)
    add_file_flag(p, repeatable=True)
    p.add_argument("--operator-job-regex", default=None,
                   help="regex matching the operator's scrape job for the operator-down alerts "
                        "(default: .*tokenfactory.*)")
    p.set_defaults(func=cmd_alerts)


def _emit(text: str, outputs: list[str]) -> int:
    emit(text, outputs)
    return 0


@command("dashboard")
def cmd_dashboard(args: argparse.Namespace) -> int:
    from tokenfactory.dashboard import dashboard_json

    return _emit(dashboard_json(), args.file)


@command("alerts")
def cmd_alerts(args: argparse.Namespace) -> int:
    from tokenfactory import alerts

    text = alerts.rules_yaml(args.operator_job_regex) if args.operator_job_regex else alerts.rules_yaml()
    return _emit(text, args.file)
