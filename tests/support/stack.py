"""Worker processes and a simulator beside the session's dev server, for CLI and crash tests.

The tests that kill workers or drive the ``steadfast`` command line need the
worker as a real process (``steadfast worker --config``), exactly as ``steadfast
dev`` and a pod run it. :class:`steadfast_dev.embedded.Stack` provides that; here
it is pointed at the session's dev server instead of starting its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steadfast_contract import agentfile
from steadfast_contract.config import WorkerConfig
from steadfast_dev import embedded

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_config(name: str = "market-watch.yaml", **overrides: Any) -> WorkerConfig:
    return agentfile.worker_config_from_agent(agentfile.load_manifest(EXAMPLES / name), **overrides)


def on_queue(cfg: WorkerConfig, task_queue: str, **worker: object) -> WorkerConfig:
    """``cfg`` on a test's own task queue, with worker tuning overrides."""
    temporal = cfg.temporal.model_copy(update={"task_queue": task_queue})
    # Validated, not model_copy'd, so "3s" becomes a duration as in a config file.
    tuned = type(cfg.worker).model_validate({**cfg.worker.model_dump(), **worker})
    return cfg.model_copy(update={"temporal": temporal, "worker": tuned})


async def open_stack(
    address: str, state_dir: Path, sim_flags: Sequence[str] = ()
) -> embedded.Stack:
    options = embedded.StackOptions(
        state_dir=state_dir, server_address=address, sim_flags=list(sim_flags)
    )
    return await embedded.Stack(options).start()


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180, columns: int = 250
) -> subprocess.CompletedProcess[str]:
    """Run ``steadfast <args>`` as a user would; wide output (``columns``) unless asked,
    so tables do not fold ids."""
    run_env = dict(os.environ if env is None else env)
    run_env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "steadfast_cli", *args],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
