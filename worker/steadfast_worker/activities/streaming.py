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
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from anthropic.types import Message, RawMessageStreamEvent
from temporalio import activity
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from steadfast_contract import budget, pricing, stops
from steadfast_contract.models import REPORT_TOPIC, Pricing, ReportChunk
from steadfast_contract.pricing import Usage
from steadfast_worker import llm
from steadfast_worker.activities.base import ActivityBase, settle_request
from steadfast_worker.activities.heartbeat import Carried, Heartbeater

#: Publish what the stream produced this often, so a follower sees steady progress
#: without a signal (and a workflow task) per token.
CHUNK_SECONDS = 0.25
#: The most text one published chunk takes in a payload, and the most published chunks
#: wait for a flush. A signal may carry 2 MB: a reply that streamed faster than the
#: worker read it (a stalled event loop, a fast model) once put 3 MB of text in one
#: chunk, the signal was refused ("Blob data size exceeds limit"), and every attempt of
#: the paid call failed so. What a chunk cannot take waits for the next one, or goes
#: back with the activity's result as the reply's tail.
MAX_CHUNK_BYTES = 256_000
MAX_UNFLUSHED_BYTES = 1_000_000


@dataclass
class Reply:
    """A reply as its raw events build it.

    What the SDK's ``messages.stream`` helper accumulates, less its cost: that helper
    builds a second, typed event and a snapshot for every raw event and parses a tool
    call's whole input again at every piece of it: about 8 % of a deep run's worker
    CPU (bench/deep_throughput.py). Here a tool call's input is parsed once, when
    its block ends.
    """

    message: Message | None = None
    """The reply so far, from ``message_start`` on (None before)."""
    ended: bool = False
    """Whether ``message_stop`` came: a stream closed before it is no whole reply."""
    _tool_json: dict[int, str] = field(default_factory=dict)

    def take(self, event: RawMessageStreamEvent) -> tuple[str, int]:
        """Add ``event`` to the reply; the text and the tool-call input characters it
        streamed."""
        if event.type == "message_start":
            self.message = event.message
            return "", 0
        message = self.message
        if message is None:
            raise RuntimeError(f"the stream sent {event.type} before message_start")
        if event.type == "content_block_start":
            message.content.append(event.content_block)
        elif event.type == "content_block_delta":
            block, delta = message.content[event.index], event.delta
            if delta.type == "text_delta" and block.type == "text":
                block.text += delta.text
                return delta.text, 0
            if delta.type == "input_json_delta":
                self._tool_json[event.index] = (
                    self._tool_json.get(event.index, "") + delta.partial_json
                )
                return "", budget.token_chars(delta.partial_json)
            if delta.type == "citations_delta" and block.type == "text":
                block.citations = [*(block.citations or []), delta.citation]
            elif delta.type == "thinking_delta" and block.type == "thinking":
                block.thinking += delta.thinking
            elif delta.type == "signature_delta" and block.type == "thinking":
                block.signature = delta.signature
        elif event.type == "content_block_stop":
            raw = self._tool_json.pop(event.index, None)
            block = message.content[event.index]
            if raw is not None and hasattr(block, "input"):
                block.input = _tool_input(raw)
        elif event.type == "message_delta":
            message.stop_reason = event.delta.stop_reason
            message.stop_details = event.delta.stop_details
            message.stop_sequence = event.delta.stop_sequence
            usage, more = message.usage, event.usage
            usage.output_tokens = more.output_tokens
            # Cumulative totals: they replace message_start's, where given.
            if more.input_tokens is not None:
                usage.input_tokens = more.input_tokens
            if more.cache_creation_input_tokens is not None:
                usage.cache_creation_input_tokens = more.cache_creation_input_tokens
            if more.cache_read_input_tokens is not None:
                usage.cache_read_input_tokens = more.cache_read_input_tokens
            if more.server_tool_use is not None:
                usage.server_tool_use = more.server_tool_use
        elif event.type == "message_stop":
            self.ended = True
        return "", 0

    def final(self) -> Message:
        """The whole reply (once the stream has ended)."""
        if self.message is None or not self.ended:
            raise RuntimeError("the stream ended before its reply did")
        return self.message


