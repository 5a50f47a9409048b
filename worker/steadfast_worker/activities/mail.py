"""Activity ``send_email``: the review-request mail, at most once per run.

``send_email`` sends the review-request mail **at most once per run**, using the
database as the record:

0. Build the message (and render it as it will be sent). A message that cannot
   be built -- a header value with a line break, from a run started before the
   schema refused it -- fails the attempt here, before anything is claimed, so
   no claim is ever left for a mail that could not exist.
1. *Claim* the run's row in ``steadfast_emails``, keyed by workflow id and run id
   (insert ``claimed``; a row that already exists is not claimed again). A re-run
   of the same workflow id is a new run with a claim of its own, so it mails too.
2. Hand the message to the SMTP server.
3. Mark the row ``sent``.

If the claim finds an existing row, this is a retry or a repeat: ``sent`` means
the mail went out earlier, and the activity returns ``sent`` without sending.

**The edge case.** If the process dies (SIGKILL, node loss) or the connection
drops after step 2 began but before step 3 committed, the row stays ``claimed``
and nobody can know whether the SMTP server accepted the mail. The activity
never resends in that state: it returns ``email="unknown"``, which the workflow
puts in its result and ``status`` query (and ``steadfast status`` shows), so an
operator can check the mail server's log. Sending again would risk the
duplicate the guarantee rules out; losing the mail silently would be worse than
saying "unknown". When the mail certainly was not delivered -- anything that
fails before the message is handed over (connection, TLS or STARTTLS, certificate
check, login, even a timeout there) or an SMTP error reply refusing it -- the row
is marked ``failed`` and may be claimed again by a later attempt.
"""

from __future__ import annotations

import contextlib
import email.errors
import email.message
import ipaddress
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib.email import flatten_message
from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract import credentials
from steadfast_contract.activities import SEND_EMAIL, SendEmailInput, SendEmailOutput
from steadfast_worker import errors
from steadfast_worker.activities.base import ActivityBase
from steadfast_worker.activities.storage import ReportStore

SMTP_TIMEOUT_SECONDS = 30.0

#: Failures after which the mail was certainly not delivered. Timeouts and
#: disconnects are deliberately absent: after DATA they are ambiguous.
_REFUSED = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
)


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def smtp_target(url: str) -> dict[str, object]:
    """``aiosmtplib.send`` keyword arguments from ``smtp[s]://[user:pass@]host[:port]``.

    The user name and password are percent-decoded. A URL that cannot be read as
    written (an unencoded ``/ ? # @`` in the password, a bad port) raises a
    :class:`~steadfast_contract.credentials.CredentialError` that never quotes it.
    ``smtp://`` upgrades with STARTTLS when the server offers it; with a password and
    a host other than loopback it must (a server that offers none, or a network that
    strips the offer, gets no password in clear: the mail fails, saying so).
    """
    credentials.check_url(url, ("smtp", "smtps"), path_allowed=False)
    parts = urlsplit(url)
    secure = parts.scheme.lower() == "smtps"
    host = parts.hostname or ""
    must_upgrade = not secure and bool(parts.password) and not _loopback(host)
    return {
        "hostname": parts.hostname,
        "port": parts.port or (465 if secure else 25),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "use_tls": secure,
        "start_tls": False if secure else (True if must_upgrade else None),
        "timeout": SMTP_TIMEOUT_SECONDS,
    }


async def _not_delivered(
    store: ReportStore, workflow_id: str, run_id: str, err: Exception
) -> NoReturn:
    """Release the claim of a mail that certainly did not go out, and fail the attempt.

    A 5xx reply (a refused login or recipient) is permanent: retrying cannot help.
    """
    await store.mark_email(workflow_id, run_id, "failed", str(err)[:500])
    code = getattr(err, "code", 0)
    permanent = 500 <= code < 600
    raise ApplicationError(
        f"SMTP server refused the review email: {err}",
        type=errors.EMAIL_REJECTED if permanent else errors.EMAIL_FAILED,
        non_retryable=permanent,
    ) from None


