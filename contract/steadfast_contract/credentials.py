"""Credentials in messages: parse them without echoing them, and scrub what others echo.

No message Steadfast writes (workflow history, logs, events, status, metrics, CLI
output) may hold a secret or a piece of one (docs/design.md §3). Two places make
that true:

- **Parsing.** A URL whose password holds an unencoded ``/``, ``?``, ``#`` or ``@``
  splits in the wrong place, and the standard parsers then complain about a
  "port" or "host" that is really a piece of the password, quoting it.
  :func:`check_url` rejects such URLs first, with messages that name the problem
  and the fix (percent-encoding) and never quote the value.
- **Using.** Whatever a library raises while it uses a credential is passed
  through :func:`scrub` with the credential's secret parts (:func:`secret_parts`),
  which replaces every run of :data:`MIN_PIECE` or more characters found inside
  a secret. Shorter runs cannot be told apart from ordinary text; parsing errors
  therefore never quote anything at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Final
from urllib.parse import unquote, unquote_plus

#: The shortest piece of a secret that :func:`scrub` recognises.
MIN_PIECE: Final = 4

REDACTED: Final = "[redacted]"

_ENCODE_HINT: Final = (
    "percent-encode them in the user name and password (/ as %2F, ? as %3F, # as %23, @ as %40)"
)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class CredentialError(ValueError):
    """A credential that cannot be used as written; the message never quotes it."""


def _authority_end(rest: str) -> int:
    found = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    return min(found) if found else len(rest)


def check_url(url: str, schemes: tuple[str, ...], *, path_allowed: bool) -> str:
    """Check ``url`` is ``scheme://[user[:password]@]host[:port]...``; return its authority.

    ``path_allowed=False`` is for URLs that have nothing after the host (SMTP), where
    any ``/``, ``?`` or ``#`` can only come from an unencoded user name or password.
    Raises :class:`CredentialError` naming the problem, never quoting the value.
    """
    scheme, sep, rest = url.partition("://")
    if not url:
        raise CredentialError("is empty")
    if not sep or scheme.lower() not in schemes:
        raise CredentialError(
            "is not a URL of the expected form: it must start with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    end = _authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    if "#" in rest or "@" in tail or (not path_allowed and tail not in ("", "/")):
        raise CredentialError(
            "holds a '/', '?', '#' or '@' where the user name or password should end: "
            + _ENCODE_HINT
        )
    query = tail.partition("?")[2]
    if any(field and "=" not in field for field in query.split("&")):
        # asyncpg splits the query strictly and quotes a field it cannot read: the
        # rest of a ``password=`` value past an unencoded '&'.
        raise CredentialError(
            "has a query field without '=' (an unencoded '&' in a password?): "
            "percent-encode '&' in a password as %26"
        )
    userinfo, at, hostport = authority.rpartition("@")
    if at and "@" in userinfo:
        raise CredentialError(
            "holds more than one '@': percent-encode '@' in the user name and password as %40"
        )
    if _BAD_PERCENT.search(userinfo):
        raise CredentialError(
            "has a '%' in the user name or password that is not followed by two hex digits: "
            "percent-encode '%' as %25"
        )
    try:
        unquote(userinfo, errors="strict")
    except UnicodeDecodeError:
        raise CredentialError(
            "has a user name or password whose percent-encoding is not UTF-8"
        ) from None
    for host in hostport.split(","):
        name, port = _split_port(host)
        if not name:
            raise CredentialError("names no host")
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise CredentialError("has a port that is not a number from 1 to 65535")
    return authority


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):  # [IPv6]:port
        name, _, after = host.partition("]")
        return name[1:], after[1:] if after.startswith(":") else None
    name, colon, port = host.partition(":")
    return name, port if colon else None


def key_text(raw: bytes) -> str | None:
    """An API key as a mounted file or a Secret's value holds it, ``None`` if empty.

    Without the line break ``kubectl create secret --from-file`` keeps: the worker
    (reading the mounted file) and the operator (reading the Secret) must send the
    same key, and a trailing newline is not part of it.
    """
    return raw.decode().strip() or None


#: The public prefix of Anthropic keys (``sk-ant-api03-``): every key has it, so
#: redacting it would only mangle messages such as "invalid x-api-key".
_PUBLIC_KEY_PREFIX = re.compile(r"^sk-ant-[a-z]+[0-9]*-")


def secret_parts(value: str) -> list[str]:
    """What must never be echoed of a credential, in every spelling a message might use.

    Of a URL, the password (raw and percent-decoded) and any ``password=`` query
    value; of a URL too malformed to tell where the password ends, everything from
    the user name's end to the last ``@``. Anything else is a key, secret as a whole
    but for a public prefix.
    """
    value = value.strip()
    if "://" not in value:
        return [_PUBLIC_KEY_PREFIX.sub("", value)] if value else []
    rest = value.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    try:
        authority = check_url(value, (value.partition("://")[0].lower(),), path_allowed=True)
        password = authority.rpartition("@")[0].partition(":")[2]
    except CredentialError:
        # From the user name's end to the last '@', whatever lies between.
        password = userinfo.partition(":")[2] if ":" in userinfo else userinfo
    parts = [password, unquote(password)] if at and password else []
    query = rest.partition("?")[2].partition("#")[0]
    parts += [tail for tail in _query_password_tails(query) if tail not in parts]
    return parts


def _query_password_tails(query: str) -> list[str]:
    """Everything after each ``password=`` of ``query`` to its end, raw and decoded as a
    URL and as a form (``+`` a space, as libpq's and asyncpg's parsers read it): it
    holds the value, and a value holding an unencoded '&' is split by every parser,
    the piece after the '&' as secret as the rest."""
    tails: list[str] = []
    at = 0
    for field in query.split("&"):
        tail = query[at + 9 :]
        if field[:9].lower() == "password=" and tail:
            tails += (tail, unquote(tail), unquote_plus(tail))
        at += len(field) + 1
    return list(dict.fromkeys(tails))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every run of :data:`MIN_PIECE`+ characters from inside a secret redacted."""
    grams = {
        s[i : i + MIN_PIECE]
        for s in secrets
        for i in range(len(s) - MIN_PIECE + 1)
        if len(s) >= MIN_PIECE
    }
    if not grams:
        return text
    hidden = [False] * len(text)
    for i in range(len(text) - MIN_PIECE + 1):
        if text[i : i + MIN_PIECE] in grams:
            hidden[i : i + MIN_PIECE] = [True] * MIN_PIECE
    if not any(hidden):
        return text
    out = []
    for i, ch in enumerate(text):
        if not hidden[i]:
            out.append(ch)
        elif i == 0 or not hidden[i - 1]:
            out.append(REDACTED)
    return "".join(out)


