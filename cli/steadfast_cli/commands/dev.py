"""``steadfast dev``: the whole product on one machine, with one command.

Starts the Temporal dev server (SQLite state in ``--state-dir``, Web UI on
``--ui-port``), the LLM and search simulators when no ``ANTHROPIC_API_KEY`` is
set, and a worker process; runs the topics of a ResearchAgent manifest with a
live progress display and ends with a table of the runs. ``--chaos`` SIGKILLs the
worker while a report is being written (a deep agent's: during call 17 of 20),
starts a new one, and shows from the simulator's request log that the run resumed
without paying twice for any LLM call that had finished, then what that saved each
interrupted run ("killed during call 17 of 20 (deep_turn); resumed; 16 finished
calls not repeated; $0.1310 not re-paid"). Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from steadfast_cli import argtypes, display
from steadfast_cli.commands import _sandbox
from steadfast_cli.display import RunsView, progress_line, progressed, saved_lines
from steadfast_cli.errors import refuse, say
from steadfast_cli.safetext import shown
from steadfast_contract import agentfile, spec, starter
from steadfast_contract.config import (
    DEV_STATE_DIR,
    ConfigError,
    WorkerConfig,
    dev_reports_path,
)
from steadfast_contract.models import Phase

if TYPE_CHECKING:
    # Imported when the verb runs: production images do not install the sandbox.
    from steadfast_dev import chaos, embedded

HELP = (
    "run a ResearchAgent locally: embedded Temporal, simulators when no API key, a worker, "
    "live progress"
)

DEFAULT_MANIFEST = "examples/market-watch.yaml"
#: Where the example lives in a source checkout, when the command runs elsewhere.
_REPO_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

#: Phases where the dev display stops waiting: a run waiting for a human is done for now.
_SETTLED = {Phase.AWAITING_APPROVAL.value, Phase.AWAITING_BUDGET.value}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--file", default=DEFAULT_MANIFEST, help="ResearchAgent manifest to run"
    )
    parser.add_argument(
        "--topic", action="append", default=[], help="topic to research instead of the manifest's"
    )
    parser.add_argument(
        "--state-dir",
        default=DEV_STATE_DIR,
        help="directory for the dev server's SQLite file, reports, worker configs and logs;"
        " give the same --state-dir to `steadfast status --reports` and `steadfast report`"
        " to read its reports",
    )
    parser.add_argument(
        "--port",
        type=argtypes.port_number,
        default=7233,
        help="Temporal frontend port (0: a free one)",
    )
    parser.add_argument(
        "--ui-port",
        type=argtypes.port_number,
        default=8233,
        help="Temporal Web UI port (0: a free one)",
    )
    parser.add_argument("--no-ui", action="store_true", help="run the dev server headless")
    parser.add_argument(
        "--sim",
        action="store_true",
        help="use the LLM simulator even when ANTHROPIC_API_KEY is set",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=argtypes.delay_ms,
        default=20,
        help="simulator delay between streamed chunks, so progress is visible",
    )
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="SIGKILL the worker mid-run (while the report is written; a deep agent's during "
        "call 17 of 20), start another, and prove from the simulator's request log that no "
        "finished LLM call was repeated (uses the LLM simulator even with an API key)",
    )
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit after the table instead of serving the Web UI until Ctrl-C",
    )


def _manifest_path(name: str) -> Path:
    path = Path(name)
    if not path.exists() and name == DEFAULT_MANIFEST:
        path = _REPO_EXAMPLES / Path(name).name
    return path


def _port(wanted: int) -> int:
    """The wanted port when free; otherwise a free one, so two dev stacks can coexist."""
    from steadfast_dev import embedded

    if wanted and embedded.port_free(wanted):
        return wanted
    return embedded.free_port()


def run(args: argparse.Namespace) -> int:
    if not _sandbox.installed():
        return _sandbox.refuse("dev")
    from steadfast_dev import embedded

    console = display.console()
    try:
        manifest = agentfile.load_manifest(_manifest_path(args.file))
        agent = agentfile.agent_from_manifest(manifest)
        starter.settings_from_config(agent.config)  # an unpriced model fails here, not mid-run
    except ConfigError as err:
        return refuse("dev", err)
    for topic in args.topic:
        problem = spec.topic_problem(topic)
        if problem:  # the manifest's own rule: refused before anything is paid for
            return refuse("dev", f"--topic {topic!r}: {problem}")
    topics = list(dict.fromkeys(args.topic)) or list(agent.topics)
    if not topics:
        return refuse("dev", "the manifest has no spec.topics; give --topic")
    state_dir = Path(args.state_dir).resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return refuse("dev", f"--state-dir {state_dir}: {err.strerror}")
    # The simulator's request log is what proves --chaos; it needs the LLM simulator.
    llm_sim = embedded.use_llm_simulator(os.environ, args.sim or args.chaos)
    chunk_flags = ["--chunk-delay-ms", str(max(args.chunk_delay_ms, 40 if args.chaos else 0))]
    options = embedded.StackOptions(
        state_dir=state_dir,
        port=_port(args.port),
        ui_port=0 if args.no_ui else _port(args.ui_port),
        llm_sim=llm_sim,
        search_sim=agent.config.search.provider == "http",
        sim_flags=chunk_flags,
        metrics=True,
        namespace=agent.config.temporal.namespace,
    )
    return asyncio.run(_dev(args, console, agent.config, topics, options))


async def _dev(
    args: argparse.Namespace,
    console: Console,
    cfg: WorkerConfig,
    topics: list[str],
    options: embedded.StackOptions,
) -> int:
    from steadfast_dev import chaos, embedded
    from steadfast_dev.devserver import DevServerError

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        # SIGTERM (or a closing terminal) must clean up exactly like Ctrl-C.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
    stack = embedded.Stack(options)
    try:
        console.print(f"starting Temporal dev server (state in {options.state_dir}) ...")
        try:
            await stack.start()
        except embedded.StateDirBusyError as err:
            return refuse("dev", err)
        except (DevServerError, RuntimeError, OSError) as err:
            say("dev", f"the embedded stack did not start: {err}")
            return 1
        console.print(f"Temporal: {stack.address}   namespace: {shown(cfg.temporal.namespace)}")
        if stack.ui_url:
            console.print(f"Temporal Web UI: [link={stack.ui_url}]{stack.ui_url}[/link]")
        if stack.sim_url:
            what = "LLM and search" if options.llm_sim else "search"
            console.print(f"{what} simulator: {stack.sim_url}  (log: {stack.sim_url}/_sim/log)")
        wcfg = stack.worker_config(cfg)
        deep = cfg.research.strategy == "deep"
        if deep and stack.sim_url:
            # The simulated model takes the agent's turns; its results link to its own pages.
            await stack.sim_admin.set_faults(_deep_plans(cfg, options))
        worker = stack.start_worker(wcfg)
        console.print(
            f"worker pid {worker.pid} on task queue {shown(wcfg.task_queue)}, "
            f"metrics http://127.0.0.1:{wcfg.worker.metrics_port}/metrics"
        )
        started = [await starter.start_topic(stack.client, wcfg, t, rerun=True) for t in topics]
        chaos_task = None
        if args.chaos:
            chaos_task = asyncio.create_task(
                chaos.crash_during(
                    stack.client,
                    stack.sim_admin,
                    started[0].workflow_id,
                    (Phase.RESEARCHING if deep else Phase.WRITING).value,
                    worker,
                    lambda: stack.start_worker(wcfg),
                    turn=_chaos_turn(cfg) if deep else 0,
                )
            )
        try:
            rows = await _watch(console, stack, started, chaos_task)
        except WorkersGoneError as err:
            say("dev", err)
            console.print(shown(err.tail), highlight=False)
            return 1
        console.print(RunsView(rows))
        code = (
            0 if all(r.phase in {"Completed", Phase.AWAITING_APPROVAL.value} for r in rows) else 1
        )
        for r in rows:
            if r.phase == Phase.AWAITING_APPROVAL.value:
                console.print(
                    f"awaiting approval: steadfast approve {shown(r.workflow_id)} --reviewer YOU "
                    f"--address {stack.address}"
                )
            elif r.phase == Phase.AWAITING_BUDGET.value:
                flag = "--max-usd-per-day" if "daily budget" in r.message else "--max-usd"
                console.print(
                    f"awaiting budget ({shown(r.message)}): steadfast budget "
                    f"{shown(r.workflow_id)} {flag} N --address {stack.address}"
                )
            elif r.message and r.phase != "Completed":
                console.print(f"[yellow]{shown(r.workflow_id)}:[/yellow] {shown(r.message)}")
        if chaos_task is not None:
            killed = len(stack.workers) > 1 or not worker.alive()
            report = await _chaos_outcome(chaos_task, killed)
            if isinstance(report, str):
                console.print(f"[yellow]chaos[/yellow]: not run: {shown(report)}")
                code = 1
            else:
                _print_chaos(console, report)
                _print_saved(console, chaos.closing_rows(rows, report))
                if not report.held:
                    code = 1
        state = options.state_dir
        console.print(f"reports in {dev_reports_path(state)}; logs in {state / 'logs'}")
        console.print(
            f"read one: steadfast report --state-dir {state} REPORT_ID (or a workflow id); "
            f"list a run's: steadfast status --reports --state-dir {state} WORKFLOW_ID"
        )
        if not args.exit_when_done:
            console.print("serving the Web UI; Ctrl-C stops everything")
            await asyncio.Event().wait()
        return code
    except (asyncio.CancelledError, KeyboardInterrupt):
        console.print(
            f"stopping ... runs not finished are kept in {options.state_dir}, and go on at "
            f"the next `steadfast dev --state-dir {options.state_dir}`"
        )
        return 0  # Ctrl-C is how the demo is left
    finally:
        stack.stop()


class WorkersGoneError(RuntimeError):
    """Every worker of the stack exited while runs were left (outside ``--chaos``'s gap
    between the kill and the replacement): nothing would ever finish them. ``tail``:
    the end of the last worker's log, which says why."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


