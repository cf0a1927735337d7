from __future__ import annotations

from pathlib import Path

import yaml

from tokenfactory import crd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "tokenfactory.dev_tokenfactories.yaml"


def test_committed_crd_matches_the_models():
    assert COMMITTED.read_text() == crd.crd_yaml(), "crds/ drifted from tokenfactory/api.py: run `tokenfactory crd -f crds/tokenfactory.dev_tokenfactories.yaml`"


def walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def schema():
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_is_structural():
    for path, node in walk(schema()):
        for banned in ("$ref", "anyOf", "title", "$defs", "examples"):
            assert banned not in node, f"{banned} at {path}"
        if "additionalProperties" in node:
            assert "properties" not in node, path
            assert isinstance(node["additionalProperties"], dict), path


def test_every_spec_field_has_a_description():
    spec = schema()["properties"]["spec"]
    missing = [path for path, node in walk(spec) if isinstance(node, dict) and "type" in node
               and "description" not in node and not path.endswith(".items") and not path.endswith("additionalProperties")]
    assert not missing, missing


def test_names_printer_columns_and_rules():
    c = crd.build_crd()
    assert c["metadata"]["name"] == "tokenfactories.tokenfactory.dev"
    assert c["spec"]["names"]["shortNames"] == ["tf"] and c["spec"]["scope"] == "Namespaced"
    v = c["spec"]["versions"][0]
    assert v["subresources"] == {"status": {}}
    assert [col["name"] for col in v["additionalPrinterColumns"] if not col.get("priority")] == [
        "Model", "Replicas", "Tok/s", "$/Mtok", "$/h", "Ready", "Age"]
    spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = {r["rule"] for r in spec["x-kubernetes-validations"]}
    assert "size(self.pools) > 0" in rules
    pool = spec["properties"]["pools"]["items"]
    assert "self.minReplicas <= self.maxReplicas" in {r["rule"] for r in pool["x-kubernetes-validations"]}
    assert pool["properties"]["pricePerGpuHour"]["exclusiveMinimum"] is True
    assert spec["properties"]["scaling"]["properties"]["mode"]["enum"] == ["Auto", "Recommend", "Off"]
    assert spec["properties"]["pools"]["x-kubernetes-list-type"] == "map"
    # optional pricing fields have no default: the GPU sheet fills them in the operator
    assert "default" not in pool["properties"]["pricePerGpuHour"]
    assert yaml.safe_load(crd.crd_yaml())["kind"] == "CustomResourceDefinition"
