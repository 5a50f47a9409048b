"""Fixtures every tier may use. Tier-specific fixtures live in each tier's conftest."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.support.temporal import start_dev_server

#: The tiers ``make test`` runs one by one (``-m unit``, ``-m integration``, ...).
TIERS = frozenset({"unit", "integration", "e2e", "pods"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that belongs to no tier: every tier is selected by its marker, so an
    unmarked test would be collected by a bare ``pytest`` and never run by ``make test``."""
    unmarked = [item.nodeid for item in items if not TIERS & {m.name for m in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) in no tier (mark them {', '.join(sorted(TIERS))}): "
            + ", ".join(unmarked[:5])
        )


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One real Temporal dev server per test session."""
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue per test, so tests never see each other's work."""
    return f"test-{uuid.uuid4().hex[:12]}"