async def _chaos_outcome(
    task: asyncio.Task[chaos.CrashReport], killed: bool
) -> chaos.CrashReport | str:
    """What ``--chaos`` did, or why it did not: the first run ended (or stopped to wait
    for a person or a budget) before the step it kills in. ``killed``: whether it has
    killed the worker (its checks then go on after the runs end, and are waited for)."""
    if not task.done() and not killed:
        # Every run finished or waits: the step the chaos waits for will not come.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return "the first run finished or stopped to wait before the step chaos kills in"
    try:
        return await task
    except (RuntimeError, TimeoutError) as err:
        return str(err)


def _workers_gone(stack: embedded.Stack) -> WorkersGoneError | None:
    """Why no worker is left to finish the runs, or None while one is alive."""
    if not stack.workers or any(w.alive() for w in stack.workers):
        return None
    last = stack.workers[-1]
    return WorkersGoneError(
        f"the worker exited (code {last.popen.returncode}) and no run can finish; "
        f"its log is {last.log_path}",
        last.log_tail(),
    )


async def _watch(
    console: Console,
    stack: embedded.Stack,
    started: list[starter.Started],
    chaos_task: asyncio.Task[chaos.CrashReport] | None,
) -> list[starter.RunRow]:
    """Live progress until every run is finished (or waits for a human)."""
    rows = {s.workflow_id: starter.RunRow(s.topic, s.workflow_id, "Pending") for s in started}
    t0 = time.monotonic()
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            for s in started:
                if rows[s.workflow_id].terminal:
                    continue
                row = await starter.describe_run(stack.client, s.workflow_id, s.topic)
                # While no worker answers queries (the chaos gap), keep the last known row.
                if row.phase == "Running":
                    continue
                if progressed(rows[s.workflow_id], row) and not console.is_terminal:
                    # No live display in a log or a pipe: one line per phase change, and
                    # per turn of a deep run, instead.
                    console.print(f"{shown(s.topic)}: {progress_line(row)}")
                rows[s.workflow_id] = row
            lines = [
                Text.from_markup(f"[bold]{shown(r.topic)}[/bold]  {progress_line(r)}")
                for r in rows.values()
            ]
            lines.append(Text(f"elapsed {time.monotonic() - t0:.1f}s", style="dim"))
            if chaos_task is not None:
                lines.append(Text(_chaos_state(stack, chaos_task), style="yellow"))
            live.update(Group(*lines))
            if all(r.terminal or r.phase in _SETTLED for r in rows.values()):
                return list(rows.values())
            in_chaos_gap = chaos_task is not None and not chaos_task.done()
            gone = None if in_chaos_gap else _workers_gone(stack)
            if gone is not None:
                raise gone
            await asyncio.sleep(0.25)


