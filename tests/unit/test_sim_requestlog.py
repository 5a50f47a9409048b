"""Request keys and the served/attempt counts the durability tests rely on."""

from __future__ import annotations

import argparse

import pytest

from steadfast_cli.commands import sim as sim_command
from steadfast_dev.sim.requestlog import RequestLog, body_key, request_key

pytestmark = pytest.mark.unit


def test_body_key_ignores_volatile_fields_and_key_order() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    streamed = {"stream": True, "metadata": {"user_id": "u"}, **dict(reversed(body.items()))}
    assert body_key(body) == body_key(streamed)
    assert body_key(body) != body_key({**body, "max_tokens": 6})


def test_headers_take_precedence_over_the_body() -> None:
    assert request_key({"X-Steadfast-Request-Key": "wf-1/act-2"}, {"a": 1}) == (
        "wf-1/act-2",
        "x-steadfast-request-key",
    )
    assert request_key({"Idempotency-Key": "abc"}, {"a": 1}) == ("abc", "idempotency-key")
    assert request_key({}, {"a": 1}) == (body_key({"a": 1}), "body")


def test_served_counts_only_complete_successes() -> None:
    log = RequestLog()
    first = log.begin("llm", "k", "body", method="POST", path="/v1/messages")
    log.finish(first, "fault", 429)
    second = log.begin("llm", "k", "body", method="POST", path="/v1/messages", stream=True)
    log.finish(second, "aborted", 200)
    third = log.begin("llm", "k", "body", method="POST", path="/v1/messages")
    log.finish(third, "served", 200)
    other = log.begin("search", "k", "body", method="GET", path="/search")
    log.finish(other, "served", 200)
    assert [first.attempt, second.attempt, third.attempt, other.attempt] == [1, 2, 3, 1]
    assert log.served_counts("llm") == {"k": 1}
    assert log.attempt_counts("llm") == {"k": 3}
    shown = log.to_json(service="llm")
    entries = shown["entries"]
    assert isinstance(entries, list)
    assert [e["outcome"] for e in entries] == ["fault", "aborted", "served"]


def test_restarting_attempts_keeps_the_log() -> None:
    log = RequestLog()
    log.begin("llm", "k", "body", method="POST", path="/")
    log.restart_attempts()
    assert log.begin("llm", "k", "body", method="POST", path="/").attempt == 1
    assert len(log.entries) == 2
    log.clear()
    assert log.entries == []


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sim_command.configure(parser)
    return parser.parse_args(list(argv))


def test_cli_flags_become_the_start_up_plans() -> None:
    config = sim_command.config_from_args(
        _args(
            "--port", "0", "--seed", "4", "--latency-ms", "20", "--chunk-delay-ms", "5",
            "--llm-429-rate", "0.25", "--llm-bad-json-rate", "0.1", "--retry-after", "2",
            "--search-api-key", "k", "--search-first-n", "2", "--search-first-kind", "529",
        )
    )  # fmt: skip
    assert (config.port, config.seed) == (0, 4)
    assert config.llm.rates == {"429": 0.25, "bad_json": 0.1}
    assert (config.llm.latency_ms, config.llm.chunk_delay_ms, config.llm.retry_after) == (20, 5, 2)
    assert config.search.sequence == ("529", "529")
    assert (config.search.api_key, config.search.chunk_delay_ms) == ("k", 0)


def test_cli_flags_set_the_agent_turns_and_page_links() -> None:
    config = sim_command.config_from_args(_args("--agent-turns", "20", "--page-links"))
    assert (config.llm.agent_turns, config.search.page_links) == (20, True)
    with pytest.raises(ValueError, match="agent_turns"):
        sim_command.config_from_args(_args("--agent-turns", "0"))


def test_cli_rejects_rates_that_cannot_be_probabilities() -> None:
    with pytest.raises(ValueError, match=r"--llm\.rates"):
        sim_command.config_from_args(_args("--llm-500-rate", "0.8", "--llm-529-rate", "0.8"))


def test_help_documents_every_fault_flag() -> None:
    parser = argparse.ArgumentParser()
    sim_command.configure(parser)
    text = parser.format_help()
    for flag in ("--host", "--port", "--latency-ms", "--chunk-delay-ms", "--retry-after",
                 "--seed", "--search-api-key", "--llm-429-rate", "--llm-hang-rate",
                 "--llm-timeout-rate", "--search-500-rate", "--search-bad-json-rate"):  # fmt: skip
        assert flag in text


def test_api_keys_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEADFAST_SIM_LLM_API_KEY", "from-env")
    config = sim_command.config_from_args(_args())
    assert (config.llm.api_key, config.search.api_key) == ("from-env", "")
    assert sim_command.config_from_args(_args("--llm-api-key", "flag")).llm.api_key == "flag"
