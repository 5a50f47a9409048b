"""The worker process: one task queue, ``ResearchWorkflow`` and its activities.

Everything a worker needs comes from a :class:`~steadfast_worker.config.WorkerConfig`
(the operator renders it from a ResearchAgent; ``steadfast dev`` builds it from
an example). :func:`run_worker` is what ``steadfast worker`` runs: it serves
the Steadfast metrics and the Temporal SDK's metrics on their two ports,
connects, polls, and on SIGTERM/SIGINT stops polling and gives running
activities ``worker.gracefulShutdown`` to finish (Temporal's own default is 0).

:func:`run_settings` and :func:`research_input` turn the same configuration into
a workflow input, so every starter (CLI, operator, tests) decides budgets and
retry policies the same way.
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
from temporalio.worker import Worker

from steadfast_worker import pricing, rotation
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.config import ConfigError, WorkerConfig
from steadfast_worker.connection import connect_options, connect_with
from steadfast_worker.metrics import Metrics, sdk_runtime
from steadfast_worker.models import ResearchInput, RunSettings
from steadfast_worker.workflows import ResearchWorkflow

log = logging.getLogger("steadfast.worker")

#: How long a workflow task waits on a worker's sticky queue before any worker
#: may take it. After a SIGKILL the dead worker's sticky queue holds the run's
#: next workflow task, so this adds directly to resume time (the SDK's default
#: is 10 s, which with a 10 s heartbeat timeout would miss the ~15 s target).
STICKY_QUEUE_TIMEOUT = timedelta(seconds=3)


def run_settings(config: WorkerConfig) -> RunSettings:
    """The workflow's ``settings`` for ``config``; raises ConfigError for an unpriced model.

    The price is resolved here, at start, and recorded in the input: a later
    change of the built-in table must not change what a replay decides.
    """
    override = config.model.pricing.to_pricing() if config.model.pricing else None
    try:
        price = pricing.lookup(config.model.name, override)
    except pricing.UnknownModelError as err:
        raise ConfigError(f"model.pricing: {err.args[0]}") from None
    return RunSettings(
        model=config.model.name,
        max_tokens=config.model.max_tokens,
        pricing=price,
        max_usd_per_run=config.budget.max_usd_per_run,
        require_approval=config.notify.require_approval,
        retry_policies=config.retry_policies.resolve(),
        heartbeat_timeout_seconds=config.worker.heartbeat_timeout.total_seconds(),
        search_provider=config.search.provider,
        search_max_results=config.search.max_results,
    )


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


def research_input(config: WorkerConfig, topic: str) -> ResearchInput:
    """The complete workflow input for one topic of the agent ``config`` describes."""
    return ResearchInput(
        topic=topic, agent=config.agent, namespace=config.namespace, settings=run_settings(config)
    )


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
        workflows=[ResearchWorkflow],
        activities=activities.all(),
        max_concurrent_activities=config.worker.max_concurrent_activities,
        max_concurrent_workflow_tasks=config.worker.max_concurrent_workflow_tasks,
        graceful_shutdown_timeout=config.worker.graceful_shutdown,
        sticky_queue_schedule_to_start_timeout=STICKY_QUEUE_TIMEOUT,
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
    run_settings(config)  # fail before connecting if the model cannot be priced
    env = os.environ if env is None else env
    for warning in missing_secrets(config, env):
        log.warning("%s", warning)
    metrics = metrics or Metrics()
    metrics.serve(config.worker.metrics_port, config.worker.metrics_host)
    runtime = sdk_runtime(config.worker.metrics_host, config.worker.sdk_metrics_port)
    options = connect_options(config.temporal, env)
    client = await connect_with(options, runtime)
    activities = ResearchActivities(config, metrics, env)
    worker = build_worker(client, config, activities)
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
    try:
        done, _ = await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            log.info(
                "stopping: giving running activities up to %ss",
                config.worker.graceful_shutdown.total_seconds(),
            )
            await worker.shutdown()
        await running
    finally:
        stopping.cancel()
        if rotating is not None:
            rotating.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        await activities.aclose()
