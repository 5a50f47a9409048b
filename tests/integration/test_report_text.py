"""Characters no store or request takes, in what a model or a search index sends.

JSON can carry NUL (a Postgres ``TEXT`` column refuses it) and a lone surrogate
(UTF-8 cannot encode it: SQLite, SMTP, stdout and every request body refuse it).
A report holding one used to be paid for and then lost: its save retried as if the
store were down until ``storage.saveTimeout``, and the run failed. A search result
holding a lone surrogate failed the pipeline's report request on every attempt.
The simulator's model writes them into its report, and its search index into a
snippet, here (the ``says`` plans), on both stores, for both strategies.
"""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from tests.integration.conftest import HarnessFactory
from tests.integration.test_deep_agent import deep, plan, the_report

from steadfast_contract.models import Phase

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(120)]

#: A save that fails for good must fail the test quickly, not after a week.
QUICK_SAVE = {"storage": {"saveTimeout": "5s"}}


@pytest.mark.parametrize(
    ("says", "shown"),
    [("a NUL \x00 here", "a NUL \ufffd here"), ("a lone \ud800 half", "a lone \ufffd half")],
    ids=["nul", "lone-surrogate"],
)
@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_report_with_characters_no_store_takes_is_saved(
    harness: HarnessFactory, backend_dsn: str, says: str, shown: str, strategy: str
) -> None:
    overrides = {**deep(4), **QUICK_SAVE} if strategy == "deep" else QUICK_SAVE
    async with harness(overrides, postgres_dsn=backend_dsn) as h:
        h.sim.set_faults(plan(4, says=says) if strategy == "deep" else {"llm": {"says": says}})
        handle = await h.start(f"unholdable text {strategy} {uuid.uuid4().hex[:8]}")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        markdown = await the_report(h, handle.id)
        assert shown in markdown
        assert len(markdown) == result.report_markdown_chars
        (mail,) = h.smtp.messages_for(handle.id)
        assert result.status.report_id in mail.get_content()


def _snippets(history: WorkflowHistory) -> list[str]:
    """Every search result snippet the run's activities returned (its history's record)."""
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            found.extend(v for k, v in value.items() if k == "snippet" and isinstance(v, str))
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            for payload in event.activity_task_completed_event_attributes.result.payloads:
                walk(json.loads(payload.data))
    return found


@pytest.mark.parametrize(
    ("says", "held"),
    [
        ("a NUL \x00 here", "a NUL \ufffd here"),
        ("a lone \ud800 half", "a lone \ufffd half"),
        ("\x1b[2J a screen clear", "\x1b[2J a screen clear"),  # text: the terminal's care
    ],
    ids=["nul", "lone-surrogate", "escape"],
)
@pytest.mark.parametrize("strategy", ["pipeline", "deep"])
async def test_a_search_result_with_characters_no_request_takes_does_not_fail_the_run(
    harness: HarnessFactory, says: str, held: str, strategy: str
) -> None:
    overrides = {**deep(4), **QUICK_SAVE} if strategy == "deep" else QUICK_SAVE
    async with harness(overrides) as h:
        faults = plan(4) if strategy == "deep" else {}
        h.sim.set_faults({**faults, "search": {**faults.get("search", {}), "says": says}})
        handle = await h.start(f"unholdable result {strategy} {uuid.uuid4().hex[:8]}")
        result = await handle.result()
        assert result.status.phase == Phase.COMPLETED, result.status.message
        assert result.status.retries == 0
        if strategy == "pipeline":  # its results are in history (a deep run's, in the store)
            snippets = _snippets(await handle.fetch_history())
            assert any(held in snippet for snippet in snippets), snippets
