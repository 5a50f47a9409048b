"""Configuration validation: a bad configuration fails at start, naming the field."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from steadfast_cli.commands import worker as worker_command
from steadfast_contract.config import ConfigError, WorkerConfig, load_config, parse_config
from steadfast_contract.models import Pricing, RetryPolicySpec, RunSettings
from steadfast_contract.starter import research_input
from steadfast_contract.starter import settings_from_config as run_settings
from steadfast_worker.worker import missing_secrets

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"model": {"maxTokens": 0}}, "model.maxTokens"),
        ({"model": {"name": ""}}, "model.name"),
        ({"search": {"provider": "http", "endpoint": ""}}, "endpoint"),
        ({"search": {"provider": "bing"}}, "search.provider"),
        ({"budget": {"maxUSDPerRun": 0}}, "budget.maxUSDPerRun"),
        ({"worker": {"gracefulShutdown": "soon"}}, "worker.gracefulShutdown"),
        ({"worker": {"maxConcurrentActivities": 0}}, "worker.maxConcurrentActivities"),
        ({"retryPolicies": {"llm": {"maximumAttempts": -1}}}, "retryPolicies.llm.maximumAttempts"),
        (
            {"retryPolicies": {"search": {"initialInterval": "10s", "maximumInterval": "1s"}}},
            "search: maximumInterval",
        ),
        ({"temporal": {"tls": {"certFile": "c.pem"}}}, "temporal.tls"),
        ({"modle": {}}, "modle"),
        ({"notify": {"email": {"from": "a@b.c\nBcc: x@y.z"}}}, "notify.email.from"),
        ({"notify": {"email": {"to": ["a@b.c\u000bx"]}}}, "notify.email.to.0"),
    ],
)
def test_bad_config_names_the_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert field in str(info.value)


def test_unpriced_model_fails_at_start_naming_pricing() -> None:
    cfg = parse_config({"model": {"name": "gateway-model"}})
    with pytest.raises(ConfigError, match=r"model\.pricing"):
        run_settings(cfg)
    priced = parse_config(
        {"model": {"name": "gateway-model", "pricing": {"inputPerMTok": 1, "outputPerMTok": 2}}}
    )
    # Cache rates left out are derived from the input price, as Anthropic prices them.
    assert run_settings(priced).pricing == Pricing(1.0, 2.0, 0.1, 1.25)


def test_settings_carry_the_resolved_price_and_policies() -> None:
    cfg = parse_config(
        {
            "agent": "market-watch",
            "namespace": "research",
            "model": {"name": "claude-haiku-4-5-20251001", "maxTokens": 500},
            "budget": {"maxUSDPerRun": 0.25},
            "notify": {"requireApproval": True},
            "retryPolicies": {"llm": {"maximumAttempts": 2}},
            "worker": {"heartbeatTimeout": "4s"},
        }
    )
    inp = research_input(cfg, "topic")
    s = inp.settings
    assert (inp.agent, inp.namespace) == ("market-watch", "research")
    assert s.pricing == Pricing(1.0, 5.0, 0.10, 1.25)
    assert (s.max_tokens, s.max_usd_per_run, s.require_approval) == (500, 0.25, True)
    assert s.retry_policies.llm == RetryPolicySpec(1.0, 2.0, 60.0, 2)
    assert s.heartbeat_timeout_seconds == 4.0


def test_settings_say_whether_the_run_has_anyone_to_mail() -> None:
    # A run without recipients decides "skipped" itself, without a send_email activity.
    assert not run_settings(parse_config({})).mail_recipients
    mailed = parse_config({"notify": {"email": {"to": ["a@example.test"], "from": "s@x.test"}}})
    assert run_settings(mailed).mail_recipients
    # Inputs recorded before the field existed asked the activity: the default does too.
    assert RunSettings().mail_recipients


def test_load_config_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    worker_command.configure(parser)
    return parser.parse_args(list(argv))


def test_worker_verb_exits_2_on_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("model:\n  maxTokens: 0\n")
    assert worker_command.run(_args("--config", str(path))) == 2
    assert "model.maxTokens" in capsys.readouterr().err


def test_connection_flags_override_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    monkeypatch.delenv("TEMPORAL_NAMESPACE", raising=False)
    cfg = parse_config({"temporal": {"address": "file:7233", "namespace": "fromfile"}})
    kept = worker_command.apply_overrides(cfg, _args())
    assert kept.temporal.address == "file:7233"
    changed = worker_command.apply_overrides(
        cfg, _args("--address", "flag:7233", "--task-queue", "tq-1")
    )
    assert changed.temporal.address == "flag:7233"
    assert changed.temporal.namespace == "fromfile"
    assert changed.task_queue == "tq-1"
    assert isinstance(changed, WorkerConfig)


def test_certificate_flags_replace_a_mounted_secret_dir() -> None:
    cfg = parse_config({"temporal": {"tls": {"secretDir": "/etc/steadfast/temporal-tls"}}})
    assert worker_command.apply_overrides(cfg, _args()).temporal.tls == cfg.temporal.tls
    flags = _args("--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-server-name", "t.local")
    tls = worker_command.apply_overrides(cfg, flags).temporal.tls
    assert (tls.secret_dir, tls.cert_file, tls.key_file, tls.ca_file) == ("", "c.pem", "k.pem", "")
    assert tls.server_name == "t.local"


def test_missing_secrets_are_named() -> None:
    cfg = parse_config({"notify": {"email": {"to": ["a@example.test"]}}})
    warnings = missing_secrets(cfg, {})
    assert any("ANTHROPIC_API_KEY (model.apiKeyEnv)" in w for w in warnings)
    assert any("STEADFAST_SMTP_URL (notify.email.smtpUrlEnv)" in w for w in warnings)
    env = {"ANTHROPIC_API_KEY": "k", "STEADFAST_SMTP_URL": "smtp://127.0.0.1:25"}
    assert missing_secrets(cfg, env) == []
