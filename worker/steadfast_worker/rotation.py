"""Following rotated TLS credentials without restarting the worker.

A certificate for Temporal's mTLS is short-lived when cert-manager or a similar
tool issues it: the Secret is renewed, and kubelet rewrites the mounted files in
place (within about a minute). The worker reads those files only when it
connects, so without this it would keep presenting the old certificate until it
restarted, and fail once that certificate expired.

:func:`follow_tls_files` re-reads the files every ``every`` seconds. When what
it reads differs from what the current connection was made with, it connects a
new client with the new files and hands it to the worker
(``temporalio.worker.Worker.client`` is settable for exactly this); polls and
calls already in flight finish on the old connection. Files caught half-written
or a new certificate that Temporal refuses are logged and retried at the next
check, while the worker keeps the connection it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from temporalio.runtime import Runtime
from temporalio.worker import Worker

from steadfast_worker.config import ConfigError, TemporalConfig
from steadfast_worker.connection import ConnectOptions, connect_options, connect_with

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 30.0


def changed(current: ConnectOptions, latest: ConnectOptions) -> bool:
    """Whether the credentials read now differ from those of the current connection."""
    return latest.tls != current.tls


async def follow_tls_files(
    worker: Worker,
    cfg: TemporalConfig,
    env: Mapping[str, str],
    runtime: Runtime | None,
    current: ConnectOptions,
    every: float = CHECK_EVERY_SECONDS,
) -> None:
    """Reconnect ``worker`` whenever its TLS files change; runs until cancelled.

    ``runtime`` must be the one the worker's client was made with (``None``: the
    default), since a worker accepts a new client only on the same runtime.
    """
    while True:
        await asyncio.sleep(every)
        try:
            latest = connect_options(cfg, env)
        except ConfigError as err:  # e.g. caught between two file writes
            log.warning("cannot read the Temporal TLS files now (%s); checking again soon", err)
            continue
        if not changed(current, latest):
            continue
        try:
            client = await connect_with(latest, runtime)
        except Exception as err:  # refused or unreachable: keep what works
            log.warning(
                "the Temporal TLS files changed, but connecting with them failed (%s); "
                "keeping the current connection",
                err,
            )
            continue
        worker.client = client
        current = latest
        log.info("the Temporal TLS files changed: the worker now connects with the new ones")
