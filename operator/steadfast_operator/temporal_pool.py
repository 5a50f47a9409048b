"""Temporal clients shared by every agent with the same target and credentials.

One client per distinct address, namespace and credentials (read from the
agent's Secrets), so a thousand agents on one Temporal make one connection, and
an unreachable target holds up only its own agents. Credentials rotate in
place: see :class:`TemporalPool`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, field

from temporalio.client import Client
from temporalio.service import TLSConfig

from steadfast_contract import credentials
from steadfast_contract.spec import AgentSpec, TemporalSpec
from steadfast_operator.kube import Kube, path

log = logging.getLogger(__name__)


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
            api_key = credentials.key_text(data.get(t.api_key_secret_ref.key, b""))
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
        try:
            return await asyncio.wait_for(
                Client.connect(address, namespace=namespace, tls=creds.tls, api_key=creds.api_key),
                self.connect_timeout,
            )
        except Exception as err:
            # Its message goes into a condition and the log: never with the key in it.
            hidden = credentials.redacted(err, creds.api_key or "")
            if hidden is None:
                raise
            raise hidden from None

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
        now = found.credentials
        change = credentials.rotation(now.tls, now.api_key, creds.tls, creds.api_key)
        if change is credentials.Change.NONE:
            return found.client
        if change is credentials.Change.API_KEY:
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
