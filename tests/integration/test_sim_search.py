"""The search simulator and the admin API, through real ``httpx``."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.support.sim import SimHandle, running_sim, spawned_sim

from steadfast_dev.sim import SimConfig, served_more_than_once
from steadfast_dev.sim.faults import ServicePlan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim_module() -> Iterator[SimHandle]:
    with running_sim(SimConfig(search=ServicePlan(api_key="search-key"))) as handle:
        yield handle


@pytest.fixture
def sim(sim_module: SimHandle) -> SimHandle:
    sim_module.reset()
    return sim_module


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"x-api-key": "search-key"}, timeout=10.0) as client:
        yield client


async def test_get_and_post_return_the_same_results_for_one_logical_request(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    got = await http.get(sim.search_url, params={"q": "river deltas", "count": 3})
    posted = await http.post(sim.search_url, json={"query": "river deltas", "count": 3})
    assert got.status_code == posted.status_code == 200
    assert got.json() == posted.json()
    results = got.json()["results"]
    assert len(results) == 3
    assert all(set(r) == {"title", "url", "snippet"} for r in results)
    assert sim.served("search") == {sim.entries("search")[0]["key"]: 2}


async def test_bearer_token_works_and_a_missing_key_is_401(sim: SimHandle) -> None:
    async with httpx.AsyncClient() as anonymous:
        denied = await anonymous.get(sim.search_url, params={"q": "x"})
        bearer = await anonymous.get(
            sim.search_url, params={"q": "x"}, headers={"authorization": "Bearer search-key"}
        )
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "unauthorized"
    assert bearer.status_code == 200


async def test_missing_query_is_400(sim: SimHandle, http: httpx.AsyncClient) -> None:
    answer = await http.get(sim.search_url)
    assert answer.status_code == 400
    assert "query" in answer.json()["error"]["message"]


async def test_first_n_faults_then_success_with_retry_after(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"search": {"sequence": ["429", "500"], "retry_after": 2}})
    statuses = []
    for _ in range(3):
        answer = await http.get(sim.search_url, params={"q": "storms"})
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert answer.headers["retry-after"] == "2"
    assert statuses == [429, 500, 200]
    assert sim.attempts("search") == {sim.entries("search")[0]["key"]: 3}


async def test_bad_json_is_a_200_that_does_not_parse(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    sim.set_faults({"search": {"first_n": 1, "kind": "bad_json"}})
    answer = await http.get(sim.search_url, params={"q": "storms"})
    assert answer.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)


async def test_disconnect_and_stream_error_faults(sim: SimHandle, http: httpx.AsyncClient) -> None:
    sim.set_faults({"search": {"sequence": ["disconnect", "stream_error"]}})
    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(sim.search_url, params={"q": "storms"})
    assert (await http.get(sim.search_url, params={"q": "storms"})).status_code == 500
    assert (await http.get(sim.search_url, params={"q": "storms"})).status_code == 200


async def test_hang_holds_the_client_until_it_gives_up(sim: SimHandle) -> None:
    sim.set_faults({"search": {"first_n": 1, "kind": "hang"}})
    async with httpx.AsyncClient(headers={"x-api-key": "search-key"}, timeout=0.3) as quick:
        with pytest.raises(httpx.ReadTimeout):
            await quick.get(sim.search_url, params={"q": "storms"})


async def test_seeded_rates_repeat_after_reset(sim: SimHandle, http: httpx.AsyncClient) -> None:
    async def statuses() -> list[int]:
        sim.set_faults({"seed": 11, "search": {"rates": {"500": 0.5}}})
        return [
            (await http.get(sim.search_url, params={"q": f"q{i}"})).status_code for i in range(30)
        ]

    first = await statuses()
    sim.reset()
    assert await statuses() == first
    assert 5 < first.count(500) < 25


def test_faults_endpoint_rejects_bad_input_naming_the_field(sim: SimHandle) -> None:
    answer = httpx.post(f"{sim.base_url}/_sim/faults", json={"llm": {"rates": {"429": 2}}})
    assert answer.status_code == 400
    assert "llm.rates" in answer.json()["error"]
    shown = httpx.get(f"{sim.base_url}/_sim/faults").json()
    assert shown["llm"]["rates"] == {}
    assert shown["search"]["api_key"] == "***"


def test_reset_returns_to_the_start_up_plan_and_empties_the_log(sim: SimHandle) -> None:
    sim.set_faults({"search": {"clear": True, "latency_ms": 5}})
    httpx.get(sim.search_url, params={"q": "x"})
    assert len(sim.entries()) == 1
    sim.reset()
    assert sim.entries() == []
    assert httpx.get(sim.search_url, params={"q": "x"}).status_code == 401


async def test_admin_client_reads_served_counts(sim: SimHandle, http: httpx.AsyncClient) -> None:
    await http.get(sim.search_url, params={"q": "a"})
    await http.get(sim.search_url, params={"q": "a"})
    served = await sim.admin.served("search")
    assert list(served.values()) == [2]
    assert served_more_than_once(served) == served
    assert await sim.admin.healthy()


def test_steadfast_sim_subprocess_serves_and_stops_on_sigterm() -> None:
    with spawned_sim(
        "--search-api-key", "k", "--llm-first-n", "1", "--llm-first-kind", "529"
    ) as sim:
        assert sim.process is not None
        assert httpx.get(sim.search_url, params={"q": "x"}).status_code == 401
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(f"{sim.llm_base_url}/v1/messages", json=body)
        second = httpx.post(f"{sim.llm_base_url}/v1/messages", json=body)
        assert (first.status_code, second.status_code) == (529, 200)
        sim.process.send_signal(signal.SIGTERM)
        assert sim.process.wait(timeout=10) == 0
