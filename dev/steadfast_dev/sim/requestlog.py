"""The simulators' request log: what was asked, how often, and what it was answered.

Durability claims are claims about this log. "No LLM call that finished is paid
for twice" becomes: for every logical request, the number of responses *served*
(a complete 200, streamed to the end) is at most one, however many attempts
failed or were cut off when a worker died.

A logical request is identified by, in order of preference, the
``x-steadfast-request-key`` header, the ``idempotency-key`` header, or a stable
hash of the request body with volatile fields (``stream``, ``metadata``) removed,
so a streamed retry of a non-streamed call is the same logical request. The
turns of an agent's tool-use loop are distinct requests either way (the
conversation grows each turn); a page fetch is keyed by its path.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

Service = Literal["llm", "search", "pages"]
SERVICES: Final[tuple[Service, ...]] = ("llm", "search", "pages")
Outcome = Literal["pending", "served", "fault", "rejected", "aborted"]

#: Body fields that do not change what is being asked.
VOLATILE_FIELDS: Final = frozenset({"stream", "metadata"})
KEY_HEADERS: Final = ("x-steadfast-request-key", "idempotency-key")


def body_key(body: object) -> str:
    """Stable hash of a request body, ignoring volatile fields and key order."""
    if isinstance(body, Mapping):
        body = {k: v for k, v in body.items() if k not in VOLATILE_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def request_key(headers: Mapping[str, str], body: object) -> tuple[str, str]:
    """(key, source) for a request; source is the header name or ``body``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in KEY_HEADERS:
        value = lowered.get(name, "").strip()
        if value:
            return value, name
    return body_key(body), "body"


@dataclass
class Entry:
    """One attempt, as ``GET /_sim/log`` reports it."""

    seq: int
    service: Service
    key: str
    key_source: str
    attempt: int
    """1-based attempt number of this key since the fault plan last changed."""
    method: str
    path: str
    stream: bool
    summary: str
    """The first characters of the prompt or query, for humans reading the log."""
    started_at: float
    fault: str | None = None
    status: int | None = None
    outcome: Outcome = "pending"
    ended_at: float | None = None
    usage: dict[str, object] | None = None
    """The usage of the whole answer the model produced for this attempt."""
    billed: dict[str, object] | None = None
    """What this attempt is billed, as the real API bills it: the whole ``usage``
    when served; its input and the output tokens actually sent when a stream
    broke or its client left; nothing (None) for an error answer."""
    stop_reason: str | None = None
    """Why the model's answer stopped (``refusal`` for a refused one); None for an
    answer that is not the model's (an error, a search)."""


@dataclass
class RequestLog:
    """Every attempt since the last reset, and per-key attempt counters for the fault plan."""

    entries: list[Entry] = field(default_factory=list)
    _attempts: Counter[tuple[Service, str]] = field(default_factory=Counter)

    def begin(
        self,
        service: Service,
        key: str,
        key_source: str,
        *,
        method: str,
        path: str,
        stream: bool = False,
        summary: str = "",
    ) -> Entry:
        """Record the start of an attempt and number it."""
        self._attempts[(service, key)] += 1
        entry = Entry(
            seq=len(self.entries) + 1,
            service=service,
            key=key,
            key_source=key_source,
            attempt=self._attempts[(service, key)],
            method=method,
            path=path,
            stream=stream,
            summary=summary[:120],
            started_at=time.time(),
        )
        self.entries.append(entry)
        return entry

    @staticmethod
    def finish(entry: Entry, outcome: Outcome, status: int | None) -> None:
        """Record how an attempt ended."""
        entry.outcome = outcome
        entry.status = status
        entry.ended_at = time.time()

    def restart_attempts(self) -> None:
        """Number attempts from 1 again (a new fault plan applies from its first attempt)."""
        self._attempts.clear()

    def clear(self) -> None:
        """Forget everything."""
        self.entries.clear()
        self._attempts.clear()

    def served_counts(self, service: Service) -> dict[str, int]:
        """Key -> number of complete successful responses."""
        counts = Counter(
            e.key for e in self.entries if e.service == service and e.outcome == "served"
        )
        return dict(counts)

    def attempt_counts(self, service: Service) -> dict[str, int]:
        """Key -> number of attempts of any outcome."""
        return dict(Counter(e.key for e in self.entries if e.service == service))

    def to_json(self, service: str | None = None, key: str | None = None) -> dict[str, object]:
        """The log as ``GET /_sim/log`` returns it, optionally filtered."""
        picked = [
            asdict(e)
            for e in self.entries
            if (service is None or e.service == service) and (key is None or e.key == key)
        ]
        return {
            "entries": picked,
            "served": {s: self.served_counts(s) for s in SERVICES},
            "attempts": {s: self.attempt_counts(s) for s in SERVICES},
        }
