"""Operator start-up: Kopf settings, shared clients in the memo, and their cleanup.

Everything long-lived is created once here and handed to handlers through
Kopf's memo: the Kubernetes JSON client, a pool of Temporal clients (one per
distinct address, namespace and credentials, shared by every agent that uses
them), and the task-queue statistics cache. Kopf's settings are tuned for an
operator whose watches must recover fast and whose bookkeeping must survive a
structural status schema (progress and diff-base go in annotations).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from temporalio.client import Client
from temporalio.service import TLSConfig

from steadfast_contract.spec import AgentSpec, TemporalSpec
from steadfast_operator import metrics, render
from steadfast_operator.kube import Kube, load_config, path
from steadfast_operator.taskqueues import QueueStats

PREFIX = "steadfast.dev"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    """What ``steadfast operator`` was told on its command line."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty with ``all_namespaces`` watches the cluster."""
    all_namespaces: bool = False
    kubeconfig: str | None = None
    defaults: render.Defaults = field(default_factory=render.Defaults)
    status_interval: float = 5.0
    """Seconds between status refreshes and autoscaling decisions per agent."""
    metrics_port: int = 8080
    health_port: int = 8081
    listen: str = "0.0.0.0"
    post_events: bool = True
    """Post Kubernetes Events about handler failures (tests switch this off)."""
    watch_timeout: int = 60
    """Seconds a watch request stays open before it is renewed."""
    connect_timeout: float = 10.0
    """Seconds to wait for a Temporal frontend before reporting it unreachable."""
    credentials_check: float = 60.0
    """Seconds between re-reads of the Secrets a Temporal client was made with."""


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    """Kopf settings: fast watch recovery, annotations for bookkeeping, one finalizer."""
    settings.watching.server_timeout = cfg.watch_timeout
    settings.watching.client_timeout = cfg.watch_timeout + 10
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.posting.enabled = cfg.post_events
    settings.posting.level = logging.WARNING
    # The CRD's status schema is structural: Kopf's default ``status.kopf`` would be
    # pruned by the API server and re-written forever, so its state lives in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.peering.standalone = True
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)


@dataclass(frozen=True)
class Credentials:
    """What a Temporal client is made with, read from the agent's Secrets."""

    tls: TLSConfig | bool = False
    api_key: str | None = None


@dataclass
class _Connected:
    client: Client
    credentials: Credentials
    checked: float
    """``time.monotonic()`` when the Secrets were last read for this client."""


