"""Certificates and keys of the local control plane, made with the ``cryptography`` package.

As kubeadm lays it out: the cluster CA signs the apiserver and every client of it; etcd and the
front proxy (requestheader authentication of aggregated APIs) have CAs of their own:

============================  =====================================  ===============================
file (under ``pki/``)         subject                                used by
============================  =====================================  ===============================
ca.crt / ca.key               CN=tokenfactory-ca                     client-CA of the apiserver,
                                                                     cluster signing (CSRs), root CA
etcd-ca.crt / etcd-ca.key     CN=tokenfactory-etcd-ca                etcd server + client auth
etcd-server.crt/.key          CN=etcd, SAN 127.0.0.1/localhost       etcd serving
apiserver-etcd-client.*       CN=kube-apiserver-etcd-client          apiserver -> etcd
apiserver.crt/.key            CN=kube-apiserver, SANs below          apiserver serving
apiserver-kubelet-client.*    CN=kube-apiserver-kubelet-client,      apiserver -> kubelets
                              O=system:masters
admin.crt/.key                CN=kubernetes-admin, O=system:masters  admin kubeconfig
controller-manager.crt/.key   CN=system:kube-controller-manager      kcm kubeconfig (+ serving)
scheduler.crt/.key            CN=system:kube-scheduler               scheduler kubeconfig (+ serving)
kwok.crt/.key                 CN=kwok-controller, O=system:masters   kwok kubeconfig
front-proxy-ca.crt/.key       CN=tokenfactory-front-proxy-ca         requestheader client CA
front-proxy-client.crt/.key   CN=front-proxy-client                  apiserver -> aggregated APIs
sa.key / sa.pub               RSA 2048                               service-account token signing
============================  =====================================  ===============================

Leaf keys are ECDSA P-256 (fast to make); the service-account key is RSA (RS256 tokens).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 365

CAS = (
    ("ca", "tokenfactory-ca"),
    ("etcd-ca", "tokenfactory-etcd-ca"),
    ("front-proxy-ca", "tokenfactory-front-proxy-ca"),
)

SERVER = "server"
CLIENT = "client"
BOTH = "both"


@dataclass(frozen=True)
class CertSpec:
    """What one leaf certificate says and which CA signs it."""

    name: str  # file stem under pki/
    common_name: str
    organizations: tuple[str, ...] = ()
    usage: str = CLIENT  # server | client | both
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    ca: str = "ca"


@dataclass
class Pki:
    """Paths of the generated files (all under ``directory``)."""

    directory: Path
    names: list[str] = field(default_factory=list)

    def crt(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    @property
    def ca_crt(self) -> Path:
        return self.crt("ca")

    @property
    def ca_key(self) -> Path:
        return self.key("ca")

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"


def apiserver_sans(service_ip: str, extra_dns: tuple[str, ...] = (), extra_ips: tuple[str, ...] = ()):
    """DNS names and IPs of the apiserver serving certificate (as kubeadm puts them)."""
    dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        *extra_dns,
    )
    ips = ("127.0.0.1", "::1", service_ip, *extra_ips)
    return dns, ips


def default_specs(service_ip: str) -> list[CertSpec]:
    """The leaf certificates of a cluster whose ``kubernetes`` Service has ``service_ip``."""
    dns, ips = apiserver_sans(service_ip)
    loopback_dns = ("localhost",)
    loopback_ips = ("127.0.0.1", "::1")
    return [
        CertSpec("etcd-server", "etcd", usage=BOTH, dns_names=loopback_dns, ip_addresses=loopback_ips,
                 ca="etcd-ca"),
        CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", ca="etcd-ca"),
        CertSpec("apiserver", "kube-apiserver", usage=SERVER, dns_names=dns, ip_addresses=ips),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        CertSpec("admin", "kubernetes-admin", ("system:masters",)),
        CertSpec("controller-manager", "system:kube-controller-manager", usage=BOTH,
                 dns_names=loopback_dns, ip_addresses=loopback_ips),
        CertSpec("scheduler", "system:kube-scheduler", usage=BOTH, dns_names=loopback_dns,
                 ip_addresses=loopback_ips),
        CertSpec("kwok", "kwok-controller", ("system:masters",)),
        CertSpec("front-proxy-client", "front-proxy-client", ca="front-proxy-ca"),
    ]


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str, key=None) -> tuple[x509.Certificate, object]:
    key = key or new_ec_key()
    subject = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(spec: CertSpec, ca_cert: x509.Certificate, ca_key, key=None):
    key = key or new_ec_key()
    now = _now()
    usages = {
        SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
        CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
        BOTH: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }[spec.usage]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]  # an RSA key
            critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8 if isinstance(key, ec.EllipticCurvePrivateKey)
        else serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _load(path_crt: Path, path_key: Path):
    cert = x509.load_pem_x509_certificate(path_crt.read_bytes())
    key = serialization.load_pem_private_key(path_key.read_bytes(), password=None)
    return cert, key


def generate(directory: Path, service_ip: str = "10.96.0.1", specs: list[CertSpec] | None = None) -> Pki:
    """Write CAs, leaf certificates and the service-account key pair under ``directory``.

    Idempotent: files that already exist are kept (so a restarted cluster keeps its identity).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    cas = {}
    for ca_name, cn in CAS:
        if pki.crt(ca_name).exists() and pki.key(ca_name).exists():
            cas[ca_name] = _load(pki.crt(ca_name), pki.key(ca_name))
        else:
            cert, key = make_ca(cn)
            _write(pki.key(ca_name), key_pem(key), private=True)
            _write(pki.crt(ca_name), cert_pem(cert))
            cas[ca_name] = (cert, key)
        pki.names.append(ca_name)
    for spec in specs if specs is not None else default_specs(service_ip):
        if not (pki.crt(spec.name).exists() and pki.key(spec.name).exists()):
            ca_cert, ca_key = cas[spec.ca]
            cert, key = make_leaf(spec, ca_cert, ca_key)
            _write(pki.key(spec.name), key_pem(key), private=True)
            _write(pki.crt(spec.name), cert_pem(cert))
        pki.names.append(spec.name)
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(pki.sa_key, key_pem(sa), private=True)
        _write(
            pki.sa_pub,
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    return pki


def describe(path: Path) -> dict:
    """Subject, issuer, SANs and usages of a PEM certificate (for tests and `cluster status`)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    out: dict = {
        "subject_cn": cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "subject_o": [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)],
        "issuer_cn": cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "not_after": cert.not_valid_after_utc,
        "dns": [],
        "ips": [],
        "ca": cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca,
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        out["dns"] = san.get_values_for_type(x509.DNSName)
        out["ips"] = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        out["usages"] = sorted(
            {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}[u]
            for u in eku
        )
    except x509.ExtensionNotFound:
        out["usages"] = []
    return out
