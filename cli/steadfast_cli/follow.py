"""Printing a report while the workflow writes it.

The writing activity publishes the report text, chunk by chunk, to the
workflow's stream (temporalio's ``contrib.workflow_streams``, topic
:data:`~steadfast_contract.models.REPORT_TOPIC`); this module is the reading side
that ``steadfast run --follow`` uses. The stream is durable and offset-addressed,
so following a run that is already half written prints it from the start. When
a worker dies mid-report, the retried attempt starts the text over: the follower
says so and prints the new attempt's text instead of interleaving the two. A deep
run streams every turn's reply (a line of intent, then the report at the last
turn); each turn starts on its own paragraph, under a line saying which turn of how
many it is, and the tool calls and cost so far (``--- turn 2/20 Researching · 3 tool
calls · 0 retries · $0.0123 ---``), so a piped deep run shows its progress too. The
model read pages anyone can write, so its text reaches the terminal with control
characters made visible (:mod:`steadfast_cli.safetext`); the report store keeps it as
written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient

from steadfast_cli.safetext import printable
from steadfast_contract.models import REPORT_TOPIC, ReportChunk


@dataclass
class Follower:
    """What has been printed so far: which turn and attempt, up to which character."""

    attempt: int = 0
    printed: int = 0
    turn: int = 0
    ask: int = 0

    def feed(self, chunk: ReportChunk) -> str:
        """The text to print for ``chunk`` (possibly empty, for a repeat)."""
        prefix = ""
        if chunk.turn < self.turn:
            return ""  # a late chunk of a turn already over
        if chunk.turn > self.turn:
            # A deep run's next turn: its reply starts at offset 0 on its own line.
            prefix = "\n\n" if self.printed else ""
            self.turn, self.attempt, self.ask, self.printed = chunk.turn, 0, 0, 0
        if (chunk.attempt, chunk.ask) < (self.attempt, self.ask):
            return ""  # a late chunk of an abandoned attempt or request
        if chunk.attempt > self.attempt:
            if self.attempt:
                prefix += (
                    f"\n\n--- attempt {chunk.attempt}: the worker writing the report was lost; "
                    "the report is being written again ---\n\n"
                )
            self.attempt, self.ask, self.printed = chunk.attempt, 0, 0
        if chunk.ask > self.ask:
            prefix += (
                "\n\n--- the model called tools on its last turn; "
                "the report is asked for again ---\n\n"
            )
            self.ask, self.printed = chunk.ask, 0
        end = chunk.offset + len(chunk.text)
        if end <= self.printed:
            return prefix
        new = chunk.text[max(self.printed - chunk.offset, 0) :]
        self.printed = end
        return prefix + new


def held_cr(held: str, text: str) -> tuple[str, str]:
    """``text``, after what an earlier chunk held back, split into what may be printed now
    and a trailing carriage return held for the next chunk: a CRLF split across two
    chunks is then one line feed, as ``steadfast report`` prints it, not a ``␍`` shown
    before a line feed."""
    text = held + text
    if text.endswith("\r"):
        return text[:-1], "\r"
    return text, ""


async def follow_report(
    client: Client,
    workflow_id: str,
    out: TextIO,
    turn_line: Callable[[int], Awaitable[str]] | None = None,
) -> int:
    """Write the report to ``out`` as it is written, until the run closes; return chars.

    ``turn_line(n)``, when given, is the line that heads a deep run's turn ``n``."""
    stream = WorkflowStreamClient.create(client, workflow_id)
    follower = Follower()
    held = ""
    async for item in stream.subscribe([REPORT_TOPIC], result_type=ReportChunk):
        new_turn = item.data.turn > follower.turn
        raw, held = held_cr(held, follower.feed(item.data))
        text = printable(raw)  # a model's text: control characters shown
        if new_turn and turn_line is not None:
            gap = "\n\n" if text.startswith("\n\n") else ""
            text = f"{gap}{await turn_line(item.data.turn)}\n\n{text.removeprefix(gap)}"
        if text:
            out.write(text)
            out.flush()
    if held:
        out.write(printable(held))
    if follower.printed:
        out.write("\n")
    return follower.printed
