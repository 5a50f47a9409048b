"""A worker follows rotated Temporal credentials without restarting.

The worker reads its certificate from a directory laid out like a mounted
``kubernetes.io/tls`` Secret and reaches the dev server through
:class:`tests.support.tlsproxy.TLSProxy`, which requires a client certificate
from the test CA and records each one it accepts. The test rewrites the files
as kubelet does when the Secret is renewed: first with a certificate from a
CA the proxy does not trust (the worker must keep its working connection),
then with a good one under a new subject (the worker must switch to it).
Research runs complete before, between and after. A rotated API key file is
set on the worker's client in place, with no new connection, and is kept out of
the worker's logs as the first one was.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from tests.integration.conftest import API_KEY_ENV, SMTP_URL_ENV, SmtpServer, base_config
from tests.support.kube_pki import issue
from tests.support.sim import SimHandle
from tests.support.tlsproxy import TestPKI, TLSProxy, make_test_pki
from tests.support.waiting import wait_until

from steadfast_contract import models
from steadfast_contract.config import WorkerConfig, parse_config
from steadfast_contract.credentials import REDACTED
from steadfast_contract.ids import workflow_id
from steadfast_contract.starter import research_input
from steadfast_worker import rotation
from steadfast_worker.activities import ResearchActivities
from steadfast_worker.connection import connect_options, connect_with
from steadfast_worker.metrics import Metrics
from steadfast_worker.worker import build_worker, run_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROTATED_SUBJECT = "/O=steadfast-tests/CN=steadfast-worker-renewed"


def mount(secret_dir: Path, cert: Path, key: Path, ca: Path) -> None:
    """Write the Secret's keys as files, each replaced whole (kubelet swaps a symlink)."""
    secret_dir.mkdir(exist_ok=True)
    for source, name in ((key, "tls.key"), (cert, "tls.crt"), (ca, "ca.crt")):
        staged = secret_dir / f".{name}.new"
        shutil.copyfile(source, staged)
        staged.replace(secret_dir / name)


@pytest.fixture
def secret_dir(tmp_path: Path, pki: TestPKI) -> Path:
    d = tmp_path / "temporal-tls"
    mount(d, pki.client_cert, pki.client_key, pki.ca)
    return d


@pytest.fixture
async def worker_config(
    mtls_proxy: TLSProxy,
    secret_dir: Path,
    sim: SimHandle,
    task_queue: str,
    tmp_path: Path,
) -> WorkerConfig:
    raw = base_config(sim, task_queue, tmp_path / "reports.db")
    raw["temporal"] = {**raw["temporal"], "address": mtls_proxy.address}
    raw["temporal"]["tls"] = {"secretDir": str(secret_dir)}
    return parse_config(raw)


