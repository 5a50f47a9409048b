"""The worker says it is ready only while it can work: ``/readyz`` on its metrics port.

A rollout replaces a worker pod only once the new one is Ready, and a pod whose
probe passed before it could reach Temporal (a wrong address, a bad mTLS Secret, a
namespace that does not exist) would be counted Ready at once: the rollout would
take down working pods for ones that never poll, and every run would stall. So the
pod's readiness probe asks this module, and it answers 200 only once the worker has
connected and its Temporal worker is running (the SDK checked the namespace and its
pollers started: ``Worker.is_running``), and 503 again from the moment it is told to
stop (SIGTERM), so Services and rollouts see it leave while it drains.

It is served on the metrics port, by path: ``/readyz`` here, everything else the
Prometheus exposition, as before. A probe must never read ``/metrics``: a stopping
worker waits for the scrape of what its last calls counted, and a probe's read would
pass for that scrape (:mod:`.lastscrape`). prometheus_client's own app answers any
path with the metrics, so the route is taken before it. Liveness stays a TCP probe
of the same port: a worker that cannot reach Temporal is not ready, but restarting
it would not help.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from steadfast_contract.config import READY_PATH

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Polling(Protocol):
    """What readiness needs of a Temporal worker (``temporalio.worker.Worker``)."""

    @property
    def is_running(self) -> bool: ...


def verdict(connected: bool, running: bool, stopping: bool) -> tuple[bool, str]:
    """Whether a worker is ready, and why (the probe's body, for ``kubectl describe``)."""
    if stopping:
        return False, "stopping"
    if not connected:
        return False, "connecting to Temporal"
    if not running:
        return False, "not polling"
    return True, "polling"


class Readiness:
    """What the worker has reached; read by the HTTP server's threads."""

    def __init__(self) -> None:
        self._worker: Polling | None = None
        self._stopping = False

    def connected(self, worker: Polling) -> None:
        """The client connected and ``worker`` was built: ready while it runs."""
        self._worker = worker

    def stopping(self) -> None:
        """Told to stop: not ready from now on."""
        self._stopping = True

    def state(self) -> tuple[bool, str]:
        worker = self._worker
        return verdict(worker is not None, worker is not None and worker.is_running, self._stopping)


def routed(metrics: App, readiness: Readiness) -> App:
    """``metrics`` for every path but :data:`READY_PATH`, which ``readiness`` answers."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != READY_PATH:
            return metrics(environ, start_response)
        ready, why = readiness.state()
        status = "200 OK" if ready else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{why}\n".encode()]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every probe and scrape would otherwise print a line to stderr."""


def serve(port: int, host: str, registry: CollectorRegistry, readiness: Readiness) -> None:
    """Serve the metrics and :data:`READY_PATH` on ``host:port`` in a daemon thread,
    as ``prometheus_client.start_http_server`` serves the metrics alone."""
    family, *_, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    app = routed(make_wsgi_app(registry), readiness)
    httpd = make_server(str(address[0]), port, app, Server, handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
