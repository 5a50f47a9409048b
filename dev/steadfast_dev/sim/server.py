"""One HTTP server for both simulated services, plus its admin endpoints.

A single port keeps the wiring simple: the LLM base URL is the server's root
(``/v1/messages``), the search endpoint is ``/search``, web pages for an agent's
``fetch_page`` are under ``/pages/``, and ``/_sim/...`` lets a
test reconfigure faults, read the request log and reset between tests, so one
simulator process can serve a whole test session.

Admin endpoints (JSON in, JSON out):

* ``GET /_sim/health`` -> ``{"ok": true}``
* ``GET /_sim/faults`` -> the current plans; ``POST /_sim/faults`` with
  ``{"llm": {...}, "search": {...}, "pages": {...}, "seed": 1}`` changes them (fields as in
  :func:`steadfast_dev.sim.faults.update_plan`; unspecified fields keep their
  value) and restarts attempt numbering; a bad field is a 400 naming it.
* ``GET /_sim/log[?service=llm&key=...]`` -> ``{"entries": [...], "served":
  {"llm": {key: n}, "search": {...}, "pages": {...}}, "attempts": {...}}``
* ``POST /_sim/reset`` -> back to the start-up plans, empty log, cold cache.

It runs on aiohttp (already installed as a dependency of kopf), either on the
caller's event loop (:class:`Simulator`) or on a thread of its own
(:class:`SimulatorThread`), which keeps it serving while the process under test
is killed.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from steadfast_dev.sim.anthropic_api import handle_messages
from steadfast_dev.sim.pages_api import handle_page
from steadfast_dev.sim.search_api import handle_search
from steadfast_dev.sim.state import STATE, SimConfig, SimState

#: Seconds a stopping server waits for in-flight answers (stalled ones end at once).
SHUTDOWN_GRACE_S = 1.0


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _get_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(state.to_json())


async def _post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        data: Any = await request.json()
        if not isinstance(data, Mapping):
            raise ValueError("expected a JSON object")
        state.update(data)
    except (ValueError, json.JSONDecodeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(state.to_json())


async def _get_log(request: web.Request) -> web.Response:
    state = request.app[STATE]
    service = request.query.get("service")
    key = request.query.get("key")
    return web.json_response(state.log.to_json(service, key))


async def _reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return web.json_response(state.to_json())


def build_app(state: SimState) -> web.Application:
    """The aiohttp application serving both simulators and the admin API."""
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_get("/search", handle_search)
    app.router.add_post("/search", handle_search)
    app.router.add_get("/pages/{path:.+}", handle_page, allow_head=False)
    app.router.add_get("/_sim/health", _health)
    app.router.add_get("/_sim/faults", _get_faults)
    app.router.add_post("/_sim/faults", _post_faults)
    app.router.add_get("/_sim/log", _get_log)
    app.router.add_post("/_sim/reset", _reset)
    return app


class Simulator:
    """The simulators on the current event loop: ``async with Simulator(config) as sim``."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.state = SimState(self.config)
        self._runner: web.AppRunner | None = None
        self.port = self.config.port

    @property
    def base_url(self) -> str:
        """Root URL; also the Anthropic ``base_url``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def llm_base_url(self) -> str:
        """What to pass as ``AsyncAnthropic(base_url=...)``."""
        return self.base_url

    @property
    def search_url(self) -> str:
        """The search endpoint (``search.endpoint`` of a ResearchAgent)."""
        return f"{self.base_url}/search"

    @property
    def pages_url(self) -> str:
        """Where the pages for ``fetch_page`` live (``/pages/<host>/<path>``)."""
        return f"{self.base_url}/pages"

    async def start(self) -> None:
        runner = web.AppRunner(
            build_app(self.state), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])
                break

    async def stop(self) -> None:
        self.state.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


class SimulatorThread:
    """The simulators on a daemon thread with their own event loop.

    For synchronous callers and for tests whose own event loop may block or be
    busy with a worker: the simulator keeps answering regardless.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.simulator = Simulator(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="steadfast-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.simulator.start())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.simulator.stop())
        self._loop.close()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.simulator.state.stopping.set)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> Simulator:
        self.start()
        return self.simulator

    def __exit__(self, *_exc: object) -> None:
        self.stop()
