"""Integration fixtures: SMTP sink, databases, and a research worker in this process.

Every server here is real and on loopback: the session's Temporal dev server,
the project's LLM/search simulator (spoken to through the real ``anthropic`` SDK
and ``httpx``), an ``aiosmtpd`` server that keeps what it receives, SQLite files
and the Debian Postgres that ``make integration`` / ``.ci/run`` start
(``STEADFAST_TEST_POSTGRES_DSN``; missing it fails under ``CI=true``).

:func:`harness` builds a worker for the test's own task queue from a
:class:`~steadfast_contract.config.WorkerConfig` with short retry intervals, runs
it on the test's event loop, and offers helpers to start runs and read metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from tests.support.abandoned import no_abandoned_work  # noqa: F401  (autouse fixture)
from tests.support.ports import free_port
from tests.support.sim import (  # noqa: F401  (fixtures)
    SimHandle,
    sim,
    sim_server,
    wait_for_report_call,
)
from tests.support.tlsproxy import TestPKI, TLSProxy, make_test_pki

from steadfast_contract import budget
from steadfast_contract.config import WorkerConfig, parse_config
from steadfast_contract.ids import workflow_id
from steadfast_contract.ledger import LEDGER_QUERY, LedgerState
from steadfast_contract.models import WORKFLOW_NAME, WORKFLOW_TASK_TIMEOUT, ResearchResult
from steadfast_contract.starter import research_input
from steadfast_dev.processes import steadfast_command
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.activities.storage import ReportStore, open_store
from steadfast_worker.metrics import Metrics
from steadfast_worker.worker import build_worker

API_KEY_ENV = "STEADFAST_TEST_ANTHROPIC_KEY"
SMTP_URL_ENV = "STEADFAST_TEST_SMTP_URL"
PG_DSN_ENV = "STEADFAST_TEST_PG_DSN"


class _Sink:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self._lock:
            self.messages.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)
            )
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    sink: _Sink

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def messages_for(self, wf_id: str) -> list[Message]:
        # Long header values arrive folded; compare them unfolded.
        return [
            m
            for m in self.sink.messages
            if " ".join(str(m["X-Steadfast-Workflow-Id"]).split()) == wf_id
        ]


@contextlib.contextmanager
def serving_smtp(sink: _Sink) -> Iterator[SmtpServer]:
    """A real SMTP server on loopback, handing what it accepts to ``sink``."""
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, sink)
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback that records what it accepts."""
    with serving_smtp(_Sink()) as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A throwaway CA with a 127.0.0.1 server certificate and a client certificate."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_proxy(temporal_address: str, pki: TestPKI) -> Iterator[TLSProxy]:
    """The dev server behind TLS that requires a client certificate from ``pki``.

    Per module, so the subjects it records belong to that module's tests alone.
    """
    with TLSProxy(temporal_address, pki) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tls_proxy(temporal_address: str, pki: TestPKI) -> Iterator[TLSProxy]:
    """Server-authenticated TLS only, as Temporal Cloud with an API key."""
    with TLSProxy(temporal_address, pki, require_client_cert=False) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The Postgres DSN the Makefile exports; CI must have one, a laptop may skip."""
    dsn = os.environ.get("STEADFAST_TEST_POSTGRES_DSN", "")
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("STEADFAST_TEST_POSTGRES_DSN is not set (run `make integration`)")
        pytest.skip("STEADFAST_TEST_POSTGRES_DSN is not set; run scripts/start-postgres")
    if not dsn.startswith(("postgresql://", "postgres://")) or "\n" in dsn:
        # Caught once: a start-up message leaked into the captured DSN.
        pytest.fail(f"STEADFAST_TEST_POSTGRES_DSN is not one postgresql:// URL: {dsn!r}")
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def backend_dsn(request: pytest.FixtureRequest) -> str:
    """The report store under test: SQLite (``""``) or the session's Postgres DSN."""
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A fresh SQLite report database for one test (the embedded default backend)."""
    return tmp_path / "reports.db"


def merge_config(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def base_config(simulator: SimHandle, task_queue: str, sqlite_path: Path) -> dict[str, Any]:
    """A worker configuration against the simulator with test-sized intervals."""
    fast = {"initialInterval": "100ms", "backoffCoefficient": 1.0}
    return {
        "agent": "itest",
        "namespace": "itest-ns",
        "temporal": {"taskQueue": task_queue},
        "model": {
            "name": "claude-sonnet-4-6",
            "maxTokens": 1000,
            "baseURL": simulator.llm_base_url,
            "apiKeyEnv": API_KEY_ENV,
            "timeout": "2s",
        },
        "search": {"provider": "http", "endpoint": simulator.search_url},
        # The simulator's search results link to the pages it serves on loopback.
        "research": {
            "tools": {"fetchPage": {"allowPrivateHosts": [urlsplit(simulator.base_url).netloc]}}
        },
        "storage": {"postgresDsnEnv": PG_DSN_ENV, "sqlitePath": str(sqlite_path)},
        "notify": {
            "email": {
                "to": ["reviewer@example.test"],
                "from": "steadfast@example.test",
                "smtpUrlEnv": SMTP_URL_ENV,
            }
        },
        "retryPolicies": {
            "llm": {**fast, "maximumAttempts": 5},
            "search": {**fast, "maximumAttempts": 3},
            "database": {**fast, "maximumAttempts": 10},
            "email": {"maximumAttempts": 1},
        },
        "budget": {"maxUSDPerRun": 1.0},
        "worker": {"metricsPort": 0, "sdkMetricsPort": 0, "heartbeatTimeout": "3s"},
    }


@dataclass
class Harness:
    """A running in-process worker and the servers it talks to."""

    client: Client
    sim: SimHandle
    smtp: SmtpServer
    config: WorkerConfig
    env: dict[str, str]
    metrics: Metrics
    activities: ResearchActivities
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    @property
    def task_queue(self) -> str:
        return self.config.task_queue

    def workflow_id(self, topic: str) -> str:
        return workflow_id(self.config.namespace, self.config.agent, topic)

    def day_ledger_id(self) -> str:
        """Today's ledger workflow of this harness's agent."""
        key = budget.ledger_key(self.config.namespace, self.config.agent, self.task_queue)
        return budget.ledger_id(key, budget.day_of(datetime.now(UTC)))

    async def day(self) -> LedgerState:
        """Today's ledger as its query answers, a worker of this harness polling (the
        query needs one)."""
        async with self.worker():
            ledger = self.client.get_workflow_handle(self.day_ledger_id())
            day: LedgerState = await ledger.query(LEDGER_QUERY, result_type=LedgerState)
            return day

    async def start(
        self,
        topic: str,
        *,
        id_conflict_policy: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.USE_EXISTING,
    ) -> WorkflowHandle[Any, ResearchResult]:
        handle = await self.client.start_workflow(
            WORKFLOW_NAME,
            research_input(self.config, topic),
            id=self.workflow_id(topic),
            task_queue=self.task_queue,
            task_timeout=WORKFLOW_TASK_TIMEOUT,  # as every starter sets it
            id_conflict_policy=id_conflict_policy,
            result_type=ResearchResult,
        )
        self.handles.append(handle)
        return handle

    async def run(self, topic: str) -> ResearchResult:
        return await (await self.start(topic)).result()

    @property
    def last_run_id(self) -> str:
        """The run id of the run this harness started last (email claims are per run)."""
        return self.handles[-1].result_run_id or ""

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from this worker's registry (0 when never incremented)."""
        full = {"agent": self.config.agent, "namespace": self.config.namespace, **labels}
        value = self.metrics.registry.get_sample_value(name, full)
        return 0.0 if value is None else value

    async def store(self) -> ReportStore:
        dsn = self.env.get(PG_DSN_ENV, "")
        return await open_store(dsn, self.config.storage.sqlite_path)

    async def spawn_worker(
        self, doc: Mapping[str, Any], temporal_address: str, config_path: Path
    ) -> asyncio.subprocess.Process:
        """A ``steadfast worker`` process configured by ``doc``, with this harness's secrets."""
        await asyncio.to_thread(config_path.write_text, json.dumps(doc))
        argv = ["worker", "--config", str(config_path), "--address", temporal_address]
        return await asyncio.create_subprocess_exec(
            *steadfast_command(*argv, "--log-level", "ERROR"), env={**os.environ, **self.env}
        )

    async def killed_mid_report(
        self,
        topic: str,
        temporal_address: str,
        config_path: Path,
        *,
        chunk_delay_ms: int,
        settle: float,
        queries: bool = False,
    ) -> KilledMidReport:
        """Start ``topic`` on a ``steadfast worker`` process, SIGKILL it ``settle`` seconds
        into the report's stream (slowed to ``chunk_delay_ms`` a chunk; with ``queries``,
        into the query-generation call instead), then let this harness's own worker
        finish the run."""
        doc = base_config(self.sim, self.task_queue, Path(self.config.storage.sqlite_path))
        match = "JSON array" if queries else "research report"
        self.sim.set_faults({"llm": {"chunk_delay_ms": chunk_delay_ms, "match": match}})
        proc = await self.spawn_worker(doc, temporal_address, config_path)
        try:
            handle = await self.start(topic)
            await wait_for_report_call(self.sim, handle.id, settle=settle, queries=queries)
            proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            killed_at = time.monotonic()
            self.sim.set_faults({"llm": {"clear": True}})
            async with self.worker():
                result: ResearchResult = await handle.result()
            return KilledMidReport(handle, result, time.monotonic() - killed_at)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    @contextlib.asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """Run this harness's worker for the duration of the block."""
        async with build_worker(self.client, self.config, self.activities):
            yield


