"""Which agent and which topics a verb is about: the flags ``dev``, ``run`` and ``status`` share.

A user names work either by a ResearchAgent manifest (``-f agent.yaml``, the
same file ``kubectl apply`` takes) or by topics on the command line with an
agent name, and the workflow ids follow from that either way.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from temporalio.client import Client

from steadfast_cli.errors import refuse
from steadfast_cli.safetext import shown
from steadfast_contract import agentfile, spec
from steadfast_contract.config import (
    ConfigError,
    TemporalConfig,
    WorkerConfig,
    load_config,
    parse_config,
)
from steadfast_worker.connection import connect


def add_agent_arguments(parser: argparse.ArgumentParser, *, topics: bool = True) -> None:
    group = parser.add_argument_group("agent")
    group.add_argument(
        "-f",
        "--file",
        default="",
        help="ResearchAgent manifest (YAML); its topics and settings are used",
    )
    group.add_argument(
        "--config",
        default="",
        help="a worker configuration file (as `steadfast worker --config` takes) instead of -f",
    )
    if topics:
        group.add_argument(
            "--topic",
            action="append",
            default=[],
            help="a topic to research (repeatable); replaces the manifest's topics",
        )
    group.add_argument("--agent", default="", help="agent name when no manifest is given")
    group.add_argument(
        "--agent-namespace",
        default="",
        help="Kubernetes namespace of the agent when no manifest is given (default: default)",
    )
    group.add_argument(
        "--task-queue", default="", help="task queue (default: steadfast.<namespace>.<agent>)"
    )


def agent_from_args(args: argparse.Namespace) -> tuple[WorkerConfig, list[str]]:
    """The configuration and topics the flags describe; ConfigError names what is wrong."""
    if args.file and args.config:
        raise ConfigError("give either -f/--file or --config, not both")
    topics: list[str] = []
    if args.file:
        agent = agentfile.agent_from_manifest(agentfile.load_manifest(args.file))
        cfg, topics = agent.config, list(agent.topics)
    elif args.config:
        cfg = load_config(args.config)
    else:
        cfg = parse_config(
            {
                "agent": args.agent or "local",
                "namespace": args.agent_namespace or "default",
            }
        )
    overrides: dict[str, object] = {}
    if args.agent and (args.file or args.config):
        overrides["agent"] = args.agent
    if args.agent_namespace and (args.file or args.config):
        overrides["namespace"] = args.agent_namespace
    if args.task_queue:
        overrides["temporal"] = cfg.temporal.model_copy(update={"task_queue": args.task_queue})
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    cli_topics = getattr(args, "topic", None)
    if cli_topics:
        for topic in cli_topics:
            problem = spec.topic_problem(topic)
            if problem:
                raise ConfigError(f"--topic {topic!r}: {problem}")
        topics = list(dict.fromkeys(cli_topics))
    return cfg, topics


async def connect_or_explain(temporal: TemporalConfig, console: Console, verb: str) -> Client | int:
    """Connect, or say why not and return the exit status: 2 for bad input (a TLS file
    that cannot be read: one line, as :mod:`steadfast_cli.errors` says it), 1 for a
    server that cannot be reached. No traceback either way."""
    try:
        return await connect(temporal)
    except ConfigError as err:
        return refuse(verb, err)
    except (RuntimeError, ValueError) as err:
        console.print(
            f"[red]cannot connect to Temporal at {shown(temporal.address)}:[/red] {shown(err)}"
        )
        console.print(
            "is `steadfast dev` running (it prints the address it serves), or the cluster's "
            "Temporal port-forwarded? Give its host:port with --address."
        )
    return 1
