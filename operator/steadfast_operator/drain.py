"""When a worker pod rolls, and how long it may take to stop: pure decisions.

Two promises meet in the worker pod template (docs/design.md §3: a finished LLM
call is never paid twice, not after a scale-down or a rollout):

* **A pod told to stop finishes what it runs.** Kubernetes stops a pod the same
  way whatever the reason (the autoscaler's scale-down, a rollout, a node drain,
  an eviction, ``kubectl delete``): SIGTERM, then SIGKILL after the pod's
  ``terminationGracePeriodSeconds``. The worker answers SIGTERM by polling no more
  and waiting up to ``worker.gracefulShutdown`` for its running activities
  (Temporal's own default is 0 s: docs/design.md §7). So the worker waits as long
  as the longest activity attempt may run (its start-to-close timeout), and the
  pod's grace is that plus :data:`EXIT_MARGIN_SECONDS` to report the last results,
  let Prometheus scrape what they counted and close its clients. An idle worker
  exits at once; a busy one exits as soon as its last call is done and scraped.
  This covers every way a pod is stopped, where choosing *which* pod a scale-down
  removes (pod-deletion-cost) would cover one of them.
* **Only what reaches the worker rolls it.** The template's config hash covers
  what the worker process reads: the rendered configuration without the sections
  that reach runs through their workflow input instead (the operator copies them
  into each run it starts: :func:`steadfast_contract.starter.settings_from_config`),
  plus the Secrets it is given as environment variables (mounted Secrets are
  named in the template itself). Editing ``budget.maxUSDPerDay``, a retry policy,
  ``model.maxTokens``, the approval settings, the topics or the schedule leaves
  running workers alone; editing the model's name, endpoint or key, search,
  storage, mail or Temporal settings rolls them. A field the worker process starts
  reading must leave :data:`RUN_INPUT_ONLY`, or its edits will not reach workers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any, Final

from steadfast_contract.activities import LONGEST_START_TO_CLOSE
from steadfast_contract.config import WorkerConfig

EXIT_MARGIN_SECONDS: Final = 50
"""Time after the worker's own wait to report the last results, wait for the scrape of
the metrics they counted (up to 40 s: ``steadfast_worker.lastscrape``), close clients
and exit."""

RUN_INPUT_ONLY: Final[tuple[tuple[str, ...], ...]] = (
    ("budget",),
    ("research",),
    ("retryPolicies",),
    ("model", "maxTokens"),
    ("model", "contextTokens"),
    ("storage", "saveTimeout"),
    ("notify", "requireApproval"),
    ("notify", "approvalTimeout"),
    ("worker", "heartbeatTimeout"),
)
"""Configuration paths only ``settings_from_config`` reads: they reach a run in the input
the operator starts it with, never the worker process, so editing them must not roll it."""


def drained(config: WorkerConfig) -> WorkerConfig:
    """``config`` with the worker's SIGTERM wait long enough for any activity to finish."""
    tuning = config.worker.model_copy(update={"graceful_shutdown": LONGEST_START_TO_CLOSE})
    return config.model_copy(update={"worker": tuning})


def termination_grace_seconds(config: WorkerConfig) -> int:
    """The pod's ``terminationGracePeriodSeconds``: the worker's wait plus the exit margin."""
    return math.ceil(config.worker.graceful_shutdown.total_seconds()) + EXIT_MARGIN_SECONDS


def worker_reads(config: WorkerConfig) -> dict[str, Any]:
    """The rendered configuration as the worker process sees it (run-input sections dropped)."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True)
    for path in RUN_INPUT_ONLY:
        node = data
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return data


def template_hash(config: WorkerConfig, env: Sequence[dict[str, Any]]) -> str:
    """A short stable hash of what the worker reads; the template's ``config-hash``."""
    blob = json.dumps(
        {"config": worker_reads(config), "env": list(env)},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
