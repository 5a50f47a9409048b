"""Activities ``deep_turn`` and ``deep_tool``: one turn of Claude's tool-use loop, one tool call.

``deep_turn`` rebuilds the conversation from the transcript in the report store
(:mod:`steadfast_worker.transcript`), marks its cache breakpoints
(:mod:`steadfast_worker.caching`), checks the request against the run's and the
day's budgets, streams it (:mod:`~steadfast_worker.activities.streaming`) and
stores the reply before it reports back. The reply is stored first-write-wins:
an attempt that finished its call and died before Temporal heard of it leaves
the reply, and the next attempt returns it without asking again -- a finished
call is never paid twice, even in that window.

``deep_tool`` runs one ``web_search`` or ``fetch_page`` call and stores its
result in the transcript; history gets a one-line summary and a size. A page the
rules refuse (domain, size, type, HTTP 4xx) is an error *result* for the model,
not a failed activity; a transient fault is retried under the ``search`` policy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

from temporalio import activity

from steadfast_contract import budget, pricing, stops
from steadfast_contract.activities import (
    DEEP_TOOL,
    DEEP_TURN,
    TOOL_FETCH_PAGE,
    TOOL_WEB_SEARCH,
    DeepToolInput,
    DeepToolOutput,
    DeepTurnInput,
    DeepTurnOutput,
    LlmCall,
    WebSearchInput,
)
from steadfast_contract.context import MAX_TOOL_RESULT_CHARS
from steadfast_contract.models import ReportChunk
from steadfast_contract.pricing import Usage
from steadfast_worker import caching, fetching, llm, pagetext, transcript
from steadfast_worker.activities import daybudget, storedwork
from steadfast_worker.activities.base import reserve_request, settle_request
from steadfast_worker.activities.heartbeat import Carried, Heartbeater
from steadfast_worker.activities.search import SearchActivities
from steadfast_worker.activities.streaming import stream_message

SUMMARY_CHARS = 160
#: The most of a tool-calling turn's unpublished text its result hands to the stream.
MAX_TAIL_BYTES = 256_000


def _block(raw: Any) -> dict[str, Any]:
    """A reply's content block as it must be sent back: no null fields."""
    data: dict[str, Any] = raw.model_dump(mode="json", exclude_none=True)
    return data


