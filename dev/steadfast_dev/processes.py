"""Child processes that ``steadfast dev``, the crash tests and the benchmarks supervise.

The embedded stack is several processes (the Temporal dev server, the
simulators, one or more workers). Two promises depend on how they are started:

* Ctrl-C leaves nothing running. Each child gets its own session (and so its
  own process group), the terminal's SIGINT reaches only the supervisor, and the
  supervisor stops every group it started, children's children included. On
  Linux each child is also asked to die with its parent (``PR_SET_PDEATHSIG``
  through ``setpriv``), which covers a supervisor killed with SIGKILL.
* ``--chaos`` and the crash tests can SIGKILL a worker, a real crash with no
  chance to clean up, and start a new one beside the survivors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


def steadfast_command(*args: str) -> list[str]:
    """``steadfast <args>`` run by the same interpreter as this process."""
    return [sys.executable, "-m", "steadfast_cli", *args]


def _die_with_parent(argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` so the kernel kills the child when this process dies.

    ``setpriv`` applies the setting between fork and exec; doing it ourselves
    would need ``preexec_fn``, which is unsafe once temporalio's threads run.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return list(argv)
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclass
class Child:
    """One supervised process (and its process group)."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    started_at: float = field(default_factory=time.monotonic)
    log_start: int = 0
    """Where this process's output starts in ``log_path`` (a log is appended to)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the group and reap the child: a crash, not a shutdown."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait()

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; return the exit code."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Whatever the leader did, no grandchild may outlive it.
        self.signal_group(signal.SIGKILL)
        return self.popen.wait()

    def log_text(self) -> str:
        """What this process wrote to its log (not what earlier ones of its name did)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def terminate(popen: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """SIGTERM one process, wait up to ``grace`` seconds, then SIGKILL; return its exit code."""
    popen.terminate()
    try:
        return popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        return popen.wait()


class Supervisor:
    """Starts children and guarantees they are all gone when it is closed."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        self._logs: list[IO[bytes]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Child:
        """Start ``argv`` in a new session; its output goes to ``<log_dir>/<name>.log``."""
        log_path: Path | None = None
        log_start = 0
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            handle = log_path.open("ab")
            log_start = handle.tell()
            self._logs.append(handle)
            out = handle
        popen = subprocess.Popen(
            _die_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        child = Child(name, list(argv), popen, log_path, log_start=log_start)
        self.children.append(child)
        return child

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop children newest first (workers before the server they talk to)."""
        for child in reversed(self.children):
            child.stop(grace)
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()
