"""The hostile-spec corpus (tests/e2e/hostile_corpus.py) against the real apiserver and the real operator.

Every case is sent as YAML text straight to the apiserver (``Content-Type: application/yaml``,
``fieldValidation=Strict`` as kubectl sends it), so YAML oddities (NaN, Inf, 1e30, ``no``) reach the
server exactly as a user typed them. Rejected cases must come back 400/422 naming the field; accepted
controls must be created; the cases only the operator can judge are created and must end Degraded
with the expected reason, with no traceback in the operator's log.
"""

from __future__ import annotations

import base64
import ssl
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from harness import CRD, Operator, wait_for
from hostile_corpus import CASES, Accepted, Case, Degraded, Rejected

ADMISSION = [c for c in CASES if not isinstance(c.outcome, Degraded)]
OPERATOR_ONLY = [c for c in CASES if isinstance(c.outcome, Degraded)]


def test_corpus_is_big_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert sum(isinstance(c.outcome, Rejected) for c in CASES) >= 60


@pytest.fixture(scope="module")
def crd(kubectl):
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl("wait", "--for", "condition=Established", "crd/tokenfactories.tokenfactory.dev", "--timeout=60s")
    return CRD


@pytest.fixture(scope="module")
def hostile_ns(kubectl, crd) -> Iterator[str]:
    ns = f"e2e-hostile-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", ns)
    yield ns
    kubectl.run("delete", "tokenfactories", "--all", "-n", ns, "--timeout=30s")
    kubectl.run("delete", "namespace", ns, "--wait=false")


@pytest.fixture(scope="module")
def api(cluster, tmp_path_factory) -> Iterator[httpx.Client]:
    """An HTTP client authenticated with the admin kubeconfig's client certificate."""
    kc = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    user = kc["users"][0]["user"]
    d = tmp_path_factory.mktemp("client")
    cert, key = d / "client.crt", d / "client.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    tls = ssl.create_default_context(cafile=str(cluster.ca_file))
    tls.load_cert_chain(str(cert), str(key))
    with httpx.Client(base_url=cluster.server, verify=tls, timeout=30) as c:
        yield c


def create(api: httpx.Client, ns: str, case: Case, name: str) -> httpx.Response:
    return api.post(f"/apis/tokenfactory.dev/v1alpha1/namespaces/{ns}/tokenfactories",
                    params={"fieldValidation": "Strict"}, content=case.text(name).encode(),
                    headers={"Content-Type": "application/yaml", "Accept": "application/json"})


def short(case: Case) -> str:
    return f"h-{zlib.crc32(case.id.encode()):08x}"


@pytest.mark.parametrize("case", ADMISSION, ids=lambda c: c.id)
def test_admission(api, hostile_ns, case):
    res = create(api, hostile_ns, case, short(case))
    body = res.json()
    if isinstance(case.outcome, Accepted):
        assert res.status_code == 201, body.get("message")
        return
    assert isinstance(case.outcome, Rejected)
    assert res.status_code != 201, f"accepted: {case.id}"
    assert res.status_code in (400, 422), f"{res.status_code}: {body.get('message')}"
    message = body.get("message", "")
    assert case.outcome.field in message, message[:2000]
    assert case.outcome.text in message, message[:2000]
    # a readable answer: no megabyte echoed back
    assert len(message) < 20_000, f"{len(message)} characters"


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def test_operator_reports_what_admission_cannot_know(cluster, kubectl, api, hostile_ns, tmp_path):
    names = {}
    for case in OPERATOR_ONLY:
        name = short(case)
        res = create(api, hostile_ns, case, name)
        assert res.status_code == 201, f"{case.id}: {res.json().get('message')}"
        names[case.id] = name
    op = Operator(cluster.kubeconfig, tmp_path, namespaces=[hostile_ns])
    try:
        for case in OPERATOR_ONLY:
            assert isinstance(case.outcome, Degraded)

            def degraded(name=names[case.id], reason=case.outcome.reason):
                c = condition(kubectl.json("get", "tokenfactory", name, "-n", hostile_ns), "Degraded")
                return c if c.get("status") == "True" and c.get("reason") == reason else None

            cond = wait_for(degraded, 90, f"{case.id}: Degraded={case.outcome.reason}")
            assert cond["message"] and "Traceback" not in cond["message"], cond
        assert op.alive()
        log = op.log()
        assert "Traceback" not in log, log[-5000:]
    finally:
        kubectl.run("delete", "tokenfactories", "--all", "-n", hostile_ns, "--timeout=30s")
        op.stop()