def reveals(text: str, secrets: Iterable[str]) -> bool:
    """Whether ``text`` holds a piece of a secret that :func:`scrub` would redact."""
    return scrub(text, secrets) != text


def chain_reveals(exc: BaseException, secrets: Iterable[str]) -> bool:
    """Whether ``exc`` or an exception it was raised from holds a piece of a secret.

    Temporal records an error's ``__cause__`` chain in history and logs print it,
    so such a chain must be cut, not just the outermost message scrubbed.
    """
    secrets = list(secrets)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if reveals(str(current), secrets):
            return True
        current = current.__cause__ or current.__context__
    return False


def redacted(exc: BaseException, secret: str) -> RuntimeError | None:
    """A ``RuntimeError`` telling ``exc`` without ``secret``, or None if it never held a piece.

    For clients built from one credential (a Temporal API key): ``raise r from None``
    when this is not None, else re-raise ``exc`` as it was.
    """
    parts = secret_parts(secret)
    if not chain_reveals(exc, parts):
        return None
    return RuntimeError(f"{type(exc).__name__}: {scrub(str(exc), parts)}")


class ScrubbingFilter(logging.Filter):
    """A handler filter that scrubs secrets from every record, whoever logged it.

    Client libraries log at DEBUG what they were sent and what failed (an illegal
    header value quoted whole). The message and the traceback are rendered here,
    scrubbed, and the record carries only the result. ``secrets`` is called per
    record that could hold one, so credentials changed since start are covered.
    """

    def __init__(self, secrets: Callable[[], Iterable[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = list(self._secrets())
        message = record.getMessage()
        if reveals(message, secrets):
            record.msg, record.args = scrub(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and reveals(record.exc_text, secrets):
            record.exc_text = scrub(record.exc_text, secrets)
        return True


def scrub_logs(secrets: Callable[[], Iterable[str]]) -> Callable[[], None]:
    """Put a :class:`ScrubbingFilter` on every handler of the root logger; returns its undo."""
    handlers = list(logging.getLogger().handlers)
    scrubbing = ScrubbingFilter(secrets)
    for handler in handlers:
        handler.addFilter(scrubbing)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(scrubbing)

    return undo


class Change(Enum):
    """What a Temporal client connected with some credentials must do to use newer ones."""

    NONE = "none"
    API_KEY = "api key"
    """Only the API key differs: set it on the client."""
    RECONNECT = "reconnect"
    """The TLS material differs: only a new connection can present it."""


def rotation(
    current_tls: object, current_key: str | None, latest_tls: object, latest_key: str | None
) -> Change:
    """The change from the current credentials to the latest: the worker, following
    mounted files, and the operator, re-reading Secrets, decide it the same way."""
    if latest_tls != current_tls:
        return Change.RECONNECT
    if latest_key != current_key:
        return Change.API_KEY
    return Change.NONE