def _deep_plans(cfg: WorkerConfig, options: embedded.StackOptions) -> dict[str, object]:
    """Simulator plans for a deep agent: as many turns as it may take, pages on loopback."""
    flags = options.sim_flags
    delay = int(flags[flags.index("--chunk-delay-ms") + 1]) if "--chunk-delay-ms" in flags else 0
    plans: dict[str, object] = {"search": {"page_links": True}}
    if options.llm_sim:
        plans["llm"] = {"agent_turns": cfg.research.max_turns, "chunk_delay_ms": delay}
    return plans


def _chaos_turn(cfg: WorkerConfig) -> int:
    """Where ``--chaos`` kills a deep run's worker: late, so there is much to not repeat
    (call 17 of 20)."""
    return max(1, cfg.research.max_turns - 3)


def _chaos_state(stack: embedded.Stack, task: asyncio.Task[chaos.CrashReport]) -> str:
    if task.done():
        return "chaos: done"
    alive = [w for w in stack.workers if w.alive()]
    if len(stack.workers) == 1:
        return "chaos: waiting for the report to be written, then SIGKILL the worker"
    return f"chaos: worker killed; replacement pid {alive[-1].pid if alive else '-'} resuming"


def _print_chaos(console: Console, r: chaos.CrashReport) -> None:
    console.print(f"[bold]chaos[/bold]: SIGKILLed the worker during {r.phase} (step {r.step}).")
    console.print(
        f"  LLM calls completed before the kill: {r.served_before}; "
        f"in flight at the kill: {r.interrupted}"
    )
    if r.retry_after_s is not None:
        console.print(f"  interrupted call retried by the new worker after {r.retry_after_s:.1f}s")
    if r.resume_s is not None and r.phase == Phase.RESEARCHING.value:
        console.print(f"  run resumed; the interrupted call done {r.resume_s:.1f}s after the kill")
    elif r.resume_s is not None:
        console.print(f"  run resumed and finished step {r.step} {r.resume_s:.1f}s after the kill")
    if r.repeated:
        console.print(f"  [red]repeated LLM calls:[/red] {r.repeated}")
    else:
        console.print(
            f"  [green]no finished LLM call was repeated[/green] "
            f"(simulator request log; final phase {r.final_phase})"
        )


def _print_saved(console: Console, rows: list[starter.RunRow]) -> None:
    """Each interrupted run: where, and what resuming did not pay again (its own status)."""
    for row in rows:
        for line in saved_lines(row, verb="killed"):
            console.print(f"  {shown(row.topic)}: [green]{line}[/green]")
