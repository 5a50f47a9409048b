"""The embedded stack: dev server, simulators and worker processes on one machine.

``steadfast dev`` is the product's default way to run, and the crash tests and
benchmarks need the very same arrangement (real processes that can be
SIGKILLed, talking over real sockets), so the stack is assembled here once.
Every process is a supervised child (:mod:`steadfast_dev.processes`); the
worker is ``steadfast worker --config <file>``, the same command a pod runs,
with a configuration derived from a ResearchAgent manifest and pointed at the
local services.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from temporalio.client import Client

from steadfast_contract.config import WorkerConfig, dev_reports_path
from steadfast_contract.researchspec import ResearchSpec
from steadfast_dev import devserver
from steadfast_dev.processes import Child, Supervisor, steadfast_command
from steadfast_dev.sim.client import SimAdmin

#: The key the worker presents to the simulator; the simulator accepts any key
#: unless started with ``--llm-api-key``, but the SDK refuses to send none. The worker
#: scrubs every four-character run of a key from its logs, so this one is made of runs
#: no log line holds (a key spelling "steadfast" hid the word in every line).
SIM_API_KEY = "ZqXjVwKpRyTbLmNs"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((devserver.LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((devserver.LOOPBACK, port))
        except OSError:
            return False
        return True


def use_llm_simulator(env: Mapping[str, str], force: bool) -> bool:
    """The simulator stands in for the model when asked, or when there is no API key."""
    return force or not env.get("ANTHROPIC_API_KEY")


def local_config(
    cfg: WorkerConfig,
    *,
    temporal_address: str,
    state_dir: Path,
    sim_url: str | None,
    llm_sim: bool,
    metrics_port: int = 0,
    sdk_metrics_port: int = 0,
) -> WorkerConfig:
    """``cfg`` pointed at the local stack: embedded Temporal, simulators, SQLite, loopback."""
    temporal = cfg.temporal.model_copy(update={"address": temporal_address})
    model = cfg.model
    search = cfg.search
    if sim_url and llm_sim:
        model = model.model_copy(update={"base_url": sim_url})
    if sim_url and search.provider == "http":
        search = search.model_copy(update={"endpoint": f"{sim_url}/search"})
    research = cfg.research
    if sim_url:
        research = with_private_host(research, urlsplit(sim_url).netloc)
    storage = cfg.storage.model_copy(update={"sqlite_path": str(dev_reports_path(state_dir))})
    worker = cfg.worker.model_copy(
        update={
            "metrics_port": metrics_port,
            "sdk_metrics_port": sdk_metrics_port,
            "metrics_host": devserver.LOOPBACK,
        }
    )
    return cfg.model_copy(
        update={
            "temporal": temporal,
            "model": model,
            "search": search,
            "research": research,
            "storage": storage,
            "worker": worker,
        }
    )


def with_private_host(research: ResearchSpec, host: str) -> ResearchSpec:
    """``research`` with ``host`` added to fetch_page's ``allowPrivateHosts``: the
    simulator serves the pages its search results link to on loopback, which
    fetch_page reads only from hosts named there."""
    fetch = research.tools.fetch_page
    if host in fetch.allow_private_hosts:
        return research
    fetch = fetch.model_copy(update={"allow_private_hosts": [*fetch.allow_private_hosts, host]})
    tools = research.tools.model_copy(update={"fetch_page": fetch})
    return research.model_copy(update={"tools": tools})


def config_document(cfg: WorkerConfig) -> dict[str, Any]:
    """The configuration as ``steadfast worker --config`` reads it."""
    return cfg.model_dump(by_alias=True, mode="json", exclude_none=True)


@dataclass
class StackOptions:
    state_dir: Path
    port: int = 7233
    ui_port: int = 8233
    """0 runs the dev server headless."""
    llm_sim: bool = True
    """Run the model simulator (no API key) or talk to the real model."""
    search_sim: bool = True
    sim_flags: Sequence[str] = ()
    """Extra ``steadfast sim`` flags: latency, chunk delay, fault rates."""
    metrics: bool = False
    """Give each worker prometheus ports (else metrics are off)."""
    server_address: str = ""
    """Use this Temporal instead of starting the embedded dev server."""
    namespace: str = "default"
    """The Temporal namespace the agent names: the dev server serves it, and the stack's
    client starts runs in it (the worker polls it)."""


class StateDirBusyError(RuntimeError):
    """Another stack's dev server already uses the state directory."""


