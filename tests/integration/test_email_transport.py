"""The review email over real SMTP transports: login, implicit TLS and STARTTLS.

Each test runs a whole research run whose ``send_email`` activity talks to an
``aiosmtpd`` server configured like a real relay: login required, with
``smtps://`` (TLS from the first byte) or STARTTLS, its certificate from a
throwaway CA. The worker trusts that CA the way any Python process can, through
``SSL_CERT_FILE``; without it the certificate is refused and nothing is sent.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from tests.integration.conftest import SMTP_URL_ENV, HarnessFactory
from tests.support.ports import free_port
from tests.support.tlsproxy import TestPKI

from steadfast_worker import errors

pytestmark = [
    pytest.mark.integration,
    # The plaintext relays require a login without TLS on purpose.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

USER, PASSWORD = "report-bot", "s3cret/pw"
#: The password percent-encoded, as it must be inside a URL.
URL_PASSWORD = "s3cret%2Fpw"


def over_tls(server: Any) -> bool:
    """Whether this SMTP session's connection is encrypted (implicit TLS or STARTTLS)."""
    return server.transport.get_extra_info("ssl_object") is not None


@dataclass
class Relay:
    """What the relay saw: logins (user, accepted, over TLS) and delivered mail."""

    port: int
    logins: list[tuple[str, bool, bool]] = field(default_factory=list)
    delivered: list[tuple[Message, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        user = data.login.decode() if isinstance(data, LoginPassword) else ""
        with self._lock:
            self.logins.append((user, ok, over_tls(server)))
        # handled=False: aiosmtpd itself answers (235, or 535 for a refused login).
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.delivered.append((message, over_tls(server)))
        return "250 Message accepted for delivery"

    def url(self, scheme: str = "smtp", password: str = URL_PASSWORD) -> str:
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}"


def server_context(pki: TestPKI) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


def running_relay(**smtp: Any) -> Iterator[Relay]:
    relay = Relay(free_port())
    controller = Controller(
        relay,
        hostname="127.0.0.1",
        port=relay.port,
        authenticator=relay.authenticate,
        auth_required=True,
        **smtp,
    )
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()


@pytest.fixture
def plain_relay() -> Iterator[Relay]:
    """Login required, no TLS offered (so login over plaintext is allowed)."""
    yield from running_relay(auth_require_tls=False)


@pytest.fixture
def smtps_relay(pki: TestPKI) -> Iterator[Relay]:
    """TLS from the first byte (port-465 style), then login."""
    yield from running_relay(ssl_context=server_context(pki), auth_require_tls=False)


@pytest.fixture
def starttls_relay(pki: TestPKI) -> Iterator[Relay]:
    """Plaintext greeting, STARTTLS required before anything else, login only over TLS."""
    yield from running_relay(tls_context=server_context(pki), require_starttls=True)


@pytest.fixture
def trust(pki: TestPKI, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test CA trusted by this process's default TLS contexts."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    return pki.ca


def topic() -> str:
    return f"mail transport {uuid.uuid4().hex[:6]}"


def for_run(relay: Relay, workflow_id: str) -> list[tuple[Message, bool]]:
    return [
        (m, tls)
        for m, tls in relay.delivered
        if " ".join(str(m["X-Steadfast-Workflow-Id"]).split()) == workflow_id
    ]


async def test_login_with_a_percent_encoded_password(
    harness: HarnessFactory, plain_relay: Relay
) -> None:
    async with harness() as h:
        h.env[SMTP_URL_ENV] = plain_relay.url()
        t = topic()
        result = await h.run(t)
    assert result.status.email == "sent"
    assert plain_relay.logins == [(USER, True, False)]
    assert len(for_run(plain_relay, h.workflow_id(t))) == 1


async def test_a_wrong_password_fails_the_run_and_sends_nothing(
    harness: HarnessFactory, plain_relay: Relay
) -> None:
    async with harness() as h:
        h.env[SMTP_URL_ENV] = plain_relay.url(password="wrong")
        t = topic()
        with pytest.raises(WorkflowFailureError) as failed:
            await h.run(t)
        store = await h.store()
        assert await store.email_status(h.workflow_id(t), h.last_run_id) == "failed"
        await store.close()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == errors.EMAIL_REJECTED  # a 5xx reply: permanent, not retried
    assert "535" in cause.message
    # aiosmtplib tries each mechanism the relay offers (PLAIN, LOGIN) before giving up.
    assert plain_relay.logins
    assert set(plain_relay.logins) == {(USER, False, False)}
    assert for_run(plain_relay, h.workflow_id(t)) == []


@pytest.mark.parametrize(
    ("relay_fixture", "scheme"),
    [("smtps_relay", "smtps"), ("starttls_relay", "smtp")],
    ids=["smtps-verifies-the-relay", "smtp-upgrades-with-starttls"],
)
async def test_the_login_and_the_mail_go_over_verified_tls(
    harness: HarnessFactory,
    trust: Path,
    relay_fixture: str,
    scheme: str,
    request: pytest.FixtureRequest,
) -> None:
    """``smtps://`` from the first byte, or ``smtp://`` upgraded with STARTTLS before login."""
    relay: Relay = request.getfixturevalue(relay_fixture)
    async with harness() as h:
        h.env[SMTP_URL_ENV] = relay.url(scheme)
        t = topic()
        result = await h.run(t)
    assert result.status.email == "sent"
    assert relay.logins == [(USER, True, True)]
    [(_, over_tls)] = for_run(relay, h.workflow_id(t))
    assert over_tls


async def test_smtps_refuses_a_relay_it_cannot_verify(
    harness: HarnessFactory, smtps_relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with harness() as h:
        h.env[SMTP_URL_ENV] = smtps_relay.url("smtps")
        t = topic()
        with pytest.raises(WorkflowFailureError) as failed:
            await h.run(t)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value.cause)
    assert smtps_relay.logins == []  # the password never left the worker
    assert for_run(smtps_relay, h.workflow_id(t)) == []


async def test_a_relay_that_hangs_up_before_the_mail_releases_the_claim(
    harness: HarnessFactory,
) -> None:
    # Greets, reads the client's EHLO, and hangs up: a disconnect, like a timeout,
    # would be ambiguous after DATA, but here nothing was handed over yet, so the
    # mail is certainly not delivered and may be sent by a later attempt.
    hang_up = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        hang_up.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = hang_up.accept()
                with conn:
                    conn.settimeout(5)
                    conn.sendall(b"220 relay.test ESMTP\r\n")
                    conn.recv(1024)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        async with harness() as h:
            h.env[SMTP_URL_ENV] = f"smtp://127.0.0.1:{hang_up.getsockname()[1]}"
            t = topic()
            with pytest.raises(WorkflowFailureError) as failed:
                await h.run(t)
            store = await h.store()
            assert await store.email_status(h.workflow_id(t), h.last_run_id) == "failed"
            assert await store.claim_email(h.workflow_id(t), h.last_run_id, "reviewer@example.test")
            await store.close()
    finally:
        stop.set()
        server.join()
        hang_up.close()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == errors.EMAIL_FAILED


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.hostile
async def test_a_message_that_cannot_be_built_leaves_no_claim(
    harness: HarnessFactory, plain_relay: Relay, backend: str, request: pytest.FixtureRequest
) -> None:
    """The claim is taken only for a message that exists.

    The schema refuses a topic with a line break, but a run started before it did (or
    by a client that bypasses it) still carries one into the Subject header, which the
    email library refuses to build. Built after the claim, that failure left the claim
    behind for good: no later attempt or re-run could ever send the mail.
    """
    dsn = request.getfixturevalue("postgres_dsn") if backend == "postgres" else ""
    async with harness(postgres_dsn=dsn) as h:
        h.env[SMTP_URL_ENV] = plain_relay.url()
        t = f"{topic()}\nBcc: everyone@example.test"
        with pytest.raises(WorkflowFailureError) as failed:
            await h.run(t)
        wf = h.workflow_id(t)
        store = await h.store()
        try:
            assert await store.count_reports(wf) == 1  # the paid-for report is kept
            assert (
                await store.email_status(wf, h.last_run_id) is None
            )  # and nothing claims its mail
        finally:
            await store.close()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == errors.MISCONFIGURED
    assert cause.non_retryable
    assert "cannot be built" in cause.message
    assert plain_relay.logins == []  # refused before any connection to the relay
    assert for_run(plain_relay, wf) == []
