"""Shared conventions of the ``tokenfactory`` sub-commands (kubectl's where it has one).

* ``-o/--output FORMAT`` selects a format (``yaml``, ``json``, ``name``, or ``text``); it never names a file.
* ``-f/--file FILE`` writes to a file instead of stdout (or use shell redirection).
* Errors go to stderr as one ``tokenfactory <command>: error: ...`` line per problem, never a traceback.
* Exit status: 0 success, 1 invalid input or a failed operation, 2 usage error (argparse: unknown or
  malformed flags).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

EXIT_STATUS_HELP = (
    "exit status: 0 success, 1 invalid input or failure (the error is printed on stderr), "
    "2 usage error (unknown or malformed flags)"
)


class CommandError(Exception):
    """A failure to report on stderr without a traceback; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_INVALID):
        super().__init__(message)
        self.message = message
        self.code = code


def add_output_flag(parser: argparse.ArgumentParser, formats: Iterable[str], default: str, what: str = "output") -> None:
    formats = list(formats)
    parser.add_argument(
        "-o", "--output", choices=formats, default=default, metavar="FORMAT",
        help=f"{what} format: {', '.join(formats)} (default {default})",
    )


def add_file_flag(parser: argparse.ArgumentParser, repeatable: bool = False) -> None:
    if repeatable:
        parser.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                            help="write to this file instead of stdout (repeatable; the folder must exist)")
    else:
        parser.add_argument("-f", "--file", default=None, metavar="FILE",
                            help="write to this file instead of stdout (the folder must exist)")


def epilog(extra: str = "") -> str:
    return (extra + "\n\n" if extra else "") + EXIT_STATUS_HELP


def emit(text: str, files: str | Iterable[str] | None = None) -> None:
    """Write ``text`` to each file, or to stdout when none; a file that cannot be written is a CommandError."""
    if isinstance(files, str):
        files = [files]
    files = list(files or [])
    if not files:
        sys.stdout.write(text)
        return
    for out in files:
        try:
            Path(out).write_text(text)
        except OSError as err:
            raise CommandError(f"{out}: cannot write: {err.strerror or err}") from None


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Decorator for a sub-command function: CommandError and OSError become one stderr line and an
    exit status instead of a traceback; a closed stdout (``| head``) ends quietly."""

    def wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            try:
                return int(func(args) or 0)
            except CommandError as err:
                for line in err.message.splitlines() or [""]:
                    print(f"tokenfactory {name}: error: {line}", file=sys.stderr)
                return err.code
            except BrokenPipeError:
                try:
                    sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the flush at exit
                except OSError:
                    pass
                return EXIT_OK
            except OSError as err:
                where = f"{err.filename}: " if getattr(err, "filename", None) else ""
                print(f"tokenfactory {name}: error: {where}{err.strerror or err}", file=sys.stderr)
                return EXIT_INVALID

        return run

    return wrap


# ------------------------------------------------------------------------------- object printing


def object_name(obj: dict[str, Any]) -> str:
    """kubectl's ``-o name``: ``<kind>.<group>/<name>`` (``<kind>/<name>`` for the core group)."""
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    kind = str(obj.get("kind", "")).lower()
    return f"{kind}{'.' + group if group else ''}/{obj.get('metadata', {}).get('name', '')}"


def format_objects(objects: list[dict[str, Any]], fmt: str) -> str:
    """Kubernetes objects as ``yaml`` (multi-document), ``json`` (one object, or a v1 List as kubectl
    prints several) or ``name``."""
    if fmt == "name":
        return "".join(object_name(o) + "\n" for o in objects)
    if fmt == "json":
        doc: Any = objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump_all(objects, sort_keys=False, width=120)
    raise ValueError(f"unknown format {fmt!r}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"