@pytest.fixture
async def worker(worker_config: WorkerConfig, smtp_server: SmtpServer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    env = {API_KEY_ENV: "sk-test-key", SMTP_URL_ENV: smtp_server.url}
    running = asyncio.create_task(
        run_worker(worker_config, env=env, stop=stop, credentials_check_seconds=0.2)
    )
    try:
        yield
    finally:
        stop.set()
        await running


async def research(client: Client, cfg: WorkerConfig) -> models.ResearchResult:
    topic = f"rotation {uuid.uuid4().hex[:6]}"
    result: models.ResearchResult = await client.execute_workflow(
        models.WORKFLOW_NAME,
        research_input(cfg, topic),
        id=workflow_id(cfg.namespace, cfg.agent, topic),
        task_queue=cfg.task_queue,
        result_type=models.ResearchResult,
    )
    return result


async def test_a_renewed_certificate_is_used_and_a_bad_one_is_not(
    worker: None,
    worker_config: WorkerConfig,
    temporal_client: Client,
    mtls_proxy: TLSProxy,
    pki: TestPKI,
    secret_dir: Path,
    tmp_path: Path,
) -> None:
    assert (await research(temporal_client, worker_config)).status.phase == "Completed"
    assert set(mtls_proxy.subjects) == {pki.client_subject}

    # A certificate the proxy does not trust: the new connection is refused, so
    # the worker keeps the one it has and runs still complete.
    stranger = make_test_pki(tmp_path / "stranger", client_subject="/O=elsewhere/CN=w")
    refused_before = mtls_proxy.rejected
    mount(secret_dir, stranger.client_cert, stranger.client_key, pki.ca)
    await wait_until(
        "the worker to try the new files", lambda: mtls_proxy.rejected > refused_before
    )
    assert (await research(temporal_client, worker_config)).status.phase == "Completed"
    assert set(mtls_proxy.subjects) == {pki.client_subject}

    # The renewed certificate from the right CA, under a new subject: the worker
    # connects with it, and work keeps flowing through that connection.
    issue(pki.dir, "renewed", ROTATED_SUBJECT)
    mount(secret_dir, pki.dir / "renewed.crt", pki.dir / "renewed.key", pki.ca)
    await wait_until(
        "the worker to connect with the renewed files",
        lambda: ROTATED_SUBJECT in mtls_proxy.subjects,
    )
    assert (await research(temporal_client, worker_config)).status.phase == "Completed"


def keyed_config(
    sim: SimHandle, task_queue: str, tmp_path: Path, proxy: TLSProxy, pki: TestPKI, key: str
) -> tuple[Path, WorkerConfig]:
    """A worker configuration reaching Temporal over TLS with an API key read from a
    file (written as a Secret's mount holds it, line break included); the file too."""
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    raw = base_config(sim, task_queue, tmp_path / "reports.db")
    raw["temporal"] = {
        **raw["temporal"],
        "address": proxy.address,
        "tls": {"caFile": str(pki.ca)},
        "apiKeyFile": str(key_file),
    }
    return key_file, parse_config(raw)


def rotate(key_file: Path, key: str) -> None:
    """Replace the key file whole, as kubelet does when the Secret changes."""
    staged = key_file.with_name(f".{key_file.name}.new")
    staged.write_text(key + "\n")
    staged.replace(key_file)


async def test_a_rotated_api_key_is_set_on_the_client_in_place(
    tls_proxy: TLSProxy,
    pki: TestPKI,
    sim: SimHandle,
    smtp_server: SmtpServer,
    task_queue: str,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    key_file, cfg = keyed_config(sim, task_queue, tmp_path, tls_proxy, pki, "tk-first")
    env = {API_KEY_ENV: "sk-test-key", SMTP_URL_ENV: smtp_server.url}
    options = connect_options(cfg.temporal, env)
    assert options.api_key == "tk-first"
    client = await connect_with(options)
    activities = ResearchActivities(cfg, Metrics(), env)
    async with build_worker(client, cfg, activities) as worker:
        following = asyncio.create_task(
            rotation.follow_credentials(worker, cfg.temporal, env, None, options, every=0.1)
        )
        try:
            assert (await research(temporal_client, cfg)).status.phase == "Completed"
            rotate(key_file, "tk-second")
            await wait_until(
                "the new API key on the client", lambda: worker.client.api_key == "tk-second"
            )
            assert worker.client is client  # the same connection, not a new one
            assert (await research(temporal_client, cfg)).status.phase == "Completed"
        finally:
            following.cancel()
    await activities.aclose()


async def test_a_rotated_api_key_is_kept_out_of_the_logs(
    tls_proxy: TLSProxy,
    pki: TestPKI,
    sim: SimHandle,
    smtp_server: SmtpServer,
    task_queue: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = "tk-first-7QZK2MXW", "tk-rotated-4HVB9PLD"
    key_file, cfg = keyed_config(sim, task_queue, tmp_path, tls_proxy, pki, first)
    env = {API_KEY_ENV: "sk-test-key", SMTP_URL_ENV: smtp_server.url}
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_worker(cfg, env=env, stop=stop, credentials_check_seconds=0.1)
    )
    try:
        await wait_until("the worker polling", lambda: "polling" in caplog.text.lower())
        rotate(key_file, second)
        await wait_until("the worker to take the new key", lambda: "API key changed" in caplog.text)
        # Whatever library might print them now: a client error quoting its header.
        logging.getLogger("some.client").warning("refused: Bearer %s (was %s)", second, first)
    finally:
        stop.set()
        await running
    said = [r.getMessage() for r in caplog.records if r.name == "some.client"]
    assert said == [f"refused: Bearer {REDACTED} (was {REDACTED})"]
    assert second not in caplog.text
    assert first not in caplog.text
