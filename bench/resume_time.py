"""Resume time after SIGKILL, with default settings: target under 20 s.

A worker is SIGKILLed while the report is being written (an LLM stream in
flight); a new worker is started at once. The resume time is from the kill to
the interrupted step being done, which is bounded by the heartbeat timeout
(default 10 s) plus the retried call. The simulator's request log also shows
whether any LLM call that had finished before the kill was served again.

``python bench/resume_time.py [--trials N] [--phase Writing]``
"""

from __future__ import annotations

import argparse
import uuid

import benchlib
from steadfast_contract import starter
from steadfast_dev import chaos

TARGET_S = 20.0


async def main(trials: int, phase: str) -> int:
    # Slow streams so the kill lands inside the call, as a real report would be.
    async with benchlib.stack(["--chunk-delay-ms", "40"]) as s:
        cfg = benchlib.bench_config(s)
        worker = s.start_worker(cfg)
        await benchlib.wait_polling(s.client, cfg.task_queue)
        resumes: list[float] = []
        held = True
        for i in range(trials):
            started = await starter.start_topic(s.client, cfg, f"resume {i} {uuid.uuid4()}")
            report = await chaos.crash_during(
                s.client,
                s.sim_admin,
                started.workflow_id,
                phase,
                worker,
                lambda: s.start_worker(cfg),
            )
            worker = s.workers[-1]
            held = held and report.held
            if report.resume_s is not None:
                resumes.append(report.resume_s)
            retry = f"{report.retry_after_s:.1f}s" if report.retry_after_s is not None else "-"
            resume = f"{report.resume_s:.1f}s" if report.resume_s is not None else "-"
            print(
                f"  trial {i + 1}: killed during {phase}; retried after {retry}, "
                f"step done {resume} after the kill; repeated calls {report.repeated or 'none'}"
            )
        print(f"resume time after SIGKILL during {phase}: {benchlib.summary(resumes)}")
        worst = max(resumes) if resumes else float("inf")
        verdict = "within" if worst < TARGET_S else "ABOVE"
        print(f"  worst {worst:.1f}s ({verdict} the {TARGET_S:.0f}s target)")
        print(f"  no finished LLM call repeated and every run completed: {held}")
    return 0 if held else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--phase", default="Writing", choices=sorted(chaos.STEP_OF_PHASE))
    ns = parser.parse_args()
    benchlib.run_and_exit(main(ns.trials, ns.phase))
