"""A throwaway Postgres server a test may stop and start: its own cluster, its own port.

The session's Postgres (``scripts/start-postgres``) is shared by every test and,
on a shared machine, by other checkouts too; a test that holds the store down
must not take it away from them. This one is initialised into a temporary
directory with Debian's binaries (``/usr/lib/postgresql/<version>/bin``),
listens on 127.0.0.1 only (no Unix socket outside its own directory), and runs
as the ``postgres`` user when the tests run as root (``initdb`` refuses root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

PASSWORD = "throwaway"


def _bin_dir() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: install postgresql")
    return versions[-1]


class ThrowawayPostgres:
    """One cluster in a temporary directory; :meth:`stop` and :meth:`start` at will."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="steadfast-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.dsn = f"postgresql://steadfast:{PASSWORD}@127.0.0.1:{self.port}/steadfast"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        sql = (
            f"CREATE ROLE steadfast LOGIN PASSWORD '{PASSWORD}';"
            " CREATE DATABASE steadfast OWNER steadfast;"
        )
        for statement in sql.split(";"):
            if statement.strip():
                self.psql(statement)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
            "-tAc", sql,
        )  # fmt: skip
        return out.stdout.strip()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop at once: clients are disconnected, new connections refused."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A fresh server with role and database ``steadfast``; removed afterwards."""
    server = ThrowawayPostgres()
    try:
        server.init()
        yield server
    finally:
        server.remove()
