"""``steadfast operator``: run the ResearchAgent operator in a cluster or from a kubeconfig.

The verb's module (looked up by :mod:`steadfast_cli.main`) only parses flags
and hands an :class:`~steadfast_operator.settings.OperatorConfig` to the
handlers; Kopf and the Kubernetes clients are imported when the verb runs.
"""

from __future__ import annotations

import argparse
import os

#: The ports the Helm chart (values.yaml operator.metricsPort/healthPort) and the
#: operator image's EXPOSE use; tests/unit/test_images.py keeps the three equal.
METRICS_PORT = 9090
HEALTH_PORT = 8080

HELP = (
    "Run the ResearchAgent operator: reconcile agents into worker Deployments and "
    "workflows, report status, and autoscale workers per task queue."
)


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch ResearchAgents in every namespace (the default without --namespace)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="kubeconfig to use; default: in-cluster service account, else $KUBECONFIG",
    )
    parser.add_argument(
        "--worker-image",
        default=os.environ.get("STEADFAST_WORKER_IMAGE", ""),
        help="worker image for agents that leave spec.workers.image empty "
        "(env STEADFAST_WORKER_IMAGE)",
    )
    parser.add_argument(
        "--temporal-address",
        default=os.environ.get("STEADFAST_TEMPORAL_ADDRESS", ""),
        help="Temporal frontend for agents that leave spec.temporal.address empty "
        "(env STEADFAST_TEMPORAL_ADDRESS)",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=5.0,
        help="seconds between status refreshes and autoscaling decisions per agent",
    )
    parser.add_argument(
        "--credentials-check",
        type=float,
        default=60.0,
        help="seconds between re-reads of the Secrets a Temporal connection uses "
        "(spec.temporal.tls.secretName, apiKeySecretRef), to follow renewed certificates",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=METRICS_PORT, help="/metrics port (0: off)"
    )
    parser.add_argument(
        "--health-port", type=int, default=HEALTH_PORT, help="/healthz port (0: off)"
    )
    parser.add_argument("--listen", default="0.0.0.0", help="address the two ports bind to")
    parser.add_argument(
        "--no-events",
        action="store_true",
        help="do not post Kubernetes Events about handler failures",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="debug logging (never the API server's answers: they hold Secrets)",
    )


def run(args: argparse.Namespace) -> int:
    from steadfast_operator import handlers, logs, render
    from steadfast_operator.settings import OperatorConfig

    logs.configure(args.verbose)
    cfg = OperatorConfig(
        namespaces=tuple(args.namespace),
        all_namespaces=not args.namespace,
        kubeconfig=args.kubeconfig,
        defaults=render.Defaults(image=args.worker_image, temporal_address=args.temporal_address),
        status_interval=args.status_interval,
        credentials_check=args.credentials_check,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        listen=args.listen,
        post_events=not args.no_events,
    )
    handlers.run(cfg)
    return 0
