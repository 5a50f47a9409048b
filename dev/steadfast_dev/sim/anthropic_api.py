"""``POST /v1/messages``: the Anthropic Messages API, as the real SDK sees it.

The worker points ``anthropic.AsyncAnthropic(base_url=...)`` here, so this
handler must answer exactly what the SDK parses: JSON messages, SSE streams in the
real event order, and error bodies whose status maps to the SDK's exception
classes (429 ``RateLimitError``, 529 ``OverloadedError``, ...). The content it
writes, and the prompt markers that select it, are described in
:mod:`steadfast_dev.sim.content`; usage in :mod:`steadfast_dev.sim.messages`, the
prompt cache's rules in :mod:`steadfast_dev.sim.promptcache`; a request defining
client tools is a turn of the tool-use agent of :mod:`steadfast_dev.sim.agent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from steadfast_dev.sim import agent, content, messages, promptcache
from steadfast_dev.sim.faults import matches
from steadfast_dev.sim.requestlog import Entry
from steadfast_dev.sim.state import (
    STATE,
    SimState,
    drop_connection,
    error_response,
    pause,
    preamble,
)


def _error_body(status: int, message: str) -> Mapping[str, object]:
    return messages.error_json(status, message)


async def handle_messages(request: web.Request) -> web.StreamResponse:
    """Answer one Messages API call (one attempt in the request log)."""
    state = request.app[STATE]
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    is_map = isinstance(body, Mapping)
    stream = bool(body.get("stream")) if is_map else False
    text = content.prompt_text(body) if is_map else ""
    entry, fault = state.begin("llm", request, body, text=text, stream=stream)
    early = await preamble(state, "llm", request, entry, fault, _error_body)
    if early is not None:
        return early
    problem = messages.validate_request(body)
    if problem is not None:
        state.log.finish(entry, "rejected", 400)
        return error_response(400, problem, _error_body)

    llm_plan = state.plans["llm"]
    account = promptcache.account_input(body, llm_plan.token_density)
    too_long = _context_refusal(
        account.total_tokens, body.get("max_tokens"), llm_plan.context_tokens
    )
    if too_long:
        state.log.finish(entry, "rejected", 400)
        return error_response(400, too_long, _error_body)
    cache = promptcache.cache_use(account, state.is_cached)
    says = llm_plan.says if matches(llm_plan, text) else ""
    answer = llm_plan.answer if matches(llm_plan, text) else ""
    if agent.plays_agent(body):
        reply = agent.agent_reply(
            body,
            cache,
            turns=llm_plan.agent_turns,
            broken=fault == "bad_json",
            finishes_when_asked=llm_plan.agent_finishes_when_asked,
            says=says,
            answer=answer,
            account=account,
        )
    else:
        reply = messages.build_reply(
            body,
            cache,
            broken_json=fault == "bad_json",
            says=says,
            answer=answer,
            result_tokens=llm_plan.search_result_tokens,
            account=account,
        )
    if messages.REFUSAL_TRIGGER in text:
        reply = messages.refused(reply)
    entry.usage, entry.stop_reason = reply.usage, reply.stop_reason
    msg_id = f"msg_sim{entry.seq:06d}{entry.key[:12]}"
    events = messages.sse_events(reply, msg_id, str(body["model"]))
    if stream:
        return await _answer_stream(request, state, entry, events, cache)
    if fault == "disconnect":
        state.log.finish(entry, "fault", None)
        return drop_connection(request)
    if fault == "stream_error":
        state.log.finish(entry, "fault", 529)
        retry_after = state.plans["llm"].retry_after
        return error_response(529, "simulated overload", _error_body, retry_after)
    # A whole answer takes as long as its stream would have.
    deltas = sum(1 for name, _ in events if name == "content_block_delta")
    generating = state.plans["llm"].chunk_delay_ms * deltas / 1000
    if generating and not await pause(request, generating, state.stopping):
        state.log.finish(entry, "aborted", None)
        return web.Response(status=499)
    _remember(state, cache)
    entry.billed = entry.usage
    state.log.finish(entry, "served", 200)
    return web.json_response(messages.message_json(reply, msg_id, str(body["model"])))


def _context_refusal(input_tokens: int, max_tokens: object, window: int) -> str:
    """The real API's refusal of a request that cannot fit the model's window, or ""."""
    asked = max_tokens if isinstance(max_tokens, int) else 0
    if not window or input_tokens + asked <= window:
        return ""
    return (
        f"input length and `max_tokens` exceed context limit: {input_tokens} + {asked} > "
        f"{window}, decrease input length or `max_tokens` and try again"
    )


async def _answer_stream(
    request: web.Request,
    state: SimState,
    entry: Entry,
    events: list[tuple[str, dict[str, object]]],
    cache: promptcache.CacheUse,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await response.prepare(request)
    plan = state.plans["llm"]
    delay = plan.chunk_delay_ms / 1000
    # Stream faults strike part-way through the text (plan.stream_cut), after the
    # client has seen some of it -- and been billed for it.
    deltas = [i for i, (name, _) in enumerate(events) if name == "content_block_delta"]
    at = min(int(len(deltas) * plan.stream_cut), len(deltas) - 1)
    cut = deltas[at] if deltas and entry.fault in ("stream_error", "disconnect") else -1
    sent = ""
    try:
        if not delay and cut < 0:
            # Zero latency (benchmarks): one write, so the simulator costs next to nothing.
            await response.write(b"".join(messages.encode_sse(e, d) for e, d in events))
            events = []
        for index, (event, data) in enumerate(events):
            slow = event == "content_block_delta" and delay
            if slow and not await pause(request, delay, state.stopping):
                raise ConnectionResetError("client left mid-stream")
            if index == cut:
                entry.billed = _billed(entry, sent)
                state.log.finish(entry, "fault", 200)
                if entry.fault == "disconnect":
                    drop_connection(request)
                    return response
                error = messages.error_json(529, "simulated overload mid-stream")
                await response.write(messages.encode_sse("error", error))
                await response.write_eof()
                return response
            await response.write(messages.encode_sse(event, data))
            sent += _delta_text(data)
        await response.write_eof()
    except ConnectionError:
        entry.billed = _billed(entry, sent)
        state.log.finish(entry, "aborted", 200)
        return response
    _remember(state, cache)
    entry.billed = entry.usage
    state.log.finish(entry, "served", 200)
    return response


def _delta_text(data: Mapping[str, object]) -> str:
    """What a delta adds to the output: text, or a piece of a tool call's JSON input."""
    delta = data.get("delta")
    if data.get("type") == "content_block_delta" and isinstance(delta, Mapping):
        text = delta.get("text", delta.get("partial_json"))
        return text if isinstance(text, str) else ""
    return ""


def _billed(entry: Entry, sent: str) -> dict[str, object]:
    """A broken stream's bill: all of its input, and the output tokens it sent."""
    return {**(entry.usage or {}), "output_tokens": content.estimate_tokens(sent)}


def _remember(state: SimState, cache: promptcache.CacheUse) -> None:
    """Only a served answer warms the cache, as a failed call would not."""
    for digest in cache.refreshed:
        state.refresh_cache(digest)
    for breakpoint in cache.touched:
        state.store_cache(breakpoint.digest, breakpoint.ttl_s)
