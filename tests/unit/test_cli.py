from __future__ import annotations

import argparse
import json
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
def test_bad_input_exit_1_with_field_path(tmp_path, capsys, command, edit, expected):
    doc = yaml.safe_load(EXAMPLE.read_text())
    edit(doc)
    doc["spec"]["pools"] = [{k: v for k, v in p.items() if v is not None} for p in doc["spec"]["pools"]]
    f = tmp_path / "tf.yaml"
    f.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, command, str(f))
    assert code == 1 and out == ""
    assert expected in err and "Traceback" not in err


def test_not_yaml_and_missing_file(tmp_path, capsys):
    f = tmp_path / "broken.yaml"
    f.write_text("spec: [unclosed\n")
    code, _, err = run(capsys, "validate", str(f))
    assert code == 1 and "not valid YAML (line" in err
    code, _, err = run(capsys, "render", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err


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
    assert "exit status:" in proc.stdout, f"`tokenfactory {command} --help` does not document its exit status"


def all_parsers():
    """(command path, parser) for the top-level parser and every sub-command, nested ones included."""
    out, todo = [], [("tokenfactory", cli.build_parser())]
    while todo:
        path, parser = todo.pop()
        out.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{path} {name}", sub) for name, sub in action.choices.items()]
    return out


def test_every_flag_of_every_subcommand_has_help():
    def helped(a: argparse.Action) -> bool:
        if isinstance(a, argparse._SubParsersAction):  # a sub-command list: every sub-command has a help line
            return len(a._choices_actions) == len(a.choices) and all(c.help for c in a._choices_actions)
        return bool(a.help) and a.help != argparse.SUPPRESS

    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}"
               for path, parser in all_parsers() for a in parser._actions if not helped(a)]
    assert len(all_parsers()) > 10 and missing == []


def test_output_flag_selects_a_format_never_a_file():
    """-o/--output takes a format from a fixed list (as kubectl's); writing a file is -f/--file."""
    for path, parser in all_parsers():
        for a in parser._actions:
            if "-o" in a.option_strings or "--output" in a.option_strings:
                assert a.choices and set(a.choices) <= {"yaml", "json", "name", "text"}, path
            if "-f" in a.option_strings:
                assert a.option_strings == ["-f", "--file"] and a.metavar == "FILE", path


def test_unknown_flag_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "tokenfactory.cli", "validate", "--nope", str(EXAMPLE)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unrecognized arguments: --nope" in proc.stderr


@pytest.mark.parametrize("argv, needle", [
    (["render", "{png}"], "not a text file"),
    (["validate", "{png}"], "not a text file"),
    (["crd", "-f", "/nonexistent/dir/crd.yaml"], "/nonexistent/dir/crd.yaml: cannot write: No such file or directory"),
    (["dashboard", "-f", "/nonexistent/dir/d.json"], "cannot write"),
    (["render", "{dir}"], "cannot read: Is a directory"),
])
def test_errors_go_to_stderr_without_traceback(tmp_path, argv, needle):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    argv = [a.format(png=png, dir=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "tokenfactory.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("fmt", ["yaml", "json", "name"])
def test_render_output_formats(capsys, fmt):
    code, out, err = run(capsys, "render", str(EXAMPLE), "-o", fmt)
    assert code == 0, err
    if fmt == "name":
        assert out.splitlines() == ["deployment.apps/deepseek-r1-gb300", "deployment.apps/deepseek-r1-h200",
                                    "service/deepseek-r1"]
        return
    docs = list(yaml.safe_load_all(out)) if fmt == "yaml" else json.loads(out)["items"]
    if fmt == "json":
        assert json.loads(out)["kind"] == "List"
    assert [d["kind"] for d in docs] == ["Deployment", "Deployment", "Service"]


@pytest.mark.parametrize("fmt", ["yaml", "json", "name"])
def test_crd_output_formats_and_file(tmp_path, capsys, fmt):
    from tokenfactory.crd import crd_yaml

    target = tmp_path / "crd.out"
    code, out, _ = run(capsys, "crd", "-o", fmt, "-f", str(target))
    assert code == 0 and out == ""
    text = target.read_text()
    if fmt == "name":
        assert text == "customresourcedefinition.apiextensions.k8s.io/tokenfactories.tokenfactory.dev\n"
    else:
        loaded = json.loads(text) if fmt == "json" else yaml.safe_load(text)
        assert loaded == yaml.safe_load(crd_yaml())


def test_validate_json_report(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["pools"][0]["minReplicas"] = 9
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "validate", "-o", "json", str(EXAMPLE), str(bad))
    assert code == 1
    report = json.loads(out)
    assert report["valid"] is False
    ok, broken = report["files"]
    assert ok["valid"] and ok["factories"][0]["name"] == "deepseek-r1"
    assert {p["name"]: p["pricePerGpuHour"] for p in ok["factories"][0]["pools"]} == {"gb300": 2.65, "h200": 1.41}
    assert not broken["valid"] and any("minReplicas (9)" in p for p in broken["problems"])
    code, out, _ = run(capsys, "validate", "-o", "json", str(EXAMPLE))
    assert code == 0 and json.loads(out)["valid"] is True


def test_validate_notes_sheet_throughput_for_another_model(tmp_path, capsys):
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["model"]["name"] = "meta-llama/Llama-3.1-70B-Instruct"
    doc["spec"]["pools"][1]["tokensPerSecondPerGpu"] = 400  # measured for this model: no note for h200
    f = tmp_path / "llama.yaml"
    f.write_text(yaml.safe_dump(doc))
    code, out, _ = run(capsys, "validate", str(f))
    assert code == 0
    (note,) = [line for line in out.splitlines() if line.startswith("note:")]
    assert "pool gb300 is the GPU sheet's figure for deepseek-ai/DeepSeek-R1, not measured for " \
           "meta-llama/Llama-3.1-70B-Instruct" in note and "h200" not in note
    code, out, _ = run(capsys, "validate", "-o", "json", str(f))
    assert json.loads(out)["files"][0]["factories"][0]["notes"] == [note.split(": TokenFactory deepseek-r1: ", 1)[1]]
    code, out, _ = run(capsys, "validate", str(EXAMPLE))  # DeepSeek-R1 itself: the sheet is its own profile
    assert code == 0 and "note:" not in out
