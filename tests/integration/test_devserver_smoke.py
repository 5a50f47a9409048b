"""The shared dev-server fixture answers real RPCs (guards the fixture itself)."""

from __future__ import annotations

import pytest
from temporalio.client import Client

pytestmark = pytest.mark.integration


async def test_dev_server_lists_default_namespace(temporal_client: Client) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    resp = await temporal_client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert resp.namespace_info.name == "default"
