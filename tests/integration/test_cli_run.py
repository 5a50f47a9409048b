"""``steadfast run``, ``status`` and ``approve`` as a user types them, against a real Temporal.

The commands run as subprocesses against the session's dev server; the runs are
done by a real ``steadfast worker`` process talking to the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from temporalio.client import Client
from tests.support.stack import ROOT, cli, example_config, on_queue, open_stack

from steadfast_contract import agentfile, ids, models, starter
from steadfast_dev import chaos, embedded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
async def cli_stack(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[embedded.Stack]:
    s = await open_stack(temporal_address, tmp_path_factory.mktemp("cli"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def worker_queue(cli_stack: embedded.Stack, task_queue: str) -> str:
    """A worker process on this test's task queue."""
    cli_stack.start_worker(cli_stack.worker_config(on_queue(example_config(), task_queue)))
    return task_queue


@pytest.fixture
def gate(cli_stack: embedded.Stack, task_queue: str, temporal_address: str) -> list[str]:
    """``steadfast run`` arguments for the approval-gate example, on a worker of that
    agent on this test's queue (a worker serves its own agent's runs only)."""
    agent = example_config("approval-gate.yaml")
    cli_stack.start_worker(cli_stack.worker_config(on_queue(agent, task_queue)))
    return [
        "-f",
        "examples/approval-gate.yaml",
        "--task-queue",
        task_queue,
        *conn(temporal_address),
    ]


def conn(temporal_address: str) -> list[str]:
    return ["--address", temporal_address]


async def steadfast(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args)


