"""Every verb documents itself: ``steadfast <verb> --help`` works and names its flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from steadfast_cli import main
from steadfast_worker.connection import temporal_config_from_args

pytestmark = pytest.mark.unit

#: Flags each verb must document (a subset; the point is that they are there).
EXPECTED_FLAGS: dict[str, list[str]] = {
    "dev": ["--file", "--state-dir", "--ui-port", "--chaos", "--no-ui", "--exit-when-done"],
    "worker": ["--config", "--task-queue", "--address", "--tls-cert", "--api-key-env"],
    "run": ["--file", "--topic", "--follow", "--wait", "--rerun", "--address", "--tls-cert"],
    "status": [
        "--file",
        "--watch",
        "--address",
        "--api-key-env",
        "--reports",
        "--state-dir",
        "WORKFLOW_ID",
    ],
    "report": ["ID", "--state-dir", "--file", "--config", "Exit status"],
    "approve": ["--reviewer", "--comment", "--reject", "--reason", "--tls-key", "WORKFLOW_ID"],
    "budget": ["--max-usd", "--max-usd-per-day", "--address", "WORKFLOW_ID"],
    "sim": ["--port", "--latency-ms", "--chunk-delay-ms", "--llm-429-rate", "--search-500-rate"],
    "operator": ["--kubeconfig", "--all-namespaces", "--metrics-port", "--health-port"],
    "plan": ["--file", "--worker-image", "--temporal-address", "--namespace", "Exit status"],
}


def verb_parser(verb: str) -> argparse.ArgumentParser:
    """The verb's parser as the dispatcher builds it, without loading the other verbs."""
    module = main._load(verb)
    parser = argparse.ArgumentParser(prog=f"steadfast {verb}", description=module.HELP)
    module.configure(parser)
    return parser


def test_every_verb_is_checked() -> None:
    assert set(EXPECTED_FLAGS) == set(main.VERBS)


@pytest.mark.parametrize("verb", list(main.VERBS))
def test_verb_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        verb_parser(verb).parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"steadfast {verb}" in out
    for flag in EXPECTED_FLAGS[verb]:
        assert flag in out, f"steadfast {verb} --help does not document {flag}"


def test_top_level_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for verb in main.VERBS:
        assert verb in out


def test_approve_requires_a_reviewer(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any connection is attempted.
    args = verb_parser("approve").parse_args(["wf-1", "--address", "127.0.0.1:1"])
    assert main._load("approve").run(args) == 2
    assert "--reviewer is required" in capsys.readouterr().err


def test_budget_requires_a_limit(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before any connection is attempted.
    args = verb_parser("budget").parse_args(["wf-1", "--address", "127.0.0.1:1"])
    assert main._load("budget").run(args) == 2
    assert "--max-usd" in capsys.readouterr().err


def test_run_without_topics_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = verb_parser("run").parse_args(["--address", "127.0.0.1:1"])
    assert main._load("run").run(args) == 2
    assert "no topics" in capsys.readouterr().err


@pytest.mark.parametrize(
    "topic", ["two\nlines", "tab\tinside", "line\u2028separator", "", "x" * 501]
)
def test_run_refuses_a_topic_the_schema_would_refuse(
    topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing is started: the address is never dialled.
    args = verb_parser("run").parse_args(["--topic", topic, "--address", "127.0.0.1:1"])
    assert main._load("run").run(args) == 2
    err = capsys.readouterr().err
    assert "--topic" in err
    assert "one line of 1 to 500 characters" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "some-id", "-f"],
        ["status", "--address", "127.0.0.1:1", "-f"],
        ["run", "--address", "127.0.0.1:1", "-f"],
        ["worker", "--config"],
        ["plan", "-f"],
    ],
    ids=["report", "status", "run", "worker", "plan"],
)
def test_a_manifest_that_is_not_utf8_is_refused_on_one_line(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to be a UnicodeDecodeError traceback (the audit)."""
    bad = tmp_path / "agent.yaml"
    bad.write_bytes(b"spec: \xff\xfe not utf-8\n")
    code = main.dispatch([*argv, str(bad)])
    err = capsys.readouterr().err
    assert code in (1, 2), err
    assert "not UTF-8 text" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "body",
    ["metadata: foo\nspec: {}\n", "metadata: {name: [1, 2]}\nspec: {topics: [a]}\n"],
    ids=["metadata-not-a-mapping", "name-not-a-string"],
)
def test_plan_refuses_a_malformed_metadata_on_one_line(
    tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``AttributeError`` and ``TypeError`` tracebacks before (the audit)."""
    manifest = tmp_path / "agent.yaml"
    manifest.write_text("apiVersion: steadfast.dev/v1alpha1\nkind: ResearchAgent\n" + body)
    assert main.dispatch(["plan", "-f", str(manifest)]) == 2
    assert "metadata.name (a string) and spec (a mapping) are required" in (capsys.readouterr().err)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_sim_refuses_a_port_out_of_range_on_one_line(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """99999 reached the socket and came back an ``OverflowError`` traceback (the audit)."""
    with pytest.raises(SystemExit) as exit_:
        verb_parser("sim").parse_args(["--port", port])
    assert exit_.value.code == 2
    assert "--port" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "env", "namespace"),
    [
        ([], None, "prod"),  # the agent's: its workers poll there
        (["--namespace", "staging"], None, "staging"),
        ([], "from-env", "from-env"),
        (["--namespace", "staging"], "from-env", "staging"),
    ],
)
def test_run_and_status_use_the_agents_namespace_unless_told_another(
    flags: list[str], env: str | None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --config FILE`` started its runs in ``default`` while the file's workers
    polled ``temporal.namespace``: nobody ever took them (the audit)."""
    if env is None:
        monkeypatch.delenv("TEMPORAL_NAMESPACE", raising=False)
    else:
        monkeypatch.setenv("TEMPORAL_NAMESPACE", env)
    for verb in ("run", "status"):
        args = verb_parser(verb).parse_args(flags)
        assert temporal_config_from_args(args, "prod").namespace == namespace
        assert temporal_config_from_args(args).namespace == (
            namespace if namespace != "prod" else "default"
        )
