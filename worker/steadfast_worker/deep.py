"""The ``deep`` strategy: Claude drives a tool-use loop, every turn and tool call a durable step.

Deterministic workflow code, run by :class:`~steadfast_worker.workflows.ResearchWorkflow`
when ``spec.research.strategy`` is ``deep`` (docs/deep-agent.md). Each turn is one
``deep_turn`` activity, budgeted like any LLM call (the pause before a call no
budget covers included); the tool calls of a turn run concurrently as
``deep_tool`` activities, except ``record_finding``, which needs no I/O: the
workflow keeps the finding and answers it. The loop ends when the model answers
without tools, or at ``maxTurns``, whose turn is offered no tools and must write
the report, or earlier when one more turn of tools could outgrow the model's context
window (:func:`steadfast_contract.context.must_finish`). This module is part of the
workflow class: it uses its helpers (the budget gate, accounting, status publishing)
directly.

The conversation is in the report store, so history grows by a few small events
per turn; still, a long run continues as new at a turn boundary (every
``continueAsNewAfterTurns`` turns, or when Temporal suggests it), carrying a
:class:`~steadfast_contract.models.DeepResume` and the run's status.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from temporalio import workflow
from temporalio.contrib.workflow_streams import WorkflowStreamState
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from steadfast_contract import activities as act
    from steadfast_contract import budget, context, stops
    from steadfast_contract.models import (
        DeepResume,
        Finding,
        Phase,
        Pricing,
        ResearchInput,
        ToolAnswer,
    )
    from steadfast_worker import accounting, failures

if TYPE_CHECKING:
    from steadfast_worker.workflows import ResearchWorkflow

#: Findings kept in the workflow's state (each is also in the transcript).
MAX_FINDINGS = 200
MAX_CLAIM_CHARS = 500
#: What the findings may take, as Temporal's JSON converter writes them: they travel in
#: the input of every run the loop continues as, which must fit in a payload (2 MB).
#: A source URL may be 2,000 characters and escape to 6 bytes each, so 200 findings
#: could otherwise be several megabytes, and the run could not continue as new.
MAX_FINDINGS_BYTES = 400_000
#: Characters per token the workflow assumes for what a turn wrote (budget estimate).
CHARS_PER_TOKEN = 4
#: Marks a run that asked for its report early, its conversation near the context window.
CONTEXT_PATCH = "deep-context-window"
#: Marks a run that sizes its conversation by the tokens the API counted in each turn.
COUNTED_PROMPT_PATCH = "deep-counted-prompt"
#: Marks a run that reserved a turn's searches through the model at their queries' size
#: (asked only when that is more than 100 tokens each, the size reserved before).
SEARCHES_SIZED_PATCH = "deep-searches-sized"


def search_prompt_tokens(call: act.ToolCall) -> int:
    """The prompt of a ``web_search`` call through the model, in tokens, as its
    activity reserves it."""
    query = call.input.get("query")
    return budget.estimate_tokens(budget.token_chars(act.search_ask(str(query or ""))))


def findings_bytes(findings: list[Finding]) -> int:
    """What ``findings`` take in a payload, their claims and source URLs escaped."""
    return sum(stops.payload_bytes(f.claim) + stops.payload_bytes(f.source_url) for f in findings)


def record_finding(
    findings: list[Finding], call: act.ToolCall, kept_bytes: int
) -> tuple[ToolAnswer, int]:
    """Add ``call``'s finding to ``findings`` (in place) while they have room; the
    answer to the call, and what the findings take now (``kept_bytes``: what they took
    before, :func:`findings_bytes`, counted once a turn: counted again for each call,
    a turn of thousands of calls held the workflow task past the SDK's deadlock
    timeout, and every task of the run failed). Past :data:`MAX_FINDINGS` a finding is
    acknowledged but not kept, as always; past :data:`MAX_FINDINGS_BYTES` the model is
    told so."""
    finding = Finding(call.input["claim"][:MAX_CLAIM_CHARS], call.input["source_url"])
    size = findings_bytes([finding])
    if kept_bytes + size > MAX_FINDINGS_BYTES:
        full = f"not recorded: the findings are full ({MAX_FINDINGS_BYTES} bytes)"
        return ToolAnswer(call.id, full, True), kept_bytes
    if len(findings) < MAX_FINDINGS:
        findings.append(finding)
        kept_bytes += size
    return ToolAnswer(call.id, f"recorded finding {len(findings)}"), kept_bytes


def continue_as_new_now(turns_here: int, every: int, suggested: bool) -> bool:
    """Whether to continue as new before the next turn: never before this run's first
    turn, then every ``every`` turns (0: never by count) or when Temporal suggests it."""
    return turns_here > 0 and (suggested or (every > 0 and turns_here >= every))


def conversation_key() -> str:
    """The transcript's key: the same across continue-as-new, new for a re-run."""
    info = workflow.info()
    return f"{info.workflow_id}/{info.first_execution_run_id}"


