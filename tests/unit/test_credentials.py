"""Credentials parsed without being quoted, and scrubbed from what libraries say."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from temporalio.exceptions import ApplicationError

from steadfast_contract.config import WorkerConfig
from steadfast_contract.credentials import (
    REDACTED,
    CredentialError,
    ScrubbingFilter,
    chain_reveals,
    check_url,
    key_text,
    redacted,
    scrub,
    secret_parts,
)
from steadfast_worker import errors
from steadfast_worker.activities.base import ActivityBase
from steadfast_worker.activities.mail import smtp_target

pytestmark = pytest.mark.unit

SECRET = "QZKX/MNVR#WXJG@SRKM:ZQVN"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"smtp://bot:{SECRET}@127.0.0.1:25", "percent-encode"),
        ("smtp://bot:QZKX?MNVR@host", "percent-encode"),
        ("smtp://bot:QZ@KX@host", "more than one '@'"),
        ("smtp://bot:QZKX%zz@host", "%25"),
        ("smtp://bot:QZKX@host:QZKX", "port"),
        ("smtp://bot:QZKX@:25", "no host"),
        ("http://bot:QZKX@host", "smtp://"),
        ("", "empty"),
    ],
)
def test_a_url_that_cannot_be_read_is_refused_without_quoting_it(url: str, problem: str) -> None:
    with pytest.raises(CredentialError) as refused:
        smtp_target(url)
    assert problem in str(refused.value)
    assert "QZ" not in str(refused.value)


def test_a_percent_encoded_password_is_decoded() -> None:
    target = smtp_target("smtps://bot:QZKX%2FMNVR%23WX%40JG%3AZQ@mail.test:2465")
    assert target["password"] == "QZKX/MNVR#WX@JG:ZQ"
    assert (target["hostname"], target["port"], target["use_tls"]) == ("mail.test", 2465, True)


@pytest.mark.parametrize(
    ("url", "start_tls"),
    [
        # A password to a host elsewhere goes only over TLS: STARTTLS is required.
        ("smtp://bot:QZKX@mail.test:587", True),
        ("smtp://bot:QZKX@10.0.0.7:25", True),
        # Loopback (a relay beside the worker), or nothing to protect: if offered.
        ("smtp://bot:QZKX@127.0.0.1:2525", None),
        ("smtp://bot:QZKX@localhost:2525", None),
        ("smtp://bot:QZKX@[::1]:2525", None),
        ("smtp://mail.test:25", None),
        # Implicit TLS from the first byte.
        ("smtps://bot:QZKX@mail.test", False),
    ],
)
def test_a_password_leaves_the_host_only_over_tls(url: str, start_tls: bool | None) -> None:
    assert smtp_target(url)["start_tls"] is start_tls


def test_a_dsn_may_have_a_database_and_options_but_no_stray_at() -> None:
    check_url(
        "postgresql://u:p%2F@h1:5432,h2/db?sslmode=require", ("postgresql",), path_allowed=True
    )
    with pytest.raises(CredentialError):
        check_url(f"postgresql://u:{SECRET}@h:5432/db", ("postgresql",), path_allowed=True)


def test_a_dsn_whose_query_has_a_field_without_equals_is_refused_without_quoting_it() -> None:
    # asyncpg splits the query strictly and says "bad query field: 'MNVRWXJG'": the
    # piece of the password after its unencoded '&'.
    for dsn in ("postgresql://u@h/db?password=QZKX&MNVRWXJG", "postgresql://u@h/db?MNVRWXJG"):
        with pytest.raises(CredentialError) as refused:
            check_url(dsn, ("postgresql",), path_allowed=True)
        assert "%26" in str(refused.value)
        assert "MNVR" not in str(refused.value)
    check_url(
        "postgresql://u@h/db?password=QZKX%26MNVRWXJG&sslmode=require&",
        ("postgresql",),
        path_allowed=True,
    )


def test_secret_parts_hold_a_query_password_to_the_end_of_the_query() -> None:
    parts = secret_parts("postgresql://u@h/db?password=QZKX&MNVRWXJG")
    assert scrub("bad query field: 'MNVRWXJG'", parts) == f"bad query field: '{REDACTED}'"
    encoded = secret_parts("postgresql://u@h/db?sslmode=require&password=QZKX%26MNVR")
    assert "QZKX&MNVR" in encoded  # as a parser decodes it
    assert scrub("password 'QZKX&MNVR'", encoded) == f"password '{REDACTED}'"


def test_an_activity_given_a_dsn_with_a_stray_ampersand_fails_without_quoting_it() -> None:
    env = {"STEADFAST_POSTGRES_DSN": "postgresql://u@127.0.0.1:9/db?password=QZKX&MNVRWXJG"}
    base = ActivityBase(WorkerConfig(), env=env)
    with pytest.raises(ApplicationError) as refused:
        asyncio.run(base.store())  # refused before anything is dialed
    assert refused.value.type == errors.MISCONFIGURED
    assert "STEADFAST_POSTGRES_DSN" in refused.value.message
    final = errors.to_application_error(refused.value, secrets=base.secrets())
    assert "MNVR" not in final.message
    assert "QZKX" not in final.message


def test_secret_parts_are_the_password_or_the_whole_key() -> None:
    assert secret_parts("smtp://bot:QZ%2FKX@host:25") == ["QZ%2FKX", "QZ/KX"]
    assert secret_parts("postgresql://u@h/db?password=QZKXMN") == ["QZKXMN"]
    assert secret_parts("smtp://host:25") == []
    assert secret_parts("sk-ant-api03-QZKXMNVR\n") == ["QZKXMNVR"]
    # Too malformed to find where the password ends: all up to the last '@' is secret.
    assert secret_parts(f"postgresql://u:{SECRET}@h/db")[0] == SECRET
    assert secret_parts("smtp://QZKX/MN@h") == ["QZKX/MN", "QZKX/MN"]


def test_scrub_redacts_every_piece_of_four_characters_or_more() -> None:
    text = "port 'QZKX' then MNVR#W and QZK and ok"
    assert scrub(text, [SECRET]) == f"port '{REDACTED}' then {REDACTED} and QZK and ok"
    assert scrub(text, []) == text


def test_an_activity_failure_is_scrubbed_and_its_chain_cut() -> None:
    exc = ValueError(f"invalid literal for int() with base 10: '{SECRET[:4]}'")
    exc.__cause__ = KeyError("clean")
    err = errors.to_application_error(exc, secrets=[SECRET])
    assert SECRET[:4] not in err.message
    assert chain_reveals(exc, [SECRET])
    outer = RuntimeError("clean")
    outer.__cause__ = exc
    assert chain_reveals(outer, [SECRET])
    clean = ApplicationError("fine", type="X")
    assert errors.to_application_error(clean, secrets=[SECRET]) is clean


def test_credential_in_use_names_the_setting_and_not_the_value() -> None:
    setting = "environment variable DSN (storage.postgresDsnEnv)"
    dsn = "postgresql://u:QZKXMNVR@h/db"
    with pytest.raises(ApplicationError) as failed, errors.credential_in_use(setting, dsn):
        raise OSError("could not connect as u:QZKXMNVR@h")
    assert failed.value.message.startswith(setting)
    assert "QZKX" not in failed.value.message
    assert failed.value.__cause__ is None
    with pytest.raises(ApplicationError) as refused, errors.credential_in_use(setting, dsn):
        raise CredentialError("holds a '/'")
    assert refused.value.type == errors.MISCONFIGURED
    assert refused.value.non_retryable


def test_redacted_is_none_for_a_clean_error_and_clean_otherwise() -> None:
    assert redacted(RuntimeError("connection refused"), "QZKXMNVR") is None
    hidden = redacted(RuntimeError("invalid header b'QZKX\\nMNVR'"), "QZKX\nMNVR")
    assert hidden is not None
    assert "QZKX" not in str(hidden)
    assert "MNVR" not in str(hidden)


def test_the_log_filter_scrubs_messages_and_tracebacks() -> None:
    scrubbing = ScrubbingFilter(lambda: ["QZKXMNVR"])
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "sent %s", ("QZKXMNVR",), None)
    try:
        raise ValueError("bad header QZKXMNVR")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert scrubbing.filter(record)
    assert "QZKX" not in record.getMessage()
    assert record.exc_text is not None
    assert "QZKX" not in record.exc_text
    assert "bad header" in record.exc_text


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"tk-abc\n", "tk-abc"),  # kubectl create secret --from-file keeps the line break
        (b"  tk-abc\r\n", "tk-abc"),
        (b"tk-abc", "tk-abc"),
        (b"\n", None),
        (b"", None),
    ],
)
def test_a_key_is_read_without_its_line_break(raw: bytes, key: str | None) -> None:
    assert key_text(raw) == key


def test_an_application_error_raised_with_a_credential_in_use_is_not_its_own_cause() -> None:
    # A cause cycle makes the SDK fail to build the activity's failure ("maximum
    # recursion depth exceeded"), and the real error is never told.
    told = ApplicationError("the store cannot keep reports", type="Misconfigured")
    with (
        pytest.raises(ApplicationError) as info,
        errors.credential_in_use("storage.postgresDsnEnv", "postgresql://u:pw-1234567@h/db"),
    ):
        raise told
    assert info.value is told
    assert info.value.__cause__ is None
