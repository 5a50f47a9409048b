"""The embedded dev server starts although the port chosen for it was taken meanwhile.

A free port is free only until something binds it: between ``steadfast dev``'s
choice and the dev server's bind, an outgoing connection may take it as its source
port. The dev server then exits ("bind: address already in use", and a nil-pointer
panic) and ``steadfast dev`` failed; it happened once in this suite's own run
(``test_cli_dev.py``). Here the port is held on purpose, by a listening socket.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from tests.support.ports import free_port
from tests.support.temporal import start_dev_server

from steadfast_dev import devserver, embedded
from steadfast_dev.processes import Supervisor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def held() -> Iterator[int]:
    """A loopback port bound and listened on for the test's length."""
    with socket.socket() as sock:
        sock.bind((devserver.LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def test_a_taken_port_is_replaced_and_the_server_starts(tmp_path: Path, held: int) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    spec = devserver.DevServerSpec(state_dir=tmp_path, port=held, ui_port=0)
    try:
        child, _, running = await devserver.start(spec, supervisor, pick=embedded.free_port)
        assert child.alive()
        assert running.port != held
        log = (tmp_path / "logs" / "temporal.log").read_text()
        assert devserver.taken_port(log) == held  # the first start failed on it
    finally:
        supervisor.stop_all(grace=5)


async def test_without_a_way_to_pick_the_error_names_the_taken_port(
    tmp_path: Path, held: int
) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    spec = devserver.DevServerSpec(state_dir=tmp_path, port=held, ui_port=0)
    try:
        with pytest.raises(devserver.DevServerError, match=f"port {held} is taken"):
            await devserver.start(spec, supervisor)
    finally:
        supervisor.stop_all(grace=5)


async def test_the_test_tiers_dev_server_starts_on_another_port_when_one_was_taken(
    held: int,
) -> None:
    """The tiers' own dev server (one per xdist process) has the same race."""
    offered: list[int] = []

    def ports() -> int:
        offered.append(held if not offered else free_port())
        return offered[-1]

    env = await start_dev_server(ports=ports, startup_timeout_s=8)
    try:
        assert len(offered) == 2
        assert env.client.service_client.config.target_host.endswith(f":{offered[1]}")
        assert await env.client.workflow_service.get_system_info(GetSystemInfoRequest())
    finally:
        await env.shutdown()