async def research(wf: ResearchWorkflow, inp: ResearchInput, price: Pricing) -> str:
    """Run the loop to its end; the report's markdown. A cancel that stops the loop
    after it recorded findings raises :class:`~.failures.CancelledKeepingError`
    holding them as an unfinished report."""
    s, st = inp.settings, wf._status
    carry = inp.resume or DeepResume(conversation_key())
    st.strategy, st.max_turns = "deep", s.max_turns
    if inp.resume is not None:
        wf._publish_spend()  # this run's memo starts with the spend carried over
    try:
        return await _loop(wf, inp, carry, price)
    except (ActivityError, asyncio.CancelledError) as err:
        stopped = isinstance(err, asyncio.CancelledError) or failures.cancelled(err)
        if not stopped or not carry.findings:
            raise
        why = f"the run was cancelled at turn {st.turn}"
        raise failures.CancelledKeepingError(err, _gathered(inp.topic, carry, why)) from None


async def _loop(wf: ResearchWorkflow, inp: ResearchInput, carry: DeepResume, price: Pricing) -> str:
    s, st = inp.settings, wf._status
    turns_here = 0
    while True:
        n = carry.turn + 1
        suggested = workflow.info().is_continue_as_new_suggested()
        if continue_as_new_now(turns_here, s.continue_as_new_after_turns, suggested):
            await continue_as_new(wf, carry)
        st.turn = n
        last = n >= s.max_turns or _context_full(wf, carry, n)
        wf._enter(Phase.WRITING if last else Phase.RESEARCHING)
        try:
            out = await _turn(wf, inp, carry, n, price, last)
        except ActivityError as err:
            if failures.refused(err):
                why = f"the model declined to go on at turn {n}"
                raise failures.RefusedError(err, _gathered(inp.topic, carry, why)) from None
            if n > 1 and not failures.cancelled(err):  # turn 1 gathered nothing
                why = f"turn {n} failed: {failures.describe(err)[1]}"
                raise failures.StepFailedError(err, _gathered(inp.topic, carry, why)) from None
            raise
        except failures.BudgetStopError as stop:
            stop.gathered = _gathered(inp.topic, carry, f"{stop.which} ran out at turn {n}")
            raise
        carry.turn, carry.answers = n, []
        carry.prompt_chars = _conversation_chars(out)
        turns_here += 1
        if not out.tool_calls or last:
            if stops.is_cut_short(out.stop_reason):
                st.message = stops.cut_message(out.stop_reason, s.max_tokens)
            return out.report
        try:
            await _tools(wf, inp, carry, out.tool_calls, n, price)
        except failures.BudgetStopError as stop:
            why = f"{stop.which} ran out during turn {n}'s searches"
            stop.gathered = _gathered(inp.topic, carry, why)
            raise


