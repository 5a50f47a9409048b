"""Connecting to Temporal: plain, mTLS (client certificate files) or API key.

Every verb that talks to Temporal (the worker, ``run``, ``status``, ``approve``,
the operator) connects through :func:`connect`, so self-hosted mTLS and Temporal
Cloud API keys work the same everywhere. The decision of *what* to connect with
is the pure :func:`connect_options`; only :func:`connect` does I/O.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from steadfast_contract import credentials
from steadfast_contract.config import ConfigError, TemporalConfig
from steadfast_contract.config import TLSConfig as TLSFiles


@dataclass(frozen=True)
class ConnectOptions:
    """Resolved arguments for :meth:`temporalio.client.Client.connect`."""

    target_host: str
    namespace: str
    tls: TLSConfig | bool
    api_key: str | None


def _read(path: str, what: str, section: str = "temporal.tls") -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{section}.{what}: cannot read {path}: {err.strerror}") from None


def _api_key(cfg: TemporalConfig, env: Mapping[str, str]) -> str | None:
    if cfg.api_key_file:
        return credentials.key_text(_read(cfg.api_key_file, "apiKeyFile", "temporal"))
    return env.get(cfg.api_key_env) or None if cfg.api_key_env else None


def _files(tls: TLSFiles) -> tuple[tuple[str, str] | None, ...]:
    """(path, field) of the CA, certificate and key to read; ``None`` where unused.

    A mounted Secret's ``ca.crt`` is optional (kubelet writes only the keys the
    Secret has); an explicitly configured file is always read.
    """
    if tls.secret_dir:
        d = Path(tls.secret_dir)
        ca = d / "ca.crt"
        return (
            (str(ca), "secretDir") if ca.exists() else None,
            (str(d / "tls.crt"), "secretDir"),
            (str(d / "tls.key"), "secretDir"),
        )
    return (
        (tls.ca_file, "caFile") if tls.ca_file else None,
        (tls.cert_file, "certFile") if tls.cert_file else None,
        (tls.key_file, "keyFile") if tls.key_file else None,
    )


def connect_options(cfg: TemporalConfig, env: Mapping[str, str]) -> ConnectOptions:
    """Decide how to connect. An API key implies TLS (Temporal Cloud requires it)."""
    api_key = _api_key(cfg, env)
    tls: TLSConfig | bool = False
    if cfg.tls.enabled:
        ca, cert, key = (_read(*f) if f else None for f in _files(cfg.tls))
        tls = TLSConfig(
            server_root_ca_cert=ca,
            client_cert=cert,
            client_private_key=key,
            domain=cfg.tls.server_name or None,
        )
    elif api_key:
        tls = True
    return ConnectOptions(cfg.address, cfg.namespace, tls, api_key)


async def connect(
    cfg: TemporalConfig,
    env: Mapping[str, str] | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect a client as ``cfg`` says; secrets come from ``env`` (default: os.environ)."""
    return await connect_with(connect_options(cfg, os.environ if env is None else env), runtime)


async def connect_with(opts: ConnectOptions, runtime: Runtime | None = None) -> Client:
    """Connect a client with options already resolved by :func:`connect_options`.

    A failure that quotes the API key (a key with a stray newline is an invalid
    header value) is raised as a ``RuntimeError`` without it.
    """
    try:
        return await Client.connect(
            opts.target_host,
            namespace=opts.namespace,
            tls=opts.tls,
            api_key=opts.api_key,
            runtime=runtime,
        )
    except Exception as err:
        hidden = credentials.redacted(err, opts.api_key or "")
        if hidden is None:
            raise
        raise hidden from None


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The Temporal connection flags shared by ``run``, ``status``, ``approve`` and ``worker``."""
    group = parser.add_argument_group("Temporal connection")
    group.add_argument(
        "--address",
        default=os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        help="host:port of the Temporal frontend (env TEMPORAL_ADDRESS)",
    )
    group.add_argument(
        "--namespace",
        default=None,
        help="Temporal namespace (env TEMPORAL_NAMESPACE; else the agent's "
        "temporal.namespace when -f/--config names one, else default)",
    )
    group.add_argument("--tls-cert", default="", help="PEM client certificate for mTLS")
    group.add_argument("--tls-key", default="", help="PEM private key for mTLS")
    group.add_argument("--tls-ca", default="", help="PEM CA bundle that signed the server")
    group.add_argument("--tls-server-name", default="", help="TLS server name override")
    group.add_argument(
        "--api-key-env",
        default="TEMPORAL_API_KEY",
        help="environment variable holding a Temporal Cloud API key (implies TLS)",
    )


def temporal_config_from_args(
    args: argparse.Namespace, namespace: str = "default"
) -> TemporalConfig:
    """Build a :class:`TemporalConfig` from :func:`add_connection_arguments` flags.
    ``namespace``: the one to use when neither ``--namespace`` nor
    ``TEMPORAL_NAMESPACE`` names one (the agent's, for a verb given its manifest or
    configuration: its workers poll there)."""
    return TemporalConfig(
        address=args.address,
        namespace=args.namespace or os.environ.get("TEMPORAL_NAMESPACE") or namespace,
        tls=TLSFiles(
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            ca_file=args.tls_ca,
            server_name=args.tls_server_name,
        ),
        api_key_env=args.api_key_env,
    )
