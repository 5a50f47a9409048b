"""Following rotated Temporal credentials without restarting the worker.

Certificates for Temporal's mTLS are short-lived when cert-manager or a similar
tool issues them, and API keys get rotated: the Secret is renewed, and kubelet
rewrites the mounted files in place (within about a minute). The worker reads
those files only when it connects, so without this it would keep presenting the
old credentials until it restarted, and fail once they expired or were revoked.

:func:`follow_credentials` re-reads the files every ``every`` seconds and
compares them with what the current connection uses (:func:`plan`, a pure
decision). A new API key alone is set on the worker's client in place (every
call carries it from then on). New certificate files need a new connection: a
client is connected with them and handed to the worker
(``temporalio.worker.Worker.client`` is settable for exactly this); polls and
calls already in flight finish on the old one. Files caught half-written or
credentials that Temporal refuses are logged and retried at the next check,
while the worker keeps the connection it has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from temporalio.runtime import Runtime
from temporalio.worker import Worker

from steadfast_contract.config import ConfigError, TemporalConfig
from steadfast_contract.credentials import Change as Change
from steadfast_contract.credentials import rotation
from steadfast_worker.connection import ConnectOptions, connect_options, connect_with

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 30.0


def plan(current: ConnectOptions, latest: ConnectOptions) -> Change:
    """What a worker connected with ``current`` must do to use ``latest``."""
    return rotation(current.tls, current.api_key, latest.tls, latest.api_key)


def follows_files(cfg: TemporalConfig) -> bool:
    """Whether the credentials come from files that can change under a running worker."""
    return cfg.tls.enabled or bool(cfg.api_key_file)


async def follow_credentials(
    worker: Worker,
    cfg: TemporalConfig,
    env: Mapping[str, str],
    runtime: Runtime | None,
    current: ConnectOptions,
    every: float = CHECK_EVERY_SECONDS,
) -> None:
    """Keep ``worker`` on its current credential files; runs until cancelled.

    ``runtime`` must be the one the worker's client was made with (``None``: the
    default), since a worker accepts a new client only on the same runtime.
    """
    while True:
        await asyncio.sleep(every)
        try:
            latest = connect_options(cfg, env)
        except ConfigError as err:  # e.g. caught between two file writes
            log.warning("cannot read the Temporal credentials now (%s); checking again soon", err)
            continue
        change = plan(current, latest)
        if change is Change.NONE:
            continue
        if change is Change.API_KEY:
            worker.client.api_key = latest.api_key
            current = latest
            log.info("the Temporal API key changed: the worker uses the new one")
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
