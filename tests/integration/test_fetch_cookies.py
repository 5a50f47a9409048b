"""fetch_page keeps no cookie: not across fetches, runs, nor sites on one address.

The worker's HTTP client lives as long as its process and serves every run. With
a cookie jar, each ``Set-Cookie`` of a page the model chose was kept and sent back
on every later fetch from that address: a page setting 20 cookies grew the jar by
20 on each fetch (a header of megabytes after a few hundred), and, since a fetch
dials the address it checked (not the name), a session cookie one site set was
sent to another site on the same address (cookies ignore ports, as sites behind
one CDN edge share an address). The client under test is the one the worker's
activities use, on two loopback servers of the test's own.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from tests.integration.conftest import HarnessFactory

from steadfast_contract.models import FetchRules
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.fetching import fetch_text
from steadfast_worker.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Serve a handler on a loopback port of its own; the port."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_no_page_hands_a_cookie_to_another_nor_grows_the_jar(
    harness: HarnessFactory, serve: Callable[[Handler], Awaitable[int]]
) -> None:
    sent: list[str] = []
    numbers = itertools.count()

    async def victim(request: web.Request) -> web.StreamResponse:
        page = web.Response(text="<p>the victim's page</p>", content_type="text/html")
        page.set_cookie("victim_session", "s3cr3t-session-token")
        for _ in range(20):
            page.set_cookie(f"c{next(numbers)}", "x" * 10)
        return page

    async def other(request: web.Request) -> web.StreamResponse:
        sent.append(request.headers.get("cookie", ""))
        return web.Response(text="<p>another site</p>", content_type="text/html")

    victim_port, other_port = await serve(victim), await serve(other)
    async with harness() as h:
        activities = ResearchActivities(h.config, Metrics(), {})
        client = activities.http_client()
        rules = FetchRules(allow_private_hosts=["127.0.0.1"])
        try:
            for n in range(5):
                await fetch_text(client, f"http://127.0.0.1:{victim_port}/p{n}", rules)
            await fetch_text(client, f"http://127.0.0.1:{other_port}/", rules)
            kept, header = len(client.cookies.jar), len(sent[0])
            print(f"cookies kept: {kept}; Cookie header sent to the other site: {header} bytes")
            assert sent == [""]
            assert len(client.cookies.jar) == 0
        finally:
            await activities.aclose()
