"""mTLS and API-key connections to a real Temporal, through a TLS-terminating proxy.

The dev server has no TLS option, so :class:`tests.support.tlsproxy.TLSProxy`
terminates TLS in front of it (client certificate required and verified against
a throwaway CA, ALPN h2) and records whose certificate each connection presented.
That proves real handshakes: ``connect()`` with certificate files, the refusals
without a client certificate and with an untrusted server, the ``steadfast
worker`` / ``run`` / ``status`` command line end to end, and an API key over TLS.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import TLSConfig
from tests.support.stack import cli, example_config, on_queue, open_stack
from tests.support.tlsproxy import TestPKI, TLSProxy, make_test_pki

from steadfast_contract import ids
from steadfast_contract.config import TemporalConfig
from steadfast_contract.config import TLSConfig as TLSFiles
from steadfast_dev import embedded
from steadfast_dev.processes import steadfast_command
from steadfast_worker.connection import connect, connect_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

API_KEY_ENV = "STEADFAST_TEST_TEMPORAL_API_KEY"


@pytest.fixture(scope="module")
def stranger_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """Another CA: trusting it instead of ``pki`` must not let the client in."""
    return make_test_pki(tmp_path_factory.mktemp("stranger-pki"))


def mtls_files(pki: TestPKI, ca: Path | None = None) -> TLSFiles:
    return TLSFiles(
        cert_file=str(pki.client_cert), key_file=str(pki.client_key), ca_file=str(ca or pki.ca)
    )


def mtls_flags(proxy: TLSProxy) -> list[str]:
    pki = proxy.pki
    return [
        "--address", proxy.address,
        "--tls-cert", str(pki.client_cert),
        "--tls-key", str(pki.client_key),
        "--tls-ca", str(pki.ca),
    ]  # fmt: skip


def child_env(**extra: str) -> dict[str, str]:
    """This environment without ambient Temporal settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    return {**env, **extra}


async def steadfast(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env, timeout=60)


async def test_mtls_connect_runs_a_real_rpc(mtls_proxy: TLSProxy, pki: TestPKI) -> None:
    before = mtls_proxy.accepted
    cfg = TemporalConfig(address=mtls_proxy.address, tls=mtls_files(pki))
    client = await connect(cfg, env={})
    resp = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert resp.namespace_info.name == "default"
    assert mtls_proxy.subjects[before:] == [pki.client_subject]
    assert mtls_proxy.alpn[before:] == ["h2"]


async def test_without_a_client_certificate_the_handshake_is_refused(
    mtls_proxy: TLSProxy, pki: TestPKI
) -> None:
    accepted, rejected = mtls_proxy.accepted, mtls_proxy.rejected
    cfg = TemporalConfig(address=mtls_proxy.address, tls=TLSFiles(ca_file=str(pki.ca)))
    with pytest.raises(RuntimeError, match="Failed client connect"):
        await connect(cfg, env={})
    # Under TLS 1.3 the client may see the failure a moment before the server logs it.
    for _ in range(50):
        if mtls_proxy.rejected > rejected:
            break
        await asyncio.sleep(0.1)
    assert mtls_proxy.rejected > rejected
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in mtls_proxy.errors[-1]
    assert mtls_proxy.accepted == accepted


async def test_an_untrusted_server_is_refused_clearly(
    mtls_proxy: TLSProxy, pki: TestPKI, stranger_pki: TestPKI
) -> None:
    accepted = mtls_proxy.accepted
    cfg = TemporalConfig(address=mtls_proxy.address, tls=mtls_files(pki, ca=stranger_pki.ca))
    with pytest.raises(RuntimeError, match="InvalidCertificate"):
        await connect(cfg, env={})
    assert mtls_proxy.accepted == accepted

    # As a user sees it: one line naming the address and the certificate problem.
    flags = mtls_flags(mtls_proxy)
    flags[flags.index("--tls-ca") + 1] = str(stranger_pki.ca)
    out = await steadfast("status", *flags, env=child_env())
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"cannot connect to Temporal at {mtls_proxy.address}" in out.stdout
    assert "InvalidCertificate" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
async def mtls_worker(
    temporal_address: str,
    mtls_proxy: TLSProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """A ``steadfast worker`` process that reaches Temporal only through the mTLS proxy."""
    state = tmp_path_factory.mktemp("mtls-stack")
    stack = await open_stack(temporal_address, state)  # the simulator only
    try:
        task_queue = f"mtls-{uuid.uuid4().hex[:12]}"
        cfg = stack.worker_config(on_queue(example_config(), task_queue))
        # The file points nowhere; only the command-line flags can connect it.
        doc = embedded.config_document(cfg)
        doc["temporal"]["address"] = "127.0.0.1:1"
        path = state / "worker.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        env = child_env(**{cfg.model.api_key_env: embedded.SIM_API_KEY})
        argv = steadfast_command("worker", "--config", str(path), *mtls_flags(mtls_proxy))
        worker = stack.supervisor.spawn("worker-mtls", argv, env=env)
        stack.workers.append(worker)
        yield task_queue
        assert worker.alive(), worker.log_tail()
    finally:
        stack.stop()


async def test_cli_worker_run_and_status_over_mtls(
    mtls_worker: str, mtls_proxy: TLSProxy, pki: TestPKI
) -> None:
    before = mtls_proxy.accepted
    topic = f"mtls {uuid.uuid4()}"
    common = ["-f", "examples/market-watch.yaml", "--topic", topic, "--task-queue", mtls_worker]
    done = await steadfast("run", *common, *mtls_flags(mtls_proxy), "--wait", env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout

    wf_id = ids.workflow_id("research", "market-watch", topic)
    status = await steadfast("status", wf_id, *mtls_flags(mtls_proxy), env=child_env())
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Completed" in status.stdout
    # The worker (its connection may predate this test) and both commands all
    # presented the client certificate: every connection the proxy accepted did.
    assert mtls_proxy.accepted >= before + 2
    assert set(mtls_proxy.subjects) == {pki.client_subject}


async def test_api_key_with_a_ca_over_tls(
    tls_proxy: TLSProxy, mtls_worker: str, pki: TestPKI
) -> None:
    cfg = TemporalConfig(
        address=tls_proxy.address, tls=TLSFiles(ca_file=str(pki.ca)), api_key_env=API_KEY_ENV
    )
    env = {API_KEY_ENV: "tk-steadfast-test"}
    opts = connect_options(cfg, env)
    assert opts.api_key == "tk-steadfast-test"
    assert isinstance(opts.tls, TLSConfig)
    assert opts.tls.server_root_ca_cert == pki.ca.read_bytes()
    assert opts.tls.client_cert is None

    before = tls_proxy.accepted
    client = await connect(cfg, env)
    resp = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert resp.namespace_info.name == "default"
    assert tls_proxy.subjects[before:] == [""]  # TLS, but no client certificate

    # The same from the command line. The proxy decrypts but does not decode the
    # HTTP/2 (HPACK) headers, and the dev server ignores authorization, so this
    # proves the key rides a working TLS connection, not that a server checked it.
    topic = f"api key {uuid.uuid4()}"
    out = await steadfast(
        "run", "-f", "examples/market-watch.yaml", "--topic", topic,
        "--task-queue", mtls_worker, "--address", tls_proxy.address,
        "--tls-ca", str(pki.ca), "--api-key-env", API_KEY_ENV, "--wait",
        env=child_env(**env),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Completed" in out.stdout
    assert tls_proxy.accepted >= before + 2
