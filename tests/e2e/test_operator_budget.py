"""The day's budget holds across an operator restart and a topic rename, on a real cluster.

docs/design.md §2: ``maxUSDPerDay`` is a limit whoever starts the runs. The operator
starts six topics at once (its due starts, one tick) against a day worth about two
runs; what the simulator bills stays within the day plus one call. Then the operator
is SIGKILLed, a topic is renamed, and a new operator starts: it reads the day's spend
from the day's ledger (``cost.todayUSD`` does not fall), and the renamed topic's run,
if the day had room enough to start it, is held by the same day: it ends
``BudgetExhausted`` without asking for its report, and the day stays within its budget.
Every spend figure is the simulator's own billing.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.e2e.operator_env import Scene, agent_manifest, apply, condition, get, worker_process
from tests.support.waiting import wait_for

from steadfast_contract import ids, pricing

pytestmark = [pytest.mark.e2e, pytest.mark.hostile]

TOPICS = [f"day topic {i}" for i in range(6)]
MAX_TOKENS = 200
#: About two runs of this agent (a run bills about $0.0064 at 200 output tokens a call).
DAY_USD = 0.013


def billed(scene: Scene, prefix: str, model: str) -> tuple[float, float]:
    """(what the simulator billed the agent, the worst case of one of its calls)."""
    price = pricing.lookup(model)
    entries = [e for e in scene.sim.entries("llm") if e["key"].startswith(prefix)]

    def usage(raw: dict[str, Any]) -> pricing.Usage:
        return pricing.Usage(
            int(raw.get("input_tokens", 0)),
            int(raw.get("output_tokens", 0)),
            int(raw.get("cache_read_input_tokens", 0)),
            int(raw.get("cache_creation_input_tokens", 0)),
        )

    total = sum(pricing.cost_usd(usage(e["billed"]), price) for e in entries if e["billed"])
    largest = max((usage(e["usage"]).input_tokens for e in entries if e["usage"]), default=0)
    dearest = max(price.input_per_mtok, price.cache_write_per_mtok)
    return total, (MAX_TOKENS * price.output_per_mtok + largest * dearest) / 1e6


def test_the_day_survives_an_operator_restart_and_a_renamed_topic(
    scene: Scene, tmp_path: Any
) -> None:
    cluster, namespace = scene.cluster, scene.namespace
    manifest = agent_manifest(
        "daily",
        namespace,
        scene.sim,
        TOPICS,
        model={"maxTokens": MAX_TOKENS},
        budget={"maxUSDPerRun": DAY_USD, "maxUSDPerDay": DAY_USD, "pauseTimeout": "2s"},
    )
    model = manifest["spec"]["model"]["name"]
    prefix = ids.workflow_id_prefix(namespace, "daily")
    apply(cluster, manifest)

    def runs() -> list[dict[str, Any]]:
        ra = get(cluster, "ra", namespace, "daily")
        return list(((ra or {}).get("status") or {}).get("runs") or [])

    terminal = {"Completed", "BudgetExhausted"}
    with worker_process(cluster, namespace, "daily", tmp_path, scene.sim):
        wait_for(
            "every topic's run to end",
            lambda: len(runs()) == len(TOPICS) and all(r["phase"] in terminal for r in runs()),
            180,
        )
        spent, worst = billed(scene, prefix, model)
        phases = sorted(r["phase"] for r in runs())
        print(f"{len(TOPICS)} topics billed ${spent:.4f} against a ${DAY_USD} day: {phases}")
        assert spent <= DAY_USD + worst
        assert "BudgetExhausted" in phases

        # The operator dies mid-day; a topic is renamed meanwhile; a new one starts.
        scene.operator.kill()
        manifest["spec"]["topics"] = ["day topic 0, renamed", *TOPICS[1:]]
        apply(cluster, manifest)
        scene.operator.start()

        renamed = "day topic 0, renamed"

        def settled() -> bool:
            ra = get(cluster, "ra", namespace, "daily") or {}
            if condition(ra, "BudgetExhausted").get("status") == "True":
                return True  # no room left for a call: the operator starts nothing
            return any(r["topic"] == renamed and r["phase"] in terminal for r in runs())

        wait_for("the renamed topic held by the day", settled, 90)
        time.sleep(3)  # a few status ticks more
        ra = get(cluster, "ra", namespace, "daily") or {}
        today = ra["status"]["cost"]["todayUSD"]
        after, worst = billed(scene, prefix, model)
        print(f"after the restart: billed ${after:.4f}, status todayUSD ${today:.4f}")
        assert today >= spent * 0.95  # the day was not reset
        assert after <= DAY_USD + worst
        for r in runs():
            if r["topic"] == renamed:
                assert r["phase"] == "BudgetExhausted"
        report_calls = [
            e
            for e in scene.sim.entries("llm")
            if e["key"].startswith(ids.workflow_id(namespace, "daily", renamed))
            and "/ask" not in e["key"]
        ]
        assert not report_calls
