"""The simulator's web pages (``/pages/...``) and search results linking there, via ``httpx``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.support.sim import SimHandle

pytestmark = pytest.mark.integration

PAGE = "/pages/news.example.org/tidal-energy-outlook/2"
FIFTY_MB = 50_000_000


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def test_a_page_is_html_about_its_address_and_the_same_every_time(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    first = await http.get(f"{sim.base_url}{PAGE}")
    again = await http.get(f"{sim.base_url}{PAGE}")
    other = await http.get(f"{sim.base_url}/pages/example.com/river-deltas/1")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/html; charset=utf-8"
    assert int(first.headers["content-length"]) == len(first.content)
    assert 1000 < len(first.content) < 10000
    assert "<title>Tidal Energy Outlook</title>" in first.text
    assert first.text.count("tidal energy outlook") >= 10
    assert again.text == first.text
    assert "river deltas" in other.text
    assert "tidal" not in other.text
    assert sim.served("pages") == {
        sim.entries("pages")[0]["key"]: 2,
        sim.entries("pages")[2]["key"]: 1,
    }


async def test_a_fifty_megabyte_page_for_the_matching_address_only(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"pages": {"answer_bytes": FIFTY_MB, "match": "outlook"}})
    small = await http.get(f"{sim.base_url}/pages/example.com/river-deltas/1")
    assert len(small.content) < 10000
    received = 0
    async with http.stream("GET", f"{sim.base_url}{PAGE}") as page:
        assert page.headers["content-length"] == str(FIFTY_MB)
        async for chunk in page.aiter_bytes():
            received += len(chunk)
    assert received == FIFTY_MB
    assert [e["outcome"] for e in sim.entries("pages")] == ["served", "served"]


async def test_a_fetcher_that_gives_up_on_a_huge_page_is_logged_as_aborted(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"pages": {"answer_bytes": FIFTY_MB, "chunk_delay_ms": 5}})
    async with http.stream("GET", f"{sim.base_url}{PAGE}") as page:
        async for _ in page.aiter_bytes():
            break  # a worker's size limit: stop reading, close the connection
    for _ in range(100):
        if sim.entries("pages")[-1]["outcome"] == "aborted":
            break
        await asyncio.sleep(0.05)
    assert sim.entries("pages")[-1]["outcome"] == "aborted"
    assert sim.served("pages") == {}


@pytest.mark.parametrize("kind", ["image/png", "application/octet-stream"])
async def test_a_page_of_another_type_is_binary(
    sim: SimHandle, http: httpx.AsyncClient, kind: str
) -> None:
    sim.set_faults({"pages": {"content_type": kind, "answer_bytes": 100_000}})
    page = await http.get(f"{sim.base_url}{PAGE}")
    assert page.headers["content-type"] == kind
    assert len(page.content) == 100_000
    assert page.content.startswith(b"\x89PNG\r\n\x1a\n") == (kind == "image/png")
    with pytest.raises(UnicodeDecodeError):
        page.content.decode()


async def test_a_slow_body_arrives_in_delayed_chunks(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"pages": {"chunk_delay_ms": 100, "answer_bytes": 4096 * 5}})
    started = time.monotonic()
    first_byte = 0.0
    async with http.stream("GET", f"{sim.base_url}{PAGE}") as page:
        async for _ in page.aiter_bytes():
            first_byte = first_byte or time.monotonic() - started
    total = time.monotonic() - started
    assert first_byte < 0.3
    assert total >= 0.4
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"{sim.base_url}{PAGE}", timeout=httpx.Timeout(10.0, read=0.05))


async def test_page_faults(sim: SimHandle, http: httpx.AsyncClient) -> None:
    sim.set_faults({"pages": {"sequence": ["429", "bad_json", "disconnect", "stream_error"]}})
    url = f"{sim.base_url}{PAGE}"
    limited = await http.get(url)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    undecodable = await http.get(url)
    assert undecodable.status_code == 200
    with pytest.raises(UnicodeDecodeError):
        undecodable.content.decode("utf-8")
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(url)
    failed = await http.get(url)
    assert failed.status_code == 500
    fine = await http.get(url)
    assert "tidal energy outlook" in fine.text
    outcomes = [(e["fault"], e["outcome"]) for e in sim.entries("pages")]
    assert outcomes == [
        ("429", "fault"),
        ("bad_json", "served"),
        ("disconnect", "fault"),
        ("stream_error", "fault"),
        (None, "served"),
    ]


async def test_search_links_to_the_simulators_pages_only_when_asked(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    query = {"query": "tidal energy", "count": 5}
    external = (await http.post(sim.search_url, json=query)).json()["results"]
    assert all(r["url"].startswith("https://") for r in external)
    sim.set_faults({"search": {"page_links": True}})
    local = (await http.post(sim.search_url, json=query)).json()["results"]
    assert [r["title"] for r in local] == [r["title"] for r in external]
    for near, far in zip(local, external, strict=True):
        assert near["url"] == far["url"].replace("https://", f"{sim.base_url}/pages/")
    page = await http.get(local[0]["url"])
    assert page.status_code == 200
    assert "tidal energy" in page.text


async def test_page_links_follow_the_loopback_name_the_client_used(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"search": {"page_links": True}})
    port = sim.base_url.rsplit(":", 1)[1]
    by_name = await http.get(f"http://localhost:{port}/search", params={"q": "tidal energy"})
    assert by_name.json()["results"][0]["url"].startswith(f"http://localhost:{port}/pages/")
    forged = await http.get(
        sim.search_url, params={"q": "tidal energy"}, headers={"host": "evil.example.com"}
    )
    assert forged.json()["results"][0]["url"].startswith(f"http://127.0.0.1:{port}/pages/")


async def test_a_page_address_can_ask_for_a_redirect_a_status_or_no_content_length(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    port = sim.base_url.rsplit(":", 1)[1]
    target = f"http://localhost:{port}/pages/example.com/river-deltas/1"
    moved = await http.get(f"{sim.base_url}{PAGE}", params={"redirect_to": target})
    assert moved.status_code == 302
    assert moved.headers["location"] == target
    relative = await http.get(f"{sim.base_url}{PAGE}", params={"redirect_to": "/pages/a/b"})
    assert relative.headers["location"] == "/pages/a/b"
    followed = await http.get(
        f"{sim.base_url}{PAGE}", params={"redirect_to": target}, follow_redirects=True
    )
    assert str(followed.url) == target
    assert "river deltas" in followed.text
    for outside in ("https://evil.example.com/", "//evil.example.com/x", "javascript:x"):
        refused = await http.get(f"{sim.base_url}{PAGE}", params={"redirect_to": outside})
        assert refused.status_code == 400, outside
    missing = await http.get(f"{sim.base_url}{PAGE}", params={"status": "404"})
    assert missing.status_code == 404
    assert (await http.get(f"{sim.base_url}{PAGE}", params={"status": "200"})).status_code == 400
    chunked = await http.get(f"{sim.base_url}{PAGE}", params={"chunked": "1"})
    assert "content-length" not in chunked.headers
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.text == (await http.get(f"{sim.base_url}{PAGE}")).text
    assert [(e["path"], e["outcome"], e["status"]) for e in sim.entries("pages")][:3] == [
        (PAGE, "served", 302),
        (PAGE, "served", 302),
        (PAGE, "served", 302),
    ]
    assert ("/pages/example.com/river-deltas/1", "served", 200) in [
        (e["path"], e["outcome"], e["status"]) for e in sim.entries("pages")
    ]
