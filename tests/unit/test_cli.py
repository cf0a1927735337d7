from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tokenfactory import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "deepseek-r1-h200-gb300.yaml"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_prints_the_manifests(capsys):
    code, out, err = run(capsys, "render", str(EXAMPLE), "--namespace", "llm")
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["Deployment", "Deployment", "Service"]
    assert {d["metadata"]["namespace"] for d in docs} == {"llm"}


def test_validate_ok(capsys):
    code, out, _ = run(capsys, "validate", str(EXAMPLE))
    assert code == 0 and "valid:" in out and "gb300 (gb300, $2.65/GPU-h)" in out


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["spec"]["pools"][0].update(minReplicas=4), "spec.pools[0]: minReplicas (4) must be less than or equal to maxReplicas (2)"),
        (lambda d: d["spec"].update(scaling={"mode": "auto"}), "spec.scaling.mode: must be one of 'Auto', 'Recommend' or 'Off'"),
        (lambda d: d["spec"]["pools"][1].update(gpuType="b200x", pricePerGpuHour=None), "spec.pools[1].pricePerGpuHour"),
        (lambda d: d.update(kind="Deployment"), "kind: must be TokenFactory"),
    ],
)
@pytest.mark.parametrize("command", ["render", "validate"])
def test_bad_input_exit_2_with_field_path(tmp_path, capsys, command, edit, expected):
    doc = yaml.safe_load(EXAMPLE.read_text())
    edit(doc)
    doc["spec"]["pools"] = [{k: v for k, v in p.items() if v is not None} for p in doc["spec"]["pools"]]
    f = tmp_path / "tf.yaml"
    f.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, command, str(f))
    assert code == 2 and out == ""
    assert expected in err and "Traceback" not in err


def test_not_yaml_and_missing_file(tmp_path, capsys):
    f = tmp_path / "broken.yaml"
    f.write_text("spec: [unclosed\n")
    code, _, err = run(capsys, "validate", str(f))
    assert code == 2 and "not valid YAML (line" in err
    code, _, err = run(capsys, "render", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read" in err


def test_crd_command_matches_generator(capsys):
    from tokenfactory.crd import crd_yaml

    code, out, _ = run(capsys, "crd")
    assert code == 0 and out == crd_yaml()


def subcommands():
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(action.choices)


@pytest.mark.parametrize("command", subcommands())
def test_help_on_every_command(command):
    proc = subprocess.run([sys.executable, "-m", "tokenfactory.cli", command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: tokenfactory" in proc.stdout and len(proc.stdout) > 200
