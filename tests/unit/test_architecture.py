"""The operator apart from its tooling: what it imports, what it depends on, what runs without extras."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "operator" / "tokenfactory"

# What `tokenfactory run` loads, and the core sub-commands (crd, render, validate).
OPERATOR_ENTRY = ["tokenfactory.runner", "tokenfactory.handlers", "tokenfactory.pipeline", "tokenfactory.commands",
                  "tokenfactory.cli"]
TOOLING = ("tokenfactory.sim", "tokenfactory.localcluster", "tokenfactory.demo", "tokenfactory.demo_report",
           "tokenfactory.bench", "bench")
OPERATOR_DEPENDENCIES = {"kopf", "lightkube", "pydantic", "prometheus-client", "httpx", "pyyaml"}
EXTRA_ONLY = ("matplotlib", "rich", "cryptography")


def module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / "operator" / rel.with_suffix(".py"), ROOT / "operator" / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
    """Every tokenfactory/bench module ``name`` imports, at the top or inside functions (cli's
    importlib table excepted: it is checked by running it below)."""
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return {m for m in out if m.split(".")[0] in ("tokenfactory", "bench")}


def reachable(entries: list[str]) -> dict[str, str]:
    """module -> the module that imported it first, from ``entries`` on."""
    seen = {e: "" for e in entries}
    todo = list(entries)
    while todo:
        mod = todo.pop()
        for dep in imports_of(mod):
            parent = dep
            while parent and module_file(parent) is None:
                parent = parent.rpartition(".")[0]
            chain = [p for p in (dep.rpartition(".")[0], dep) if p and module_file(p)]
            for m in chain:
                if m not in seen:
                    seen[m] = mod
                    todo.append(m)
    return seen


def test_no_operator_module_imports_the_tooling():
    seen = reachable(OPERATOR_ENTRY)
    bad = {m: by for m, by in seen.items() if m.startswith(TOOLING) and m.split(".")[:2] != ["tokenfactory", "cli"]}
    assert not bad, f"operator modules import tooling (module <- imported by): {bad}"
    assert "tokenfactory.pipeline.reconciler" in seen and "tokenfactory.planner" in seen  # the walk does walk


def test_the_walk_would_see_a_tooling_import(tmp_path, monkeypatch):
    # the checker is not vacuous: demo imports localcluster and demo_report
    seen = reachable(["tokenfactory.demo"])
    assert "tokenfactory.localcluster" in seen and "tokenfactory.demo_report" in seen


def test_runtime_dependencies_are_the_operators_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
    assert names == OPERATOR_DEPENDENCIES
    dev = " ".join(project["optional-dependencies"]["dev"])
    assert "cluster" in dev and "demo" in dev and "ruff" in dev and "mypy" in dev


BLOCK_EXTRAS = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRA_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in a lean install)", name=name)
sys.meta_path.insert(0, Block())
"""


def run_lean(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where matplotlib, rich and cryptography cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCK_EXTRAS + code], capture_output=True, text=True, timeout=120)


def test_operator_runs_without_the_extras():
    res = run_lean("import tokenfactory.runner, tokenfactory.handlers, tokenfactory.pipeline, tokenfactory.commands\n"
                   "from tokenfactory import cli\n"
                   "sys.argv = ['tokenfactory', 'run', '--help']\n"
                   "try:\n    cli.main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
                   f"assert not [m for m in sys.modules if m.split('.')[0] in {EXTRA_ONLY!r}]\n"
                   "assert not [m for m in sys.modules if m.startswith(('tokenfactory.sim', 'tokenfactory.localcluster', 'tokenfactory.demo'))]\n")
    assert res.returncode == 0, res.stderr
    assert "--all-namespaces" in res.stdout and "--prometheus-url" in res.stdout


@pytest.mark.parametrize("argv, extra", [(["cluster", "up"], "cluster"), (["demo", "--headless"], "demo")])
def test_tooling_without_its_extra_names_the_extra(argv, extra):
    res = run_lean(f"from tokenfactory import cli\nsys.exit(cli.main({argv!r}))\n")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"pip install 'tokenfactory[{extra}]'" in res.stderr
    res = run_lean("from tokenfactory import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n")
    assert res.returncode == 0 and "run the operator" in res.stdout, res.stderr
