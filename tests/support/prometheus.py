"""Debian's ``prometheus`` for tests that ask what a real one makes of Steadfast's metrics.

A metric can hold the right number and still show the wrong one: PromQL's
``increase()`` and ``rate()`` read a counter's change between scrapes, so what a
dashboard panel or an alert sees depends on when series appear, which labels the
scrape adds and how the query combines counters. Only a real Prometheus scraping
real exporters answers that; this module starts one on loopback (scraping every
second, evaluating rules every second) and queries its HTTP API.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.ports import free_port
from tests.support.waiting import wait_for

SCRAPE_SECONDS = 1


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = httpx.get(f"{self.base_url}/api/v1/query", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value ``expr`` gives (None when it gives nothing)."""
        result = self.query(expr, at)
        assert len(result) <= 1, f"{expr}: more than one series: {result}"
        return float(result[0]["value"][1]) if result else None

    def samples(self, selector: str, seconds: int = 600) -> list[tuple[float, float]]:
        """The raw samples of the one series ``selector`` names, oldest first."""
        result = self.query(f"{selector}[{seconds}s]")
        assert len(result) == 1, f"{selector}: {result}"
        return [(float(t), float(v)) for t, v in result[0]["values"]]

    def get(self, path: str) -> Any:
        body = httpx.get(f"{self.base_url}{path}", timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@contextlib.contextmanager
def running_prometheus(
    tmp: Path,
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    labels: Mapping[str, str] | None = None,
    *,
    jobs: Sequence[Mapping[str, Any]] = (),
    up: int | None = None,
    every: int = SCRAPE_SECONDS,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job name -> ``host:port`` list) every second,
    with ``labels`` added to every target, and the scrape configurations ``jobs`` as
    they are, until the block ends. It is ready once ``up`` targets are up (all of
    them unless said). It scrapes and evaluates rules ``every`` seconds."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: install Debian's prometheus package", pytrace=False)
    interval = f"{every}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": list(addrs), "labels": dict(labels or {})}],
            }
            for job, addrs in targets.items()
        ]
        + [dict(job) for job in jobs],
    }
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        wait_for("Prometheus ready", prom.ready, timeout=60)
        if up is None:
            up = sum(len(a) for a in targets.values()) + sum(
                len(c["targets"]) for job in jobs for c in job["static_configs"]
            )
        wait_for(f"{up} targets up", lambda: len(prom.query("up == 1")) == up, timeout=60)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
