"""``llm.usage_of``: the SDK's usage objects, cache writes split by TTL, become ours."""

from __future__ import annotations

import pytest
from anthropic.types import CacheCreation, MessageDeltaUsage
from anthropic.types import Usage as SdkUsage

from steadfast_contract.pricing import Usage
from steadfast_worker.llm import usage_of

pytestmark = pytest.mark.unit


def test_one_hour_writes_are_read_from_cache_creation() -> None:
    raw = SdkUsage(
        input_tokens=40,
        output_tokens=7,
        cache_read_input_tokens=2000,
        cache_creation_input_tokens=1500,
        cache_creation=CacheCreation(ephemeral_5m_input_tokens=500, ephemeral_1h_input_tokens=1000),
    )
    assert usage_of(raw) == Usage(40, 7, 2000, 1500, 0, cache_write_1h_tokens=1000)


def test_usage_without_the_breakdown_counts_every_write_as_5_minutes() -> None:
    raw = MessageDeltaUsage(
        input_tokens=40, output_tokens=7, cache_read_input_tokens=None,
        cache_creation_input_tokens=300, server_tool_use=None,
    )  # fmt: skip
    usage = usage_of(raw)
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (300, 0)
    assert usage_of(None) == Usage()
