"""One streamed, billed Messages request inside an activity: heartbeats, chunks, spend.

``write_report`` and every turn of a deep run make their LLM request the same way,
so the rules live once, here:

- text is published to the workflow's stream (:data:`~steadfast_contract.models.REPORT_TOPIC`)
  every :data:`CHUNK_SECONDS`, for ``steadfast run --follow``;
- at that cadence, for text and for tool-call input alike, a heartbeat carries
  what the request has been billed so far (its input from ``message_start`` on),
  so a worker that dies mid-stream is noticed within the heartbeat timeout and
  its spend is known to the next attempt;
- the text after the last piece (all of it, when the reply comes at once) is not
  signalled: it is returned as the reply's ``tail``, and the workflow publishes
  it when the activity reports, one signal and one workflow task fewer per call;
- a stream that breaks after tokens were produced was still billed: its
  estimated cost becomes failed spend (and retry-cost metrics), and the day's
  ledger is settled at that estimate.

The caller reserves the request from the run's and the day's budgets first and
settles the day's ledger with the final cost after.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anthropic
from anthropic.lib.streaming import AsyncMessageStream
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from steadfast_contract import budget, pricing
from steadfast_contract.models import REPORT_TOPIC, Pricing, ReportChunk
from steadfast_contract.pricing import Usage
from steadfast_worker import llm
from steadfast_worker.activities.base import ActivityBase, settle_request
from steadfast_worker.activities.heartbeat import Carried, Heartbeater

#: A reply still streaming this long after ``message_start`` has its input heartbeated.
START_BEAT_SECONDS = 0.05

#: Publish what the stream produced this often, so a follower sees steady progress
#: without a signal (and a workflow task) per token.
CHUNK_SECONDS = 0.25


@dataclass
class Streamed:
    """A streamed reply, and the end of its text the stream did not publish."""

    message: anthropic.types.Message
    tail: ReportChunk | None


async def stream_message(
    base: ActivityBase,
    beat: Heartbeater,
    *,
    price: Pricing,
    ledger: tuple[str | None, str],
    turn: int = 0,
    ask: int = 0,
    **request: Any,
) -> Streamed:
    """Send ``request`` (``messages.stream`` keyword arguments) and return the reply.

    ``ledger`` is the day's ledger id (or None) and this request's key in it, as
    reserved by the caller; a request that fails is settled here.
    """
    carried = beat.state
    info = activity.info()
    model = str(request.get("model", ""))
    publisher = WorkflowStreamClient.from_within_activity(
        batch_interval=timedelta(seconds=CHUNK_SECONDS)
    )
    topic = publisher.topic(REPORT_TOPIC, type=ReportChunk)
    text, pending = "", ""
    tool_json = 0  # characters of tool-call input streamed: output billed like text
    last_publish = time.monotonic()
    opened: AsyncMessageStream[None] | None = None
    told: asyncio.TimerHandle | None = None
    async with publisher:
        try:
            async with base.llm_client().messages.stream(**request) as stream:
                opened = stream
                async for event in stream:
                    if event.type == "message_start":
                        # The input is billed now, whatever the reply streams (a turn
                        # that only calls tools streams no text): a heartbeat says so
                        # unless the reply is over first, so a reply that comes at
                        # once costs no heartbeat RPC.
                        _note_spend(carried, price, stream, 0)
                        told = asyncio.get_running_loop().call_later(START_BEAT_SECONDS, beat.beat)
                        continue
                    if event.type == "text":
                        pending += event.text
                    elif event.type == "input_json":
                        tool_json += len(event.partial_json)
                    else:
                        continue
                    now = time.monotonic()
                    if now - last_publish >= CHUNK_SECONDS:
                        if pending:
                            topic.publish(ReportChunk(info.attempt, len(text), pending, turn, ask))
                            text += pending
                            pending = ""
                            carried.progress = len(text)
                        last_publish = now
                        # Billed so far, should this worker die before the end.
                        _note_spend(carried, price, stream, len(text) + tool_json)
                        beat.beat()
                final = await stream.get_final_message()
        except BaseException as exc:
            carried.in_flight(Usage(), 0.0)  # counted here, not by the next attempt
            partial = partial_usage(started_usage(opened), len(text + pending) + tool_json)
            cost = pricing.cost_usd(partial, price)
            if cost:
                carried.failed_cost_usd += cost
                base.metrics.record_llm(base.labels, model, partial, cost)
                base.metrics.record_retry_cost(base.labels, model, cost)
            if not isinstance(exc, asyncio.CancelledError):
                await settle_request(carried, ledger[0], ledger[1], cost)
            raise
        finally:
            if told is not None:
                told.cancel()
        # What was published reaches the workflow before the activity reports, so the
        # tail the workflow publishes after it is in order. Not ``force_flush``: on
        # Python 3.11 a flush wake-up racing the client's exit cancels into
        # asyncio.wait_for's lost-cancellation bug and the exit hangs. An explicit
        # flush has no such race (and sends nothing when nothing is buffered).
        await publisher.flush()
    tail = ReportChunk(info.attempt, len(text), pending, turn, ask) if pending else None
    return Streamed(final, tail)


def _note_spend(
    carried: Carried, price: Pricing, stream: AsyncMessageStream[None], produced: int
) -> None:
    """Put what the stream was billed so far (``produced`` characters of output) in the
    heartbeat state, for a next attempt should this worker die before the end."""
    so_far = partial_usage(started_usage(stream), produced)
    carried.in_flight(so_far, pricing.cost_usd(so_far, price))


def partial_usage(started: Usage | None, produced: int) -> Usage:
    """What a cut-off stream was billed: its input, and the ``produced`` characters of
    output (text and tool-call input) seen so far."""
    if started is None:
        return Usage()
    out = budget.estimate_tokens(produced) - budget.OVERHEAD_TOKENS if produced else 0
    return Usage(
        input_tokens=started.input_tokens,
        output_tokens=max(out, 0),
        cache_read_tokens=started.cache_read_tokens,
        cache_write_tokens=started.cache_write_tokens,
        cache_write_1h_tokens=started.cache_write_1h_tokens,
    )


def started_usage(stream: AsyncMessageStream[None] | None) -> Usage | None:
    """The input usage ``message_start`` reported, if the stream got that far."""
    if stream is None:
        return None
    try:
        message = stream.current_message_snapshot
    except Exception:  # no message_start yet: nothing was billed
        return None
    return llm.usage_of(message.usage)
