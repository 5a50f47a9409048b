"""fetch_page against the simulator's pages: rules hold before dialing, on redirects, mid-body.

The client counts the body bytes it was handed (a transport wrapper, the
connection itself is real), so "refused without downloading 50 MB" is measured,
not assumed; the simulator's request log shows which addresses were dialed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast
from urllib.parse import urlencode

import httpx
import pytest
from tests.support.sim import SimHandle

from steadfast_contract.models import FetchRules
from steadfast_worker import errors
from steadfast_worker.fetching import MAX_REDIRECTS, FetchRefused, FetchTimeout, fetch_text

pytestmark = pytest.mark.integration

#: The simulator serves on loopback, which fetch_page reads only from hosts named in
#: ``allowPrivateHosts``: every test but those about that rule names both loopback names.
LOOPBACK = ("127.0.0.1", "localhost")


def loopback_rules(private: Sequence[str] = LOOPBACK, **rules: Any) -> FetchRules:
    return FetchRules(allow_private_hosts=list(private), **rules)


PAGE = "/pages/news.example.org/tidal-energy-outlook/2"
OTHER = "/pages/example.com/river-deltas/1"
FIFTY_MB = 50_000_000
MAX_BYTES = 1_000_000


class _CountedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, transport: CountingTransport) -> None:
        self._inner = inner
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._transport.received += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real transport that counts the response body bytes read through it."""

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.dialed: list[tuple[str, str]] = []
        """(the host connected to, the Host header sent) per request."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.dialed.append((request.url.host, request.headers["host"]))
        response = await super().handle_async_request(request)
        response.stream = _CountedStream(cast(httpx.AsyncByteStream, response.stream), self)
        return response


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
async def http(transport: CountingTransport) -> AsyncIterator[httpx.AsyncClient]:
    # The caller's client may follow redirects itself: fetch_text must not let it.
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        yield client


def _port(sim: SimHandle) -> str:
    return sim.base_url.rsplit(":", 1)[1]


def _with_query(url: str, **query: str) -> str:
    return f"{url}?{urlencode(query)}"


async def _outcome(sim: SimHandle, index: int = -1) -> str:
    """The log's outcome of an attempt once the simulator has noticed how it ended."""
    outcome = "pending"
    for _ in range(100):
        outcome = str(sim.entries("pages")[index]["outcome"])
        if outcome != "pending":
            break
        await asyncio.sleep(0.05)
    return outcome


async def test_a_page_is_read_as_lines_of_text(sim: SimHandle, http: httpx.AsyncClient) -> None:
    url = f"{sim.base_url}{PAGE}"
    final, text = await fetch_text(http, url, loopback_rules())
    assert final == url
    lines = text.splitlines()
    assert lines[0] == "Tidal Energy Outlook"
    assert len(lines) == 10
    assert all("<" not in line for line in lines)
    assert sum("tidal energy outlook" in line for line in lines) == 8
    assert [(e["path"], e["outcome"]) for e in sim.entries("pages")] == [(PAGE, "served")]


@pytest.mark.parametrize(
    ("host", "rules"),
    [
        ("127.0.0.1", loopback_rules(allow_domains=["localhost"])),
        ("127.0.0.1", loopback_rules(deny_domains=["127.0.0.1"])),
        ("localhost", loopback_rules(deny_domains=["localhost"])),
        ("localhost", loopback_rules(allow_domains=["localhost:1"])),
        ("127.1", loopback_rules(deny_domains=["127.0.0.1"])),
    ],
)
async def test_a_disallowed_domain_is_refused_before_dialing(
    sim: SimHandle, http: httpx.AsyncClient, host: str, rules: FetchRules
) -> None:
    with pytest.raises(FetchRefused):
        await fetch_text(http, f"http://{host}:{_port(sim)}{PAGE}", rules)
    assert sim.entries("pages") == []
    # The same rules let the other loopback name through: the refusal was the rule's.
    other = "localhost" if host != "localhost" else "127.0.0.1"
    allowed = loopback_rules(allow_domains=[other]) if rules.allow_domains else rules
    final, text = await fetch_text(http, f"http://{other}:{_port(sim)}{PAGE}", allowed)
    assert final.startswith(f"http://{other}:")
    assert "tidal energy outlook" in text
    assert len(sim.entries("pages")) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_fifty_megabyte_page_is_refused_after_at_most_max_bytes(
    sim: SimHandle, http: httpx.AsyncClient, transport: CountingTransport, chunked: bool
) -> None:
    sim.set_faults({"pages": {"answer_bytes": FIFTY_MB}})
    url = f"{sim.base_url}{PAGE}"
    started = time.monotonic()
    with pytest.raises(FetchRefused, match=f"larger than {MAX_BYTES}"):
        await fetch_text(
            http,
            _with_query(url, chunked="1") if chunked else url,
            loopback_rules(max_bytes=MAX_BYTES),
        )
    elapsed = time.monotonic() - started
    shape = "chunked" if chunked else "with Content-Length"
    print(f"50 MB page, {shape}: {transport.received} body bytes read in {elapsed:.3f} s")
    if chunked:
        # Counted while streaming: stopped within one network read past the limit.
        assert MAX_BYTES < transport.received <= MAX_BYTES + 512 * 1024
    else:
        # The announced length alone refuses it.
        assert transport.received == 0
    assert elapsed < 2.0
    assert await _outcome(sim) == "aborted"


