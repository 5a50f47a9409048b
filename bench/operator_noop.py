"""A do-nothing ``ResearchWorkflow`` for the operator benchmarks' drain worker.

The operator benchmarks measure the operator (reconcile latency, scale
reaction), not the research itself, so their worker completes each workflow at
once. It registers under the real workflow name because the operator starts
``ResearchWorkflow``. A separate module, because the workflow sandbox re-imports
a workflow's module by name and ``__main__`` cannot be re-imported.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow


@workflow.defn(name="ResearchWorkflow")
class NoopResearch:
    @workflow.run
    async def run(self, _: Any) -> dict[str, Any]:
        return {}
