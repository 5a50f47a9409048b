"""Pure decisions of the starters and of the chaos check: settings, rows, verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError
from tests.support.abandoned import no_abandoned_async_work  # noqa: F401  (autouse)

from steadfast_contract import activities as act
from steadfast_contract import agentfile, models, starter
from steadfast_contract.config import WorkerConfig
from steadfast_dev import chaos, devserver, embedded

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "market-watch.yaml"


def config() -> WorkerConfig:
    return agentfile.worker_config_from_agent(agentfile.load_manifest(EXAMPLE))


def test_settings_carry_the_deterministic_config() -> None:
    cfg = config()
    inp = starter.research_input(cfg, "t")
    assert inp.topic == "t"
    assert (inp.agent, inp.namespace) == ("market-watch", "research")
    s = inp.settings
    assert s.model == "claude-sonnet-4-6"
    assert s.max_tokens == 2000
    assert s.max_usd_per_run == 1.0
    assert s.retry_policies.llm.maximum_attempts == 5
    assert s.heartbeat_timeout_seconds == 3.0
    # The price is resolved at start and recorded, so replays never see a new table.
    assert s.pricing is not None
    assert s.pricing.output_per_mtok == 15.0
    assert s.search_provider == "http"


def test_reuse_policy() -> None:
    assert starter.reuse_policy(True) == WorkflowIDReusePolicy.ALLOW_DUPLICATE
    assert starter.reuse_policy(False) == WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY


def test_row_for_closed_keeps_the_workflows_own_terminal_phase() -> None:
    status = models.RunStatus(topic="t", phase=models.Phase.BUDGET_EXHAUSTED, cost_usd=0.9)
    row = starter.row_for_closed("wf", "t", WorkflowExecutionStatus.FAILED, status, "budget")
    assert row.phase == "BudgetExhausted"
    assert row.cost_usd == 0.9
    assert row.message == "budget"
    assert row.terminal


def test_row_for_closed_from_outside_uses_the_closing_status() -> None:
    status = models.RunStatus(topic="t", phase=models.Phase.WRITING, llm_calls=1)
    row = starter.row_for_closed("wf", "t", WorkflowExecutionStatus.TERMINATED, status)
    assert row.phase == "Terminated"
    assert row.llm_calls == 1
    assert row.terminal
    assert starter.row_for_closed("wf", "t", WorkflowExecutionStatus.TIMED_OUT, None).phase == (
        "TimedOut"
    )


async def _through_the_wire(err: ApplicationError) -> WorkflowFailureError:
    """The error as a client sees it: encoded to a Failure and decoded again."""
    failure = Failure()
    await DataConverter.default.encode_failure(err, failure)
    return WorkflowFailureError(cause=await DataConverter.default.decode_failure(failure))


async def test_status_from_failure_reads_the_attached_status() -> None:
    sent = models.RunStatus(
        topic="t", phase=models.Phase.BUDGET_EXHAUSTED, cost_usd=0.42, llm_calls=2, retries=1
    )
    err = await _through_the_wire(
        ApplicationError("run budget exhausted", sent, type="BudgetExhausted")
    )
    got = starter.status_from_failure(err, DataConverter.default.payload_converter)
    assert got == sent
    assert got is not None
    assert got.phase is models.Phase.BUDGET_EXHAUSTED


async def test_status_from_failure_without_a_status_is_none() -> None:
    conv = DataConverter.default.payload_converter
    # Histories from before the status was attached, and unrelated details.
    old = await _through_the_wire(ApplicationError("boom", type="Failed"))
    assert starter.status_from_failure(old, conv) is None
    odd = await _through_the_wire(ApplicationError("boom", "not a status", type="Failed"))
    assert starter.status_from_failure(odd, conv) is None
    assert starter.status_from_failure(RuntimeError("x"), conv) is None


def test_running_rows_are_not_terminal() -> None:
    assert not starter.RunRow("t", "wf", "Writing").terminal
    assert not starter.RunRow("t", "wf", "Running").terminal


def _entry(key: str, outcome: str, start: float, end: float | None) -> dict[str, object]:
    return {"service": "llm", "key": key, "outcome": outcome, "started_at": start, "ended_at": end}


def test_chaos_verdicts() -> None:
    entries = [
        _entry("queries", "served", 1.0, 2.0),
        _entry("report", "aborted", 3.0, 5.5),
        _entry("report", "served", 15.0, 18.0),
    ]
    assert chaos.served_keys_before(entries, 4.0) == {"queries"}
    assert chaos.in_flight_keys(entries, 4.0) == {"report"}
    assert chaos.repeated_calls({"queries"}, {"queries": 1, "report": 1}) == {}
    assert chaos.repeated_calls({"queries"}, {"queries": 2}) == {"queries": 2}
    assert chaos.repeated_calls({"queries"}, {}) == {"queries": 0}
    assert chaos.first_attempt_after(entries, {"report"}, 4.0) == pytest.approx(11.0)
    assert chaos.first_attempt_after(entries, {"other"}, 4.0) is None


def test_crash_report_holds_only_when_completed_without_repeats() -> None:
    ok = chaos.CrashReport("wf", "Writing", 3, final_phase="Completed")
    assert ok.held
    assert not chaos.CrashReport(
        "wf", "Writing", 3, repeated={"k": 2}, final_phase="Completed"
    ).held
    assert not chaos.CrashReport("wf", "Writing", 3, final_phase="Failed").held


def test_local_config_points_at_the_stack(tmp_path: Path) -> None:
    cfg = embedded.local_config(
        config(),
        temporal_address="127.0.0.1:7999",
        state_dir=tmp_path,
        sim_url="http://127.0.0.1:8089",
        llm_sim=True,
        metrics_port=9999,
    )
    assert cfg.temporal.address == "127.0.0.1:7999"
    assert cfg.model.base_url == "http://127.0.0.1:8089"
    assert cfg.search.endpoint == "http://127.0.0.1:8089/search"
    assert cfg.storage.sqlite_path == str(tmp_path / "reports.db")
    assert cfg.worker.metrics_host == "127.0.0.1"
    assert cfg.worker.metrics_port == 9999
    # fetch_page reads the simulator's loopback pages, and no other host inside.
    assert cfg.research.tools.fetch_page.allow_private_hosts == ["127.0.0.1:8089"]
    again = embedded.local_config(
        cfg,
        temporal_address="a:1",
        state_dir=tmp_path,
        sim_url="http://127.0.0.1:8089",
        llm_sim=True,
    )
    assert again.research.tools.fetch_page.allow_private_hosts == ["127.0.0.1:8089"]
    real = embedded.local_config(
        config(), temporal_address="a:1", state_dir=tmp_path, sim_url="http://s", llm_sim=False
    )
    assert real.model.base_url == ""
    from steadfast_contract.config import parse_config

    assert parse_config(embedded.config_document(cfg)) == cfg


def test_llm_simulator_decision() -> None:
    assert embedded.use_llm_simulator({}, force=False)
    assert not embedded.use_llm_simulator({"ANTHROPIC_API_KEY": "k"}, force=False)
    assert embedded.use_llm_simulator({"ANTHROPIC_API_KEY": "k"}, force=True)


def test_dev_server_command_is_loopback_only(tmp_path: Path) -> None:
    spec = devserver.DevServerSpec(tmp_path, port=7000, ui_port=8000, binary="temporal")
    argv = devserver.command(spec)
    assert argv[:3] == ["temporal", "server", "start-dev"]
    assert argv[argv.index("--ip") + 1] == "127.0.0.1"
    assert argv[argv.index("--ui-ip") + 1] == "127.0.0.1"
    assert argv[argv.index("--db-filename") + 1] == str(tmp_path / "temporal.db")
    assert spec.ui_url == "http://127.0.0.1:8000"
    assert argv[argv.index("--sqlite-pragma") + 1] == "journal_mode=wal"
    headless = devserver.command(devserver.DevServerSpec(tmp_path, ui_port=0, binary="t"))
    assert "--headless" in headless
    assert "--ui-port" not in headless


def test_resume_is_the_next_step_scheduled_after_the_kill() -> None:
    marks = [
        (1.0, "scheduled", "generate_queries"),
        (2.0, "scheduled", "web_search"),
        (3.0, "scheduled", "write_report"),
        (20.0, "scheduled", "write_report"),  # the retry is not the step being done
        (24.0, "scheduled", "save_report"),
        (25.0, "closed", ""),
    ]
    assert chaos.resume_seconds(marks, 5.0, 3) == pytest.approx(19.0)
    assert chaos.resume_seconds(marks, 5.0, 4) == pytest.approx(20.0)  # closed
    assert chaos.resume_seconds(marks, 30.0, 3) is None


def test_chaos_reads_the_workflows_own_step_numbers() -> None:
    assert chaos.STEP_OF_PHASE is models.STEP_OF_PHASE
    assert chaos.STEP_OF_ACTIVITY is act.STEP_OF_ACTIVITY
    assert set(act.STEP_OF_ACTIVITY) == {
        act.GENERATE_QUERIES,
        act.WEB_SEARCH,
        act.WEB_SEARCHES,
        act.WRITE_REPORT,
        act.SAVE_REPORT,
        act.SEND_EMAIL,
        act.DEEP_TURN,
        act.DEEP_TOOL,
    }
    assert sorted(set(models.STEP_OF_PHASE.values())) == list(range(1, models.TOTAL_STEPS + 1))
    assert models.RunStatus().total_steps == models.TOTAL_STEPS


def test_a_kill_while_awaiting_approval_is_resumed_when_the_email_is_scheduled() -> None:
    """Awaiting approval is step 4, as the workflow reports it (chaos used to say 5).

    With 5, a run killed while it waited for a reviewer counted as resumed only when it
    closed, after the email, instead of when the email step began.
    """
    marks = [
        (1.0, "scheduled", act.SAVE_REPORT),
        (30.0, "scheduled", act.SEND_EMAIL),
        (32.0, "closed", ""),
    ]
    step = chaos.STEP_OF_PHASE[models.Phase.AWAITING_APPROVAL]
    assert step == models.STEP_OF_PHASE[models.Phase.SAVING] == 4
    assert chaos.resume_seconds(marks, 10.0, step) == pytest.approx(20.0)


def test_the_chaos_summary_reads_the_killed_run_as_it_closed() -> None:
    killed = starter.RunRow("t", "wf-1", "Completed", llm_calls=2)
    closed = starter.RunRow(
        "t", "wf-1", "Completed", llm_calls=2, avoided_usd=0.0006, calls_not_repeated=1,
        interruptions=(models.Interruption(act.WRITE_REPORT, 2, 1, 1, 0.0006),),
    )  # fmt: skip
    other = starter.RunRow("u", "wf-2", "Completed", llm_calls=2)
    report = chaos.CrashReport("wf-1", "Writing", 3, final=closed)
    assert chaos.closing_rows([killed, other], report) == [closed, other]
    assert chaos.closing_rows([killed], chaos.CrashReport("wf-1", "Writing", 3)) == [killed]