async def test_a_body_with_no_length_within_the_limit_is_read_whole(
    sim: SimHandle, http: httpx.AsyncClient, transport: CountingTransport
) -> None:
    sim.set_faults({"pages": {"answer_bytes": MAX_BYTES}})
    url = _with_query(f"{sim.base_url}{PAGE}", chunked="1")
    _, text = await fetch_text(http, url, loopback_rules(max_bytes=MAX_BYTES))
    assert transport.received == MAX_BYTES
    assert text.endswith("[truncated]")
    assert len(text) <= 12_000


@pytest.mark.parametrize("kind", ["image/png", "application/octet-stream", "application/pdf"])
async def test_a_page_that_is_not_text_is_refused_unread(
    sim: SimHandle, http: httpx.AsyncClient, transport: CountingTransport, kind: str
) -> None:
    sim.set_faults({"pages": {"content_type": kind, "answer_bytes": 100_000}})
    with pytest.raises(FetchRefused, match=kind):
        await fetch_text(http, f"{sim.base_url}{PAGE}", loopback_rules())
    assert transport.received == 0


async def test_a_redirect_is_followed_and_checked_at_every_hop(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    port = _port(sim)
    target = f"http://127.0.0.1:{port}{OTHER}"
    start = _with_query(f"http://localhost:{port}{PAGE}", redirect_to=target)
    final, text = await fetch_text(
        http, start, loopback_rules(allow_domains=["localhost:" + port, "127.0.0.1"])
    )
    assert final == target
    assert "river deltas" in text
    assert [e["path"] for e in sim.entries("pages")] == [PAGE, OTHER]
    sim.reset()

    refusing = (
        loopback_rules(allow_domains=["localhost"]),
        loopback_rules(deny_domains=["127.0.0.1"]),
    )
    for rules in refusing:
        with pytest.raises(FetchRefused, match=f"redirected to {target}: .*127.0.0.1"):
            await fetch_text(http, start, rules)
    # Only the allowed first hop was ever dialed.
    assert [e["path"] for e in sim.entries("pages")] == [PAGE, PAGE]


async def test_a_relative_redirect_is_resolved_against_the_page(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    start = _with_query(f"{sim.base_url}{PAGE}", redirect_to=OTHER)
    final, text = await fetch_text(http, start, loopback_rules(allow_domains=["127.0.0.1"]))
    assert final == f"{sim.base_url}{OTHER}"
    assert "river deltas" in text


@pytest.mark.parametrize("hops", [MAX_REDIRECTS, MAX_REDIRECTS + 1])
async def test_at_most_five_redirects_are_followed(
    sim: SimHandle, http: httpx.AsyncClient, hops: int
) -> None:
    url = f"{sim.base_url}{OTHER}"
    for hop in range(hops):
        url = _with_query(f"{sim.base_url}/pages/hop/{hop}", redirect_to=url)
    if hops <= MAX_REDIRECTS:
        final, text = await fetch_text(http, url, loopback_rules())
        assert final == f"{sim.base_url}{OTHER}"
        assert "river deltas" in text
    else:
        with pytest.raises(FetchRefused, match=f"more than {MAX_REDIRECTS} redirects"):
            await fetch_text(http, url, loopback_rules())
        assert len(sim.entries("pages")) == MAX_REDIRECTS + 1
        assert OTHER not in [e["path"] for e in sim.entries("pages")]


@pytest.mark.parametrize(
    "plan",
    [
        {"chunk_delay_ms": 200, "answer_bytes": 4096 * 100},  # a body that trickles
        {"latency_ms": 5000},  # headers that never come in time
    ],
    ids=["slow-body", "slow-headers"],
)
async def test_a_fetch_longer_than_its_timeout_fails_retryably_on_time(
    sim: SimHandle, http: httpx.AsyncClient, plan: dict[str, int]
) -> None:
    sim.set_faults({"pages": plan})
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException) as raised:
        await fetch_text(http, f"{sim.base_url}{PAGE}", loopback_rules(timeout_seconds=1.0))
    elapsed = time.monotonic() - started
    print(f"{plan}: timed out after {elapsed:.3f} s")
    assert 1.0 <= elapsed < 2.0
    assert isinstance(raised.value, FetchTimeout)
    err = errors.to_application_error(raised.value)
    assert err.type == errors.TIMEOUT
    assert errors.is_retryable(err)


@pytest.mark.parametrize(
    ("ask", "kind", "retry_after"),
    [
        ({"status": "503"}, errors.SERVER_ERROR, None),
        ({"status": "500"}, errors.SERVER_ERROR, None),
        ({"fault": "429"}, errors.RATE_LIMITED, 1.0),
        ({"fault": "disconnect"}, errors.CONNECTION_FAILED, None),
    ],
)
async def test_a_server_failure_is_retryable(
    sim: SimHandle,
    http: httpx.AsyncClient,
    ask: dict[str, str],
    kind: str,
    retry_after: float | None,
) -> None:
    url = f"{sim.base_url}{PAGE}"
    if "fault" in ask:
        sim.set_faults({"pages": {"sequence": [ask["fault"]], "stream_cut": 0.5}})
    else:
        url = _with_query(url, **ask)
    with pytest.raises(httpx.HTTPError) as raised:
        await fetch_text(http, url, loopback_rules())
    err = errors.to_application_error(raised.value)
    assert (err.type, errors.is_retryable(err)) == (kind, True)
    delay = err.next_retry_delay.total_seconds() if err.next_retry_delay else None
    assert delay == retry_after


@pytest.mark.parametrize("status", ["404", "403", "410", "400"])
async def test_a_client_error_refuses_the_page(
    sim: SimHandle, http: httpx.AsyncClient, status: str
) -> None:
    url = _with_query(f"{sim.base_url}{PAGE}", status=status)
    with pytest.raises(FetchRefused, match=status):
        await fetch_text(http, url, loopback_rules())


async def test_an_undecodable_page_is_read_with_replacement_characters(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"pages": {"sequence": ["bad_json"]}})
    _, text = await fetch_text(http, f"{sim.base_url}{PAGE}", loopback_rules())
    assert "\ufffd" in text
    assert "tidal energy outlook" in text


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:169.254.169.254]/computeMetadata/v1/",
        "http://[fe80::1]/",
    ],
)
async def test_instance_metadata_is_refused_even_with_no_rules(
    transport: CountingTransport, http: httpx.AsyncClient, url: str
) -> None:
    """An empty allow list admits any host, but never a link-local one: a cloud's
    credentials would go into the model's prompt. Refused before any connection."""
    with pytest.raises(FetchRefused, match="link-local"):
        await fetch_text(http, url, loopback_rules())
    assert transport.received == 0


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("127.1", "127.0.0.1"),  # judged as the address it dials
        ("[::ffff:127.0.0.1]", None),  # a rule cannot name an IPv6 address: always refused
    ],
)
async def test_a_host_inside_the_network_is_refused_unless_allowed_private(
    sim: SimHandle,
    transport: CountingTransport,
    http: httpx.AsyncClient,
    host: str,
    named: str | None,
) -> None:
    """A page the model read may name a service inside the cluster (Temporal's HTTP
    API, Prometheus, a dashboard): with no rules at all, a loopback or private address
    is not dialed. Naming the host in allowPrivateHosts lets it through, port included."""
    port = _port(sim)
    url = f"http://{host}:{port}{PAGE}"
    for private in ([], [f"{named or '127.0.0.1'}:1"]):  # none, and the wrong port
        with pytest.raises(FetchRefused, match=r"not a public address.*allowPrivateHosts"):
            await fetch_text(http, url, FetchRules(allow_private_hosts=private))
    assert transport.dialed == []
    assert sim.entries("pages") == []
    if named is not None:
        final, text = await fetch_text(http, url, FetchRules(allow_private_hosts=[named]))
        assert final == url
        assert "tidal energy outlook" in text
        assert [e["path"] for e in sim.entries("pages")] == [PAGE]