def _gathered(topic: str, carry: DeepResume, why: str) -> str:
    """The unfinished report of a run stopped before its report (``why``): its findings."""
    findings = ((f.claim, f.source_url) for f in carry.findings)
    return stops.unfinished_report(topic, why, findings, "Findings recorded")


def _conversation_chars(out: act.DeepTurnOutput) -> int:
    """The conversation after a turn, in the budget's characters: as the API counted the
    turn's prompt and reply (:func:`steadfast_contract.context.counted_chars`), which
    the next turn's reservation and the context guard build on. Runs recorded before
    estimated the prompt from its own characters, and replay so (``COUNTED_PROMPT_PATCH``,
    asked only where the two differ); a usage that names no prompt keeps the estimate."""
    estimated = out.prompt_chars + out.llm.usage.output_tokens * CHARS_PER_TOKEN
    counted = context.counted_chars(out.llm.usage)
    if not counted or counted == estimated or not workflow.patched(COUNTED_PROMPT_PATCH):
        return estimated
    return counted


def _context_full(wf: ResearchWorkflow, carry: DeepResume, n: int) -> bool:
    """Whether turn ``n`` must write the report before ``maxTurns``: one more turn of
    tools could make the next prompt too long for the model. Said in the status."""
    s = wf._inp.settings
    if n == 1 or not context.must_finish(carry.prompt_chars, s.max_tokens, s.context_tokens):
        return False
    if not workflow.patched(CONTEXT_PATCH):
        return False  # a history from before the rule: it went on
    wf._status.message = (
        f"the conversation nears the model's context window ({s.context_tokens} tokens): "
        f"the report is asked for at turn {n} of {s.max_turns}"
    )
    return True


#: What the stream items a run hands on may take in the input of the run it continues
#: as. The items hold each turn's text as it streamed, and a turn may say up to
#: ``maxTokens`` before it calls tools: two turns of 1.2 MB each made an input larger
#: than a payload may be (2 MB), and every workflow task of the run failed from then
#: on. With the findings (``MAX_FINDINGS_BYTES``) this leaves room for the rest.
MAX_CARRIED_STREAM_BYTES = 512_000
#: An item's bytes in the input besides its data and topic: keys, quotes, its offset.
_ITEM_FRAME_BYTES = len('{"data":"","offset":0,"topic":""},')


def carried_stream(
    state: WorkflowStreamState, handed: int, limit: int = MAX_CARRIED_STREAM_BYTES
) -> WorkflowStreamState:
    """The stream the next run starts with: the newest items this run published (a
    follower may not have read them yet) that fit in ``limit`` bytes, never those it
    was handed, so the input holds at most one run's items. A follower that had not
    read the items left behind is moved on to the first one kept (the stream tells it
    its offset was truncated)."""
    kept, used = 0, 0
    for item in reversed(state.log[handed:]):
        used += _ITEM_FRAME_BYTES + len(item.topic) + len(item.data)
        if used > limit:
            break
        kept += 1
    dropped = len(state.log) - kept
    return replace(state, log=state.log[dropped:], base_offset=state.base_offset + dropped)


async def continue_as_new(wf: ResearchWorkflow, carry: DeepResume) -> NoReturn:
    """Continue as new at a turn boundary, carrying the limits as raised, the status,
    and the stream's newest items (:func:`carried_stream`)."""
    wf._stream.detach_pollers()
    await workflow.wait_condition(workflow.all_handlers_finished)
    settings = replace(
        wf._inp.settings, max_usd_per_run=wf._gate.max_run, max_usd_per_day=wf._gate.max_day
    )
    carry.status = replace(wf._status, reserved_usd=0.0)
    handed = len(wf._inp.stream.log) if wf._inp.stream is not None else 0
    stream = carried_stream(wf._stream.get_state(), handed)
    workflow.continue_as_new(replace(wf._inp, settings=settings, resume=carry, stream=stream))


