"""Certificates and kubeconfigs for the loopback Kubernetes cluster in ``tests.support.kube``.

Split out of ``kube.py`` to keep that module to the cluster's lifecycle. Every
cluster gets its own fresh CA, serving and client certificates for each
component, and a service-account signing key pair, minted with the ``openssl``
CLI (P-256 keys, so it takes milliseconds); ``write_kubeconfig`` writes the
kubeconfigs that carry those credentials. Standard library only, like ``kube.py``.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.kube_procs import ClusterStartError


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterStartError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _new_key(pki: Path, name: str) -> None:
    # P-256 keys take milliseconds where RSA takes a noticeable fraction of a second.
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", f"{name}.key", cwd=pki,
    )  # fmt: skip


def issue(pki: Path, name: str, subject: str, sans: Sequence[str] = ()) -> None:
    """A leaf certificate signed by the CA in ``pki``, good for server and client use."""
    _new_key(pki, name)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
    ]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-set_serial", "0x" + secrets.token_hex(16), "-days", "7", "-sha256",
        "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


SERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    # The in-cluster names and the first service IP, so the certificate is valid for
    # what the cluster itself advertises (nothing here dials them).
    "IP:10.96.0.1",
    # The real-pod node's bridge address (tests.support.node), where pods reach the
    # apiserver through a forwarder.
    "IP:10.244.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


def new_ca(pki: Path, subject: str) -> None:
    """A self-signed CA valid for a week: ``ca.key`` and ``ca.crt`` in ``pki``."""
    _new_key(pki, "ca")
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", subject,
        "-days", "7", "-sha256", "-out", "ca.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )  # fmt: skip


def make_pki(pki: Path) -> None:
    """A fresh CA, serving and client certificates, and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    new_ca(pki, "/CN=steadfast-test-ca")
    issue(pki, "etcd-server", "/CN=etcd", SERVER_SANS)
    issue(pki, "apiserver-etcd-client", "/CN=kube-apiserver-etcd-client")
    issue(pki, "apiserver", "/CN=kube-apiserver", SERVER_SANS)
    issue(pki, "admin", "/O=system:masters/CN=steadfast-admin")
    issue(pki, "controller-manager", "/CN=system:kube-controller-manager", SERVER_SANS)
    issue(pki, "scheduler", "/CN=system:kube-scheduler", SERVER_SANS)
    # kwok stands in for every kubelet; it updates Node and Pod status of all nodes,
    # which no single system:node identity may do, so it gets cluster-admin.
    issue(pki, "kwok", "/O=system:masters/CN=kwok", SERVER_SANS)
    # How the apiserver authenticates to a real kubelet (logs, exec) of tests.support.node.
    issue(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    _new_key(pki, "sa")
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path | None = None, key: Path | None = None,
    token: str | None = None,
) -> Path:  # fmt: skip
    """A kubeconfig with the credentials embedded, so it stays valid when copied."""
    user: dict[str, str] = {}
    if cert is not None and key is not None:
        user["client-certificate-data"] = _b64(cert.read_bytes())
        user["client-key-data"] = _b64(key.read_bytes())
    if token is not None:
        user["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "steadfast",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca.read_bytes())},
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "steadfast", "context": {"cluster": "steadfast", "user": "user"}}],
        "current-context": "steadfast",
    }
    # JSON is YAML, and every kubeconfig loader reads it.
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
