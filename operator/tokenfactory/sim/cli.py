"""``tokenfactory sim`` (work in progress)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("sim", help="run the vLLM fleet simulator")
    p.set_defaults(func=lambda args: 0)
