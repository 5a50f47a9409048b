"""What a real Prometheus shows of a new worker's runs: the alerts and cost panels.

A worker pod is new whenever the autoscaler scales an agent up (from zero after
every quiet ``scaleDownDelay``), so what a fresh worker's counters show through
``increase()`` is what the dashboards and alerts show of most runs. A counter
series that first appears at its first event (1, or the first call's cost) has no
earlier sample to increase from: Prometheus sees no increase, so that event is
lost to every panel and alert. And the Cost dashboard must add up to what the
provider billed (the simulator's own request log), failed attempts included once.

The worker runs in this process against the session's Temporal dev server and the
simulator; Debian's ``prometheus`` scrapes its ``/metrics`` every second with the
chart's alert rules loaded, and the panels' PromQL is read from the chart's
dashboard JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server
from tests.integration.conftest import Harness, HarnessFactory, base_config, merge_config
from tests.integration.test_budget_pause import squeezed_limit, wait_paused
from tests.integration.test_deep_agent import billed_usd
from tests.support.ports import free_port
from tests.support.prometheus import SCRAPE_SECONDS, Prometheus, running_prometheus
from tests.support.sim import wait_for_report_call
from tests.support.temporal import failure_of

from steadfast_contract.models import Phase

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "steadfast"
RULES = CHART / "alerts" / "steadfast.rules.yaml"


def panel(title: str) -> str:
    """The PromQL of the Cost dashboard panel ``title`` (its one target)."""
    dashboard = json.loads((CHART / "dashboards" / "steadfast-cost.json").read_text())
    (found,) = [p for p in dashboard["panels"] if p.get("title") == title]
    (target,) = found["targets"]
    expr: str = target["expr"]
    return expr


def rule(name: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


class Scraped:
    """A harness worker's ``/metrics`` on loopback, and the Prometheus scraping it."""

    def __init__(self, h: Harness, prom: Prometheus) -> None:
        self.h, self.prom = h, prom

    def caught_up(self, name: str, **labels: str) -> None:
        """Wait until Prometheus holds the worker's current value of ``name``, and
        two scrapes more."""
        want = self.h.metric(name, **labels)
        full = {"agent": self.h.config.agent, "namespace": self.h.config.namespace, **labels}
        selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in full.items()) + "}"
        deadline = time.monotonic() + 30
        while self.prom.value(selector) != pytest.approx(want):
            assert time.monotonic() < deadline, f"Prometheus never saw {selector} = {want}"
            time.sleep(0.2)
        time.sleep(2 * SCRAPE_SECONDS + 0.5)


