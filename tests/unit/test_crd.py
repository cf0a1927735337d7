from __future__ import annotations

from pathlib import Path

import yaml

from tokenfactory import api, crd

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


def test_hostile_input_rules_are_in_the_crd():
    """The admission rules of issue 14 (item 3) are in the generated CRD, where the apiserver enforces them."""
    root = schema()
    root_rules = {r["rule"]: r for r in root["x-kubernetes-validations"]}
    name_rule = next(r for r in root_rules.values() if "matches" in r["rule"])
    assert "self.metadata.name" in name_rule["rule"] and name_rule["fieldPath"] == ".metadata.name"
    assert "size(self.metadata.name) <= 63" in name_rule["rule"]
    assert any("size(self.metadata.name) + 1 + size(p.name) <= 63" in r for r in root_rules)
    spec = root["properties"]["spec"]["properties"]

    def rules(node):
        return {r["rule"]: r.get("fieldPath") for r in node.get("x-kubernetes-validations", [])}

    scaling = rules(spec["scaling"])
    assert [p for r, p in scaling.items() if r.endswith("duration(self.interval) >= duration('1s')")] == [".interval"]
    assert any(r.endswith("duration(self.interval) <= duration('1h')") for r in scaling)
    metrics = rules(spec["metrics"])
    assert [p for r, p in metrics.items() if r.endswith("duration(self.window) >= duration('5s')")] == [".window"]
    assert any("isURL(self.prometheusUrl)" in r and "getHostname()" in r for r in metrics)
    url = spec["metrics"]["properties"]["prometheusUrl"]
    assert url["maxLength"] == 2048 and url["pattern"].startswith("^https?://")
    # quantities: int-or-string with the quantity pattern, no negative integers
    cpu = spec["engine"]["properties"]["resources"]["properties"]["requests"]["additionalProperties"]
    assert cpu["x-kubernetes-int-or-string"] is True and cpu["pattern"] == api.QUANTITY and cpu["minimum"] == 0
    pools = spec["pools"]
    assert pools["maxItems"] == 8
    pool = pools["items"]["properties"]
    assert pool["name"]["maxLength"] == 24 and pool["name"]["pattern"] == api.DNS_LABEL
    tol = rules(pools["items"]["properties"]["tolerations"]["items"])
    assert set(tol.values()) == {".value", ".key", ".tolerationSeconds"}
    env = spec["engine"]["properties"]["env"]["items"]
    assert "!(has(self.value) && has(self.valueFrom))" in rules(env)
    assert "x-kubernetes-preserve-unknown-fields" not in env["properties"]["valueFrom"]
    sc = spec["engine"]["properties"]["securityContext"]["properties"]
    assert set(sc) == {"runAsUser", "runAsGroup", "fsGroup"} and sc["runAsUser"]["minimum"] == 1
    # every string in the spec is bounded (no megabyte strings), every map and list too
    unbounded = [path for path, node in walk(root["properties"]["spec"])
                 if node.get("type") == "string" and "maxLength" not in node and "enum" not in node]
    assert not unbounded, unbounded
    maps = [path for path, node in walk(root["properties"]["spec"])
            if isinstance(node.get("additionalProperties"), dict) and "maxProperties" not in node]
    assert not maps, maps
    lists = [path for path, node in walk(root["properties"]["spec"]) if node.get("type") == "array" and "maxItems" not in node]
    assert not lists, lists