def build_message(inp: SendEmailInput, sender: str, to: list[str]) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"[steadfast] Review requested: {inp.topic}"
    # Lets a mail server's log be matched to a run when the outcome is "unknown".
    msg["X-Steadfast-Workflow-Id"] = inp.workflow_id
    msg["X-Steadfast-Report-Id"] = inp.report_id
    approved = f"Approved for review by {inp.reviewer}.\n\n" if inp.reviewer else ""
    msg.set_content(
        f"A research report is ready for review.\n\n{approved}"
        f"Topic: {inp.topic}\nReport id: {inp.report_id}\nWorkflow: {inp.workflow_id}\n"
        f"Agent: {inp.namespace}/{inp.agent}\n\n{inp.summary}\n"
    )
    return msg


def _buildable(inp: SendEmailInput, sender: str, to: list[str]) -> email.message.EmailMessage:
    """The message, rendered once to prove it can be sent; a typed, permanent error if not."""
    try:
        message = build_message(inp, sender, to)
        flatten_message(message, utf8=True)
    except (ValueError, TypeError, email.errors.MessageError) as err:
        raise ApplicationError(
            f"the review email cannot be built (check the topic, notify.email.from and "
            f"notify.email.to): {err}",
            type=errors.MISCONFIGURED,
            non_retryable=True,
        ) from None
    return message


class MailActivities(ActivityBase):
    @activity.defn(name=SEND_EMAIL)
    async def send_email(self, inp: SendEmailInput) -> SendEmailOutput:
        async with self.tracked(SEND_EMAIL):
            return await self._send(inp)

    async def _send(self, inp: SendEmailInput) -> SendEmailOutput:
        attempt = activity.info().attempt
        cfg = self.config.notify.email
        if not cfg.to:
            return SendEmailOutput("skipped", "no recipients configured", attempt)
        url = self.env.get(cfg.smtp_url_env, "")
        try:
            target = smtp_target(url)
        except ValueError as err:
            raise ApplicationError(
                f"environment variable {cfg.smtp_url_env} (notify.email.smtpUrlEnv) {err}",
                type=errors.MISCONFIGURED,
                non_retryable=True,
            ) from None
        # Built before the claim: a claim is only ever taken for a mail that exists.
        message = _buildable(inp, cfg.from_, cfg.to)
        store = await self.store()
        # Input recorded before the run id was part of it: the run that scheduled this.
        run_id = inp.run_id or activity.info().workflow_run_id or ""
        if not await store.claim_email(inp.workflow_id, run_id, ", ".join(cfg.to)):
            status = await store.email_status(inp.workflow_id, run_id)
            if status == "sent":
                return SendEmailOutput("sent", "already sent by an earlier attempt", attempt)
            return SendEmailOutput(
                "unknown",
                "an earlier attempt claimed the email but never confirmed it; not resending "
                "(check the mail server's log for X-Steadfast-Workflow-Id)",
                attempt,
            )
        client = aiosmtplib.SMTP(**target)  # type: ignore[arg-type]
        try:
            await client.connect()  # TCP, TLS or STARTTLS, EHLO and login
        except (aiosmtplib.SMTPException, OSError) as err:
            # Whatever failed (a refused login, an unverifiable certificate, a
            # timeout), no mail had been handed over yet: certainly not delivered.
            client.close()
            await _not_delivered(store, inp.workflow_id, run_id, err)
        try:
            await client.send_message(message)
        except _REFUSED as err:
            client.close()
            await _not_delivered(store, inp.workflow_id, run_id, err)
        except BaseException:
            # Any other failure (timeout, disconnect mid-DATA) leaves the row claimed:
            # the outcome is unknown and a retry must not resend.
            client.close()
            raise
        await store.mark_email(inp.workflow_id, run_id, "sent")
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()  # the mail is accepted; a failed goodbye changes nothing
        client.close()
        return SendEmailOutput("sent", f"sent to {len(cfg.to)} recipient(s)", attempt)