async def test_a_redirect_into_the_network_is_refused_at_that_hop(
    sim: SimHandle, transport: CountingTransport, http: httpx.AsyncClient
) -> None:
    """A host the agent may read redirects to one it may not (the loopback name, on
    the same server): the second hop is refused before it is dialed."""
    port = _port(sim)
    inside = f"http://localhost:{port}{OTHER}"
    start = _with_query(f"http://127.0.0.1:{port}{PAGE}", redirect_to=inside)
    with pytest.raises(FetchRefused, match=f"redirected to {inside}: .*not a public address"):
        await fetch_text(http, start, FetchRules(allow_private_hosts=[f"127.0.0.1:{port}"]))
    assert [e["path"] for e in sim.entries("pages")] == [PAGE]
    assert len(transport.dialed) == 1


async def test_a_name_that_resolves_inside_the_network_is_read_only_if_named(
    sim: SimHandle, transport: CountingTransport, http: httpx.AsyncClient
) -> None:
    """A public-looking name with a private answer (a split-horizon name, or one an
    attacker points at 127.0.0.1) is judged by its address; naming it allows it."""
    port = _port(sim)
    resolver = RebindingResolver(["127.0.0.1"], ["127.0.0.1"])
    url = f"http://wiki.corp.test:{port}{PAGE}"
    with pytest.raises(FetchRefused, match=r"wiki\.corp\.test resolves to .*not a public"):
        await fetch_text(http, url, FetchRules(), resolve=resolver)
    assert transport.dialed == []
    rules = FetchRules(allow_private_hosts=["*.corp.test"])
    final, text = await fetch_text(http, url, rules, resolve=resolver)
    assert (final, text.splitlines()[0]) == (url, "Tidal Energy Outlook")
    assert transport.dialed == [("127.0.0.1", f"wiki.corp.test:{port}")]


