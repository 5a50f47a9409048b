"""The worker process: one task queue, ``ResearchWorkflow`` and its activities.

Everything a worker needs comes from a :class:`~steadfast_contract.config.WorkerConfig`
(the operator renders it from a ResearchAgent; ``steadfast dev`` builds it from
an example). :func:`run_worker` is what ``steadfast worker`` runs: it serves
the Steadfast metrics and the Temporal SDK's metrics on their two ports,
connects, polls (and only then says it is ready, :mod:`.health`), and on
SIGTERM/SIGINT says it is not, stops polling and gives running
activities ``worker.gracefulShutdown`` to finish (Temporal's own default is 0), then
waits for Prometheus to scrape what they counted (:mod:`.lastscrape`).

The workflow input every starter sends is built from the same configuration by
:func:`steadfast_contract.starter.research_input`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from datetime import timedelta

from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from steadfast_contract import credentials
from steadfast_contract.config import ConfigError, WorkerConfig
from steadfast_contract.starter import settings_from_config
from steadfast_worker import health, lastscrape, retention, rotation
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.activities.base import (
    StoreSetupRefusedActivityError,
    UnfitStoreActivityError,
)
from steadfast_worker.connection import connect_options, connect_with
from steadfast_worker.ledger import DailyBudgetLedger
from steadfast_worker.metrics import Metrics, sdk_runtime
from steadfast_worker.ownership import AgentGuard
from steadfast_worker.workflows import ResearchWorkflow

log = logging.getLogger("steadfast.worker")

#: How long a starting worker waits for its report store before polling anyway.
STORE_CHECK_SECONDS = 5.0


async def check_store(activities: ResearchActivities) -> None:
    """Refuse to start on a report store that can never keep a report, or whose tables
    this role may not set up (a :class:`ConfigError`), so that no run pays for research
    it could not save. Any other problem (a store down now, a DSN it cannot read) is a
    warning here: each save meets it, waits for the store or fails, and says so in the
    run."""
    try:
        await asyncio.wait_for(activities.store(), STORE_CHECK_SECONDS)
    except (UnfitStoreActivityError, StoreSetupRefusedActivityError) as err:
        raise ConfigError(err.message) from None
    except ApplicationError as err:  # down, or refusing us: each save says so, and waits
        log.warning("the report store cannot be used now: %s", err)
    except TimeoutError:
        log.warning(
            "the report store did not answer in %ss; saves will wait for it", STORE_CHECK_SECONDS
        )


#: How long a workflow task waits on a worker's sticky queue before any worker
#: may take it. After a SIGKILL the dead worker's sticky queue holds the run's
#: next workflow task, so this adds directly to resume time (the SDK's default
#: is 10 s, which with a 10 s heartbeat timeout would miss the ~15 s target).
STICKY_QUEUE_TIMEOUT = timedelta(seconds=3)


def missing_secrets(config: WorkerConfig, env: Mapping[str, str]) -> list[str]:
    """Secrets the configuration needs but the environment lacks.

    Only warnings: runs fail with a typed error when they reach the step, and the
    operator reports missing Secrets on the ResearchAgent; a worker that refused
    to start would just crash-loop.
    """
    found = []
    if not env.get(config.model.api_key_env):
        found.append(
            f"{config.model.api_key_env} (model.apiKeyEnv) is not set: LLM calls will fail"
        )
    if config.notify.email.to and not env.get(config.notify.email.smtp_url_env):
        found.append(
            f"{config.notify.email.smtp_url_env} (notify.email.smtpUrlEnv) is not set: "
            "review emails will fail"
        )
    return found


def build_worker(
    client: Client,
    config: WorkerConfig,
    activities: ResearchActivities,
    *,
    task_queue: str | None = None,
) -> Worker:
    """A Worker for ``config``'s task queue (or ``task_queue``) running the research workflow."""
    return Worker(
        client,
        task_queue=task_queue or config.task_queue,
        workflows=[ResearchWorkflow, DailyBudgetLedger],
        activities=activities.all(),
        max_concurrent_activities=config.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=config.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=config.worker.graceful_shutdown,
        sticky_queue_schedule_to_start_timeout=STICKY_QUEUE_TIMEOUT,
        interceptors=[AgentGuard(config.namespace, config.agent)],
    )


async def run_worker(
    config: WorkerConfig,
    *,
    env: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    metrics: Metrics | None = None,
    credentials_check_seconds: float = rotation.CHECK_EVERY_SECONDS,
) -> None:
    """Run a worker until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    Credentials read from files (TLS, ``apiKeyFile``) are re-read every
    ``credentials_check_seconds``, and rotated ones are used without a restart
    (:mod:`.rotation`).
    """
    settings_from_config(config)  # fail before connecting if the model cannot be priced
    env = os.environ if env is None else env
    for warning in missing_secrets(config, env):
        log.warning("%s", warning)
    metrics = metrics or Metrics()
    readiness = health.Readiness()
    metrics.serve(config.worker.metrics_port, config.worker.metrics_host, readiness)
    runtime = sdk_runtime(config.worker.metrics_host, config.worker.sdk_metrics_port)
    options = connect_options(config.temporal, env)
    activities = ResearchActivities(config, metrics, env)
    keys = credentials.secret_parts(options.api_key or "")
    worker: Worker | None = None

    def secrets() -> list[str]:
        # The key the worker started with, and the one it uses now (rotated from its file).
        current = credentials.secret_parts(worker.client.api_key or "") if worker else []
        return [*activities.secrets(), *keys, *current]

    unscrub = credentials.scrub_logs(secrets)
    try:
        await check_store(activities)
        client = await connect_with(options, runtime)
    except BaseException:
        unscrub()
        raise
    worker = build_worker(client, config, activities)
    readiness.connected(worker)  # ready once it runs: the SDK checked the namespace
    rotating = None
    if rotation.follows_files(config.temporal):
        rotating = asyncio.create_task(
            rotation.follow_credentials(
                worker, config.temporal, env, runtime, options, credentials_check_seconds
            )
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    log.info(
        "worker polling task queue %s on %s (namespace %s)",
        worker.task_queue,
        config.temporal.address,
        config.temporal.namespace,
    )
    running = asyncio.create_task(worker.run())
    stopping = asyncio.create_task(stop.wait())
    sweeping = asyncio.create_task(
        retention.keep_sweeping(
            client,
            activities.store,
            config.storage.transcript_retention,
            worker.task_queue,
        )
    )
    try:
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            readiness.stopping()
            log.info(
                "stopping: giving running activities up to %ss",
                config.worker.graceful_shutdown.total_seconds(),
            )
            await worker.shutdown()
        await running
        # What the calls finished while stopping counted must be scraped before exit.
        if not await lastscrape.scraped(metrics.clock):
            log.warning("exiting before Prometheus scraped what the last calls counted")
    finally:
        readiness.stopping()
        stopping.cancel()
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping  # before the store it may be using closes
        if rotating is not None:
            rotating.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await activities.aclose()
        unscrub()
