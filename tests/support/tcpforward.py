"""A plain TCP forwarder a test can cut and restore: Temporal unreachable for one agent.

Why it exists: the operator's deletion must wait for Temporal, and a test needs a
Temporal that goes away for one agent only, while the session's dev server keeps
serving every other test. An agent whose ``spec.temporal.address`` is this
forwarder's address loses Temporal when :meth:`TCPForwarder.cut` closes the
listener and resets every open connection (an established gRPC channel would
otherwise keep working), and gets it back on :meth:`TCPForwarder.restore`, on the
same port.

It runs its own event loop in a thread, like :mod:`tests.support.tlsproxy`, so it
keeps serving while a test blocks. Standard library only; it listens on loopback, or
on an address the test itself created (the real-pod node's bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass, field

from tests.support.ports import free_port

HOST = "127.0.0.1"


@dataclass
class TCPForwarder:
    """``with TCPForwarder(upstream) as fwd:`` forwards ``fwd.address`` to ``upstream``."""

    upstream: str
    port: int = field(default_factory=free_port)
    #: Loopback by default; the real-pod tier listens on its node's bridge address too.
    host: str = HOST

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.name = f"tcpforward-{self.port}"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> TCPForwarder:
        self._thread.start()
        self.restore()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cut()
        asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _drain(self) -> None:
        # Let the connections just reset finish their copy tasks, so none is destroyed
        # pending when the loop stops.
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def cut(self) -> None:
        """Stop listening and reset every forwarded connection."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        """Listen again on the same port."""
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await splice(reader, writer, self.upstream, self._writers)


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: str,
    live: set[asyncio.StreamWriter] | None = None,
) -> None:
    """Connect to ``upstream`` and copy bytes both ways until either side ends, then
    reset both. ``live`` holds both ends while they are open (so they can be cut)."""
    host, _, port = upstream.rpartition(":")
    try:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
    except OSError:
        writer.transport.abort()
        return
    ends = (writer, up_writer)
    if live is not None:
        live.update(ends)
    pipes = [
        asyncio.create_task(_pipe(reader, up_writer)),
        asyncio.create_task(_pipe(up_reader, writer)),
    ]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        for end in ends:
            end.transport.abort()
            if live is not None:
                live.discard(end)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    # A TLS peer that goes away mid-record raises SSLError; either way the copy ends.
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
