"""Replay: recorded histories of real runs must replay on the current workflow code.

The fixtures were captured by ``hack/capture-histories`` from real runs (happy
path with email, LLM retries, a failed search, budget exhaustion, approval,
rejection, a worker SIGKILLed mid-report, runs paused by the run's and the day's
budget and resumed by a ``budget`` update, deep runs -- one of them a chain of three
runs that continued as new), some of them before and after runs
kept their spend in a memo (``*_spend_memo``), and the approval gate's own (a wait
that expired, a rejection ignored because the report did not exist yet) recorded
after its timeout and phase check were guarded by ``workflow.patched``, and the lean shape's
(``*_lean_spend_memo``: one ``lean-run`` marker for the memo, no ``send_email`` without
recipients), and runs whose shape is in their input (``*_shape1``: the lean shape with
no marker, and streamed replies' tails published by the workflow), and runs of shape 2
(``*_shape2``: every search in one ``web_searches`` activity, one retried alone), and runs
the model refused (``report_refused_shape2``, ``deep_refused``: what they gathered saved,
the run failed ``ModelRefused``), and the newer patched branches: runs their budget stopped
that keep what they gathered (``budget_exhausted_keeps_gathered_shape2``, and
``searches_day_stopped_shape2``, searches through the model reserving their results and
counted before the pause), and a deep run whose context window ended it early
(``deep_context_window``), and runs cancelled once their report was paid for
(``cancelled_while_saving_shape2``, ``cancelled_while_mailing_shape2``: the report
saved, no mail or the mail step let finish, the run ``Cancelled``; and the same two
recorded before, which mailed after the cancel, or failed the mail step:
``cancelled_while_saving_mailed_shape2``, ``cancelled_while_mailing_failed_shape2``),
and runs whose report step failed for good that keep what they gathered
(``report_failed_keeps_gathered_shape2``, ``deep_failed_keeps_gathered``) and one
recorded before that saved nothing (``report_failed_nothing_kept_shape2``), and a run
cancelled while its first LLM call ran (``cancelled_mid_step_shape2``, ``Cancelled``;
recorded before: ``cancelled_mid_step_failed_shape2``, ``Failed``), and a run whose search
results came back in Chinese, its report reserved at a token a character
(``report_in_chinese_shape2``, the ``tokens-by-script`` marker; recorded before, at four
characters a token: ``report_in_chinese_by_length_shape2``), and a deep chain of three
runs whose model counted its prompts for more than the estimate, sized by the tokens the
API counted (``deep_counted_prompt_run1..3``, the ``deep-counted-prompt`` marker in each,
the last asking for its report before the window; recorded before, from the prompt's own
characters: ``deep_context_window`` and the other deep runs), and a deep run cancelled
mid-turn after recording findings, which it saved (``deep_cancelled_keeps_gathered``, the
``cancel-keeps-gathered`` marker; recorded before, saving nothing:
``deep_cancelled_nothing_kept``).
Replaying them with ``temporalio.worker.Replayer`` re-executes today's ``ResearchWorkflow`` against
yesterday's events: a change that would make runs in flight non-deterministic
(reordered activities, a new timer, a changed branch) fails here, not in
production.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from tests.support.temporal import scheduled_activities

from steadfast_contract.models import (
    APPROVAL_GATE_PATCH,
    BUDGET_KEEPS_GATHERED_PATCH,
    BUDGET_PAUSE_PATCH,
    CANCEL_HOLDS_MAIL_PATCH,
    CANCEL_KEEPS_GATHERED_PATCH,
    CANCEL_MID_STEP_PATCH,
    FAILURE_KEEPS_GATHERED_PATCH,
    SEARCH_RESULTS_RESERVED_PATCH,
    SEARCH_STEP_PATCH,
    SEARCHES_COUNTED_PATCH,
    SPEND_MEMO_PATCH,
    TOKENS_BY_SCRIPT_PATCH,
    WORKFLOW_NAME,
    ResearchInput,
)
from steadfast_worker.deep import CONTEXT_PATCH, COUNTED_PROMPT_PATCH
from steadfast_worker.mailing import LEAN_RUN_PATCH
from steadfast_worker.savewait import SAVE_WAIT_PATCH
from steadfast_worker.workflows import ResearchWorkflow

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "histories"
HISTORIES = sorted(FIXTURES.glob("*.json"))
#: Deep fixtures recorded on code with ``deep-counted-prompt``.
RECORDED_AFTER_COUNTED = ("deep_counted_prompt", "deep_cancelled_")
#: Cancelled during their first LLM call: nothing spent (so no memo written) and the
#: search step never reached.
CANCELLED_IN_THEIR_FIRST_CALL = {"cancelled_mid_step_shape2", "cancelled_mid_step_failed_shape2"}


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_fixtures_exist() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"happy_path_with_email", "approved", "worker_killed_while_writing"} <= names


def test_fixtures_cover_runs_before_and_after_the_approval_gate() -> None:
    # approved/rejected ran before the gate had a timeout; these two ran after it.
    patched = {"approval_expired_spend_memo", "rejected_too_early_spend_memo"}
    for path in HISTORIES:
        markers = [
            e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
            for e in load(path).events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and "patch-data" in e.marker_recorded_event_attributes.details
        ]
        gated = any(APPROVAL_GATE_PATCH.encode() in m for m in markers)
        assert gated == (path.stem in patched), path.name


def _patches(path: Path) -> list[bytes]:
    return _patches_of(load(path))


def _patches_of(history: WorkflowHistory) -> list[bytes]:
    return [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and "patch-data" in e.marker_recorded_event_attributes.details
    ]


def test_fixtures_cover_runs_before_and_after_the_budget_pause() -> None:
    # budget_exhausted ended at once (recorded before the pause); these two paused,
    # one for the run's budget, one for the day's, and resumed on a raise.
    paused = {
        "budget_paused_raised_spend_memo",
        "budget_day_paused_raised_spend_memo",
        "searches_day_paused_raised_shape2",
    }
    for path in HISTORIES:
        marked = any(BUDGET_PAUSE_PATCH.encode() in m for m in _patches(path))
        assert marked == (path.stem in paused), path.name


def test_fixtures_cover_runs_before_and_after_the_spend_memo() -> None:
    # Runs recorded before the memo existed (no upserts) must replay as they ran;
    # the *_spend_memo ones record the patch marker and the memo upserts.
    for path in HISTORIES:
        kinds = {e.event_type for e in load(path).events}
        upserts = EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED in kinds
        recorded_after = path.stem.endswith(
            ("_spend_memo", "_shape1", "_shape2")
        ) or path.stem.startswith("deep_")
        if path.stem in CANCELLED_IN_THEIR_FIRST_CALL:
            recorded_after = False  # no spend, so no memo to keep it in
        assert upserts == recorded_after, path.name
        assert (EventType.EVENT_TYPE_MARKER_RECORDED in kinds) or not upserts, path.name


def test_fixtures_cover_deep_runs_and_a_chain_that_continued_as_new() -> None:
    deep = load(FIXTURES / "deep_agent.json")
    scheduled = scheduled_activities(deep)
    assert scheduled.count("deep_turn") == 6
    assert "deep_tool" in scheduled
    chain = [load(FIXTURES / f"deep_continued_as_new_run{i}.json") for i in (1, 2, 3)]
    ends = [h.events[-1].event_type for h in chain]
    assert ends == [
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    ]


@pytest.mark.parametrize(
    ("name", "patches"),
    [
        ("budget_exhausted_keeps_gathered_shape2", [BUDGET_KEEPS_GATHERED_PATCH]),
        (
            "searches_day_stopped_shape2",
            [SEARCH_RESULTS_RESERVED_PATCH, SEARCHES_COUNTED_PATCH, BUDGET_KEEPS_GATHERED_PATCH],
        ),
        ("deep_context_window", [CONTEXT_PATCH]),
        ("cancelled_while_saving_shape2", [CANCEL_HOLDS_MAIL_PATCH]),
        ("cancelled_while_mailing_shape2", [CANCEL_HOLDS_MAIL_PATCH]),
        ("report_failed_keeps_gathered_shape2", [FAILURE_KEEPS_GATHERED_PATCH]),
        ("deep_failed_keeps_gathered", [FAILURE_KEEPS_GATHERED_PATCH]),
        ("cancelled_mid_step_shape2", [CANCEL_MID_STEP_PATCH]),
        ("report_in_chinese_shape2", [TOKENS_BY_SCRIPT_PATCH]),
        ("deep_counted_prompt_run1", [COUNTED_PROMPT_PATCH]),
        ("deep_counted_prompt_run3", [COUNTED_PROMPT_PATCH, CONTEXT_PATCH]),
        ("deep_cancelled_keeps_gathered", [CANCEL_MID_STEP_PATCH, CANCEL_KEEPS_GATHERED_PATCH]),
    ],
)
def test_fixtures_cover_the_newer_patched_branches(name: str, patches: list[str]) -> None:
    """Each newer ``workflow.patched`` branch has a history that took it, so a later
    change to that branch fails the replay as the older ones do."""
    recorded = _patches(FIXTURES / f"{name}.json")
    for patch in patches:
        assert any(patch.encode() in m for m in recorded), (name, patch)
    history = load(FIXTURES / f"{name}.json")
    if BUDGET_KEEPS_GATHERED_PATCH in patches:
        assert scheduled_activities(history)[-1] == "save_report"  # what it gathered
        failure = history.events[-1].workflow_execution_failed_event_attributes.failure
        assert failure.application_failure_info.type == "BudgetExhausted"
    if CANCEL_HOLDS_MAIL_PATCH in patches:
        end = history.events[-1].event_type
        assert end == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, name
        mailed = "send_email" in scheduled_activities(history)
        assert mailed == ("mailing" in name), name
    if FAILURE_KEEPS_GATHERED_PATCH in patches:
        assert scheduled_activities(history)[-1] == "save_report"  # what it gathered
        failure = history.events[-1].workflow_execution_failed_event_attributes.failure
        assert failure.application_failure_info.type == "BadRequest"
        assert "saved as report" in failure.message
    if CANCEL_MID_STEP_PATCH in patches:
        end = history.events[-1].event_type
        assert end == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, name
    if CANCEL_KEEPS_GATHERED_PATCH in patches:
        assert scheduled_activities(history)[-1] == "save_report"  # its findings
    if TOKENS_BY_SCRIPT_PATCH in patches:
        end = history.events[-1].event_type
        assert end == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, name
    if COUNTED_PROMPT_PATCH in patches:
        end = history.events[-1].event_type
        ending = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        if CONTEXT_PATCH not in patches:  # the first of the chain
            ending = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        assert end == ending, name


def test_fixtures_cover_deep_runs_before_the_counted_prompt() -> None:
    """Recorded before ``deep-counted-prompt``: a replay of each deep run asks for it
    (every turn's counted prompt differs from its characters) and must go on without."""
    for path in HISTORIES:
        if path.stem.startswith("deep_") and not path.stem.startswith(RECORDED_AFTER_COUNTED):
            recorded = _patches(path)
            assert not any(COUNTED_PROMPT_PATCH.encode() in m for m in recorded), path.name


def test_fixtures_cover_a_deep_run_cancelled_before_it_kept_its_findings() -> None:
    """Recorded before ``cancel-keeps-gathered``: the same deep run, cancelled mid-turn
    after recording findings, saved nothing and ended ``Cancelled``; a replay asks for
    the patch (it has findings to keep) and must go on without."""
    history = load(FIXTURES / "deep_cancelled_nothing_kept.json")
    assert "save_report" not in scheduled_activities(history)
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED
    recorded = _patches_of(history)
    assert any(CANCEL_MID_STEP_PATCH.encode() in m for m in recorded)
    assert not any(CANCEL_KEEPS_GATHERED_PATCH.encode() in m for m in recorded)


def test_fixtures_cover_runs_cancelled_before_the_cancel_held_the_mail() -> None:
    """Recorded before ``cancel-holds-mail``: one mailed after a cancel in ``Saving``
    and completed, one failed the mail step the cancel reached."""
    saving = load(FIXTURES / "cancelled_while_saving_mailed_shape2.json")
    assert "send_email" in scheduled_activities(saving)
    assert saving.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    mailing = load(FIXTURES / "cancelled_while_mailing_failed_shape2.json")
    assert mailing.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    for history in (saving, mailing):
        kinds = {e.event_type for e in history.events}
        assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in kinds
        assert not any(CANCEL_HOLDS_MAIL_PATCH.encode() in m for m in _patches_of(history))


def test_fixtures_cover_runs_that_failed_before_they_kept_what_they_gathered() -> None:
    """Recorded before ``failure-keeps-gathered`` and ``cancel-mid-step``: a report step
    that failed for good saved nothing; a cancel during an LLM call failed the run."""
    failed = load(FIXTURES / "report_failed_nothing_kept_shape2.json")
    assert "save_report" not in scheduled_activities(failed)
    cancelled = load(FIXTURES / "cancelled_mid_step_failed_shape2.json")
    kinds = {e.event_type for e in cancelled.events}
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED in kinds
    for history in (failed, cancelled):
        assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
        recorded = _patches_of(history)
        for patch in (FAILURE_KEEPS_GATHERED_PATCH, CANCEL_MID_STEP_PATCH):
            assert not any(patch.encode() in m for m in recorded), history.workflow_id


@pytest.mark.parametrize("name", ["report_in_chinese_shape2", "report_in_chinese_by_length_shape2"])
def test_fixtures_cover_a_report_prompt_in_chinese_before_and_after_tokens_by_script(
    name: str,
) -> None:
    """Both reserved a report prompt holding Chinese search results, so a replay asks for
    ``tokens-by-script`` (which only a prompt outside ASCII does) and must take the
    branch each was recorded on."""
    history = load(FIXTURES / f"{name}.json")
    assert scheduled_activities(history)[:3] == ["generate_queries", "web_searches", "write_report"]
    searched = [
        e.activity_task_completed_event_attributes.result.payloads[0].data
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ][1]
    assert b"\\u8a9e" in searched  # the web_searches result, as the JSON converter escapes it
    assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED


@pytest.mark.parametrize("name", ["report_refused_shape2", "deep_refused"])
def test_fixtures_cover_refused_runs_that_keep_what_they_gathered(name: str) -> None:
    history = load(FIXTURES / f"{name}.json")
    assert scheduled_activities(history)[-1] == "save_report"
    end = history.events[-1]
    assert end.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED
    failure = end.workflow_execution_failed_event_attributes.failure
    assert failure.application_failure_info.type == "ModelRefused"
    assert "saved as report" in failure.message


def test_fixtures_cover_runs_before_and_after_the_lean_shape() -> None:
    # The lean runs carry the memo under the lean-run marker alone; the one without
    # recipients scheduled no send_email. Every other fixture replays the older shapes.
    for path in HISTORIES:
        patches = _patches(path)
        lean = any(LEAN_RUN_PATCH.encode() in m for m in patches)
        assert lean == path.stem.endswith("_lean_spend_memo"), path.name
        if lean:
            assert not any(SPEND_MEMO_PATCH.encode() in m for m in patches), path.name
    activities = scheduled_activities(load(FIXTURES / "no_recipients_lean_spend_memo.json"))
    assert "save_report" in activities
    assert "send_email" not in activities


def test_fixtures_cover_runs_whose_shape_is_in_their_input() -> None:
    # Started with shape 1 in their input: the lean shape and the memo, no patch marker
    # at all (nor its TemporalChangeVersion upsert); the reply tails of today's streams.
    shaped = [p for p in HISTORIES if p.stem.endswith("_shape1")]
    assert {p.stem for p in shaped} == {
        "no_recipients_shape1",
        "happy_path_with_email_shape1",
        "deep_agent_shape1",
    }
    for path in shaped:
        history = load(path)
        started = history.events[0].workflow_execution_started_event_attributes
        assert json.loads(started.input.payloads[0].data)["settings"]["shape"] == 1
        assert _patches(path) == [], path.name
        kinds = {e.event_type for e in history.events}
        assert EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES not in kinds, path.name
        assert EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED in kinds, path.name
    activities = scheduled_activities(load(FIXTURES / "no_recipients_shape1.json"))
    assert "send_email" not in activities


def test_fixtures_cover_runs_that_search_in_one_step() -> None:
    # Shape 2 in their input and the search-step marker: one web_searches activity; or,
    # searching through the model, an activity per query, asked again after a pause.
    # Each shape-2 fixture and the markers it recorded, in order.
    markers = {
        "no_recipients_shape2": [SEARCH_STEP_PATCH],
        "happy_path_with_email_shape2": [SEARCH_STEP_PATCH],
        "search_failed_shape2": [SEARCH_STEP_PATCH],
        "search_retried_shape2": [SEARCH_STEP_PATCH],
        "report_refused_shape2": [SEARCH_STEP_PATCH],
        "budget_exhausted_keeps_gathered_shape2": [SEARCH_STEP_PATCH, BUDGET_KEEPS_GATHERED_PATCH],
        "searches_day_paused_raised_shape2": [SEARCH_STEP_PATCH, BUDGET_PAUSE_PATCH],
        "searches_day_stopped_shape2": [
            SEARCH_STEP_PATCH,
            SEARCH_RESULTS_RESERVED_PATCH,
            SEARCHES_COUNTED_PATCH,
            BUDGET_KEEPS_GATHERED_PATCH,
        ],
        "cancelled_while_saving_mailed_shape2": [SEARCH_STEP_PATCH, SAVE_WAIT_PATCH],
        "cancelled_while_mailing_failed_shape2": [SEARCH_STEP_PATCH],
        "cancelled_while_saving_shape2": [
            SEARCH_STEP_PATCH,
            SAVE_WAIT_PATCH,
            CANCEL_HOLDS_MAIL_PATCH,
        ],
        "cancelled_while_mailing_shape2": [SEARCH_STEP_PATCH, CANCEL_HOLDS_MAIL_PATCH],
        "report_failed_keeps_gathered_shape2": [SEARCH_STEP_PATCH, FAILURE_KEEPS_GATHERED_PATCH],
        "report_failed_nothing_kept_shape2": [SEARCH_STEP_PATCH],
        "cancelled_mid_step_shape2": [CANCEL_MID_STEP_PATCH],
        "cancelled_mid_step_failed_shape2": [],
        "report_in_chinese_shape2": [SEARCH_STEP_PATCH, TOKENS_BY_SCRIPT_PATCH],
        "report_in_chinese_by_length_shape2": [SEARCH_STEP_PATCH],
    }
    shaped = [p for p in HISTORIES if p.stem.endswith("_shape2")]
    assert {p.stem for p in shaped} == set(markers)
    # Searches through the model: refused, then granted (3 and 3); 2 granted, 1 refused.
    by_the_model = {"searches_day_paused_raised_shape2": 6, "searches_day_stopped_shape2": 3}
    for path in shaped:
        history = load(path)
        started = history.events[0].workflow_execution_started_event_attributes
        settings = json.loads(started.input.payloads[0].data)["settings"]
        assert settings["shape"] == 2
        ids = [json.loads(p)["id"] for p in _patches(path)]
        assert ids == markers[path.stem], path.name
        activities = scheduled_activities(history)
        if path.stem in CANCELLED_IN_THEIR_FIRST_CALL:
            assert activities == ["generate_queries"], path.name
            continue
        if settings["search_provider"] == "anthropic-web-search":
            assert activities.count("web_search") == by_the_model[path.stem], path.name
            continue
        assert activities.count("web_searches") == 1, path.name
        assert "web_search" not in activities, path.name
    # Every other pipeline fixture searched with an activity per query.
    for path in HISTORIES:
        if not path.stem.endswith("_shape2") and not path.stem.startswith("deep_"):
            assert "web_searches" not in scheduled_activities(load(path)), path.name


async def test_a_shape_2_run_an_older_worker_searched_replays_as_it_ran() -> None:
    """During a rollout a worker of the code before shape 2 may take a shape-2 run: it
    ignores the shape it does not know and searches with an activity per query,
    recording no search-step marker. Such a history must replay on today's code."""
    history = load(FIXTURES / "no_recipients_shape1.json")
    started = history.events[0].workflow_execution_started_event_attributes
    inp = json.loads(started.input.payloads[0].data)
    inp["settings"]["shape"] = 2
    started.input.payloads[0].data = json.dumps(inp).encode()
    assert "web_search" in scheduled_activities(history)
    result = await Replayer(workflows=[ResearchWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = load(path)
    result = await Replayer(workflows=[ResearchWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class SearchFirstWorkflow:
    """ResearchWorkflow with its first two steps swapped: the change replay must catch."""

    @workflow.run
    async def run(self, inp: ResearchInput) -> None:
        await workflow.execute_activity(
            "web_search", inp.topic, start_to_close_timeout=timedelta(seconds=30)
        )


async def test_replay_detects_a_nondeterministic_change() -> None:
    """The check can fail: a workflow that schedules a different first activity is caught."""
    history = load(FIXTURES / "happy_path_with_email.json")
    result = await Replayer(workflows=[SearchFirstWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
