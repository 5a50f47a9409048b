"""Crash: a worker SIGKILLed during step k; a new worker finishes the run; nothing paid twice.

For every step of ``ResearchWorkflow`` (generate queries, search, write, save,
email) a real ``steadfast worker`` process is SIGKILLed while that step runs, and
a new one is started. The run must complete, and the simulator's request log
must show every LLM call that had completed before the kill served exactly once.
Each step is held open by a real slow dependency so the kill lands inside it: a
streaming simulator (LLM steps), search latency (search), an exclusive lock on
the SQLite file (save) and a slow SMTP server (email).

Resume times are printed and written to ``build/crash-resume.json``; they use a
3 s heartbeat timeout to keep the test short (``bench/resume_time.py`` measures
the defaults). No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from temporalio.client import Client
from tests.support.ports import free_port
from tests.support.stack import ROOT, example_config, on_queue, open_stack

from steadfast_contract import models, starter
from steadfast_dev import chaos, embedded
from steadfast_dev.processes import Child

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: Short by default to keep the tier quick; STEADFAST_CRASH_HEARTBEAT=10s measures the defaults.
HEARTBEAT = os.environ.get("STEADFAST_CRASH_HEARTBEAT", "3s")
RESULTS = ROOT / "build" / "crash-resume.json"
_results: dict[str, dict[str, Any]] = {}


class SlowSMTP:
    """An aiosmtpd handler that can be told to take its time with DATA."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(self.delay)
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[SlowSMTP, int]]:
    handler = SlowSMTP()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def crash_stack(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[embedded.Stack]:
    s = await open_stack(
        temporal_address, tmp_path_factory.mktemp("crash"), ["--chunk-delay-ms", "40"]
    )
    try:
        yield s
    finally:
        s.stop()
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(_results, indent=2))


class FileLock:
    """Holds an exclusive SQLite lock on the reports database from another thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.release = threading.Event()
        self.taken = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        self.taken.set()
        self.release.wait(60)
        db.execute("ROLLBACK")
        db.close()

    def __enter__(self) -> FileLock:
        self.thread.start()
        self.taken.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


STEPS = [
    models.Phase.GENERATING_QUERIES.value,
    models.Phase.SEARCHING.value,
    models.Phase.WRITING.value,
    models.Phase.SAVING.value,
    models.Phase.EMAILING.value,
]


@pytest.mark.parametrize("phase", STEPS)
async def test_sigkill_during_step_resumes_without_repeating_llm_calls(
    phase: str,
    crash_stack: embedded.Stack,
    smtp: tuple[SlowSMTP, int],
    temporal_client: Client,
    task_queue: str,
) -> None:
    handler, smtp_port = smtp
    base = example_config()
    notify = base.notify.model_copy(
        update={"email": base.notify.email.model_copy(update={"to": ["reviewer@example.com"]})}
    )
    cfg = crash_stack.worker_config(
        on_queue(
            base.model_copy(update={"notify": notify}), task_queue, heartbeat_timeout=HEARTBEAT
        )
    )
    env = dict(os.environ, STEADFAST_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}")
    env.pop("STEADFAST_POSTGRES_DSN", None)
    admin = crash_stack.sim_admin
    await admin.reset()
    handler.delay = 4.0 if phase == models.Phase.EMAILING.value else 0.0
    if phase == models.Phase.SEARCHING.value:
        await admin.set_faults({"search": {"latency_ms": 2500}})
    if phase == models.Phase.GENERATING_QUERIES.value:
        # The query list is short; hold its answer back so the kill lands inside the call.
        await admin.set_faults({"llm": {"latency_ms": 2500}})
    mails_before = len(handler.messages)

    worker = crash_stack.start_worker(cfg, env)
    started = await starter.start_topic(
        temporal_client, cfg, f"crash during {phase} {uuid.uuid4()}"
    )
    lock: FileLock | None = None
    if phase == models.Phase.SAVING.value:
        # Hold the database so the save is in progress (blocked) when the worker dies.
        await chaos.wait_for_phase(temporal_client, started.workflow_id, models.Phase.WRITING)
        lock = FileLock(Path(cfg.storage.sqlite_path)).__enter__()

    def restart() -> Child:
        if lock is not None:
            lock.__exit__()
        return crash_stack.start_worker(cfg, env)

    try:
        report = await chaos.crash_during(
            temporal_client, admin, started.workflow_id, phase, worker, restart
        )
    finally:
        if lock is not None:
            lock.__exit__()
        await admin.reset()
        handler.delay = 0.0

    _results[phase] = {
        "heartbeat_timeout": HEARTBEAT,
        "resume_s": report.resume_s,
        "retry_after_s": report.retry_after_s,
        "served_before_kill": report.served_before,
        "in_flight": report.interrupted,
    }
    print(f"\n{phase}: {_results[phase]}")
    served = await admin.served("llm")
    assert report.final_phase == models.Phase.COMPLETED.value, report
    assert report.repeated == {}, f"LLM calls served more than once: {report.repeated}"
    if phase != models.Phase.GENERATING_QUERIES.value:
        assert report.served_before >= 1, "the kill came before any LLM call had finished"
    assert all(count == 1 for count in served.values()), served
    assert report.resume_s is not None
    final = await starter.query_status(temporal_client, started.workflow_id)
    assert final.report_id
    assert final.llm_calls == 2
    # At most one review mail per run, whatever the kill interrupted.
    assert final.email in {"sent", "unknown"}
    assert len(handler.messages) - mails_before <= 1