@dataclass(frozen=True)
class KilledMidReport:
    """A run whose first worker died during the report, finished by another."""

    handle: WorkflowHandle[Any, Any]
    result: ResearchResult
    resumed_in: float
    """Seconds from the SIGKILL to the run's result."""


HarnessFactory = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
def harness(
    temporal_client: Client,
    sim: SimHandle,  # noqa: F811  (fixture)
    smtp_server: SmtpServer,
    task_queue: str,
    sqlite_path: Path,
) -> HarnessFactory:
    """``async with harness(overrides, postgres_dsn="") as h:`` runs a worker for one test.

    ``start_worker=False`` leaves the worker to ``async with h.worker():`` later
    (a test that first lets another worker process take the run).
    """

    @contextlib.asynccontextmanager
    async def start(
        overrides: Mapping[str, Any] | None = None,
        *,
        postgres_dsn: str = "",
        start_worker: bool = True,
    ) -> AsyncIterator[Harness]:
        raw = merge_config(base_config(sim, task_queue, sqlite_path), overrides or {})
        config = parse_config(raw)
        env = {API_KEY_ENV: "sk-test-key", SMTP_URL_ENV: smtp_server.url}
        if postgres_dsn:
            env[PG_DSN_ENV] = postgres_dsn
        metrics = Metrics()
        activities = ResearchActivities(config, metrics, env)
        h = Harness(temporal_client, sim, smtp_server, config, env, metrics, activities)
        async with contextlib.AsyncExitStack() as stack:
            if start_worker:
                await stack.enter_async_context(h.worker())
            try:
                yield h
            finally:
                for handle in h.handles:
                    with contextlib.suppress(Exception):
                        await handle.terminate("test over")
        await activities.aclose()

    return start
