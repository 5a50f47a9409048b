"""Fault classes against the simulator: attempts, retry metrics, fail-fast and re-asks.

Faults target the query-generation call only (``match: "JSON array"``), so each
case exercises one LLM activity and the assertions can be exact.
"""

from __future__ import annotations

import time

import pytest
from tests.integration.conftest import Harness, HarnessFactory
from tests.support.temporal import failure_of

from steadfast_contract.models import STATUS_QUERY, Phase, RunStatus

pytestmark = pytest.mark.integration

QUERIES = "generate_queries"


def _attempts(h: Harness, activity: str, outcome: str) -> float:
    return h.metric("steadfast_activity_attempts_total", activity=activity, outcome=outcome)


def _query_key_attempts(h: Harness, wf_id: str) -> int:
    """Attempts the simulator saw of the first query-generation call of ``wf_id``."""
    keys = {k: v for k, v in h.sim.attempts("llm").items() if k.startswith(wf_id)}
    ask0 = [v for k, v in keys.items() if k.endswith("/ask0")]
    assert len(ask0) == 1, keys
    return ask0[0]


@pytest.mark.parametrize(
    ("kind", "error_type", "plan"),
    [
        ("429", "RateLimited", {"retry_after": 0.6}),
        ("500", "ServerError", {}),
        ("529", "Overloaded", {"retry_after": 0.3}),
        ("timeout", "Timeout", {"timeout_s": 6.0}),
    ],
)
async def test_retryable_fault_is_retried_until_it_clears(
    harness: HarnessFactory, kind: str, error_type: str, plan: dict[str, float]
) -> None:
    async with harness() as h:
        h.sim.set_faults({"llm": {"first_n": 2, "kind": kind, "match": "JSON array", **plan}})
        began = time.monotonic()
        result = await h.run(f"fault {kind}")
        elapsed = time.monotonic() - began

        assert result.status.phase == Phase.COMPLETED
        assert result.status.retries == 2
        assert _query_key_attempts(h, h.workflow_id(f"fault {kind}")) == 3
        assert _attempts(h, QUERIES, "failure") == 2
        assert _attempts(h, QUERIES, "success") == 1
        assert (
            h.metric("steadfast_activity_retries_total", activity=QUERIES, error_type=error_type)
            == 2
        )
        assert _attempts(h, "write_report", "failure") == 0
        # An error response is not billed: nothing counts as failed spend.
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=h.config.model.name) == 0
        if "retry_after" in plan:
            # Temporal waited as long as the server asked, not its 100 ms backoff.
            assert elapsed >= 2 * plan["retry_after"]
        if kind == "timeout":
            # The client gave up after model.timeout (2 s), well before the stall ended.
            assert 4.0 <= elapsed < 2 * plan["timeout_s"]


@pytest.mark.parametrize(("kind", "error_type"), [("400", "BadRequest"), ("401", "Unauthorized")])
async def test_non_retryable_fault_fails_fast(
    harness: HarnessFactory, kind: str, error_type: str
) -> None:
    async with harness() as h:
        h.sim.set_faults({"llm": {"first_n": 5, "kind": kind, "match": "JSON array"}})
        handle = await h.start(f"fail fast {kind}")
        cause = await failure_of(handle)
        assert cause.type == error_type
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        assert status.phase == Phase.FAILED
        assert status.retries == 0
        assert _query_key_attempts(h, handle.id) == 1
        assert _attempts(h, QUERIES, "failure") == 1
        assert (
            h.metric("steadfast_activity_retries_total", activity=QUERIES, error_type=error_type)
            == 0
        )
        assert h.metric("steadfast_runs_total", phase="Failed") == 1


async def test_unparsable_output_is_reasked_then_fails_typed(harness: HarnessFactory) -> None:
    async with harness() as h:
        # Every distinct ask's first attempt answers broken JSON.
        h.sim.set_faults({"llm": {"first_n": 1, "kind": "bad_json", "match": "JSON array"}})
        handle = await h.start("always broken json")
        cause = await failure_of(handle)
        assert cause.type == "InvalidModelOutput"
        status = await handle.query(STATUS_QUERY, result_type=RunStatus)
        # One activity attempt, three billed asks (the first and two re-asks).
        assert status.llm_calls == 3
        assert status.cost_usd > 0
        served = {k: v for k, v in h.sim.served("llm").items() if k.startswith(handle.id)}
        assert sorted(k.rsplit("/", 1)[1] for k in served) == ["ask0", "ask1", "ask2"]
        assert _attempts(h, QUERIES, "failure") == 1
        model = h.config.model.name
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=model) == pytest.approx(
            status.cost_usd
        )


async def test_broken_json_once_is_recovered_by_a_reask(harness: HarnessFactory) -> None:
    async with harness({"model": {"maxTokens": 800}}) as h:
        # Only the first ask is broken: its prompt alone asks "from different angles";
        # the re-ask is worded differently.
        h.sim.set_faults(
            {"llm": {"first_n": 1, "kind": "bad_json", "match": "from different angles"}}
        )
        result = await h.run("broken once")
        assert result.status.phase == Phase.COMPLETED
        assert result.status.llm_calls == 3  # bad ask, good re-ask, report
        assert result.status.retries == 0
        assert h.metric("steadfast_llm_retry_cost_usd_total", model=h.config.model.name) > 0


async def test_search_faults_retry_with_the_search_policy(harness: HarnessFactory) -> None:
    async with harness() as h:
        h.sim.set_faults({"search": {"first_n": 2, "kind": "500"}})
        result = await h.run("flaky search")
        assert result.status.phase == Phase.COMPLETED
        queries = h.config.retry_policies.resolve().search.maximum_attempts
        assert queries == 3
        n = len(h.sim.attempts("search"))
        assert n == 3  # three queries, one logical search each
        assert all(v == 3 for v in h.sim.attempts("search").values())
        assert result.status.retries == 2 * n
        assert (
            h.metric(
                "steadfast_activity_retries_total", activity="web_search", error_type="ServerError"
            )
            == 2 * n
        )


async def test_missing_api_key_fails_fast_without_calling_the_api(
    harness: HarnessFactory,
) -> None:
    async with harness({"model": {"apiKeyEnv": "STEADFAST_TEST_UNSET_KEY"}}) as h:
        handle = await h.start("no key")
        cause = await failure_of(handle)
        assert cause.type == "MissingCredentials"
        assert "STEADFAST_TEST_UNSET_KEY" in str(cause)
        assert not h.sim.attempts("llm")
        assert _attempts(h, QUERIES, "failure") == 1


async def test_stream_cut_off_mid_report_counts_its_spend_as_failed(
    harness: HarnessFactory,
) -> None:
    async with harness() as h:
        h.sim.set_faults(
            {"llm": {"first_n": 1, "kind": "stream_error", "match": "research report"}}
        )
        result = await h.run("report cut off")
        st = result.status
        assert st.phase == Phase.COMPLETED
        assert st.retries == 1
        model = h.config.model.name
        assert (
            h.metric(
                "steadfast_activity_retries_total", activity="write_report", error_type="Overloaded"
            )
            == 1
        )
        failed = h.metric("steadfast_llm_retry_cost_usd_total", model=model)
        assert failed > 0
        # The run's cost includes what the cut-off attempt was billed.
        assert st.cost_usd == pytest.approx(h.metric("steadfast_llm_cost_usd_total", model=model))
        assert st.cost_usd > failed
