"""Capture the replay fixtures: histories of real ResearchWorkflow runs.

``hack/capture-histories`` (``python -m tests.support.histories``) starts the
embedded stack (its own headless dev server, the simulator, an SMTP server and
``steadfast worker`` processes), runs one workflow per scenario, and writes each
history to ``tests/fixtures/histories/<scenario>.json``. ``test_replay.py``
replays them with ``temporalio.worker.Replayer``, so a change to the workflow
that would break runs already in flight fails the tests.

Re-capture only when a change to the workflow is *meant* to be incompatible
(and then it also needs a versioning plan for runs in flight); otherwise the old
histories are exactly what must keep replaying.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from temporalio.client import Client

from steadfast_contract import budget, models, pricing, starter
from steadfast_contract.config import WorkerConfig
from steadfast_contract.researchspec import ResearchSpec
from steadfast_dev import chaos, embedded
from steadfast_dev.sim.content import search_queries
from steadfast_dev.sim.messages import REFUSAL_TRIGGER
from tests.support.ports import free_port
from tests.support.stack import ROOT, example_config, on_queue

FIXTURES = ROOT / "tests" / "fixtures" / "histories"


class _Sink:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        return "250 OK"


Scenario = Callable[[embedded.Stack, WorkerConfig, str], Awaitable[str]]


async def _start(client: Client, cfg: WorkerConfig, name: str) -> str:
    started = await starter.start_topic(client, cfg, f"history {name} {uuid.uuid4().hex[:6]}")
    return started.workflow_id


async def happy(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    wf = await _start(s.client, cfg, name)
    await starter.wait_closed(s.client, wf)
    return wf


async def llm_retries(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    await s.sim_admin.set_faults({"llm": {"first_n": 2, "kind": "429", "retry_after": 0.1}})
    try:
        return await happy(s, cfg, name)
    finally:
        await s.sim_admin.reset()


async def search_failure(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    await s.sim_admin.set_faults({"search": {"rates": {"401": 1.0}}})
    try:
        return await happy(s, cfg, name)
    finally:
        await s.sim_admin.reset()


async def search_retried(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """One query's first search fails (500): the search step retries it alone."""
    await s.sim_admin.set_faults({"search": {"first_n": 1, "kind": "500", "match": "statistics"}})
    try:
        return await happy(s, cfg, name)
    finally:
        await s.sim_admin.reset()