async def executions(client: Client, workflow_id: str) -> int:
    return len([e async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")])


async def test_run_wait_then_rerun_is_idempotent(
    worker_queue: str,
    temporal_address: str,
    temporal_client: Client,
    cli_stack: embedded.Stack,
    tmp_path: Path,
) -> None:
    topic = f"idempotent {uuid.uuid4()}"
    common = ["-f", "examples/market-watch.yaml", "--topic", topic]
    common += ["--task-queue", worker_queue, "--address", temporal_address]
    wf_id = ids.workflow_id("research", "market-watch", topic)

    first = await steadfast("run", *common, "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"started {wf_id}" in first.stdout
    assert "Completed" in first.stdout

    again = await steadfast("run", *common)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"reused {wf_id}" in again.stdout
    assert await executions(temporal_client, wf_id) == 1

    status = await steadfast("status", wf_id, "--address", temporal_address)
    assert status.returncode == 0, status.stdout + status.stderr
    result = await temporal_client.get_workflow_handle(
        wf_id, result_type=models.ResearchResult
    ).result()
    assert result.status.report_id
    assert result.status.report_id in status.stdout
    assert "Completed" in status.stdout

    rerun = await steadfast("run", *common, "--rerun", "--wait")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"started {wf_id}" in rerun.stdout
    assert await executions(temporal_client, wf_id) == 2

    # Both runs' reports are kept, and `status --reports` lists them from the store the
    # worker writes (its configuration names the SQLite file).
    again_result = await temporal_client.get_workflow_handle(
        wf_id, result_type=models.ResearchResult
    ).result()
    assert again_result.status.report_id != result.status.report_id
    config = tmp_path / "worker.yaml"
    worker_cfg = cli_stack.worker_config(on_queue(example_config(), worker_queue))
    config.write_text(yaml.safe_dump(embedded.config_document(worker_cfg)))
    listed = await steadfast(
        "status", wf_id, "--reports", "--config", str(config), *conn(temporal_address)
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"Reports of {wf_id}" in listed.stdout
    shown = listed.stdout.split(f"Reports of {wf_id}", 1)[1]  # after the runs table
    assert shown.index(result.status.report_id) < shown.index(again_result.status.report_id)
    # The stack keeps its store where `steadfast dev --state-dir` would: named by that
    # directory, from another working directory, while its Temporal serves.
    by_dir = await steadfast(
        "status",
        wf_id,
        "--reports",
        "--state-dir",
        str(cli_stack.options.state_dir),
        *conn(temporal_address),
    )
    assert by_dir.returncode == 0, by_dir.stdout + by_dir.stderr
    shown = by_dir.stdout.split(f"Reports of {wf_id}", 1)[1]
    assert shown.index(result.status.report_id) < shown.index(again_result.status.report_id)


async def test_concurrent_starts_share_one_run(
    worker_queue: str, temporal_address: str, temporal_client: Client
) -> None:
    topic = f"concurrent {uuid.uuid4()}"
    args = ["run", "-f", "examples/market-watch.yaml", "--topic", topic]
    args += ["--task-queue", worker_queue, "--address", temporal_address]
    outs = await asyncio.gather(*(steadfast(*args) for _ in range(3)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    wf_id = ids.workflow_id("research", "market-watch", topic)
    assert await executions(temporal_client, wf_id) == 1
    await starter.wait_closed(temporal_client, wf_id)


async def test_follow_prints_the_report_live(worker_queue: str, temporal_address: str) -> None:
    topic = f"follow {uuid.uuid4()}"
    out = await steadfast(
        "run",
        "-f",
        "examples/market-watch.yaml",
        "--topic",
        topic,
        "--task-queue",
        worker_queue,
        "--address",
        temporal_address,
        "--follow",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^#", out.stdout, re.MULTILINE), out.stdout
    assert "http" in out.stdout  # the report cites its sources
    assert "Completed" in out.stdout


async def test_following_a_finished_run_no_worker_answers_for_says_where_its_report_is(
    cli_stack: embedded.Stack, worker_queue: str, temporal_address: str
) -> None:
    """The stream of a closed run is read by a query, which only a worker answers: with
    the agent's workers gone, ``run --follow`` of a finished topic ended in an RPCError
    traceback (the audit). It says so on one line, and where the report is read."""
    topic = f"followed after the end {uuid.uuid4().hex[:8]}"
    args = ["-f", "examples/market-watch.yaml", "--topic", topic, "--task-queue", worker_queue]
    args += ["--address", temporal_address]
    first = await steadfast("run", *args, "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    cli_stack.workers[-1].stop()
    out = await steadfast("run", *args, "--follow")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("steadfast run: error: could not follow the report of ")
    assert "steadfast report" in out.stdout


async def test_follow_heads_each_deep_turn_with_its_progress(
    cli_stack: embedded.Stack, task_queue: str, temporal_address: str, tmp_path: Path
) -> None:
    """``run --follow`` on a deep agent, piped: each turn's text is headed by a line with
    the turn, the tool calls and the cost so far (it printed the turns' text alone)."""
    manifest = (ROOT / "examples" / "deep-research.yaml").read_text()
    short = tmp_path / "deep.yaml"
    short.write_text(manifest.replace("maxTurns: 20", "maxTurns: 4"))
    deep = agentfile.worker_config_from_agent(agentfile.load_manifest(short))
    cli_stack.start_worker(cli_stack.worker_config(on_queue(deep, task_queue)))
    await cli_stack.sim_admin.set_faults(
        {"llm": {"agent_turns": 4, "chunk_delay_ms": 20}, "search": {"page_links": True}}
    )
    try:
        out = await steadfast(
            "run",
            "-f",
            str(short),
            "--topic",
            f"deep follow {uuid.uuid4().hex[:8]}",
            "--task-queue",
            task_queue,
            "--follow",
            *conn(temporal_address),
        )
    finally:
        await cli_stack.sim_admin.set_faults(
            {"llm": {"clear": True, "agent_turns": 6}, "search": {"page_links": False}}
        )
    assert out.returncode == 0, out.stdout + out.stderr
    headings = re.findall(
        r"^--- turn (\d)/4 \w+ · (\d+) tool calls? · \d+ retr(?:y|ies) · "
        r"\$(\d+\.\d{4}) so far ---$",
        out.stdout,
        re.MULTILINE,
    )
    assert [int(t) for t, _, _ in headings] == [1, 2, 3, 4], out.stdout
    tools, costs = [int(n) for _, n, _ in headings], [float(c) for _, _, c in headings]
    assert tools == sorted(tools)
    assert tools[-1] > 0
    assert costs == sorted(costs)
    assert costs[-1] > 0
    table = out.stdout.split("Research runs", 1)[1]
    (final,) = re.findall(r"Completed .*?\$(\d+\.\d{4})", table)
    assert float(final) >= costs[-1]  # the run's own total, from its status


#: What a page could make a real model write into its report: an OSC 52 clipboard
#: write, a colour change, a screen clear, a carriage return that overwrites the line,
#: a bell, and rich markup that closes a tag nobody opened.
HOSTILE = "\x1b]52;c;cm0gLXJmIH4K\x07 \x1b[31mred\x1b[0m \x1b[2J\rover \x9b1m [/bold] [link=x]y"


async def test_a_task_queue_the_manifest_names_cannot_act_on_the_terminal(
    temporal_address: str, temporal_client: Client
) -> None:
    """The queue ``steadfast run`` prints comes from the manifest or ``--task-queue``,
    with no pattern: printed as rich markup, ``[/bold]`` raised MarkupError after the
    runs had started (a traceback, and ``--wait`` never ran), and an escape sequence
    reached the terminal raw."""
    queue = f"q-{uuid.uuid4().hex[:6]} [/bold] \x1b]0;title\x07"
    topic = f"hostile queue {uuid.uuid4().hex[:8]}"
    run = ["-f", "examples/market-watch.yaml", "--topic", topic, "--task-queue", queue]
    out = await steadfast("run", *run, *conn(temporal_address))
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Traceback" not in out.stderr, out.stderr
        assert not set(out.stdout) & {"\x1b", "\x07"}, repr(out.stdout)
        assert "[/bold] ␛]0;title␇" in out.stdout, out.stdout
    finally:
        wf_id = ids.workflow_id("research", "market-watch", topic)
        with contextlib.suppress(Exception):
            await temporal_client.get_workflow_handle(wf_id).terminate("test over")


async def test_what_a_report_or_a_topic_says_cannot_act_on_the_terminal(
    worker_queue: str, temporal_address: str, cli_stack: embedded.Stack
) -> None:
    """``run --follow`` and ``status`` print a model's text and a manifest's topic: its
    control characters are shown (``␛``), never sent, its brackets are not markup, and
    the report store keeps what the model wrote."""
    mark = uuid.uuid4().hex[:8]
    topic = f"Q3 [/bold] outlook {mark}"  # a valid topic; brackets stopped status and dev
    await cli_stack.sim_admin.set_faults({"llm": {"says": HOSTILE, "match": mark}})
    try:
        run = ["-f", "examples/market-watch.yaml", "--topic", topic]
        run += ["--task-queue", worker_queue, *conn(temporal_address)]
        followed = await steadfast("run", *run, "--follow")
        status = await steadfast("status", *run)
    finally:
        await cli_stack.sim_admin.set_faults({"llm": {"clear": True}})
    for out in (followed, status):
        assert out.returncode == 0, out.stdout + out.stderr
        assert not set(out.stdout) & {"\x1b", "\x07", "\r", "\x9b"}, repr(out.stdout)
        assert "Q3 [/bold] outlook" in out.stdout, out.stdout
    assert "␛]52;c;cm0gLXJmIH4K␇ ␛[31mred␛[0m ␛[2J␍over \ufffd1m [/bold] [link=x]y" in (
        followed.stdout
    )
    wf_id = ids.workflow_id("research", "market-watch", topic)
    db = sqlite3.connect(cli_stack.options.state_dir / "reports.db")
    try:
        (markdown,) = db.execute(
            "SELECT markdown FROM steadfast_reports WHERE workflow_id = ?", (wf_id,)
        ).fetchone()
    finally:
        db.close()
    assert HOSTILE in markdown  # shown safely, kept as written


async def test_approve_and_reject(
    gate: list[str], temporal_address: str, temporal_client: Client
) -> None:
    approved, rejected = f"approve me {uuid.uuid4()}", f"reject me {uuid.uuid4()}"
    out = await steadfast("run", *gate, "--topic", approved, "--topic", rejected)
    assert out.returncode == 0, out.stdout + out.stderr
    ok_id = ids.workflow_id("research", "approval-gate", approved)
    no_id = ids.workflow_id("research", "approval-gate", rejected)
    for wf_id in (ok_id, no_id):
        await chaos.wait_for_phase(temporal_client, wf_id, models.Phase.AWAITING_APPROVAL)

    listed = await steadfast("status", *gate, "--topic", approved, "--topic", rejected)
    assert listed.stdout.count("AwaitingApproval") == 2, listed.stdout

    nameless = await steadfast("approve", ok_id, *conn(temporal_address))
    assert nameless.returncode == 2
    assert nameless.stderr == "steadfast approve: error: --reviewer is required to approve\n"

    yes = await steadfast(
        "approve", ok_id, "--reviewer", "alice", "--comment", "fine", *conn(temporal_address)
    )
    assert yes.returncode == 0, yes.stdout + yes.stderr
    assert "approved" in yes.stdout

    no = await steadfast(
        "approve", no_id, "--reject", "--reason", "thin sources", *conn(temporal_address)
    )
    assert no.returncode == 0, no.stdout + no.stderr
    assert f"rejected {no_id}" in no.stdout

    await starter.wait_closed(temporal_client, ok_id)
    await starter.wait_closed(temporal_client, no_id)
    ok_row = await starter.describe_run(temporal_client, ok_id)
    no_row = await starter.describe_run(temporal_client, no_id)
    assert ok_row.phase == models.Phase.COMPLETED.value
    assert no_row.phase == models.Phase.REJECTED.value
    status = await starter.query_status(temporal_client, ok_id)
    assert status.reviewer == "alice"

    twice = await steadfast("approve", ok_id, "--reviewer", "bob", *conn(temporal_address))
    assert twice.returncode == 1
    assert "refused" in twice.stdout or "error" in twice.stdout


async def test_reject_before_the_report_exists_says_nothing_was_rejected(
    gate: list[str], temporal_address: str, temporal_client: Client, cli_stack: embedded.Stack
) -> None:
    # The workflow ignores a rejection that comes before the report; the command
    # used to print "rejected" for it all the same.
    topic = f"too early to reject {uuid.uuid4()}"
    wf_id = ids.workflow_id("research", "approval-gate", topic)
    # The query call is held long enough for `approve` to start and ask (a Python start,
    # a connect and a query: 4 s was too short once two test processes shared the cores).
    await cli_stack.sim_admin.set_faults({"llm": {"latency_ms": 12_000, "match": topic}})
    try:
        out = await steadfast("run", *gate, "--topic", topic)
        assert out.returncode == 0, out.stdout + out.stderr
        await chaos.wait_for_phase(temporal_client, wf_id, models.Phase.GENERATING_QUERIES)
        early = await steadfast("approve", wf_id, "--reject", *conn(temporal_address))
    finally:
        await cli_stack.sim_admin.set_faults({"llm": {"clear": True}})
    assert early.returncode == 1, early.stdout + early.stderr
    assert "not waiting for review (phase GeneratingQueries); nothing was sent" in early.stdout
    # The run goes on to the review it was always going to wait for.
    await chaos.wait_for_phase(temporal_client, wf_id, models.Phase.AWAITING_APPROVAL)
    yes = await steadfast("approve", wf_id, "--reviewer", "alice", *conn(temporal_address))
    assert yes.returncode == 0, yes.stdout + yes.stderr


async def test_wait_reports_each_run_as_it_closes(
    gate: list[str], temporal_address: str, temporal_client: Client
) -> None:
    # The second topic is rejected while the first still waits for approval, so a
    # wait that goes through the runs in start order could not report it first.
    slow, quick = f"approved later {uuid.uuid4()}", f"rejected first {uuid.uuid4()}"
    slow_id = ids.workflow_id("research", "approval-gate", slow)
    quick_id = ids.workflow_id("research", "approval-gate", quick)
    waiting = asyncio.create_task(
        steadfast("run", *gate, "--topic", slow, "--topic", quick, "--wait")
    )
    for wf_id in (slow_id, quick_id):
        await chaos.wait_for_phase(temporal_client, wf_id, models.Phase.AWAITING_APPROVAL)
    no = await steadfast(
        "approve", quick_id, "--reject", "--reason", "off topic", *conn(temporal_address)
    )
    assert no.returncode == 0, no.stdout + no.stderr
    await starter.wait_closed(temporal_client, quick_id)
    yes = await steadfast("approve", slow_id, "--reviewer", "alice", *conn(temporal_address))
    assert yes.returncode == 0, yes.stdout + yes.stderr

    out = await waiting
    assert out.returncode == 1, out.stdout + out.stderr  # one run did not complete
    assert "waiting for 2 runs" in out.stdout
    first = out.stdout.index(f"closed 1/2: {quick_id} Rejected")
    second = out.stdout.index(f"closed 2/2: {slow_id} Completed")
    assert first < second
    table = out.stdout[second:]
    assert table.index(slow_id) < table.index(quick_id)  # the table keeps start order


async def test_status_in_80_columns_keeps_the_phase_and_the_figures_whole(
    worker_queue: str, temporal_address: str, temporal_client: Client
) -> None:
    """In an 80-column terminal the runs table cropped its last columns: retries, cost
    and saved were cut off. It is printed compact there, every figure whole."""
    topic = f"narrow {uuid.uuid4().hex[:8]}"
    common = ["-f", "examples/market-watch.yaml", "--topic", topic, "--task-queue", worker_queue]
    done = await steadfast("run", *common, "--wait", *conn(temporal_address))
    assert done.returncode == 0, done.stdout + done.stderr
    wf_id = ids.workflow_id("research", "market-watch", topic)
    result = await temporal_client.get_workflow_handle(
        wf_id, result_type=models.ResearchResult
    ).result()
    out = await asyncio.to_thread(cli, "status", wf_id, *conn(temporal_address), columns=80)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    (row,) = [line for line in lines if "Completed" in line]  # the run's first line
    cost = f"${result.status.cost_usd:.4f}"  # the run's own figure, from Temporal
    figures = [cell.strip() for cell in row.split("│")[2:-1]]
    want = [str(result.status.llm_calls), str(result.status.retries), cost, "$0.0000"]
    assert figures == ["Completed", *want], row
    # Its ids are there too, folded: joined again, they read whole.
    assert wf_id in "".join(line.split("│")[1].strip() for line in lines if "│" in line)


async def test_status_of_unknown_run_fails(temporal_address: str) -> None:
    out = await steadfast("status", "research-nope-nope-x", "--address", temporal_address)
    assert out.returncode == 1
    assert "NotFound" in out.stdout


async def test_commands_fail_clearly_without_temporal() -> None:
    out = await steadfast("status", "--address", "127.0.0.1:1")
    assert out.returncode == 1
    assert "cannot connect to Temporal at 127.0.0.1:1" in out.stdout
    assert "--address" in out.stdout.split("cannot connect", 1)[1]  # the fix, named
    assert "Traceback" not in out.stderr
    # A port no address can have: the same one line, not a ValueError's traceback.
    out = await steadfast("status", "--address", "127.0.0.1:99999")
    assert out.returncode == 1
    assert "cannot connect to Temporal at 127.0.0.1:99999" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("amount", ["-3", "0", "nan", "lots"])
async def test_a_budget_that_is_no_amount_is_refused_before_connecting(amount: str) -> None:
    """It used to connect first, and answer with the run's refusal, if any."""
    out = await steadfast("budget", "research-any-run", "--max-usd", amount)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--max-usd" in out.stderr
    assert "Traceback" not in out.stderr


async def test_a_run_no_worker_polls_for_is_said_at_once(temporal_address: str) -> None:
    """``run --topic X`` without ``-f`` starts on the default agent's queue, which no
    worker may poll: the run would wait for ever, and ``status`` never said why."""
    queue = f"nobody-polls-{uuid.uuid4().hex[:8]}"
    topic = f"unpolled {uuid.uuid4().hex[:6]}"
    args = ["--topic", topic, "--task-queue", queue, "--address", temporal_address]
    out = await steadfast("run", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"no worker polls task queue {queue}" in " ".join(out.stdout.split())
    client = await Client.connect(temporal_address)
    async for wf in client.list_workflows(f"TaskQueue = '{queue}'"):
        await client.get_workflow_handle(wf.id).terminate("test cleanup")


async def test_status_lists_recent_runs(worker_queue: str, temporal_address: str) -> None:
    topic = f"listed {uuid.uuid4()}"
    common = ["-f", "examples/market-watch.yaml", "--topic", topic, "--task-queue", worker_queue]
    done = await steadfast("run", *common, "--address", temporal_address, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    out = await steadfast("status", "--limit", "50", "--address", temporal_address)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ids.workflow_id("research", "market-watch", topic) in out.stdout


async def test_mtls_flags_with_unreadable_files_fail_with_the_field(temporal_address: str) -> None:
    out = await steadfast(
        "status",
        "--address",
        temporal_address,
        "--tls-cert",
        "/nonexistent/tls.crt",
        "--tls-key",
        "/nonexistent/tls.key",
    )
    assert out.returncode == 2, out.stdout + out.stderr  # bad input, said in one line
    assert out.stderr.startswith("steadfast status: error: ")
    assert out.stderr.count("\n") == 1
    assert "temporal.tls.certFile" in out.stderr
