"""``steadfast worker``: run one Temporal worker for one ResearchAgent.

The operator runs this in each worker Deployment with the ConfigMap it rendered;
locally it runs against any Temporal (dev server, self-hosted with mTLS, or
Temporal Cloud with an API key). Connection flags given on the command line
override the file's ``temporal`` section.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from steadfast_cli.errors import refuse, say
from steadfast_contract.config import ConfigError, TemporalConfig, WorkerConfig, load_config
from steadfast_worker.connection import add_connection_arguments

HELP = (
    "Run a Temporal worker for one ResearchAgent: polls its task queue, runs "
    "ResearchWorkflow and its activities, serves Prometheus metrics, and shuts "
    "down gracefully on SIGTERM. Secrets come from the environment variables the "
    "configuration names (model.apiKeyEnv, storage.postgresDsnEnv, ...)."
)


EPILOG = (
    "The configuration file uses the ResearchAgent's field names (model, search, "
    "storage, notify, retryPolicies, budget, temporal) plus a worker section: "
    "maxConcurrentActivities, gracefulShutdown (how long SIGTERM waits for running "
    "activities), heartbeatTimeout (how soon a dead worker's call moves elsewhere), "
    "metricsPort (Steadfast metrics, and /readyz: 200 only while polling; default 9464) "
    "and sdkMetricsPort (Temporal SDK metrics, default 9465). Connection flags given "
    "here override the file. Exit status: 0 after a graceful shutdown, 2 for an "
    "invalid configuration (or a report store that cannot keep every report: a "
    "database not in UTF-8)."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="worker configuration (YAML or JSON, ResearchAgent field names); "
        "without it the built-in defaults are used",
    )
    parser.add_argument("--task-queue", default="", help="override temporal.taskQueue")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much the worker logs (its secrets are scrubbed at every level)",
    )
    add_connection_arguments(parser)
    # Connection flags override the file only when given explicitly.
    parser.set_defaults(
        **{
            k: None
            for k in (
                "address",
                "namespace",
                "tls_cert",
                "tls_key",
                "tls_ca",
                "tls_server_name",
                "api_key_env",
            )
        }
    )


def apply_overrides(config: WorkerConfig, args: argparse.Namespace) -> WorkerConfig:
    """``config`` with the connection flags that were given on the command line."""
    t = config.temporal
    files = {"cert_file": args.tls_cert, "key_file": args.tls_key, "ca_file": args.tls_ca}
    given = {k: v for k, v in files.items() if v is not None}
    # Certificate files on the command line replace a mounted Secret's directory.
    tls = t.tls.model_copy(
        update={
            **given,
            **({"secret_dir": ""} if given else {}),
            **({"server_name": args.tls_server_name} if args.tls_server_name is not None else {}),
        }
    )
    updates: dict[str, object] = {
        k: v
        for k, v in {
            "address": args.address or os.environ.get("TEMPORAL_ADDRESS"),
            "namespace": args.namespace or os.environ.get("TEMPORAL_NAMESPACE"),
            "api_key_env": args.api_key_env,
            "task_queue": args.task_queue or None,
        }.items()
        if v is not None
    }
    data = t.model_dump(by_alias=True)
    data.update({TemporalConfig.model_fields[k].alias or k: v for k, v in updates.items()})
    data["tls"] = tls.model_dump(by_alias=True)
    temporal = TemporalConfig.model_validate(data)
    return config.model_copy(update={"temporal": temporal})


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config) if args.config else WorkerConfig()
        config = apply_overrides(config, args)
        from steadfast_contract.starter import settings_from_config
        from steadfast_worker.worker import run_worker

        settings_from_config(config)
    except ConfigError as err:
        return refuse("worker", err)
    try:
        asyncio.run(run_worker(config))
    except ConfigError as err:  # found only once running: a report store that cannot keep reports
        return refuse("worker", err)
    except (RuntimeError, OSError) as err:
        # Unreachable Temporal, refused credentials, a metrics port in use: say
        # what failed instead of a traceback, and exit non-zero for the restart policy.
        say(
            "worker",
            f"cannot run against {config.temporal.address} "
            f"(namespace {config.temporal.namespace}): {err}",
        )
        return 1
    return 0