async def budget_exhausted(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    tight = cfg.model_copy(
        update={
            "budget": cfg.budget.model_copy(
                update={"max_usd_per_run": 0.034, "pause_timeout": timedelta(0)}
            )
        }
    )
    return await happy(s, tight, name)


def _budget(cfg: WorkerConfig, **limits: object) -> WorkerConfig:
    return cfg.model_copy(update={"budget": cfg.budget.model_copy(update=limits)})


async def _paused_then_raised(
    s: embedded.Stack, cfg: WorkerConfig, name: str, raise_to: models.SetBudgetInput
) -> str:
    wf = await _start(s.client, cfg, name)
    await chaos.wait_for_phase(s.client, wf, models.Phase.AWAITING_BUDGET)
    handle = s.client.get_workflow_handle(wf)
    await handle.execute_update(models.BUDGET_UPDATE, raise_to)
    await starter.wait_closed(s.client, wf)
    return wf


async def budget_paused_raised(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Paused before the report by the run's budget, resumed by a ``budget`` update."""
    tight = _budget(cfg, max_usd_per_run=0.034, pause_timeout=timedelta(hours=1))
    return await _paused_then_raised(s, tight, name, models.SetBudgetInput(max_usd_per_run=1.0))


async def budget_day_paused_raised(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Refused by the day's ledger inside the report activity, resumed by a raise of the
    day (record it alone: the ledger counts the day of every scenario on the queue)."""
    tight = _budget(cfg, max_usd_per_day=0.034, pause_timeout=timedelta(hours=1))
    return await _paused_then_raised(s, tight, name, models.SetBudgetInput(max_usd_per_day=50.0))


async def searches_day_paused_raised(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Searches through the model (``anthropic-web-search``) refused by the day's ledger:
    the run pauses, and a raise of the day resumes it. A worker of its own runs it (the
    provider is the worker's setting), on its own queue, so its day is its own."""
    tight = _budget(cfg, max_usd_per_day=0.034, pause_timeout=timedelta(hours=1))
    search = tight.search.model_copy(update={"provider": "anthropic-web-search"})
    tight = on_queue(tight.model_copy(update={"search": search}), "histories-model-search")
    s.start_worker(tight, _env(s))
    return await _paused_then_raised(s, tight, name, models.SetBudgetInput(max_usd_per_day=50.0))


async def budget_exhausted_keeps_gathered(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """As ``budget_exhausted``, on the code that keeps what the run gathered (its
    sources) as an unfinished report (the ``budget-keeps-gathered`` marker)."""
    return await budget_exhausted(s, cfg, name)


async def searches_day_stopped(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Searches through the model, each reserving its results, the day granting two of
    three, and the pause running out: the two are counted before the pause and their
    results kept as an unfinished report (the ``search-results-reserved``,
    ``searches-counted-before-pause`` and ``budget-keeps-gathered`` markers). An agent
    of its own, so its day is its own."""
    price = pricing.lookup(cfg.model.name)
    asked = budget.reserve_usd(cfg.model.max_tokens, budget.estimate_tokens(400), price)
    search = budget.reserve_usd(
        cfg.model.max_tokens, budget.estimate_tokens(400), price, web_searches=1
    )
    tight = _budget(cfg, max_usd_per_day=asked + 2 * search + 0.001, pause_timeout=timedelta(0))
    provider = tight.search.model_copy(update={"provider": "anthropic-web-search"})
    tight = tight.model_copy(update={"search": provider, "agent": "histories-day-stopped"})
    tight = on_queue(tight, "histories-day-stopped")
    s.start_worker(tight, _env(s))
    # Slow searches: all three ask the day before any settles.
    faults: dict[str, object] = {"llm": {"latency_ms": 800, "match": "Search the web"}}
    return await _with_faults(s, tight, faults, f"history {name} {uuid.uuid4().hex[:6]}")


def _approval(cfg: WorkerConfig) -> WorkerConfig:
    return cfg.model_copy(
        update={"notify": cfg.notify.model_copy(update={"require_approval": True})}
    )


async def _reviewed(s: embedded.Stack, cfg: WorkerConfig, name: str, approve: bool) -> str:
    """A run that waits for approval, then is approved (update) or rejected (signal)."""
    wf = await _start(s.client, _approval(cfg), name)
    await chaos.wait_for_phase(s.client, wf, models.Phase.AWAITING_APPROVAL)
    handle = s.client.get_workflow_handle(wf)
    if approve:
        await handle.execute_update(models.APPROVE_UPDATE, models.ApproveInput("alice", "ok"))
    else:
        await handle.signal(models.REJECT_SIGNAL, models.RejectInput("bob", "thin"))
    await starter.wait_closed(s.client, wf)
    return wf


async def approved(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    return await _reviewed(s, cfg, name, approve=True)


async def rejected(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    return await _reviewed(s, cfg, name, approve=False)


async def approval_expired(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A run nobody reviews: the bounded wait ends it ApprovalExpired."""
    gated = _approval(cfg)
    notify = gated.notify.model_copy(update={"approval_timeout": timedelta(seconds=2)})
    wf = await _start(s.client, gated.model_copy(update={"notify": notify}), name)
    await starter.wait_closed(s.client, wf)
    return wf


async def rejected_too_early(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A rejection before the report exists is ignored; the later approval mails it."""
    wf = await _start(s.client, _approval(cfg), name)
    handle = s.client.get_workflow_handle(wf)
    await handle.signal(models.REJECT_SIGNAL, models.RejectInput("mallory", "early"))
    await chaos.wait_for_phase(s.client, wf, models.Phase.AWAITING_APPROVAL)
    await handle.execute_update(models.APPROVE_UPDATE, models.ApproveInput("alice", "ok"))
    await starter.wait_closed(s.client, wf)
    return wf


async def no_recipients(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A run whose agent names no recipients: email ``skipped`` without a send_email."""
    email = cfg.notify.email.model_copy(update={"to": []})
    return await happy(
        s, cfg.model_copy(update={"notify": cfg.notify.model_copy(update={"email": email})}), name
    )


async def worker_killed_while_writing(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    wf = await _start(s.client, cfg, name)
    report = await chaos.crash_during(
        s.client,
        s.sim_admin,
        wf,
        models.Phase.WRITING.value,
        s.workers[-1],
        lambda: s.start_worker(cfg, _env(s)),
    )
    if not report.held:
        raise RuntimeError(f"crash scenario did not complete cleanly: {report}")
    return wf


def _deep(cfg: WorkerConfig, **research: object) -> WorkerConfig:
    return cfg.model_copy(
        update={
            "research": ResearchSpec(strategy="deep", **research),
            "model": cfg.model.model_copy(update={"max_tokens": 4000}),
        }
    )


async def _deep_run(s: embedded.Stack, cfg: WorkerConfig, name: str, turns: int) -> str:
    await s.sim_admin.set_faults({"llm": {"agent_turns": turns}, "search": {"page_links": True}})
    try:
        return await happy(s, cfg, name)
    finally:
        await s.sim_admin.reset()


async def deep_agent(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """The deep strategy: six turns of tool use (parallel calls, findings, pages)."""
    return await _deep_run(s, _deep(cfg, max_turns=8), name, 6)


async def deep_continued_as_new(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Seven turns, continuing as new after every three: a chain of three runs."""
    return await _deep_run(s, _deep(cfg, max_turns=8, continue_as_new_after_turns=3), name, 7)


async def deep_context_window(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A deep run reading long pages: its conversation nears the model's context window,
    and the report is asked for turns before ``maxTurns`` (``deep-context-window``)."""
    window = 60_000
    research = cfg.research.model_copy(update={"strategy": "deep", "max_turns": 20})
    model = cfg.model.model_copy(update={"max_tokens": 4000, "context_tokens": window})
    long_read = cfg.model_copy(update={"research": research, "model": model})
    faults: dict[str, object] = {
        "llm": {"agent_turns": 20, "context_tokens": window},
        "search": {"page_links": True},
        "pages": {"answer_bytes": 40_000},
    }
    return await _with_faults(s, long_read, faults, f"history {name} {uuid.uuid4().hex[:6]}")


async def deep_counted_prompt(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A deep run whose model counts 2.5 tokens for each the worker estimates: the
    conversation is sized by the tokens the API counted (``deep-counted-prompt``), it
    continues as new every four turns, and the report is asked for before the window
    (``deep-context-window``)."""
    window = 150_000
    research = cfg.research.model_copy(
        update={"strategy": "deep", "max_turns": 20, "continue_as_new_after_turns": 4}
    )
    model = cfg.model.model_copy(update={"max_tokens": 4000, "context_tokens": window})
    dense = cfg.model_copy(update={"research": research, "model": model})
    dense = dense.model_copy(
        update={"budget": dense.budget.model_copy(update={"max_usd_per_run": 5.0})}
    )
    faults: dict[str, object] = {
        "llm": {"agent_turns": 20, "context_tokens": window, "token_density": 2.5},
        "search": {"page_links": True},
        "pages": {"answer_bytes": 40_000},
    }
    return await _with_faults(s, dense, faults, f"history {name} {uuid.uuid4().hex[:6]}")


async def _with_faults(
    s: embedded.Stack, cfg: WorkerConfig, faults: dict[str, object], topic: str
) -> str:
    await s.sim_admin.set_faults(faults)
    try:
        started = await starter.start_topic(s.client, cfg, topic)
        await starter.wait_closed(s.client, started.workflow_id)
        return started.workflow_id
    finally:
        await s.sim_admin.reset()


async def report_refused(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """The model refuses the report (a search result holds the API's refusal test
    string): the run saves its sources as an unfinished report and fails ModelRefused."""
    faults: dict[str, object] = {"search": {"says": REFUSAL_TRIGGER}}
    return await _with_faults(s, cfg, faults, f"history {name} {uuid.uuid4().hex[:6]}")


async def report_in_chinese(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Search results in Chinese: the report's prompt is reserved at a token a character
    outside ASCII (``tokens-by-script``); recorded before that, at four characters a
    token, with no marker."""
    faults: dict[str, object] = {"search": {"answer": "\u8a9e" * 20, "match": ""}}
    return await _with_faults(s, cfg, faults, f"history {name} {uuid.uuid4().hex[:6]}")


def third_search(prefix: str) -> tuple[str, str]:
    """A topic starting with ``prefix`` and the simulated agent's third search query for
    it, one no other query of the topic contains (the plain-topic query would match all)."""
    while True:
        topic = f"{prefix} {uuid.uuid4().hex[:6]}"
        third = search_queries(topic, 3)[2]
        if third != topic:
            return topic, third


async def deep_refused(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A deep run refused mid-loop, after recording findings (the third search's
    result holds the refusal test string): its findings saved, the run failed."""
    topic, third = third_search(f"history {name}")
    # The stack's research settings, which let fetch_page read the simulator's pages.
    research = cfg.research.model_copy(update={"strategy": "deep", "max_turns": 10})
    one_result = cfg.model_copy(
        update={
            "search": cfg.search.model_copy(update={"max_results": 1}),
            "research": research,
            "model": cfg.model.model_copy(update={"max_tokens": 4000}),
        }
    )
    search = {"page_links": True, "says": REFUSAL_TRIGGER, "match": third}
    faults: dict[str, object] = {"llm": {"agent_turns": 10}, "search": search}
    return await _with_faults(s, one_result, faults, topic)


async def report_failed(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """The report's request fails for good (a 400): the run fails ``BadRequest``, and on
    code with ``failure-keeps-gathered`` saves its sources as an unfinished report."""
    faults: dict[str, object] = {"llm": {"first_n": 1, "kind": "400", "match": "research report"}}
    return await _with_faults(s, cfg, faults, f"history {name} {uuid.uuid4().hex[:6]}")


async def deep_failed(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A deep run whose agent takes its model's window for 1M tokens (the model's is
    30,000): a turn mid-loop is refused as too long (400), after findings were recorded."""
    research = cfg.research.model_copy(update={"strategy": "deep", "max_turns": 20})
    model = cfg.model.model_copy(update={"max_tokens": 4000, "context_tokens": 1_000_000})
    misjudged = cfg.model_copy(update={"research": research, "model": model})
    faults: dict[str, object] = {
        "llm": {"agent_turns": 20, "context_tokens": 30_000},
        "search": {"page_links": True},
        "pages": {"answer_bytes": 40_000},
    }
    return await _with_faults(s, misjudged, faults, f"history {name} {uuid.uuid4().hex[:6]}")


async def cancelled_mid_step(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """Cancelled while its queries are asked (a slow model): the run ends ``Cancelled``
    on code with ``cancel-mid-step``."""
    await s.sim_admin.set_faults({"llm": {"latency_ms": 3000}})
    try:
        wf = await _start(s.client, cfg, name)
        handle = s.client.get_workflow_handle(wf)
        await asyncio.sleep(1.5)  # the first LLM call is under way
        await handle.cancel()
        await starter.wait_closed(s.client, wf)
        return wf
    finally:
        await s.sim_admin.reset()


async def deep_cancelled(s: embedded.Stack, cfg: WorkerConfig, name: str) -> str:
    """A deep run cancelled during a turn after it recorded findings (a slow model):
    its findings saved as an unfinished report, the run ``Cancelled``
    (``cancel-keeps-gathered``)."""
    faults = {"llm": {"agent_turns": 12, "latency_ms": 1000}, "search": {"page_links": True}}
    await s.sim_admin.set_faults(faults)
    try:
        # The stack's research settings, which let fetch_page read the simulator's pages.
        research = cfg.research.model_copy(update={"strategy": "deep", "max_turns": 12})
        model = cfg.model.model_copy(update={"max_tokens": 4000})
        wf = await _start(
            s.client, cfg.model_copy(update={"research": research, "model": model}), name
        )
        handle = s.client.get_workflow_handle(wf)
        for _ in range(600):
            status = await handle.query(models.STATUS_QUERY, result_type=models.RunStatus)
            if status.findings and status.phase == models.Phase.RESEARCHING:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the next turn's call is under way
        await handle.cancel()
        await starter.wait_closed(s.client, wf)
        return wf
    finally:
        await s.sim_admin.reset()


SCENARIOS: dict[str, Scenario] = {
    "happy_path_with_email": happy,
    "llm_retries": llm_retries,
    "search_failed": search_failure,
    "search_retried": search_retried,
    "budget_exhausted": budget_exhausted,
    "approved": approved,
    "rejected": rejected,
    "approval_expired": approval_expired,
    "rejected_too_early": rejected_too_early,
    "worker_killed_while_writing": worker_killed_while_writing,
    "budget_paused_raised": budget_paused_raised,
    "budget_day_paused_raised": budget_day_paused_raised,
    "searches_day_paused_raised": searches_day_paused_raised,
    "deep_agent": deep_agent,
    "deep_continued_as_new": deep_continued_as_new,
    "no_recipients": no_recipients,
    "report_refused_shape2": report_refused,
    "deep_refused": deep_refused,
    "budget_exhausted_keeps_gathered_shape2": budget_exhausted_keeps_gathered,
    "searches_day_stopped_shape2": searches_day_stopped,
    "deep_context_window": deep_context_window,
    "report_failed_keeps_gathered_shape2": report_failed,
    "deep_failed_keeps_gathered": deep_failed,
    "cancelled_mid_step_shape2": cancelled_mid_step,
    "report_in_chinese_shape2": report_in_chinese,
    # The same run on the code before ``tokens-by-script`` (captured there).
    "report_in_chinese_by_length_shape2": report_in_chinese,
    "deep_counted_prompt": deep_counted_prompt,
    "deep_cancelled_keeps_gathered": deep_cancelled,
    # The same run on the code before ``cancel-keeps-gathered`` (captured there).
    "deep_cancelled_nothing_kept": deep_cancelled,
}


def _env(s: embedded.Stack) -> dict[str, str]:
    env = dict(os.environ, STEADFAST_SMTP_URL=os.environ["_CAPTURE_SMTP_URL"])
    env.pop("STEADFAST_POSTGRES_DSN", None)
    return env


async def capture(names: list[str]) -> dict[str, str]:
    """Run each scenario; return its history as JSON, by scenario name."""
    port = free_port()
    smtp = Controller(_Sink(), hostname="127.0.0.1", port=port)
    smtp.start()
    os.environ["_CAPTURE_SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    captured: dict[str, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="steadfast-histories-") as tmp:
            options = embedded.StackOptions(
                state_dir=Path(tmp),
                port=embedded.free_port(),
                ui_port=0,
                sim_flags=["--chunk-delay-ms", "20"],
            )
            async with embedded.Stack(options) as s:
                base = example_config()
                email = base.notify.email.model_copy(update={"to": ["reviewer@example.com"]})
                base = base.model_copy(
                    update={"notify": base.notify.model_copy(update={"email": email})}
                )
                cfg = s.worker_config(on_queue(base, "histories", heartbeat_timeout="3s"))
                s.start_worker(cfg, _env(s))
                for name in names:
                    wf = await SCENARIOS[name](s, cfg, name)
                    runs = await _chain(s.client, wf)
                    for i, run_id in enumerate(runs, 1):
                        handle = s.client.get_workflow_handle(wf, run_id=run_id)
                        history = await handle.fetch_history()
                        key = f"{name}_run{i}" if len(runs) > 1 else name
                        captured[key] = history.to_json()
                        print(f"{key}: {len(history.events)} events")
                    row = await starter.describe_run(s.client, wf)
                    print(f"{name}: {row.phase}")
    finally:
        smtp.stop()
    return captured


async def _chain(client: Client, wf: str) -> list[str]:
    """The run ids under ``wf``, oldest first (a run that continued as new, and the next)."""
    runs = [(w.start_time, w.run_id) async for w in client.list_workflows(f"WorkflowId = '{wf}'")]
    return [run_id for _, run_id in sorted(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help=f"some of: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    captured = asyncio.run(capture(args.scenarios or list(SCENARIOS)))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in captured.items():
        (args.out / f"{name}.json").write_text(text)
    print(f"wrote {len(captured)} histories to {args.out}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
