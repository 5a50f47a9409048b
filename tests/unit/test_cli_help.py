"""Every verb documents itself: ``steadfast <verb> --help`` works and names its flags."""

from __future__ import annotations

import argparse

import pytest

from steadfast_cli import main

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
