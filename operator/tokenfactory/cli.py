"""The ``tokenfactory`` command: one entry point, one sub-command per job.

Each sub-command lives next to the code it drives and registers itself through a
``register(subparsers)`` function; this module only wires them together, so ``--help`` stays
fast (heavy imports happen inside the command functions).
"""

from __future__ import annotations

import argparse
import importlib
import sys

import tokenfactory

# Modules that expose ``register(subparsers) -> None``. Each adds its own sub-commands and sets
# ``func`` (a callable taking the parsed args and returning an exit code) on its parsers.
COMMAND_MODULES = [
    "tokenfactory.commands",
    "tokenfactory.localcluster.cli",
    "tokenfactory.cost_cli",
    "tokenfactory.plan_cli",
    "tokenfactory.sim.cli",
    "tokenfactory.dashboard_cli",
    "tokenfactory.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenfactory",
        description=(
            "TokenFactory: serve an LLM with vLLM across GPU node pools and know, live, what a "
            "million tokens costs on each pool and on the whole fleet."
        ),
    )
    parser.add_argument("--version", action="version", version=f"tokenfactory {tokenfactory.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