async def _turn(
    wf: ResearchWorkflow,
    inp: ResearchInput,
    carry: DeepResume,
    n: int,
    price: Pricing,
    last: bool,
) -> act.DeepTurnOutput:
    s = inp.settings
    prompt_chars = carry.prompt_chars + len(inp.topic)
    reserve = budget.reserve_usd(s.max_tokens, budget.estimate_tokens(prompt_chars), price)
    request = act.DeepTurnInput(
        carry.conversation,
        inp.topic,
        n,
        n if last else s.max_turns,  # the activity makes turn max_turns the last
        s.model,
        s.max_tokens,
        s.pricing,
        None,
        list(carry.answers),
        f"{carry.conversation}/turn{n}",
        prompt_chars,
    )

    async def call() -> act.DeepTurnOutput:
        request.budget = wf._gate.run_budget()  # what the run has spent by now
        out: act.DeepTurnOutput = await wf._activity(
            act.DEEP_TURN, request, act.DeepTurnOutput, s.retry_policies.llm, act.LLM_START_TO_CLOSE
        )
        return out

    out = await wf._gate.step(reserve, call)
    wf._publish_tail(out.tail, out.report)
    wf._account_llm(out.llm, out.attempt, act.DEEP_TURN)
    return out


async def _tools(
    wf: ResearchWorkflow,
    inp: ResearchInput,
    carry: DeepResume,
    calls: list[act.ToolCall],
    n: int,
    price: Pricing,
) -> None:
    """Answer a turn's tool calls: findings here, the rest as concurrent activities."""
    s, st = inp.settings, wf._status
    answers: list[ToolAnswer] = []
    running: list[act.ToolCall] = []
    kept_bytes = findings_bytes(carry.findings)
    for call in calls:
        if call.problem:
            answers.append(ToolAnswer(call.id, call.problem, True))
        elif call.name == act.TOOL_RECORD_FINDING:
            answer, kept_bytes = record_finding(carry.findings, call, kept_bytes)
            answers.append(answer)
        else:
            running.append(call)
    queries = [c for c in running if c.name == act.TOOL_WEB_SEARCH]
    if queries and s.search_provider == "anthropic-web-search":
        # They run at once, each checked alone against what the run had spent: all
        # must fit, each at what its activity reserves (its query may be 2,000
        # characters, and Chinese counts a token each), never less than the 100
        # tokens a search was reserved at before (SEARCHES_SIZED_PATCH).
        reserve = wf._gate.search_reserve(s.max_tokens, 100, price) * len(queries)
        sized = sum(
            wf._gate.search_reserve(s.max_tokens, search_prompt_tokens(c), price) for c in queries
        )
        if sized > reserve and workflow.patched(SEARCHES_SIZED_PATCH):
            reserve = sized
        await wf._gate.afford(reserve)
    outcomes = await asyncio.gather(
        *(
            wf._activity(
                act.DEEP_TOOL,
                act.DeepToolInput(
                    carry.conversation,
                    n,
                    call,
                    s.search_max_results,
                    s.fetch,
                    s.model,
                    s.max_tokens,
                    s.pricing,
                    wf._gate.run_budget(),
                ),
                act.DeepToolOutput,
                s.retry_policies.search,
                act.IO_START_TO_CLOSE,
            )
            for call in running
        ),
        return_exceptions=True,
    )
    for call, outcome in zip(running, outcomes, strict=True):
        if isinstance(outcome, ActivityError):
            wf._account_failure(outcome)
            _, why = failures.describe(outcome)
            answers.append(ToolAnswer(call.id, f"the tool failed: {why}", True))
            continue
        if isinstance(outcome, BaseException):
            raise outcome
        accounting.add_attempts(st, act.DEEP_TOOL, outcome.attempt)
        if outcome.llm is not None:
            wf._account_llm(outcome.llm, 1, act.DEEP_TOOL)
        carry.prompt_chars += outcome.chars
    carry.answers = answers
    carry.prompt_chars += sum(len(a.text) for a in answers)
    st.tool_calls += len(calls)
    st.findings = len(carry.findings)
    wf._publish_status()
