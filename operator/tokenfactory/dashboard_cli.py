"""``tokenfactory dashboard`` and ``tokenfactory alerts``: print the generated Grafana dashboard and
Prometheus alerting rules (committed under deploy/ and charts/tokenfactory/files/; tests fail on drift)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="print the Grafana dashboard (JSON) generated from code",
                       description="Print the TokenFactory Grafana dashboard JSON model. The committed copies are "
                                   "deploy/grafana/tokenfactory-dashboard.json and charts/tokenfactory/files/ "
                                   "(a test fails on drift): regenerate with -o for each.")
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE",
                   help="write to this file instead of stdout (repeatable)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("alerts", help="print the Prometheus alerting rules (YAML) generated from code",
                       description="Print the TokenFactory Prometheus rules file (groups:). The committed copies are "
                                   "deploy/prometheus/tokenfactory-alerts.yaml and charts/tokenfactory/files/ "
                                   "(a test fails on drift). Check with `promtool check rules FILE`.")
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE",
                   help="write to this file instead of stdout (repeatable)")
    p.add_argument("--operator-job-regex", default=None,
                   help="regex matching the operator's scrape job for the operator-down alerts "
                        "(default: .*tokenfactory.*)")
    p.set_defaults(func=cmd_alerts)


def _emit(text: str, outputs: list[str]) -> int:
    if not outputs:
        sys.stdout.write(text)
        return 0
    for out in outputs:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tokenfactory.dashboard import dashboard_json

    return _emit(dashboard_json(), args.output)


def cmd_alerts(args: argparse.Namespace) -> int:
    from tokenfactory import alerts

    text = alerts.rules_yaml(args.operator_job_regex) if args.operator_job_regex else alerts.rules_yaml()
    return _emit(text, args.output)