class RebindingResolver:
    """A name that answers ``first`` to its first lookup and ``then`` to every later one:
    DNS rebinding, played without a DNS server."""

    def __init__(self, first: list[str], then: list[str]) -> None:
        self.answers = [first, then]
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return self.answers[min(len(self.lookups) - 1, 1)]


async def test_a_name_is_resolved_once_and_the_address_checked_is_the_one_dialed(
    sim: SimHandle, transport: CountingTransport, http: httpx.AsyncClient
) -> None:
    """The name answers a loopback address to the check and instance metadata after:
    the connection goes to the address that was checked, and the server still hears
    the name."""
    port = _port(sim)
    resolver = RebindingResolver(["127.0.0.1"], ["169.254.169.254"])
    url = f"http://pages.rebind.test:{port}{PAGE}"
    rules = loopback_rules(allow_domains=["pages.rebind.test"], private=["pages.rebind.test"])
    final, text = await fetch_text(http, url, rules, resolve=resolver)
    assert final == url
    assert text.splitlines()[0] == "Tidal Energy Outlook"
    assert resolver.lookups == [("pages.rebind.test", int(port))]
    assert transport.dialed == [("127.0.0.1", f"pages.rebind.test:{port}")]
    assert [(e["path"], e["outcome"]) for e in sim.entries("pages")] == [(PAGE, "served")]


async def test_a_name_with_a_link_local_answer_is_refused_before_dialing(
    transport: CountingTransport, http: httpx.AsyncClient
) -> None:
    resolver = RebindingResolver(["127.0.0.1", "169.254.169.254"], ["127.0.0.1"])
    rules = loopback_rules(private=["pages.rebind.test"])  # allowed inside, still never
    with pytest.raises(FetchRefused, match=r"pages\.rebind\.test resolves to .*link-local"):
        await fetch_text(http, "http://pages.rebind.test/x", rules, resolve=resolver)
    assert transport.dialed == []


async def test_a_name_that_does_not_resolve_fails_retryably(
    transport: CountingTransport, http: httpx.AsyncClient
) -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(httpx.ConnectError, match=r"could not resolve nowhere\.test") as caught:
        await fetch_text(http, "https://nowhere.test/", loopback_rules(), resolve=nowhere)
    assert errors.to_application_error(caught.value).non_retryable is False
    assert transport.dialed == []