@dataclass
class TemporalPool:
    """Temporal clients keyed by address, namespace and credentials.

    Each target has its own lock: agents sharing a target connect once, and an
    unreachable target holds up only its own agents for ``connect_timeout``, not
    every other agent's reconcile.

    A client made from Secrets (mTLS, API key) re-reads them at most every
    ``credentials_check`` seconds, on use. A renewed certificate gets a new
    connection; a new API key is set on the client in place. If the new
    credentials cannot connect, the working client is kept and the failure
    logged, as the workers do (:mod:`steadfast_worker.rotation`).
    """

    kube: Kube
    connect_timeout: float = 10.0
    credentials_check: float = 60.0
    _clients: dict[tuple[str, ...], _Connected] = field(default_factory=dict)
    _locks: dict[tuple[str, ...], asyncio.Lock] = field(default_factory=dict)

    @property
    def connected(self) -> int:
        """How many targets have a connected client."""
        return len(self._clients)

    def clear(self) -> None:
        """Forget every client, so the next use reconnects."""
        self._clients.clear()

    async def _secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        secret = await self.kube.get(path("Secret", namespace, name))
        if secret is None:
            return {}
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    async def _credentials(self, namespace: str, t: TemporalSpec) -> Credentials:
        tls: TLSConfig | bool = False
        api_key: str | None = None
        if t.tls.secret_name:
            data = await self._secret_data(namespace, t.tls.secret_name)
            tls = TLSConfig(
                server_root_ca_cert=data.get("ca.crt"),
                client_cert=data.get("tls.crt"),
                client_private_key=data.get("tls.key"),
            )
        if t.api_key_secret_ref.set:
            data = await self._secret_data(namespace, t.api_key_secret_ref.name)
            api_key = data.get(t.api_key_secret_ref.key, b"").decode() or None
            tls = tls or True
        return Credentials(tls, api_key)

    async def client(self, namespace: str, spec: AgentSpec, default_address: str) -> Client:
        """A connected client for the agent, reused across agents with the same target."""
        t = spec.temporal
        address = t.address or default_address
        from_secrets = bool(t.tls.secret_name or t.api_key_secret_ref.set)
        key = (
            address,
            t.namespace,
            namespace if from_secrets else "",
            t.tls.secret_name,
            t.api_key_secret_ref.name,
            t.api_key_secret_ref.key,
        )
        found = self._clients.get(key)
        if found is not None and not self._due(found, from_secrets):
            return found.client
        async with self._locks.setdefault(key, asyncio.Lock()):
            found = self._clients.get(key)
            if found is not None and not self._due(found, from_secrets):
                return found.client  # another agent connected or checked meanwhile
            creds = await self._credentials(namespace, t)
            if found is not None:
                return await self._refresh(key, found, creds, address, t.namespace)
            connected = await self._connect(address, t.namespace, creds)
            self._clients[key] = _Connected(connected, creds, time.monotonic())
            return connected

    def _due(self, found: _Connected, from_secrets: bool) -> bool:
        return from_secrets and time.monotonic() - found.checked >= self.credentials_check

    async def _connect(self, address: str, namespace: str, creds: Credentials) -> Client:
        return await asyncio.wait_for(
            Client.connect(address, namespace=namespace, tls=creds.tls, api_key=creds.api_key),
            self.connect_timeout,
        )

    async def _refresh(
        self,
        key: tuple[str, ...],
        found: _Connected,
        creds: Credentials,
        address: str,
        namespace: str,
    ) -> Client:
        """``found``'s client, or a new one if the Secrets changed and it connects."""
        found.checked = time.monotonic()
        if creds == found.credentials:
            return found.client
        if creds.tls == found.credentials.tls:
            found.client.api_key = creds.api_key  # the connection stays; calls carry the new key
            found.credentials = creds
            log.info("Temporal at %s: API key changed, using the new one", address)
            return found.client
        try:
            renewed = await self._connect(address, namespace, creds)
        except (RuntimeError, OSError, TimeoutError) as err:
            log.warning(
                "Temporal at %s: the TLS Secret changed, but connecting with it failed (%s); "
                "keeping the current connection",
                address,
                err,
            )
            return found.client
        self._clients[key] = _Connected(renewed, creds, found.checked)
        log.info("Temporal at %s: the TLS Secret changed, reconnected with it", address)
        return renewed


@dataclass
class Shared:
    """What every handler reaches through ``memo.shared``."""

    config: OperatorConfig
    kube: Kube
    temporal: TemporalPool
    queues: QueueStats
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    deployments: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(namespace, name) -> (replicas, ready) of worker Deployments, kept by a watch,
    so a status tick costs no GET."""

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One lock per agent, so its timer and its change handlers never interleave."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())


async def start(settings: kopf.OperatorSettings, memo: Any, cfg: OperatorConfig) -> Shared:
    configure(settings, cfg)
    kube = Kube(await load_config(cfg.kubeconfig), on_request=_count_request)
    shared = Shared(
        config=cfg,
        kube=kube,
        temporal=TemporalPool(kube, cfg.connect_timeout, cfg.credentials_check),
        queues=QueueStats(max_age=max(1.0, cfg.status_interval / 2)),
    )
    memo.shared = shared
    metrics.serve(cfg.metrics_port, cfg.listen)
    return shared


def _count_request(verb: str) -> None:
    metrics.KUBE_REQUESTS.labels(verb).inc()


async def stop(memo: Any) -> None:
    shared: Shared | None = getattr(memo, "shared", None)
    if shared is not None:
        await shared.kube.close()
        # Temporal clients hold no resources that need closing beyond their runtime,
        # which ends with the process; dropping them lets a restart in-process reconnect.
        shared.temporal.clear()
