"""The status the pipeline writes is built through api.TokenFactoryStatus and fits the generated CRD schema.

A field the models lack would be dropped silently by the apiserver (structural pruning), and a type
mismatch would fail the status patch; both are caught here on a status with every figure filled in
(metrics read, a decision made). tests/e2e/test_status_e2e.py writes the same to a real apiserver.
"""

from __future__ import annotations

import dataclasses

import pytest

from tokenfactory import api, crd
from tokenfactory.pipeline.model import PoolFigures, TotalFigures
from tokenfactory.pipeline.status import to_patch_body

from test_measure import NAME, NS, Rig


def status_schema():
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def check(value, schema, path="status"):
    """A small structural validator: types, known properties, enums, required (what the apiserver checks)."""
    t = schema.get("type")
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t in kinds:
        assert isinstance(value, kinds[t]), f"{path}: {value!r} is not {t}"
    elif t == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r} is not an integer"
    elif t == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path}: {value!r} is not a number"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if t == "object" and "properties" in schema:
        unknown = set(value) - set(schema["properties"])
        assert not unknown, f"{path}: fields not in the CRD schema (would be pruned): {sorted(unknown)}"
        for k in schema.get("required", []):
            assert k in value, f"{path}.{k} is required"
        for k, v in value.items():
            check(v, schema["properties"][k], f"{path}.{k}")
    if t == "array":
        for i, v in enumerate(value):
            check(v, schema["items"], f"{path}[{i}]")


async def full_status(example) -> dict:
    """A status after a pass that read metrics and scaled (every figure and lastDecision present)."""
    rig = Rig(example)
    rig.obj["spec"]["objectives"]["maxCostPerMillionTokens"] = 0.2
    await rig.step()
    rig.prom.set_pool(NS, NAME, "gb300", generation_tokens_per_second=24_000.0, prompt_tokens_per_second=30_000.0,
                      requests_waiting=200.0, requests_running=256.0, ttft_p95_seconds=0.8, itl_p95_seconds=0.03,
                      requests_per_second=48.0)
    rig.prom.set_pool(NS, NAME, "h200", generation_tokens_per_second=700.0, ttft_p95_seconds=1.5, itl_p95_seconds=0.05)
    await rig.step()
    return rig.status()


async def test_written_status_fits_the_crd_schema(two_pool_example):
    status = await full_status(two_pool_example)
    assert status["lastDecision"]["changes"] and status["pools"][0]["costPerMillionTokens"] is not None
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded", "MetricsAvailable", "BudgetExceeded", "ThroughputProfile",
                                                         "Routed"}
    check(status, status_schema())
    # and it round-trips through the model unchanged (nothing the model would drop)
    assert to_patch_body(api.TokenFactoryStatus.model_validate(status)) == status


def test_validator_rejects_what_the_apiserver_would():
    with pytest.raises(AssertionError, match="would be pruned"):
        check({"poolFigures": {}}, status_schema())
    with pytest.raises(AssertionError, match="is not an integer"):
        check({"readyReplicas": "2"}, status_schema())


@pytest.mark.parametrize("figures, model", [(PoolFigures, api.PoolStatus), (TotalFigures, api.TokenFactoryStatus)])
def test_pipeline_figures_are_status_fields(figures, model):
    # the status models ignore unknown fields when parsing, so a misnamed figure would vanish: every one must exist
    missing = {f.name for f in dataclasses.fields(figures)} - set(model.model_fields)
    assert not missing, missing
