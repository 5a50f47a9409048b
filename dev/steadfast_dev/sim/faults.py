"""The simulators' fault plan: which fault, if any, the nth attempt of a request gets.

Tests need two kinds of misbehaviour from the stand-in services. Soak runs and
``steadfast dev --chaos`` want *rates* ("5 % of calls answer 429"), reproducible
from a seed. Integration tests want *exact* sequences ("the first two attempts of
each logical request fail with 429, the third succeeds") so they can assert the
number of attempts and the metrics that follow. Both live here as pure functions
of (plan, seed, request key, attempt number): the decision for a given attempt
does not depend on the order in which concurrent requests happened to arrive.

Attempt numbers are counted per logical request key (see
:mod:`steadfast_dev.sim.requestlog`) since the plan was last changed, so a test
that installs ``first_n=2`` sees its own first two attempts fail even if the same
request was served earlier in the session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Final, Literal, get_args

FaultKind = Literal[
    "429", "500", "529", "timeout", "hang", "400", "401", "bad_json", "stream_error", "disconnect"
]  # fmt: skip

#: Every fault kind, in the order rates are laid out on the unit interval.
FAULT_KINDS: Final[tuple[FaultKind, ...]] = get_args(FaultKind)

#: Faults the services shape themselves, because what they look like depends on the
#: answer: ``bad_json`` breaks the output; ``stream_error`` ends a stream with an
#: ``overloaded_error`` event (a non-streamed call gets 529, search 500);
#: ``disconnect`` drops the connection (mid-stream, or before any answer).
SERVICE_FAULTS: Final[frozenset[FaultKind]] = frozenset({"bad_json", "stream_error", "disconnect"})

#: The most turns the simulated agent can be asked to play.
MAX_AGENT_TURNS: Final = 500

#: Fault kinds answered with an HTTP error status, and that status.
ERROR_STATUS: Final[Mapping[FaultKind, int]] = {
    "429": 429,
    "500": 500,
    "529": 529,
    "400": 400,
    "401": 401,
}


@dataclass(frozen=True)
class ServicePlan:
    """How one simulated service (``llm``, ``search`` or ``pages``) behaves."""

    rates: Mapping[FaultKind, float] = field(default_factory=dict)
    """Probability of each fault kind per attempt; they must sum to at most 1."""

    sequence: tuple[FaultKind, ...] = ()
    """Faults for attempts 1..len(sequence) of every logical request, in order.

    ``first_n=2, kind="429"`` in the JSON form is shorthand for ``("429", "429")``.
    Attempts past the sequence fall through to ``rates``."""

    scope: Literal["key", "service"] = "key"
    """What ``sequence`` counts: attempts of each logical request (``key``), or all
    requests to the service that pass ``match`` since the plan was set
    (``service``: "the next two query-generation calls fail", whatever their keys)."""

    match: str = ""
    """When set, faults apply only to requests whose prompt or query contains this
    text (case-insensitive), so a test can target one step of the workflow."""

    retry_after: float = 1.0
    """Seconds sent in the ``retry-after`` header of a 429 (and 529) answer."""

    timeout_s: float = 30.0
    """How long a ``timeout`` fault stalls before answering 504; set it above the
    client's timeout so the client gives up first."""

    latency_ms: int = 0
    """Delay before the response starts."""

    stream_cut: float = 0.5
    """Where a ``stream_error`` or ``disconnect`` strikes a streamed answer: the
    fraction of its text deltas sent before the fault (0.9 cuts it at 90 %)."""

    chunk_delay_ms: int = 0
    """Delay between streamed chunks (and, summed, extra time for a non-streamed
    answer), so a test can kill a worker in the middle of a call."""

    api_key: str = ""
    """When set, requests must present this key or get 401."""

    answer_bytes: int = 0
    """When set, a search answer to a matching request is padded to at least this
    many bytes (its first result's snippet grows), so a test can send a 50 MB body;
    a matching page (``pages``) is exactly this many bytes long."""

    search_result_tokens: int = 5000
    """``llm`` only: input tokens a server-side web search's results add to its request's
    bill (five results of about 1,000 tokens), as the real API bills the results the
    model reads as input of the same request."""

    agent_turns: int = 6
    """``llm`` only: how many turns the simulated tool-use agent plays -- turns
    1..N-1 call tools, turn N writes the report (see :mod:`steadfast_dev.sim.agent`)."""

    agent_finishes_when_asked: bool = True
    """``llm`` only: whether the simulated agent heeds a request to finish (a text
    block in the newest user message saying "this is your last turn") by writing its
    report, as Claude does, even while tools are offered; false plays a model that
    calls tools regardless, so a worker's fallback can be tested."""

    page_links: bool = False
    """``search`` only: results link to the simulator's own pages
    (``http://<the simulator's address>/pages/...``) instead of external-looking
    ``https://`` addresses, so an agent's ``fetch_page`` stays on loopback."""

    context_tokens: int = 0
    """``llm`` only: the model's context window; a request whose input and ``max_tokens``
    together exceed it is refused with 400, as the real API refuses it. 0: no limit."""

    token_density: float = 1.0
    """``llm`` only: the tokens the model makes of a request's input, per token of the
    rule of thumb (:func:`steadfast_dev.sim.content.estimate_tokens`). 1.0 counts input
    as the rule does; 1.6 plays input that tokenizes worse than four characters a token
    (code, URLs, numbers, random strings), so a worker's own estimate of a prompt falls
    short of what the API counts, bills and holds against the window. Output is counted
    by the rule."""

    says: str = ""
    """Hostile text, for hostile-input tests. ``llm``: a paragraph the simulated model
    writes into every report it writes (after the summary), as a real model repeats
    what a page it read told it to say. ``search``: text appended to the first
    result's snippet, as an engine indexed it from such a page."""

    answer: str = ""
    """For hostile-output tests. ``llm``: the text of every matching answer, in place
    of the simulated one, as a model writes what a page told it to: a query list's, a
    summary's or a report's whole text; an agent turn that calls tools says it before its
    calls (which it makes as planned). ``search``: the title, snippet and host name of
    every result of a matching answer."""

    content_type: str = ""
    """``pages`` only: the Content-Type of matching pages instead of ``text/html``;
    a type that is not text gets a binary body (``image/png`` starts with the PNG
    signature)."""


