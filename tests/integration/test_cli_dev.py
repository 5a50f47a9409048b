"""``steadfast dev`` end to end, as a subprocess: runs, chaos, and Ctrl-C leaving nothing behind.

Each test gives ``dev`` its own state directory and free ports, so it starts its
own dev server, simulator and worker exactly as a user's ``steadfast dev`` does.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from tests.support.stack import ROOT, cli

from steadfast_contract import ids
from steadfast_dev.processes import terminate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def dev_env() -> dict[str, str]:
    """No API key: ``steadfast dev`` must bring its own simulators."""
    env = dict(os.environ)
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("STEADFAST_POSTGRES_DSN", None)
    return env


def leftovers(state_dir: Path) -> list[str]:
    """Processes still running that belong to this ``steadfast dev`` (by state dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state_dir) in cmdline:
            found.append(f"{proc.pid}: {cmdline}")
    return found


def dev_until_done(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``steadfast dev --exit-when-done`` headless, on a free port, in ``state_dir``."""
    return cli(
        "dev",
        "--exit-when-done",
        "--no-ui",
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        *args,
        env=dev_env(),
    )


def test_dev_runs_the_example_and_prints_the_table(tmp_path: Path) -> None:
    out = dev_until_done(tmp_path, "--topic", "dev smoke topic", "--topic", "dev second topic")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Research runs" in out.stdout
    assert out.stdout.count("Completed") >= 2
    headers = (
        "Topic",
        "Workflow ID",
        "Phase",
        "Report ID",
        "LLM calls",
        "Retries",
        "Cost",
        "Saved",
    )
    for header in headers:
        assert header in out.stdout
    assert "research-research-market-watch-dev-smoke-topic" in out.stdout
    assert (tmp_path / "temporal.db").exists()
    assert (tmp_path / "reports.db").exists()
    assert leftovers(tmp_path) == []


def test_dev_chaos_resumes_without_repeating_llm_calls(tmp_path: Path) -> None:
    out = dev_until_done(tmp_path, "--chaos", "--topic", "chaos topic")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SIGKILLed the worker during Writing" in out.stdout
    assert "no finished LLM call was repeated" in out.stdout
    assert "after the kill" in out.stdout
    # What resuming saved, from the run's own status: the finished query call.
    saved = re.search(
        r"chaos topic: killed during call 2 of 2 \(write_report\); resumed; "
        r"1 finished call not repeated; \$(\d+\.\d{4}) not re-paid",
        out.stdout,
    )
    assert saved, out.stdout
    assert float(saved.group(1)) > 0
    assert leftovers(tmp_path) == []


def report_ids(out: str) -> list[str]:
    """The UUIDs (report ids; dev prints no run ids) of ``out``, in order."""
    return re.findall(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", out)


def test_a_stopped_devs_reports_are_read_from_its_state_dir(tmp_path: Path) -> None:
    """After ``dev --state-dir D`` ran a topic and stopped, ``status --reports`` looked
    in ./.steadfast/reports.db and found nothing; ``--state-dir D`` reads D's store,
    from any directory, with dev's Temporal gone (exit 1, the reports listed)."""
    state = tmp_path / "state"
    done = dev_until_done(state, "--topic", "state dir topic")
    assert done.returncode == 0, done.stdout + done.stderr
    (report_id,) = set(report_ids(done.stdout))
    assert f"--state-dir {state}" in done.stdout  # dev says how to read them
    wf_id = ids.workflow_id("research", "market-watch", "state dir topic")
    gone = ["--address", "127.0.0.1:1"]  # dev stopped its Temporal
    listed = cli("status", wf_id, "--reports", "--state-dir", str(state), *gone, env=dev_env())
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert "cannot connect to Temporal" in listed.stdout
    assert f"Reports of {wf_id}" in listed.stdout, listed.stdout
    assert report_id in listed.stdout.split(f"Reports of {wf_id}", 1)[1]
    # Named by manifest and topic, as dev named it: the same report.
    by_topic = cli(
        "status",
        "-f",
        "examples/market-watch.yaml",
        "--topic",
        "state dir topic",
        "--reports",
        "--state-dir",
        str(state),
        *gone,
        env=dev_env(),
    )
    assert report_id in by_topic.stdout, by_topic.stdout


def test_report_prints_a_saved_reports_text(tmp_path: Path) -> None:
    """No verb printed a report's text: a user opened SQLite. ``report ID`` prints the
    markdown the store holds, by report id or workflow id, with dev stopped."""
    state = tmp_path / "state"
    done = dev_until_done(state, "--topic", "printed report topic")
    assert done.returncode == 0, done.stdout + done.stderr
    (report_id,) = set(report_ids(done.stdout))
    assert f"steadfast report --state-dir {state}" in " ".join(done.stdout.split())
    db = sqlite3.connect(state / "reports.db")
    try:
        (markdown,) = db.execute(
            "SELECT markdown FROM steadfast_reports WHERE report_id = ?", (report_id,)
        ).fetchone()
    finally:
        db.close()
    assert markdown.startswith("#"), markdown[:200]
    wf_id = ids.workflow_id("research", "market-watch", "printed report topic")
    for wanted in (report_id, wf_id):
        out = cli("report", wanted, "--state-dir", str(state), env=dev_env())
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.rstrip("\n") == markdown.rstrip("\n")
        assert out.stderr == ""
    unknown = cli("report", "no-such-report", "--state-dir", str(state), env=dev_env())
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert unknown.stdout == ""
    assert unknown.stderr.startswith("steadfast report: error: no saved report has id")
    assert unknown.stderr.count("\n") == 1
    nowhere = cli("report", report_id, "--state-dir", str(tmp_path / "none"), env=dev_env())
    assert nowhere.returncode == 1, nowhere.stdout + nowhere.stderr
    assert "steadfast report: error: no report database at" in nowhere.stderr
    bad = cli("report", report_id, "-f", str(tmp_path / "missing.yaml"), env=dev_env())
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.startswith("steadfast report: error:")


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_leaves_nothing_running(tmp_path: Path) -> None:
    env = dev_env() | {"COLUMNS": "250"}
    cmd = [sys.executable, "-m", "steadfast_cli", "dev", "--port", "0", "--ui-port", "0"]
    cmd += ["--state-dir", str(tmp_path), "--topic", "interrupted topic"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        # As from a terminal. Started in the background by a shell without job control
        # (`make test &` in a script), the tests inherit SIGINT ignored, and so would
        # dev: Python then leaves it ignored and the Ctrl-C below would never arrive.
        preexec_fn=_interruptible,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "worker pid" in line or not line:
                break
        assert any("Temporal Web UI: http://127.0.0.1:" in x for x in lines), lines
        assert len(leftovers(tmp_path)) >= 2  # dev server and worker are up
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for part in ("server start-dev", "steadfast_cli sim", "steadfast_cli worker"):
            assert part in names, names
        # A second dev on the same state directory would share its SQLite file: refused.
        second = dev_until_done(tmp_path, "--topic", "second")
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.startswith("steadfast dev: error: another `steadfast dev`")
        assert f"another `steadfast dev` (pid {proc.pid}) uses" in second.stderr
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert "stopping" in rest
        # What Ctrl-C leaves, said; and the way out of the demo is no error.
        assert "go on at the next `steadfast dev --state-dir" in " ".join(rest.split()), rest
        assert proc.returncode == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:  # a failed test leaves no dev running: SIGTERM cleans up
            terminate(proc, grace=30)
    assert leftovers(tmp_path) == []


def test_dev_runs_the_deep_example_and_chaos_kills_it_late(tmp_path: Path) -> None:
    """``dev -f examples/deep-research.yaml --chaos`` (six turns here, to stay quick):
    live progress by turn, the worker killed during call 3 of 6, the run resumed."""
    manifest = (ROOT / "examples" / "deep-research.yaml").read_text()
    short = tmp_path / "deep.yaml"
    short.write_text(manifest.replace("maxTurns: 20", "maxTurns: 6"))
    out = dev_until_done(tmp_path / "state", "-f", str(short), "--chaos")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "turn 6/6 Completed" in out.stdout
    assert "SIGKILLed the worker during Researching" in out.stdout
    assert "the interrupted call done" in out.stdout
    assert "no finished LLM call was repeated" in out.stdout
    saved = re.search(
        r"killed during call 3 of 6 \(deep_turn\); resumed; "
        r"2 finished calls not repeated; \$(\d+\.\d{4}) not re-paid",
        out.stdout,
    )
    assert saved, out.stdout
    assert float(saved.group(1)) > 0
    # fetch_page read the simulator's loopback pages: dev names it in allowPrivateHosts.
    worker_log = (tmp_path / "state" / "logs" / "worker-1.log").read_text()
    read = re.findall(r'GET http://127\.0\.0\.1:\d+/pages/\S+ "HTTP/1\.1 200 OK"', worker_log)
    assert read, worker_log[-2000:]
    assert leftovers(tmp_path / "state") == []


def test_a_piped_deep_run_prints_a_line_per_turn(tmp_path: Path) -> None:
    """Piped (no live display), dev printed a line per phase change only, and a deep
    run stays Researching: turns 2 to 4 went unseen. Now each turn has its line, with
    the tool calls and the cost so far, ending at the table's cost."""
    manifest = (ROOT / "examples" / "deep-research.yaml").read_text()
    short = tmp_path / "deep.yaml"
    short.write_text(manifest.replace("maxTurns: 20", "maxTurns: 5"))
    # Turns slower than dev's 0.25 s poll, so none passes between two looks.
    out = dev_until_done(tmp_path / "state", "-f", str(short), "--chunk-delay-ms", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    line = re.compile(
        r"^Grid-scale battery storage in 2026: turn (\d)/5 (\w+) · (\d+) tool calls? · "
        r"\d+ retr(?:y|ies) · \$(\d+\.\d{4})$",
        re.MULTILINE,
    )
    seen = [
        (int(t), phase, int(tools), float(usd)) for t, phase, tools, usd in line.findall(out.stdout)
    ]
    turns = [x[0] for x in seen]
    assert turns == sorted(turns), seen
    assert set(turns) == {1, 2, 3, 4, 5}, out.stdout
    assert seen[-1][1] == "Completed"
    tools, costs = [x[2] for x in seen], [x[3] for x in seen]
    assert tools == sorted(tools)
    assert tools[-1] > 0
    assert costs == sorted(costs)
    assert f"${costs[-1]:.4f}" in out.stdout.split("Research runs", 1)[1]  # the table's cost
    assert "\x1b" not in out.stdout  # plain lines, no live display


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--topic", ""], "--topic ''"),
        (["--topic", "two\nlines"], "--topic"),
        (["--port", "70000"], "a port is 0 to 65535"),
        (["--chunk-delay-ms", "-5"], "a delay cannot be negative"),
        (["--state-dir", "/dev/null/state"], "--state-dir"),
    ],
    ids=["empty-topic", "topic-with-a-newline", "port", "delay", "state-dir"],
)
def test_bad_input_is_one_line_before_anything_starts_or_pays(
    tmp_path: Path, args: list[str], said: str
) -> None:
    """Each was a traceback, or (the topics) a run that paid for its calls and then
    failed; now a one-line error and exit code 2, with nothing started."""
    out = dev_until_done(tmp_path, *args)  # a --state-dir in args comes last, and wins
    assert out.returncode == 2, out.stdout + out.stderr
    assert said in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert leftovers(tmp_path) == []


def test_dev_serves_the_temporal_namespace_the_manifest_names(tmp_path: Path) -> None:
    """A manifest with ``temporal.namespace: research`` hung ``dev`` for good: the dev
    server served only ``default``, where the runs were started, and the worker,
    polling ``research``, exited at once (the audit). The dev server now serves the
    agent's namespace, and runs and worker meet there."""
    manifest = (ROOT / "examples" / "market-watch.yaml").read_text()
    doc = yaml.safe_load(manifest)
    doc["spec"].setdefault("temporal", {})["namespace"] = "research"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = dev_until_done(tmp_path / "state", "-f", str(path), "--topic", "a namespaced topic")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "namespace: research" in out.stdout
    assert "Completed" in out.stdout
    assert leftovers(tmp_path / "state") == []


def test_dev_says_so_when_its_worker_exits_instead_of_waiting_for_ever(tmp_path: Path) -> None:
    """A worker that exited (it could not start, or was killed) left ``dev`` showing its
    runs as pending for ever (the audit). It stops, exit 1, naming the worker's log."""
    env = dev_env() | {"COLUMNS": "250"}
    cmd = [sys.executable, "-m", "steadfast_cli", "dev", "--port", "0", "--no-ui"]
    cmd += ["--exit-when-done", "--chunk-delay-ms", "400"]
    cmd += ["--state-dir", str(tmp_path), "--topic", "a topic whose worker dies"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        pid = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not pid:
            line = proc.stdout.readline()
            if not line:
                break
            if found := re.search(r"worker pid (\d+) ", line):
                pid = int(found.group(1))
        assert pid, "dev never started its worker"
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
        assert "steadfast dev: error: the worker exited (code -9)" in err
        assert str(tmp_path / "logs" / "worker-1.log") in err
    finally:
        if proc.poll() is None:
            terminate(proc, grace=30)
    assert leftovers(tmp_path) == []
