"""Every file in deploy/examples validates, renders, and selects nodes that the local cluster has."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tokenfactory import api, cli, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
NODEPOOLS = ROOT / "operator" / "tokenfactory" / "localcluster" / "nodepools.yaml"
GFD_PRODUCT = "nvidia.com/gpu.product"


def node_labels() -> list[dict[str, str]]:
    doc = yaml.safe_load(NODEPOOLS.read_text())
    d = doc["defaults"]
    out = []
    for pool in doc["pools"]:
        arch = pool.get("arch", d.get("arch", "amd64"))
        out.append({**d["labels"], **pool.get("labels", {}), "kubernetes.io/arch": arch})
    return out


def test_there_is_an_on_prem_example():
    assert any(p.get("capexPerGpu") for f in EXAMPLES for p in yaml.safe_load(f.read_text())["spec"]["pools"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_and_renders(path, capsys):
    assert cli.main(["validate", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["render", str(path)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    mode = yaml.safe_load(path.read_text())["spec"].get("routing", {}).get("mode", "Service")
    assert [d["kind"] for d in docs][-1] == {"Service": "Service", "HTTPRoute": "HTTPRoute"}[mode]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_selects_gpu_nodes_by_gfd_product_label_present_in_the_local_cluster(path):
    tf = api.parse_object(yaml.safe_load(path.read_text()))
    nodes = node_labels()
    for pool in tf.spec.pools:
        assert GFD_PRODUCT in pool.node_selector, f"{path.name}: pool {pool.name} selects no {GFD_PRODUCT}"
        matching = [n for n in nodes if all(n.get(k) == v for k, v in pool.node_selector.items())]
        assert matching, f"{path.name}: no local node pool matches {pool.node_selector}"
        assert all(n["nvidia.com/gpu.product"].lower().endswith(pool.gpu_type) for n in matching)


def test_on_prem_example_prices_from_capex_and_overrides_engine_per_pool():
    tf = api.parse_object(yaml.safe_load((ROOT / "deploy" / "examples" / "onprem-h200-gb300.yaml").read_text()))
    pools = {p.name: p for p in tf.spec.resolve_pools()}
    assert pools["h200"].sources["pricePerGpuHour"] == "onPrem"
    assert pools["h200"].price_per_gpu_hour == pytest.approx(35000 / (4 * 8760) + 1.0 * 1.3 * 0.09)
    owner = render.Owner("f", "ns", "uid")
    deps = {d["metadata"]["name"]: d for d in render.render(owner, tf.spec) if d["kind"] == "Deployment"}
    gb, h = (deps[f"f-{n}"]["spec"]["template"]["spec"] for n in ("gb300", "h200"))
    assert gb["nodeSelector"]["kubernetes.io/arch"] == "arm64" and h["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert gb["containers"][0]["image"] != h["containers"][0]["image"] == tf.spec.engine.image