def _tool_input(raw: str) -> Any:
    """A tool call's input from its streamed JSON; ``{}`` when the JSON is not whole
    (``max_tokens`` stopped the reply inside it): an incomplete call is never run, and
    the model is told so (:func:`steadfast_contract.stops.cut_call`)."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not whole, or nested past the parser's limit
        return {}


@dataclass
class Streamed:
    """A streamed reply, and the end of its text the stream did not publish."""

    message: Message
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
    """Send ``request`` (``messages.create`` keyword arguments) streamed; the reply.

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
    text_chars = 0  # ``text`` as the budget counts it (budget.token_chars)
    unflushed = 0  # payload bytes published since the last flush
    tool_json = 0  # characters of tool-call input streamed: output billed like text
    last_publish = time.monotonic()
    reply = Reply()
    async with publisher:
        try:
            events = await base.llm_client().messages.create(stream=True, **request)
            async with events:
                async for event in events:
                    piece, json_chars = reply.take(event)
                    if event.type == "message_start":
                        # The input is billed now, whatever the reply streams (a turn
                        # that only calls tools streams no text): a heartbeat says so
                        # unless the reply is over first, so a reply that comes at
                        # once costs no heartbeat RPC.
                        _note_spend(carried, price, reply, 0)
                        beat.soon()
                        continue
                    if not piece and not json_chars:
                        continue
                    pending += piece
                    tool_json += json_chars
                    now = time.monotonic()
                    if now - last_publish >= CHUNK_SECONDS:
                        if pending:
                            chunk = stops.head_within(pending, MAX_CHUNK_BYTES)
                            topic.publish(ReportChunk(info.attempt, len(text), chunk, turn, ask))
                            text += chunk
                            text_chars += budget.token_chars(chunk)
                            pending = pending[len(chunk) :]
                            carried.progress = len(text)
                            unflushed += stops.payload_bytes(chunk)
                            if unflushed > MAX_UNFLUSHED_BYTES - MAX_CHUNK_BYTES:
                                await publisher.flush()  # one signal stays within a payload
                                unflushed = 0
                        last_publish = now
                        # Billed so far, should this worker die before the end.
                        produced = text_chars + budget.token_chars(pending) + tool_json
                        _note_spend(carried, price, reply, produced)
                        beat.beat()
            final = reply.final()
        except BaseException as exc:
            carried.in_flight(Usage(), 0.0)  # counted here, not by the next attempt
            produced = text_chars + budget.token_chars(pending) + tool_json
            partial = partial_usage(started_usage(reply), produced)
            cost = pricing.cost_usd(partial, price)
            if cost:
                carried.count_failed(ledger[1], cost)
                base.metrics.record_llm(base.labels, model, partial, cost)
                base.metrics.record_retry_cost(base.labels, model, cost)
            if not isinstance(exc, asyncio.CancelledError):
                await settle_request(carried, ledger[0], ledger[1], cost)
            raise
        finally:
            beat.not_soon()  # the reply is over: its end is news of its own
        # What was published reaches the workflow before the activity reports, so the
        # tail the workflow publishes after it is in order. Not ``force_flush``: on
        # Python 3.11 a flush wake-up racing the client's exit cancels into
        # asyncio.wait_for's lost-cancellation bug and the exit hangs. An explicit
        # flush has no such race (and sends nothing when nothing is buffered).
        await publisher.flush()
    tail = ReportChunk(info.attempt, len(text), pending, turn, ask) if pending else None
    return Streamed(final, tail)


def _note_spend(carried: Carried, price: Pricing, reply: Reply, produced: int) -> None:
    """Put what the stream was billed so far (``produced`` characters of output) in the
    heartbeat state, for a next attempt should this worker die before the end."""
    so_far = partial_usage(started_usage(reply), produced)
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


def started_usage(reply: Reply) -> Usage | None:
    """The input usage ``message_start`` reported, if the stream got that far."""
    return None if reply.message is None else llm.usage_of(reply.message.usage)
