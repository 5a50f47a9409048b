"""Printing a report while the workflow writes it.

The writing activity publishes the report text, chunk by chunk, to the
workflow's stream (temporalio's ``contrib.workflow_streams``); this module is
the reading side that ``steadfast run --follow`` uses. The stream is durable and
offset-addressed, so following a run that is already half written prints it
from the start, and a worker crash in the middle only means a pause.
"""

from __future__ import annotations

from typing import TextIO

from temporalio.client import Client
from temporalio.contrib.workflow_streams import WorkflowStreamClient

REPORT_TOPIC = "report"


async def follow_report(
    client: Client, workflow_id: str, out: TextIO, topic: str = REPORT_TOPIC
) -> int:
    """Write the report's chunks to ``out`` until the run closes; return chars written."""
    stream = WorkflowStreamClient.create(client, workflow_id)
    written = 0
    async for item in stream.subscribe([topic], result_type=str):
        out.write(item.data)
        out.flush()
        written += len(item.data)
    if written:
        out.write("\n")
    return written
