"""What every handler shares, made once at start-up and closed at cleanup.

Everything long-lived reaches the handlers through Kopf's memo as one
:class:`Shared`: the command line's configuration, the Kubernetes JSON client,
the Temporal client pool, the task-queue statistics cache, per-agent locks and
the worker Deployments' replicas kept by a watch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import kopf

from steadfast_operator import metrics
from steadfast_operator.kube import Kube, load_config
from steadfast_operator.settings import OperatorConfig, configure
from steadfast_operator.taskqueues import QueueStats
from steadfast_operator.temporal_pool import TemporalPool


@dataclass
class Shared:
    """What every handler reaches through ``memo.shared``."""

    config: OperatorConfig
    kube: Kube
    temporal: TemporalPool
    queues: QueueStats
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    deployments: dict[tuple[str, str], tuple[str, int, int]] = field(default_factory=dict)
    """(namespace, name) -> (controller uid, replicas, ready) of worker Deployments, kept
    by a watch, so a status tick costs no GET (and a stranger's is never taken for ours)."""

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One lock per agent, so its timer and its change handlers never interleave."""
        return self.locks.setdefault((namespace, name), asyncio.Lock())


async def start(settings: kopf.OperatorSettings, memo: Any, cfg: OperatorConfig) -> Shared:
    configure(settings, cfg)
    kube = Kube(await load_config(cfg.kubeconfig), on_request=_count_request)
    shared = Shared(
        config=cfg,
        kube=kube,
        temporal=TemporalPool(kube, cfg.connect_timeout, cfg.credentials_check),
        queues=QueueStats(max_age=max(1.0, cfg.status_interval / 2)),
    )
    memo.shared = shared
    metrics.serve(cfg.metrics_port, cfg.listen)
    return shared


def _count_request(verb: str) -> None:
    metrics.KUBE_REQUESTS.labels(verb).inc()


async def stop(memo: Any) -> None:
    shared: Shared | None = getattr(memo, "shared", None)
    if shared is not None:
        await shared.kube.close()
        # Temporal clients hold no resources that need closing beyond their runtime,
        # which ends with the process; dropping them lets a restart in-process reconnect.
        shared.temporal.clear()
