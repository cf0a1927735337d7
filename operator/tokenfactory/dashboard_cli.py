"""``tokenfactory dashboard`` and ``tokenfactory alerts``: print the generated Grafana dashboard and
Prometheus alerting rules (committed under deploy/ and charts/tokenfactory/files/; tests fail on drift)."""

from __future__ import annotations

import argparse
import sys

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
                       description="Print the TokenFactory Prometheus rules file (groups:) with the default "
                                   "settings. The committed copy is deploy/prometheus/tokenfactory-alerts.yaml; the "
                                   "chart's template copy (--chart) is charts/tokenfactory/files/"
                                   "tokenfactory-alerts.yaml (a test fails on drift). Check with `promtool check "
                                   "rules FILE`; runbooks: docs/runbooks.md.",
                       epilog=EXIT_STATUS_HELP)
    add_file_flag(p, repeatable=True)
    p.add_argument("--operator-selector", default=None, metavar="MATCHERS",
                   help="PromQL label matchers that select the operator's own scrape target in the "
                        "operator-down alerts (default: the labels the chart's ServiceMonitor sets, "
                        'app_kubernetes_io_part_of="tokenfactory", app_kubernetes_io_component="operator")')
    p.add_argument("--chart", action="store_true",
                   help="print the chart's copy instead: thresholds as {{ .threshold }}, filled in from "
                        "prometheusRule.alerts in the chart's values")
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

    if args.chart:
        if args.operator_selector:
            print("tokenfactory alerts: --chart takes no --operator-selector (the chart sets the labels)",
                  file=sys.stderr)
            return 2
        text = alerts.chart_rules_yaml()
    else:
        text = alerts.rules_yaml(args.operator_selector) if args.operator_selector else alerts.rules_yaml()
    return _emit(text, args.file)
