"""The chart's Prometheus client settings (prometheus.auth): Secrets mounted by the kubelet, flags the real CLI
accepts pointing at the mounted files, and still no Secret reads in the RBAC. Uses the real helm."""

from __future__ import annotations

from test_chart import helm, one, template  # noqa: F401 - fixtures and helpers of the chart tests

from tokenfactory.cli import build_parser

AUTH = ["prometheus.url=https://mimir.monitoring:8080/prometheus",
        "prometheus.auth.basicAuth.username=tokenfactory", "prometheus.auth.basicAuth.passwordSecret.name=prom-basic",
        "prometheus.auth.tls.caSecret.name=prom-ca", "prometheus.auth.tls.caSecret.key=bundle.pem",
        "prometheus.auth.tls.clientCertSecret.name=prom-client", "prometheus.auth.headers.X-Scope-OrgID=tenant-a"]


def test_auth_secrets_are_mounted_and_passed_as_files(helm):  # noqa: F811
    docs = template(helm, *AUTH)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = build_parser().parse_args(c["args"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def file_of(volume: str, key: str) -> str:
        (item,) = [i for i in volumes[volume]["secret"]["items"] if i["key"] == key]
        return f"{mounts[volume]}/{item['path']}"

    assert args.prometheus_username == "tokenfactory"
    assert args.prometheus_password_file == file_of("prometheus-basic", "password")
    assert args.prometheus_ca_file == file_of("prometheus-ca", "bundle.pem")
    assert args.prometheus_cert_file == file_of("prometheus-client", "tls.crt")
    assert args.prometheus_key_file == file_of("prometheus-client", "tls.key")
    assert args.prometheus_header == ["X-Scope-OrgID: tenant-a"] and args.prometheus_bearer_token_file is None
    assert {v["secret"]["secretName"] for v in volumes.values() if "secret" in v} == {"prom-basic", "prom-ca", "prom-client"}
    assert all(m.get("readOnly") for m in c["volumeMounts"] if m["name"].startswith("prometheus-"))
    for d in docs:  # the kubelet mounts them; the operator's own RBAC still reads no Secret
        for rule in d.get("rules", []):
            assert "secrets" not in rule["resources"], rule


def test_bearer_token_and_no_auth_by_default(helm):  # noqa: F811
    pod = one(template(helm, "prometheus.auth.bearerTokenSecret.name=prom-token"), "Deployment")["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.prometheus_bearer_token_file == "/etc/tokenfactory/prometheus/bearer/token"
    default = one(template(helm), "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in default["volumes"]] == ["tmp"]
    assert not any(a.startswith("--prometheus-") and a not in ("--prometheus-timeout",)
                   for a in default["containers"][0]["args"])


def test_basic_auth_without_username_fails_to_render(helm):  # noqa: F811
    import subprocess

    from test_chart import CHART

    res = subprocess.run([helm, "template", "t", str(CHART), "--set", "prometheus.auth.basicAuth.passwordSecret.name=s"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "prometheus.auth.basicAuth.username is required" in res.stderr
