"""The ``tokenfactory`` command: one entry point, one sub-command per job.

Each sub-command lives next to the code it drives and registers itself through a
``register(subparsers)`` function; this module only wires them together. Modules are imported
lazily: a known command imports only the module that owns it (so ``tokenfactory run`` never loads
the tooling), and ``--help`` imports the others one by one, listing a tooling command whose optional
dependencies are not installed with the extra to install instead of failing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

import tokenfactory
from tokenfactory.clitools import EXIT_STATUS_HELP

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

# Which module owns a command (a command missing here still works: every module is then loaded).
COMMAND_OWNERS = {
    "run": "tokenfactory.commands",
    "crd": "tokenfactory.commands",
    "render": "tokenfactory.commands",
    "validate": "tokenfactory.commands",
    "cluster": "tokenfactory.localcluster.cli",
    "cost": "tokenfactory.cost_cli",
    "plan": "tokenfactory.plan_cli",
    "sim": "tokenfactory.sim.cli",
    "dashboard": "tokenfactory.dashboard_cli",
    "alerts": "tokenfactory.dashboard_cli",
    "demo": "tokenfactory.demo",
}

# Optional dependencies of the tooling, by top-level import name -> the extra that installs them.
EXTRAS = {
    "cryptography": "cluster",
    "rich": "demo",
    "matplotlib": "demo",
    "numpy": "sim",
}
# Tooling commands -> the extra they need (checked before the command starts anything).
COMMAND_EXTRAS = {
    "cluster": "cluster",
    "sim": "sim",
    "demo": "demo",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def absent_extra(command: str | None) -> str | None:
    """The extra ``command`` needs and that is not installed (None: nothing missing)."""
    extra = COMMAND_EXTRAS.get(command or "")
    if extra is None:
        return None
    needed = [m for m, e in EXTRAS.items() if e == extra or (extra == "demo" and e == "cluster")]
    return extra if not all(_installed(m) for m in needed) else None


def missing_extra(err: ImportError) -> str | None:
    """The extra that provides the module ``err`` could not import (None: not an optional dependency)."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    return EXTRAS.get(name)


def _extra_hint(extra: str, what: str) -> str:
    return f"{what} needs the optional dependencies of the '{extra}' extra: pip install 'tokenfactory[{extra}]'"


def _command_word(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` whose command is known, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="tokenfactory",
        description=(
            "TokenFactory: serve an LLM with vLLM across GPU node pools and know, live, what a "
            "million tokens costs on each pool and on the whole fleet."
        ),
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tokenfactory {tokenfactory.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = COMMAND_OWNERS.get(_command_word(argv or []) or "")
    for name in [owner] if owner else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            extra = missing_extra(err)
            if extra is None:
                raise
            for command, mod in COMMAND_OWNERS.items():
                if mod == name:
                    _unavailable(sub, command, _extra_hint(extra, f"tokenfactory {command}"))
            continue
        module.register(sub)
    return parser


def _unavailable(sub: argparse._SubParsersAction, command: str, hint: str) -> None:
    p = sub.add_parser(command, help=f"(not installed) {hint}", description=hint, add_help=True)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def say(_args: argparse.Namespace) -> int:
        print(hint, file=sys.stderr)
        return 2

    p.set_defaults(func=say)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    extra = absent_extra(args.command)
    if extra is not None:
        print(_extra_hint(extra, f"tokenfactory {args.command}"), file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ImportError as err:
        extra = missing_extra(err)
        if extra is None:
            raise
        print(_extra_hint(extra, f"tokenfactory {args.command}"), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
