"""What ``steadfast operator`` was told, and the Kopf settings that follow from it.

The command line fills :class:`OperatorConfig`; :func:`configure` tunes Kopf for
an operator whose watches must recover fast and whose bookkeeping must survive a
structural status schema (progress and diff-base go in annotations).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import kopf

from steadfast_operator import render

PREFIX = "steadfast.dev"


@dataclass(frozen=True)
class OperatorConfig:
    """What ``steadfast operator`` was told on its command line."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty with ``all_namespaces`` watches the cluster."""
    all_namespaces: bool = False
    kubeconfig: str | None = None
    defaults: render.Defaults = field(default_factory=render.Defaults)
    status_interval: float = 5.0
    """Seconds between status refreshes and autoscaling decisions per agent."""
    metrics_port: int = 9090
    health_port: int = 8080
    listen: str = "0.0.0.0"
    post_events: bool = True
    """Post Kubernetes Events about handler failures (tests switch this off)."""
    watch_timeout: int = 60
    """Seconds a watch request stays open before it is renewed."""
    connect_timeout: float = 10.0
    """Seconds to wait for a Temporal frontend before reporting it unreachable."""
    credentials_check: float = 60.0
    """Seconds between re-reads of the Secrets a Temporal client was made with."""


def configure(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    """Kopf settings: fast watch recovery, annotations for bookkeeping, one finalizer."""
    settings.watching.server_timeout = cfg.watch_timeout
    settings.watching.client_timeout = cfg.watch_timeout + 10
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.posting.enabled = cfg.post_events
    settings.posting.level = logging.WARNING
    # The CRD's status schema is structural: Kopf's default ``status.kopf`` would be
    # pruned by the API server and re-written forever, so its state lives in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # A deleted agent keeps its finalizer until its status timer has exited. Kopf
    # checks on a timer that did not exit at once (one busy reconnecting to
    # Temporal, say) every ``cancellation_polling`` seconds, 60 by default: the
    # deletion then waited a minute for a refresh that took three seconds.
    settings.background.cancellation_polling = 2.0
    settings.peering.standalone = True
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