class DeepActivities(SearchActivities):
    @activity.defn(name=DEEP_TURN)
    async def deep_turn(self, inp: DeepTurnInput) -> DeepTurnOutput:
        async def stored() -> dict[str, float]:
            return await self._paid_parts(
                inp.conversation, inp.turn, transcript.ASSISTANT, transcript.SET_ASIDE
            )

        async with self.tracked(
            DEEP_TURN, billed=True, model=inp.model, run_budget=inp.budget, stored=stored
        ) as beat:
            return await self._turn(inp, beat.state, beat)

    async def _paid_parts(self, conversation: str, turn: int, *names: str) -> dict[str, float]:
        """What paid for the parts ``names`` of ``turn`` that are stored (by request)."""
        store = await self.store()
        parts = [(n, await store.get_part(conversation, turn, n)) for n in names]
        return transcript.paid_for((n, body) for n, body in parts if body is not None)

    async def _turn(
        self, inp: DeepTurnInput, carried: Carried, beat: Heartbeater
    ) -> DeepTurnOutput:
        info = activity.info()
        store = await self.store()
        for answer in inp.answers:
            body = transcript.result_body(answer.text, answer.is_error)
            await store.put_part(
                inp.conversation, inp.turn - 1, transcript.RESULT + answer.tool_use_id, body
            )
        parts = await store.get_parts(inp.conversation, inp.turn)
        mine = [body for t, part, body in parts if t == inp.turn and part == transcript.ASSISTANT]
        set_aside = storedwork.count_set_aside(
            carried, parts, inp.turn, daybudget.activity_prefix()
        )
        messages = transcript.messages(inp.topic, parts, inp.turn)
        last_turn = inp.turn >= inp.max_turns
        if last_turn:
            transcript.ask_for_the_report(messages)
        system = [{"type": "text", "text": transcript.SYSTEM}]
        tools = [dict(t) for t in transcript.TOOLS]
        caching.mark_breakpoints(system, tools, messages, inp.model, last_turn=last_turn)
        prompt_chars = len(json.dumps([system, tools, messages]))
        tail: ReportChunk | None = None
        if mine:
            reply = await self._theirs(inp, transcript.StoredReply.loads(mine[0]), carried)
            reused = True
        else:
            reply, tail = await self._ask(inp, carried, beat, system, tools, messages, set_aside)
            reused = False
        if stops.is_refusal(reply.stop_reason):
            step = f"to go on at turn {inp.turn}"
            reason = reply.refusal or stops.refusal_reason(None, None)
            raise self.refused(carried, inp.model, reply.request, reply.cost_usd, step, reason)
        usage = Usage(**reply.usage)
        calls = transcript.tool_calls(reply.content)
        report = "" if calls else transcript.reply_text(reply.content)
        if stops.is_cut_short(reply.stop_reason):
            # Out of room: a call it stopped inside is not run, a report ends with a note.
            calls = [
                replace(c, problem=stops.cut_call(c.problem, inp.max_tokens)) if c.problem else c
                for c in calls
            ]
            report += stops.cut_note(reply.stop_reason, inp.max_tokens) if report else ""
        report = stops.fit_report(report)
        if tail is not None and report:
            tail = replace(tail, text="")  # the workflow takes it from the report
        elif tail is not None:
            # What a turn said before its tool calls goes to followers only; a turn that
            # said megabytes would make a result no payload can carry, after it was paid.
            tail = replace(tail, text=stops.head_within(tail.text, MAX_TAIL_BYTES))
        return DeepTurnOutput(
            reply.stop_reason,
            calls,
            report,
            LlmCall(
                inp.model, usage, reply.cost_usd, carried.failed_cost_usd, max(carried.calls, 1)
            ),
            info.attempt,
            prompt_chars,
            reused,
            tail,
        )

    async def _ask(
        self,
        inp: DeepTurnInput,
        carried: Carried,
        beat: Heartbeater,
        system: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        set_aside: bool = False,
    ) -> tuple[transcript.StoredReply, ReportChunk | None]:
        """The turn's reply, stored. On the last turn a reply that calls tools anyway
        (none would run) is paid for and set aside, and the report is asked for
        again with ``tool_choice: none``, which the cache cannot serve; an attempt
        after one that set a reply aside (``set_aside``) asks that way at once."""
        again = set_aside
        if not again:
            reply, tail = await self._request(inp, carried, beat, system, tools, messages)
            again = _set_aside(inp, reply)
        if again:
            activity.logger.warning(
                "the model called tools on the last turn (%d): asking again without tools",
                inp.turn,
            )
            caching.mark_breakpoints(system, tools, messages, inp.model, head_only=True)
            reply, tail = await self._request(
                inp, carried, beat, system, tools, messages, ask=1, choice={"type": "none"}
            )
        return reply, tail

    async def _request(
        self,
        inp: DeepTurnInput,
        carried: Carried,
        beat: Heartbeater,
        system: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        messages: list[dict[str, Any]],
        *,
        ask: int = 0,
        choice: dict[str, str] | None = None,
    ) -> tuple[transcript.StoredReply, ReportChunk | None]:
        """One budgeted, streamed request of the turn, settled and counted."""
        price = pricing.lookup(inp.model, inp.pricing)
        chars = max(len(json.dumps([system, tools, messages])), inp.prompt_chars)
        reserve = budget.reserve_usd(inp.max_tokens, budget.estimate_tokens(chars), price)
        ledger, key = await reserve_request(inp.budget, carried, reserve, ask)
        streamed = await stream_message(
            self,
            beat,
            price=price,
            ledger=(ledger, key),
            turn=inp.turn,
            ask=ask,
            model=inp.model,
            max_tokens=inp.max_tokens,
            system=system,
            tools=tools,
            # Every turn offers the tools the same way (the messages hold tool blocks,
            # and the cache is keyed on tool_choice); the last asks for the report.
            tool_choice=choice or {"type": "auto"},
            messages=messages,
            extra_headers={llm.REQUEST_KEY_HEADER: inp.request_key + (f"/ask{ask}" if ask else "")},
        )
        final = streamed.message
        usage = llm.usage_of(final.usage)
        cost = pricing.cost_usd(usage, price)
        reply = transcript.StoredReply(
            [transcript.sendable(_block(b)) for b in final.content],
            final.stop_reason or "",
            asdict(usage),
            cost,
            key,
            llm.refusal_of(final) or "",
        )
        carried.in_flight(usage, cost)  # billed in full, should the worker die right now
        store = await self.store()
        set_aside = _set_aside(inp, reply, ask)
        kept = reply
        try:
            if set_aside:
                carried.count_failed(key, cost)  # paid for, and the report asked for again
                carried.finished[storedwork.SET_ASIDE_COUNTED] = True
                self.metrics.record_retry_cost(self.labels, inp.model, cost)
                part = transcript.SET_ASIDE
                await self.kept(
                    lambda: store.put_part(inp.conversation, inp.turn, part, reply.dumps())
                )
            else:
                kept = await self.kept(lambda: self.store_reply(inp, reply))
        except Exception:
            # Paid for, not kept: the next attempt asks again, so this reply produced nothing.
            if not set_aside:
                carried.count_failed(key, cost)
                self.metrics.record_retry_cost(self.labels, inp.model, cost)
            carried.in_flight(Usage(), 0.0)
            await settle_request(carried, ledger, key, cost)
            self.metrics.record_llm(self.labels, inp.model, usage, cost)
            raise
        carried.in_flight(Usage(), 0.0)  # stored or counted: a next attempt does neither
        carried.calls += 1
        if kept is not reply:
            # The next turns are built from the stored reply, so this one produced nothing.
            carried.count_failed(key, cost)
            self.metrics.record_retry_cost(self.labels, inp.model, cost)
        beat.beat()
        await settle_request(carried, ledger, key, cost)
        self.metrics.record_llm(self.labels, inp.model, usage, cost)
        if kept is not reply:
            return await self._theirs(inp, kept, carried), None
        return reply, streamed.tail

    async def _theirs(
        self, inp: DeepTurnInput, stored: transcript.StoredReply, carried: Carried
    ) -> transcript.StoredReply:
        """A reply of this turn another attempt stored, as this attempt reports it
        (:func:`.storedwork.their_reply`): a request this activity already counted as
        lost, at a heartbeat's estimate, adds only what it cost above that, and the
        day's ledger that charged it at the estimate is raised to the bill."""
        theirs = storedwork.their_reply(stored, carried)
        if theirs.cost_usd and stored.request in carried.counted:
            for day in daybudget.lost_ledgers(inp.budget):
                await daybudget.settle_day(day, stored.request, stored.cost_usd, held_only=True)
        return theirs

    async def store_reply(
        self, inp: DeepTurnInput, reply: transcript.StoredReply
    ) -> transcript.StoredReply:
        """Store the turn's reply; the reply the turn has. That is another attempt's
        when one stored first: an attempt Temporal gave up on for missed heartbeats
        whose worker was cut off from it, not dead, and went on with its call."""
        store = await self.store()
        part = transcript.ASSISTANT
        if await store.put_part(inp.conversation, inp.turn, part, reply.dumps()):
            return reply
        theirs = await store.get_part(inp.conversation, inp.turn, part)
        if theirs is None:  # removed since: nothing better to go on with
            return reply
        activity.logger.warning(
            "turn %d: another attempt stored its reply first; going on with that one",
            inp.turn,
        )
        return transcript.StoredReply.loads(theirs)

    @activity.defn(name=DEEP_TOOL)
    async def deep_tool(self, inp: DeepToolInput) -> DeepToolOutput:
        async def stored() -> dict[str, float]:
            part = transcript.RESULT + inp.call.id
            return await self._paid_parts(inp.conversation, inp.turn, part)

        async with self.tracked(
            DEEP_TOOL, billed=True, model=inp.model, run_budget=inp.budget, stored=stored
        ) as beat:
            return await self._tool(inp, beat.state)

    async def _tool(self, inp: DeepToolInput, carried: Carried) -> DeepToolOutput:
        call, attempt = inp.call, activity.info().attempt
        part = transcript.RESULT + call.id
        store = await self.store()
        done = await store.get_part(inp.conversation, inp.turn, part)
        if done is not None:  # an earlier attempt stored it and was lost before reporting
            return await self._stored_tool(inp, carried, done)
        cost: LlmCall | None = None
        paid: transcript.Paid | None = None
        if call.name == TOOL_WEB_SEARCH:
            query = WebSearchInput(
                call.input["query"],
                inp.search_max_results,
                inp.model,
                inp.max_tokens,
                inp.pricing,
                inp.budget,
            )
            if self.config.search.provider == "anthropic-web-search":
                found = await self._anthropic(query, carried)
            else:
                found = await self._search_http(query)
            cost = found.llm
            if cost is not None:  # its request, as reserve_request named it
                paid = transcript.Paid(daybudget.request_key(), cost.cost_usd, cost.usage)
            # The characters themselves, as the model reads them best: an escaped
            # character of Chinese (six characters of ASCII) costs the model more tokens.
            text = json.dumps(
                [{"title": r.title, "url": r.url, "snippet": r.snippet} for r in found.results],
                ensure_ascii=False,
            )
            is_error = False
        elif call.name == TOOL_FETCH_PAGE:
            try:
                url, text = await fetching.fetch_text(
                    self.http_client(), call.input["url"], inp.fetch
                )
                text = f"URL: {url}\n\n{text}"
                is_error = False
            except fetching.FetchRefused as refused:
                text, is_error = f"refused: {refused}", True
        else:
            text, is_error = f"no tool {call.name!r} runs as an activity", True
        # Bounded in tokens, in any script, so one turn's growth of the conversation is
        # (steadfast_contract.context).
        text = pagetext.cap(text, MAX_TOOL_RESULT_CHARS)
        body = transcript.result_body(text, is_error, paid)
        try:
            kept = await self.kept(lambda: store.put_part(inp.conversation, inp.turn, part, body))
        except Exception:
            if paid is not None:  # settled, not kept: the next attempt searches again
                carried.count_failed(paid.request, paid.cost_usd)
                self.metrics.record_retry_cost(self.labels, inp.model, paid.cost_usd)
            raise
        theirs = None if kept else await store.get_part(inp.conversation, inp.turn, part)
        if theirs is not None:
            # Another attempt, alive though Temporal gave up on it, stored its result
            # first: the next turn's conversation holds that one, so this one produced
            # nothing, and the run goes on with theirs.
            activity.logger.warning(
                "turn %d: another attempt stored the result of %s first; going on with it",
                inp.turn,
                call.id,
            )
            if paid is not None:
                carried.count_failed(paid.request, paid.cost_usd)
                self.metrics.record_retry_cost(self.labels, inp.model, paid.cost_usd)
            return await self._stored_tool(inp, carried, theirs)
        chars = budget.token_chars(text)
        return DeepToolOutput(call.id, is_error, _summary(text), chars, attempt, cost)

    async def _stored_tool(self, inp: DeepToolInput, carried: Carried, body: str) -> DeepToolOutput:
        """The tool's result as another attempt stored it, and what this activity counts
        for it (:func:`storedwork.reused`); a paid result whose request this attempt
        counted as lost at a heartbeat's estimate raises the day's ledger to its cost."""
        stored = json.loads(body)
        text, is_error = str(stored["text"]), bool(stored["is_error"])
        paid = transcript.paid_result(stored)
        if paid is not None and paid.cost_usd > carried.counted.get(paid.request, paid.cost_usd):
            for day in daybudget.lost_ledgers(inp.budget):
                await daybudget.settle_day(day, paid.request, paid.cost_usd, held_only=True)
        used = storedwork.reused(inp.model, carried, stored)
        return DeepToolOutput(
            inp.call.id,
            is_error,
            _summary(text),
            budget.token_chars(text),
            activity.info().attempt,
            used,
        )


def _set_aside(inp: DeepTurnInput, reply: transcript.StoredReply, ask: int = 0) -> bool:
    """Whether ``reply`` (to the turn's first request) is a last turn's that called
    tools, where none will run."""
    last = inp.turn >= inp.max_turns
    refused = stops.is_refusal(reply.stop_reason)  # final: never asked again
    return ask == 0 and last and not refused and bool(transcript.tool_calls(reply.content))


def _summary(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"
