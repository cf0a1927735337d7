"""Generate the TokenFactory CustomResourceDefinition from the pydantic models in ``api``.

pydantic emits JSON Schema (2020-12); Kubernetes wants a *structural* OpenAPI v3 schema. The
conversion inlines ``$ref``s, turns ``Optional[X]`` into plain optional ``X``, ``int | str`` into
``x-kubernetes-int-or-string``, numeric exclusive bounds into the OpenAPI 3.0 form, drops keywords
Kubernetes rejects (title, examples, additionalProperties: false), gives object-valued fields a ``{}``
default so their nested defaults apply, and keeps descriptions, defaults, enums, patterns, bounds and
the ``x-kubernetes-*`` extensions (CEL rules, list types).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tokenfactory import api

OPTIONAL = "x-tokenfactory-optional"  # internal marker, removed before the schema is returned
DROP = {"title", "examples", "$defs", "propertyNames"}  # map keys are checked by CEL rules instead


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)  # the field's own description/default win over the class docstring
        return target
    return node


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = _resolve(node, defs)
    if "anyOf" in node:
        options = [_resolve(o, defs) for o in node["anyOf"]]
        non_null = [o for o in options if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        optional = rest.get("default", 0) is None
        if optional:
            rest.pop("default")
        types = sorted(o.get("type", "") for o in non_null)
        if len(non_null) == 1:
            merged = dict(non_null[0])
            merged.update(rest)
            converted = _convert(merged, defs)
            if optional:
                converted[OPTIONAL] = True  # an optional object stays absent: no {} default (see below)
            return converted
        if types == ["integer", "string"]:
            # A quantity: the string's pattern/length and the integer's bounds both apply (each to its own type).
            bounds = {k: v for o in non_null for k, v in o.items() if k not in ("type", "title")}
            return _convert({**bounds, **rest, "x-kubernetes-int-or-string": True}, defs)
        raise ValueError(f"cannot express anyOf {types} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP:
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue
        if key == "description":
            out[key] = " ".join(value.split())
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
            continue
        if key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
            continue
        if key == "properties":
            out[key] = {k: _convert(v, defs) for k, v in value.items()}
            continue
        if key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs)
            continue
        out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" in out:
        required = set(out.get("required", []))
        for name, prop in out["properties"].items():
            if prop.pop(OPTIONAL, False):
                continue
            if (prop.get("type") == "object" and "properties" in prop and "default" not in prop
                    and name not in required and not prop.get("required")):
                prop["default"] = {}
    return out


def openapi_schema(model: type[api.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    out = _convert(raw, raw.get("$defs", {}))
    _strip_marker(out)
    return out


def _strip_marker(node: Any) -> None:
    if isinstance(node, dict):
        node.pop(OPTIONAL, None)
        for v in node.values():
            _strip_marker(v)
    elif isinstance(node, list):
        for v in node:
            _strip_marker(v)


def _spec_schema() -> dict[str, Any]:
    schema = openapi_schema(api.TokenFactorySpec)
    pools = schema["properties"]["pools"]
    pools["x-kubernetes-list-type"] = "map"
    pools["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def _status_schema() -> dict[str, Any]:
    schema = openapi_schema(api.TokenFactoryStatus)
    schema.pop("default", None)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "description": "Model served"},
    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicas", "description": "Ready/desired replicas, all pools"},
    {"name": "Tok/s", "type": "number", "jsonPath": ".status.tokensPerSecond", "description": "Delivered tokens per second"},
    {"name": "$/Mtok", "type": "number", "jsonPath": ".status.costPerMillionTokens", "description": "Dollars per million delivered tokens"},
    {"name": "$/h", "type": "number", "jsonPath": ".status.dollarsPerHour", "description": "Dollars per hour for the GPUs held"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status', "description": "Ready condition"},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.scaling.mode", "priority": 1, "description": "Scaling mode"},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason', "priority": 1, "description": "Ready reason"},
    {"name": "Routing", "type": "string", "jsonPath": ".spec.routing.mode", "priority": 1, "description": "Routing mode"},
    {"name": "Weights", "type": "string", "jsonPath": ".status.routing.weights", "priority": 1,
     "description": "Traffic split: HTTPRoute weight per pool (out of 1000), even, endpoint-picker or none"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "tokenfactory", "app.kubernetes.io/part-of": "tokenfactory"},
        },
        "spec": {
            "group": api.GROUP,
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "tokenfactory"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "TokenFactory serves one LLM with vLLM on one or more GPU node pools, reports live cost "
                                "per million tokens per pool, and picks the cheapest replica mix that meets demand and "
                                "latency objectives."
                            ),
                            "required": ["spec"],
                            "x-kubernetes-validations": api.OBJECT_RULES,
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                # metadata.name is checked by the rules above; declaring it makes their fieldPath valid
                                "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def build_allowlist_crd() -> dict[str, Any]:
    """The cluster-scoped TokenFactoryAllowList: the admission policy's parameters (api.AllowListSpec)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.ALLOWLIST_PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "tokenfactory", "app.kubernetes.io/part-of": "tokenfactory"},
        },
        "spec": {
            "group": api.GROUP,
            "names": {"kind": api.ALLOWLIST_KIND, "listKind": f"{api.ALLOWLIST_KIND}List",
                      "plural": api.ALLOWLIST_PLURAL, "singular": api.ALLOWLIST_SINGULAR},  # no category: "tokenfactory" must stay one kind
            "scope": "Cluster",
            "versions": [{
                "name": api.VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": ("The cluster admin's allow-lists for the TokenFactory author-rights admission policy: "
                                    "the images and tolerations a TokenFactory may use (docs/deploy.md)."),
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                        "kind": {"type": "string", "description": "Kind of this object."},
                        "metadata": {"type": "object"},
                        "spec": openapi_schema(api.AllowListSpec),
                    },
                }},
            }],
        },
    }


HEADER = "# Generated by `tokenfactory crd` from tokenfactory/api.py. Do not edit by hand.\n"
KINDS = {api.KIND: build_crd, api.ALLOWLIST_KIND: build_allowlist_crd}


def crd_yaml(kind: str = api.KIND) -> str:
    return HEADER + yaml.safe_dump(KINDS[kind](), sort_keys=False, width=120)
