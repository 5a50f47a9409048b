"""Deep-agent overhead: a Steadfast deep run against a hand-written Temporal loop, per turn.

Same dev server, same simulator (playing a ``--turns``-turn agent whose searches
link to its own pages), one script run. The baseline is ``bench/deep_bare.py``:
the loop as Temporal's samples teach it, the whole conversation in workflow
state and in every LLM activity's input, the same tools. Printed, with ratios
Steadfast / bare:

* wall time per turn, end to end and with the time inside activities removed
  (orchestration alone). At 0 ms simulator latency (the default) the model and
  tools answer at once, so this isolates what each loop's orchestration costs.
  The target is at most 1.1x.
* history events and bytes per turn (``HistoryEvent.ByteSize()`` summed over
  every run of a continue-as-new chain): Steadfast keeps the conversation in the
  report store ("with the offload"), the bare loop carries it through history
  ("without"); and history events per LLM call.

``python bench/deep_overhead.py [--runs N] [--turns T] [--latency-ms MS]``
"""

from __future__ import annotations

import argparse
import os
import statistics

import benchlib
import deeplib

TARGET = 1.1


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main(runs: int, turns: int, latency_ms: int) -> int:
    async with deeplib.stack() as s:
        cfg = deeplib.deep_config(s, turns)
        s.start_worker(cfg)
        _, bare_queue = deeplib.start_bare_worker(s)
        await benchlib.wait_polling(s.client, cfg.task_queue)
        await benchlib.wait_polling(s.client, bare_queue)
        await s.sim_admin.set_faults(deeplib.plan(turns, latency_ms))

        # Warm both workers (imports, sandbox, connections, the store's tables) first.
        await deeplib.run_steadfast(s, cfg, "deep overhead warm-up")
        await deeplib.run_bare(s, bare_queue, "deep overhead warm-up", turns)
        sf: list[deeplib.RunFigures] = []
        bare: list[deeplib.RunFigures] = []
        for i in range(runs):
            wf = await deeplib.run_steadfast(s, cfg, f"deep overhead {i}")
            sf.append(await deeplib.run_figures(s.client, wf))
            wf = await deeplib.run_bare(s, bare_queue, f"deep overhead {i}", turns)
            bare.append(await deeplib.run_figures(s.client, wf))
        for side, got in (("steadfast", sf), ("bare", bare)):
            calls = {f.llm_calls for f in got}
            if calls != {turns}:
                print(f"  warning: {side} runs made {sorted(calls)} LLM calls, not {turns}")

        def per_turn(got: list[deeplib.RunFigures], what: str) -> list[float]:
            return [getattr(f, what) / f.llm_calls for f in got]

        print(
            f"deep agent overhead: {turns}-turn runs, {runs} of each, simulator latency "
            f"{latency_ms} ms, load average {os.getloadavg()[0]:.1f}"
        )
        wall_sf, wall_bare = per_turn(sf, "wall_s"), per_turn(bare, "wall_s")
        orch_sf, orch_bare = per_turn(sf, "orchestration_s"), per_turn(bare, "orchestration_s")
        print(f"  steadfast wall per turn: {benchlib.summary(wall_sf)}")
        print(f"  bare      wall per turn: {benchlib.summary(wall_bare)}")
        ratio = _median(wall_sf) / _median(wall_bare)
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(f"  ratio (median wall per turn): {ratio:.2f}x  ({verdict} the {TARGET}x target)")
        print(
            f"  steadfast orchestration per turn (activity time excluded): "
            f"{benchlib.summary(orch_sf)}"
        )
        print(
            f"  bare      orchestration per turn (activity time excluded): "
            f"{benchlib.summary(orch_bare)}"
        )
        print(f"  orchestration ratio: {_median(orch_sf) / _median(orch_bare):.2f}x")
        print("  time per activity, by type (median ms, calls per run):")
        for side, got in (("steadfast", sf), ("bare", bare)):
            types = sorted({t for f in got for t in f.by_type})
            cells = []
            for t in types:
                took = [x for f in got for x in f.by_type.get(t, [])]
                cells.append(
                    f"{t} {statistics.median(took) * 1000:.0f} ms x{len(took) / len(got):.0f}"
                )
            print(f"    {side:9s} " + ", ".join(cells))
        print("  history (whole chain):")
        for side, got in (("steadfast (offloaded)", sf), ("bare (in history)", bare)):
            f = got[-1]
            print(
                f"    {side:22s} {f.events / f.llm_calls:6.1f} events/turn "
                f"{f.bytes / f.llm_calls:9.0f} bytes/turn  "
                f"{f.events / f.llm_calls:5.1f} events per LLM call  "
                f"({f.runs} run(s), {f.activities} activities, {f.bytes} bytes, "
                f"largest run {f.largest_run_bytes} bytes)"
            )
        b_sf = _median([f.bytes / f.llm_calls for f in sf])
        b_bare = _median([f.bytes / f.llm_calls for f in bare])
        e_sf = _median([f.events / f.llm_calls for f in sf])
        e_bare = _median([f.events / f.llm_calls for f in bare])
        print(
            f"  bytes per turn ratio: {b_sf / b_bare:.2f}x; events per LLM call ratio: "
            f"{e_sf / e_bare:.2f}x"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--latency-ms", type=int, default=0)
    ns = parser.parse_args()
    benchlib.run_and_exit(main(ns.runs, ns.turns, ns.latency_ms))
