"""Shared state of one simulator process and the HTTP-side effects of a fault.

Both simulated services (the Messages API and the search provider) go through
the same steps for every attempt -- number it in the request log, check the API
key, pick a fault from the plan, wait out the configured latency -- so those
steps live here once, and each service's module only builds its own answers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from steadfast_dev.sim.faults import (
    ERROR_STATUS,
    SERVICE_FAULTS,
    FaultKind,
    ServicePlan,
    choose_fault,
    matches,
    plan_to_json,
    update_plan,
)
from steadfast_dev.sim.promptcache import PromptCache
from steadfast_dev.sim.requestlog import SERVICES, Entry, RequestLog, Service, request_key

ErrorBody = Callable[[int, str], Mapping[str, object]]

#: How often a stalled answer checks whether its client has gone away.
POLL_S = 0.05


@dataclass(frozen=True)
class SimConfig:
    """How a simulator process starts; ``POST /_sim/reset`` returns to this."""

    host: str = "127.0.0.1"
    """Interface to listen on; loopback unless you mean to share it."""

    port: int = 0
    """TCP port; 0 picks a free one (read it back from ``Simulator.port``)."""

    seed: int = 0
    """Seed for fault rates: the same seed gives the same faults for the same requests."""

    llm: ServicePlan = field(default_factory=ServicePlan)
    """Faults and latency of the Messages API."""

    search: ServicePlan = field(default_factory=ServicePlan)
    """Faults and latency of the search provider."""

    pages: ServicePlan = field(default_factory=ServicePlan)
    """Faults, latency and oddities (size, type, a slow body) of the web pages."""


class SimState:
    """Plans, log and prompt cache of one running simulator."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.seed = config.seed
        self.plans: dict[Service, ServicePlan] = self._start_plans()
        self.log = RequestLog()
        self.matched: Counter[Service] = Counter()
        self.cache = PromptCache()
        self.stopping = asyncio.Event()

    def _start_plans(self) -> dict[Service, ServicePlan]:
        config = self.config
        return {"llm": config.llm, "search": config.search, "pages": config.pages}

    def reset(self) -> None:
        """Back to the start-up plans, with an empty log and a cold cache."""
        self.seed = self.config.seed
        self.plans = self._start_plans()
        self.log.clear()
        self.matched.clear()
        self.cache.clear()

    def update(self, data: Mapping[str, object]) -> None:
        """Apply ``POST /_sim/faults``; validates everything before changing anything."""
        unknown = set(data) - {*SERVICES, "seed"}
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)}; expected llm, search, pages, seed"
            )
        plans = dict(self.plans)
        for service in SERVICES:
            section = data.get(service)
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise ValueError(f"{service}: expected an object")
            plans[service] = update_plan(plans[service], section, service)
        seed = data.get("seed", self.seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed: expected an integer")
        self.plans, self.seed = plans, seed
        self.log.restart_attempts()
        self.matched.clear()

    def to_json(self) -> dict[str, object]:
        return {"seed": self.seed, **{s: plan_to_json(p) for s, p in self.plans.items()}}

    # The prompt cache keeps real time: its TTLs (5 minutes, an hour) are the API's.
    def is_cached(self, digest: str) -> bool:
        return self.cache.holds(digest, time.monotonic())

    def store_cache(self, digest: str, ttl_s: int) -> None:
        self.cache.store(digest, ttl_s, time.monotonic())

    def refresh_cache(self, digest: str) -> None:
        self.cache.refresh(digest, time.monotonic())

    def begin(
        self,
        service: Service,
        request: web.Request,
        body: object,
        *,
        text: str,
        stream: bool = False,
    ) -> tuple[Entry, FaultKind | None]:
        """Log the attempt and pick its fault."""
        key, source = request_key(request.headers, body)
        entry = self.log.begin(
            service,
            key,
            source,
            method=request.method,
            path=request.path,
            stream=stream,
            summary=" ".join(text.split()),
        )
        plan = self.plans[service]
        if matches(plan, text):
            self.matched[service] += 1
        fault = choose_fault(
            plan,
            seed=self.seed,
            key=key,
            attempt=entry.attempt,
            text=text,
            ordinal=self.matched[service],
        )
        entry.fault = fault
        return entry, fault


def presented_key(request: web.Request) -> str:
    """The API key a client sent, as ``x-api-key`` or a bearer token."""
    direct = request.headers.get("x-api-key", "")
    if direct:
        return direct
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def pause(request: web.Request, seconds: float, stopping: asyncio.Event) -> bool:
    """Wait ``seconds`` (may be inf); False if the client left or the simulator is stopping."""
    deadline = time.monotonic() + seconds
    while True:
        if client_gone(request) or stopping.is_set():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(POLL_S, left))


def drop_connection(request: web.Request) -> web.Response:
    """Close the connection without an answer (the returned response is never sent)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


def error_response(
    status: int, message: str, error_body: ErrorBody, retry_after: float | None = None
) -> web.Response:
    headers = {"request-id": f"req_sim_{int(time.time() * 1000)}"}
    if retry_after is not None:
        # Integer seconds for clients that only read that form; -ms for precise ones.
        headers["retry-after"] = str(max(0, math.ceil(retry_after)))
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    return web.json_response(error_body(status, message), status=status, headers=headers)


async def preamble(
    state: SimState,
    service: Service,
    request: web.Request,
    entry: Entry,
    fault: FaultKind | None,
    error_body: ErrorBody,
) -> web.StreamResponse | None:
    """Latency, authentication and HTTP-level faults; a response ends the attempt here.

    Returns None when the service should answer; it also shapes the faults in
    ``SERVICE_FAULTS``, since only it knows what its broken output looks like.
    """
    plan = state.plans[service]
    if plan.latency_ms and not await pause(request, plan.latency_ms / 1000, state.stopping):
        state.log.finish(entry, "aborted", None)
        return web.Response(status=499)
    if plan.api_key and presented_key(request) != plan.api_key:
        state.log.finish(entry, "rejected", 401)
        return error_response(401, "invalid x-api-key", error_body)
    if fault is None or fault in SERVICE_FAULTS:
        return None
    if fault in ERROR_STATUS:
        status = ERROR_STATUS[fault]
        retry_after = plan.retry_after if status in (429, 529) else None
        state.log.finish(entry, "fault", status)
        message = f"simulated {fault} fault (attempt {entry.attempt})"
        return error_response(status, message, error_body, retry_after)
    stall = plan.timeout_s if fault == "timeout" else math.inf
    if await pause(request, stall, state.stopping):
        state.log.finish(entry, "fault", 504)
        return error_response(504, "simulated timeout", error_body)
    state.log.finish(entry, "aborted", None)
    return web.Response(status=499)


#: Where the aiohttp application keeps its :class:`SimState`.
STATE: Final = web.AppKey("steadfast_sim_state", SimState)
