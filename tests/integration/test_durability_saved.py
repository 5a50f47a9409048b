"""What durability saved, measured: a worker SIGKILLed during the report call.

A script restarted from scratch after losing its process would pay again for the
query call that had finished. The run resumes instead, and says so: its status
counts that call's spend as avoided, and it must equal, to the token, what the
simulator billed for the call (``billed`` in its request log, priced at the run's
model). The worker's ``steadfast_llm_cost_avoided_usd_total`` counts the same
figure when the run ends, and ``steadfast status``'s row carries it.

The first worker is a real ``steadfast worker`` process, so the SIGKILL is real;
the second is the in-process test worker, whose metrics the test reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.integration.conftest import HarnessFactory
from tests.integration.test_budget_per_call import billed_usd
from tests.support.stack import cli

from steadfast_contract import activities as act
from steadfast_contract import starter
from steadfast_contract.models import Phase

pytestmark = pytest.mark.integration

AVOIDED = "steadfast_llm_cost_avoided_usd_total"


async def test_a_report_lost_with_its_worker_saved_what_the_query_call_was_billed(
    harness: HarnessFactory, temporal_address: str, tmp_path: Path
) -> None:
    async with harness(start_worker=False) as h:
        run = await h.killed_mid_report(
            "saved by resuming",
            temporal_address,
            tmp_path / "worker.json",
            chunk_delay_ms=150,
            settle=0.5,
        )
        st = run.result.status
        assert st.phase == Phase.COMPLETED

        entries = [e for e in h.sim.entries("llm") if e["key"].startswith(run.handle.id)]
        served = [e for e in entries if e["outcome"] == "served"]
        queries = [e for e in served if "/ask" in e["key"]]
        # One query call, finished before the kill and never asked again.
        assert len(queries) == 1, [(e["key"], e["outcome"]) for e in entries]
        assert h.sim.served("llm")[queries[0]["key"]] == 1
        query_billed = billed_usd(h, queries)
        print(f"query call billed ${query_billed:.6f}; run says ${st.avoided_usd:.6f} avoided")
        assert query_billed > 0
        assert st.avoided_usd == query_billed  # the same usage at the same price: exact
        assert st.calls_not_repeated == 1
        assert [(i.activity, i.call, i.attempts, i.finished_calls) for i in st.interruptions] == [
            (act.WRITE_REPORT, 2, 1, 1)
        ]
        assert st.interruptions[0].avoided_usd == query_billed

        counted = h.metric(AVOIDED, model=h.config.model.name)
        assert counted == query_billed

        row = await starter.describe_run(h.client, run.handle.id)
        assert (row.avoided_usd, row.calls_not_repeated) == (st.avoided_usd, 1)
        assert row.interruptions == tuple(st.interruptions)
        # As the user reads it: the closed run, described from its result, no worker asked.
        out = await asyncio.to_thread(cli, "status", run.handle.id, "--address", temporal_address)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Saved (USD)" in out.stdout
        assert (
            f"{run.handle.id}: interrupted during call 2 of 2 (write_report); resumed; "
            f"1 finished call not repeated; ${query_billed:.4f} not re-paid"
        ) in " ".join(out.stdout.split())


async def test_a_run_nothing_interrupted_saved_nothing(harness: HarnessFactory) -> None:
    async with harness() as h:
        st = (await h.run("nothing to save")).status
        assert st.phase == Phase.COMPLETED
        assert (st.avoided_usd, st.calls_not_repeated, st.interruptions) == (0.0, 0, [])
        assert st.finished_calls == 2
        # The series exists from the first run that ends, at zero.
        name = h.config.model.name
        assert (
            h.metrics.registry.get_sample_value(
                AVOIDED, {"agent": h.config.agent, "namespace": h.config.namespace, "model": name}
            )
            == 0.0
        )
