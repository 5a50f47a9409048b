"""The run's figures, added up from what activities report (pure, used by the workflow)."""

from __future__ import annotations

import pytest

from steadfast_contract.activities import LlmCall
from steadfast_contract.models import RunStatus
from steadfast_contract.pricing import Usage
from steadfast_worker import accounting

pytestmark = pytest.mark.unit


def test_a_successful_llm_activity_counts_its_failed_spend_and_retries() -> None:
    st = RunStatus(reserved_usd=0.5)
    call = LlmCall("m", Usage(10, 20, cache_read_tokens=3, cache_write_tokens=4), 0.01, 0.02, 2)
    accounting.add_llm(st, call, attempt=3)
    assert st.cost_usd == pytest.approx(0.03)
    assert (st.input_tokens, st.output_tokens, st.llm_calls, st.retries) == (17, 20, 2, 2)
    assert st.reserved_usd == 0.0


def test_a_failed_activity_counts_what_its_details_carried() -> None:
    st = RunStatus(cost_usd=0.1)
    accounting.add_failure(st, {"failed_cost_usd": 0.05, "calls": 2, "attempt": 4})
    assert st.cost_usd == pytest.approx(0.15)
    assert (st.llm_calls, st.retries) == (2, 3)
    accounting.add_failure(st, {})
    assert st.retries == 3