def lock_state_dir(state_dir: Path) -> int:
    """Hold ``<state_dir>/.lock`` for this process; the open file (closing it lets go).

    Two dev servers on one state directory would share one SQLite file and one set of
    logs: runs of one would be found, and resumed, by the other.
    """
    fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateDirBusyError(
            f"another `steadfast dev` (pid {holder}) uses {state_dir}: stop it, or give "
            "another --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


@dataclass
class Stack:
    """A running embedded stack. Use as ``async with Stack(options) as stack``."""

    options: StackOptions
    supervisor: Supervisor = field(init=False)
    client: Client = field(init=False)
    address: str = ""
    ui_url: str = ""
    sim_url: str = ""
    server: Child | None = None
    sim: Child | None = None
    workers: list[Child] = field(default_factory=list)
    _lock: int | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.options.state_dir / "logs")

    @property
    def sim_admin(self) -> SimAdmin:
        return SimAdmin(self.sim_url)

    async def start(self) -> Stack:
        opts = self.options
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        if not opts.server_address:
            self._lock = lock_state_dir(opts.state_dir)
        try:
            if opts.server_address:
                self.address = opts.server_address
                self.client = await Client.connect(self.address, namespace=opts.namespace)
            else:
                spec = devserver.DevServerSpec(
                    state_dir=opts.state_dir,
                    port=opts.port,
                    ui_port=opts.ui_port,
                    namespace=opts.namespace,
                )
                self.server, self.client, spec = await devserver.start(
                    spec, self.supervisor, pick=free_port
                )
                self.address, self.ui_url = spec.address, spec.ui_url
            if opts.llm_sim or opts.search_sim:
                await self._start_sim()
        except BaseException:
            self.stop()
            raise
        return self

    async def _start_sim(self) -> None:
        port = free_port()
        self.sim_url = f"http://{devserver.LOOPBACK}:{port}"
        self.sim = self.supervisor.spawn(
            "sim", steadfast_command("sim", "--port", str(port), *self.options.sim_flags)
        )
        deadline = time.monotonic() + 30
        while not await self.sim_admin.healthy():
            if not self.sim.alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start:\n" + self.sim.log_tail())
            await asyncio.sleep(0.1)

    def worker_config(self, cfg: WorkerConfig) -> WorkerConfig:
        metrics = self.options.metrics
        return local_config(
            cfg,
            temporal_address=self.address,
            state_dir=self.options.state_dir,
            sim_url=self.sim_url or None,
            llm_sim=self.options.llm_sim,
            metrics_port=free_port() if metrics else 0,
            sdk_metrics_port=free_port() if metrics else 0,
        )

    def start_worker(self, cfg: WorkerConfig, env: Mapping[str, str] | None = None) -> Child:
        """Start ``steadfast worker`` for ``cfg`` (already passed through worker_config)."""
        n = len(self.workers) + 1
        path = self.options.state_dir / f"worker-{n}.yaml"
        path.write_text(yaml.safe_dump(config_document(cfg), sort_keys=False))
        child_env = dict(os.environ if env is None else env)
        if self.options.llm_sim:
            child_env[cfg.model.api_key_env] = SIM_API_KEY
        child = self.supervisor.spawn(
            f"worker-{n}", steadfast_command("worker", "--config", str(path)), env=child_env
        )
        self.workers.append(child)
        return child

    def stop(self, grace: float = 5.0) -> None:
        """Stop everything; a worker still busy after ``grace`` seconds is killed."""
        self.supervisor.stop_all(grace)
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)
            self._lock = None

    async def __aenter__(self) -> Stack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