def draw(seed: int, key: str, attempt: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, key, attempt)."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def matches(plan: ServicePlan, text: str) -> bool:
    """Whether the plan's faults apply to a request with this prompt or query."""
    return not plan.match or plan.match.lower() in text.lower()


def choose_fault(
    plan: ServicePlan, *, seed: int, key: str, attempt: int, text: str, ordinal: int = 0
) -> FaultKind | None:
    """The fault for the ``attempt``-th (1-based) attempt of request ``key``, or None.

    ``ordinal`` is the request's 1-based position among the service's matching
    requests since the plan was set; it indexes ``sequence`` when ``scope`` is
    ``service``.
    """
    if not matches(plan, text):
        return None
    position = ordinal if plan.scope == "service" else attempt
    if 1 <= position <= len(plan.sequence):
        return plan.sequence[position - 1]
    point = draw(seed, key, attempt)
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += plan.rates.get(kind, 0.0)
        if point < edge:
            return kind
    return None


def _as_kind(value: object, where: str) -> FaultKind:
    text = str(value)
    if text not in FAULT_KINDS:
        raise ValueError(f"{where}: unknown fault kind {value!r}; expected one of {FAULT_KINDS}")
    return text


def _as_number(value: object, where: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: must be >= {minimum}, got {value!r}")
    return float(value)


def _rates(value: object, where: str) -> dict[FaultKind, float]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object of fault kind -> rate")
    rates = {_as_kind(k, where): _as_number(v, f"{where}.{k}") for k, v in value.items() if v != 0}
    if any(rate > 1.0 for rate in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"{where}: rates must each be within [0, 1] and sum to at most 1")
    return rates


_PLAIN_FIELDS: Final = {
    "retry_after",
    "timeout_s",
    "latency_ms",
    "chunk_delay_ms",
    "stream_cut",
    "answer_bytes",
    "agent_turns",
    "context_tokens",
    "search_result_tokens",
    "token_density",
}
#: Settings that are not faults: ``clear`` keeps them.
_KEPT_ON_CLEAR: Final = (
    "api_key",
    "agent_turns",
    "agent_finishes_when_asked",
    "page_links",
    "context_tokens",
    "search_result_tokens",
    "token_density",
)
_KNOWN_KEYS: Final = {f.name for f in fields(ServicePlan)} | {"first_n", "kind", "clear"}


def update_plan(base: ServicePlan, data: Mapping[str, object], where: str) -> ServicePlan:
    """Apply the JSON form of a plan on top of ``base``; raises ValueError naming the field.

    Keys: ``rates`` (object kind -> probability), ``sequence`` (list of kinds),
    ``first_n`` + ``kind`` (shorthand for a sequence), ``scope``, ``match``, ``retry_after``,
    ``timeout_s``, ``latency_ms``, ``chunk_delay_ms``, ``stream_cut``, ``answer_bytes``,
    ``agent_turns``, ``agent_finishes_when_asked``, ``page_links``, ``content_type``,
    ``says``, ``answer``, ``context_tokens``, ``search_result_tokens``, ``token_density``,
    ``api_key``, and
    ``clear`` (true: start from a plan with no faults and no latency instead of ``base``;
    the API key, the context window, the searches' billing, the token density and the
    agent's and the pages' settings are kept).
    Keys not given keep their value from ``base``.
    """
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    if data.get("clear") is True:
        plan = ServicePlan(**{name: getattr(base, name) for name in _KEPT_ON_CLEAR})
    else:
        plan = base
    changes: dict[str, object] = {}
    if "rates" in data:
        changes["rates"] = _rates(data["rates"], f"{where}.rates")
    if "sequence" in data:
        seq = data["sequence"]
        if not isinstance(seq, list):
            raise ValueError(f"{where}.sequence: expected a list of fault kinds")
        changes["sequence"] = tuple(_as_kind(k, f"{where}.sequence") for k in seq)
    if "first_n" in data:
        count = int(_as_number(data["first_n"], f"{where}.first_n"))
        kind = _as_kind(data.get("kind", "500"), f"{where}.kind")
        changes["sequence"] = (kind,) * count
    elif "kind" in data:
        raise ValueError(f"{where}.kind: only meaningful together with first_n")
    for name in _PLAIN_FIELDS & set(data):
        number = _as_number(data[name], f"{where}.{name}")
        whole = name.endswith(("_ms", "_bytes", "_turns", "_tokens"))
        changes[name] = int(number) if whole else number
    if "agent_turns" in data:
        turns = _as_number(data["agent_turns"], f"{where}.agent_turns", minimum=1)
        if turns > MAX_AGENT_TURNS or turns != int(turns):
            raise ValueError(
                f"{where}.agent_turns: expected a whole number within 1..{MAX_AGENT_TURNS}"
            )
    for name in ("page_links", "agent_finishes_when_asked"):
        if name in data:
            if not isinstance(data[name], bool):
                raise ValueError(f"{where}.{name}: expected true or false")
            changes[name] = data[name]
    if "token_density" in data:
        density = _as_number(data["token_density"], f"{where}.token_density")
        if not 0.1 <= density <= 10.0:
            raise ValueError(f"{where}.token_density: must be within [0.1, 10]")
    if "stream_cut" in data and _as_number(data["stream_cut"], f"{where}.stream_cut") > 1.0:
        raise ValueError(f"{where}.stream_cut: must be a fraction within [0, 1]")
    if "scope" in data:
        if data["scope"] not in ("key", "service"):
            raise ValueError(f"{where}.scope: expected 'key' or 'service'")
        changes["scope"] = data["scope"]
    for name in ("match", "api_key", "content_type", "says", "answer"):
        if name in data:
            if not isinstance(data[name], str):
                raise ValueError(f"{where}.{name}: expected a string")
            changes[name] = data[name]
    return replace(plan, **changes)  # type: ignore[arg-type]


def plan_to_json(plan: ServicePlan) -> dict[str, object]:
    """The JSON form of a plan, as ``GET /_sim/faults`` shows it (the API key masked)."""
    return {
        "rates": dict(plan.rates),
        "sequence": list(plan.sequence),
        "scope": plan.scope,
        "match": plan.match,
        "retry_after": plan.retry_after,
        "timeout_s": plan.timeout_s,
        "latency_ms": plan.latency_ms,
        "chunk_delay_ms": plan.chunk_delay_ms,
        "stream_cut": plan.stream_cut,
        "answer_bytes": plan.answer_bytes,
        "agent_turns": plan.agent_turns,
        "context_tokens": plan.context_tokens,
        "search_result_tokens": plan.search_result_tokens,
        "token_density": plan.token_density,
        "agent_finishes_when_asked": plan.agent_finishes_when_asked,
        "page_links": plan.page_links,
        "content_type": plan.content_type,
        "says": plan.says,
        "answer": plan.answer,
        "api_key": "***" if plan.api_key else "",
    }
