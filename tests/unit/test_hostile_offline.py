"""The hostile-spec corpus (tests/e2e/hostile_corpus.py) through the offline validator (`tokenfactory
validate`, api.parse_object): it must agree with the apiserver on every case (tests/e2e/test_hostile.py
holds the apiserver's side), naming the same field or one of its parents."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from tokenfactory import api

_path = Path(__file__).resolve().parents[1] / "e2e" / "hostile_corpus.py"
_spec = importlib.util.spec_from_file_location("hostile_corpus", _path)
corpus = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("hostile_corpus", corpus)
corpus = sys.modules["hostile_corpus"]
_spec.loader.exec_module(corpus)


def problems(case) -> list[str]:
    doc = yaml.safe_load(case.text())
    try:
        api.parse_object(doc)
    except api.SpecError as err:
        return err.problems
    return []


def related(problem: str, field: str) -> bool:
    path = problem.split(": ", 1)[0]
    return path.startswith(field) or field.startswith(path)


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda c: c.id)
def test_offline_validation_agrees_with_the_apiserver(case):
    found = problems(case)
    outcome = case.outcome
    if isinstance(outcome, corpus.Rejected):
        assert found, f"{case.id}: accepted offline"
        assert any(related(p, outcome.offline or outcome.field) for p in found), found
        assert all(len(p) < 2000 for p in found), "a problem line echoes a huge value"
    elif isinstance(outcome, corpus.Degraded) and outcome.reason == "InvalidSpec":
        # the GPU sheet is known offline too: the same field the operator names in its condition
        assert found and all(p.startswith("spec.pools[0].") for p in found), found
    else:
        assert not found, found


def test_corpus_size():
    assert len(corpus.CASES) >= 60
    kinds = {type(c.outcome).__name__ for c in corpus.CASES}
    assert kinds == {"Rejected", "Degraded", "Accepted"}