@contextlib.contextmanager
def serve(h: Harness) -> Iterator[int]:
    """The worker's registry on a loopback port, as its pod serves it."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=h.metrics.registry)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_new_workers_first_budget_exhausted_run_fires_the_alert(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    """SteadfastBudgetExhausted fires when a run ends BudgetExhausted in the last 15
    minutes. Before, the worker created the counter's series at that run's end, at 1:
    Prometheus saw it appear at 1 and stay there, an increase of 0, and the alert
    stayed silent for the first such run of every worker pod."""
    overrides = {"budget": {"maxUSDPerRun": squeezed_limit(), "pauseTimeout": "1s"}}
    async with harness(overrides) as h:
        with serve(h) as port:
            targets = {"steadfast-workers": [f"127.0.0.1:{port}"]}
            with running_prometheus(tmp_path / "prom", targets, [RULES]) as prom:
                handle = await h.start("first run of a new pod stops on its budget")
                await wait_paused(handle)
                cause = await failure_of(handle)
                assert cause.type == "BudgetExhausted"
                assert h.metric("steadfast_budget_exhausted_total") == 1
                scraped = Scraped(h, prom)
                await asyncio.to_thread(scraped.caught_up, "steadfast_budget_exhausted_total")
                expr = rule("SteadfastBudgetExhausted")
                fired = prom.query(expr)
                alerts = prom.query('ALERTS{alertname="SteadfastBudgetExhausted"}')
                print(f"rule gives {fired}; ALERTS {alerts}")
                assert [r["metric"]["agent"] for r in fired] == [h.config.agent]
                assert [a["metric"]["agent"] for a in alerts] == [h.config.agent]


def _run_entries(h: Harness, wf_id: str) -> list[dict[str, Any]]:
    return [e for e in h.sim.entries("llm") if e["key"].startswith(wf_id)]


async def test_the_cost_panels_add_up_to_what_the_simulator_billed(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    """A new worker's first run, whose report stream is cut off once (spend on a
    failed attempt): "Spend in range" is what the simulator billed, and "Share of spend
    on failed attempts" the billed share of the attempts that failed."""
    async with harness() as h:
        with serve(h) as port:
            targets = {"steadfast-workers": [f"127.0.0.1:{port}"]}
            with running_prometheus(tmp_path / "prom", targets) as prom:
                await asyncio.sleep(2 * SCRAPE_SECONDS)  # the worker as Prometheus first sees it
                h.sim.set_faults(
                    {"llm": {"first_n": 1, "kind": "stream_error", "match": "research report"}}
                )
                result = await h.run("a new pod's first run, one stream cut")
                assert result.status.phase == Phase.COMPLETED
                entries = _run_entries(h, h.handles[-1].id)
                billed = billed_usd(h, entries)
                failed = billed_usd(h, [e for e in entries if e["outcome"] != "served"])
                assert 0 < failed < billed
                model = h.config.model.name
                scraped = Scraped(h, prom)
                for name in ("steadfast_llm_cost_usd_total", "steadfast_llm_retry_cost_usd_total"):
                    await asyncio.to_thread(scraped.caught_up, name, model=model)

                # The window runs from Prometheus' first scrape of the worker to its last.
                up = prom.samples('up{job="steadfast-workers"}')
                first, last = up[0][0], up[-1][0]
                window = f"{round((last - first) * 1000) + 1}ms"

                def shown(title: str) -> float | None:
                    expr = panel(title).replace("$__range", window)
                    expr = expr.replace("$namespace", h.config.namespace).replace("$agent", ".*")
                    return prom.value(expr, at=last)

                spend = shown("Spend in range")
                share = shown("Share of spend on failed attempts")
                print(
                    f"simulator billed ${billed:.6f} (failed attempts ${failed:.6f}, "
                    f"share {failed / billed:.4f}); panels: spend {spend}, share {share}"
                )
                assert spend == pytest.approx(billed, rel=1e-3)
                assert share == pytest.approx(failed / billed, rel=1e-3)


async def test_a_worker_stopped_mid_call_is_scraped_after_that_call(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    """A scale-down or a rollout stops a worker in the middle of a call: it drains
    (finishes the call) and exits. Before, it exited as soon as its last activity was
    done, so the cost of the call it drained was scraped only if a scrape happened to
    fall in the moment between: at a 5 s interval (the chart's is 30 s), almost never.
    Now a worker whose metrics changed since its last scrape waits for one more."""
    async with harness(start_worker=False) as h:
        port = free_port()
        doc = merge_config(
            base_config(h.sim, h.task_queue, Path(h.config.storage.sqlite_path)),
            {"worker": {"metricsPort": port, "metricsHost": "127.0.0.1"}},
        )
        h.sim.set_faults({"llm": {"chunk_delay_ms": 100, "match": "research report"}})
        proc = await h.spawn_worker(doc, temporal_address, tmp_path / "worker.json")
        try:
            targets = {"steadfast-workers": [f"127.0.0.1:{port}"]}
            with running_prometheus(tmp_path / "prom", targets, every=5) as prom:
                handle = await h.start("stopped mid-call by a scale-down")
                await wait_for_report_call(h.sim, handle.id, settle=1.0)
                proc.send_signal(signal.SIGTERM)
                stopping = time.monotonic()
                await asyncio.wait_for(proc.wait(), 90)
                stopped_in = time.monotonic() - stopping
                h.sim.set_faults({"llm": {"clear": True}})
                async with h.worker():
                    result = await handle.result()
                assert result.status.phase == Phase.COMPLETED
                entries = _run_entries(h, handle.id)
                # Both calls were made, and finished, by the stopped worker.
                assert [e["outcome"] for e in entries] == ["served", "served"]
                billed = billed_usd(h, entries)
                model = h.config.model.name
                selector = f'steadfast_llm_cost_usd_total{{model="{model}"}}'
                scraped = prom.samples(selector)[-1][1]
                print(
                    f"stopped in {stopped_in:.1f}s; simulator billed ${billed:.6f}, "
                    f"Prometheus last saw ${scraped:.6f}"
                )
                assert scraped == pytest.approx(billed, rel=1e-9)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
