"""A workflow instance executes no module of ours but its own workflow module.

Temporal's sandbox loads a workflow's module afresh for every workflow instance, and
with it whatever that module imports unless the import is passed through. Our
deterministic helpers (accounting, budgeting, the pipeline and deep loops...) are
imported under ``imports_passed_through`` so that every run shares the worker's
copy; a helper executed again per instance costs every run its module-level work
(dataclass creation, imports): creating an instance took 8.1 ms of a pipeline
run's worker time where 2.7 ms do (py-spy, bench/temporal_cost.py's load).
``from steadfast_worker import x`` defeats the pass-through (the package is the
sandbox's own copy, and Python loads ``x`` through it), so this test watches
what actually executes.

The sandbox runs module code with ``exec``, which raises the ``exec`` audit event;
the hook below records which of our files ran while the SDK's runner prepares an
instance (what the worker does for every run). The day's ledger runs outside the
sandbox (see :mod:`steadfast_worker.ledger`), so only the research workflow is here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import CodeType

import pytest
from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from steadfast_worker.workflows import ResearchWorkflow

pytestmark = pytest.mark.unit

_executed: list[str] | None = None


def _hook(event: str, args: tuple[object, ...]) -> None:
    if _executed is None or event != "exec" or not args or not isinstance(args[0], CodeType):
        return
    filename = args[0].co_filename
    if "steadfast_" in filename:
        _executed.append(filename)


sys.addaudithook(_hook)  # audit hooks stay for the process: it records only in the test


def _executed_by_new_instance(cls: type) -> set[str]:
    """Our source files the sandbox executes to create one instance of workflow ``cls``."""
    global _executed
    # The SDK builds this definition from the class the same way when a worker starts.
    defn = workflow._Definition.must_from_class(cls)
    _executed = []
    try:

        async def prepare() -> None:  # an instance needs a running loop
            SandboxedWorkflowRunner().prepare_workflow(defn)

        asyncio.run(prepare())
        return set(_executed)
    finally:
        _executed = None


@pytest.mark.parametrize("cls", [ResearchWorkflow])
def test_an_instance_executes_only_its_own_workflow_module(cls: type) -> None:
    module_file = sys.modules[cls.__module__].__file__
    assert module_file is not None
    executed = _executed_by_new_instance(cls)
    # The hook works: the workflow's own module runs again for every instance.
    assert module_file in executed
    again = sorted(
        Path(f).relative_to(Path(module_file).parents[1]).as_posix()
        for f in executed - {module_file}
        if Path(f).name != "__init__.py"
    )
    assert again == [], f"executed again for every {cls.__name__} run: {again}"
