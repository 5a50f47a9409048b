"""Process supervision for the loopback Kubernetes cluster in ``tests.support.kube``.

Split out of ``kube.py`` to keep that module to wiring the control plane together.
Each component is spawned in its own process group with its output in a log file,
and (optionally) dies with its parent via ``PR_SET_PDEATHSIG``; start-up waits poll
a readiness check and fail early, with the log's tail, when the process exits;
``terminate`` stops the groups (SIGTERM, then SIGKILL); ``sweep_stale_workdirs``
removes what killed owners left behind. Standard library only, like ``kube.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TMP_PREFIX = "steadfast-kube-"


class ClusterStartError(RuntimeError):
    """The control plane did not come up; the message carries the failing log's tail."""

    def __init__(self, message: str, port_clash: bool = False) -> None:
        super().__init__(message)
        #: A listener lost a race for its port; starting again with new ports may work.
        self.port_clash = port_clash


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test process is killed outright
    # (SIGKILL, OOM), the kernel ends this component too, so nothing is left behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Component:
    """One running binary of the control plane."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def rss_bytes(self) -> int:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def terminate(components: list[Component], grace: float = 15.0) -> None:
    """SIGTERM every process group, then SIGKILL what outlives the grace period."""
    for comp in reversed(components):
        if comp.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for comp in reversed(components):
        with contextlib.suppress(subprocess.TimeoutExpired):
            comp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        # Also reaps whatever the component may have forked into its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(comp.proc.pid, signal.SIGKILL)
        comp.proc.wait()
    components.clear()


def cleanup(components: list[Component], workdir: Path, remove: list[bool]) -> None:
    terminate(components)
    if remove[0]:
        shutil.rmtree(workdir, ignore_errors=True)


def spawn(
    components: list[Component], workdir: Path, name: str, argv: list[str], die_with_parent: bool
) -> Component:
    """Start ``argv`` in its own process group, logging to ``workdir/logs/<name>.log``."""
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=workdir, start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )  # fmt: skip
    comp = Component(name, proc, log)
    components.append(comp)
    return comp


def wait_ready(comp: Component, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until true; fail early, with the log, if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if comp.proc.poll() is not None:
            tail = comp.tail()
            raise ClusterStartError(
                f"{comp.name} exited with {comp.proc.returncode} during start-up; "
                f"log {comp.log}:\n{tail}",
                port_clash="address already in use" in tail,
            )
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ClusterStartError(
                f"{comp.name} not ready after {timeout:.0f}s; log {comp.log}:\n{comp.tail()}"
            )
        time.sleep(0.2)


def https_ok(pki: Path, port: int, path: str, client: str | None = "admin") -> bool:
    """Whether ``https://127.0.0.1:<port><path>`` answers 200, trusting the cluster's CA."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client is not None:
        ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5
        ) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs() -> list[Path]:
    """Remove the temporary dirs of clusters whose owner was killed before cleaning up.

    Their processes died with the owner (see ``_die_with_parent``); only files remain.
    """
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
