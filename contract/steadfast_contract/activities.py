"""The dataclasses in and out of each activity.

Like :mod:`steadfast_contract.models` these are recorded in workflow history, so
new fields always get defaults and nothing secret appears here: activities read
keys, DSNs and SMTP URLs from the worker's configuration and environment.
Kept free of I/O imports so the workflow sandbox can load it cheaply. No
``from __future__ import annotations`` here: the payload converter resolves
field types with ``get_type_hints`` inside the sandbox, where string
annotations naming other classes of this module do not resolve.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Final

from steadfast_contract.models import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    STEP_OF_PHASE,
    FetchRules,
    Phase,
    Pricing,
    ReportChunk,
    ToolAnswer,
)
from steadfast_contract.pricing import Usage

GENERATE_QUERIES = "generate_queries"
WEB_SEARCH = "web_search"
WEB_SEARCHES = "web_searches"
WRITE_REPORT = "write_report"
SAVE_REPORT = "save_report"
SEND_EMAIL = "send_email"
RECORD_RUN = "record_run"
DEEP_TURN = "deep_turn"
DEEP_TOOL = "deep_tool"

#: How long one attempt of an LLM activity (a streamed report may take minutes) may run.
LLM_START_TO_CLOSE: Final = timedelta(minutes=10)
#: How long one attempt of a search, save or mail activity may run.
IO_START_TO_CLOSE: Final = timedelta(minutes=2)
#: The longest any activity attempt may run. A worker told to stop waits this long
#: for the activities it is running (``worker.gracefulShutdown``), and the operator
#: gives its pods this plus a margin to exit, so a scale-down or a rollout never cuts
#: a call off (docs/design.md §7: Temporal's own default is to wait 0 s).
LONGEST_START_TO_CLOSE: Final = max(LLM_START_TO_CLOSE, IO_START_TO_CLOSE)

#: The pipeline step each workflow activity runs in (``RECORD_RUN`` is not one of them).
STEP_OF_ACTIVITY: Final[Mapping[str, int]] = MappingProxyType(
    {
        GENERATE_QUERIES: STEP_OF_PHASE[Phase.GENERATING_QUERIES],
        WEB_SEARCH: STEP_OF_PHASE[Phase.SEARCHING],
        WEB_SEARCHES: STEP_OF_PHASE[Phase.SEARCHING],
        WRITE_REPORT: STEP_OF_PHASE[Phase.WRITING],
        SAVE_REPORT: STEP_OF_PHASE[Phase.SAVING],
        SEND_EMAIL: STEP_OF_PHASE[Phase.EMAILING],
        DEEP_TURN: STEP_OF_PHASE[Phase.RESEARCHING],
        DEEP_TOOL: STEP_OF_PHASE[Phase.RESEARCHING],
    }
)


@dataclass
class LlmCall:
    """What the LLM part of an activity cost. Shared by every LLM activity's output."""

    model: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    """Spend of the calls whose output this activity used."""
    failed_cost_usd: float = 0.0
    """Spend of calls that were paid for but thrown away (re-asks, cut-off streams,
    earlier attempts of this activity)."""
    calls: int = 0
    """API calls that returned a response (the ones billed)."""


@dataclass
class RunBudget:
    """The run's budget as an LLM activity sees it, so it can check every request.

    docs/design.md §3: every request (first ask, re-ask, retry) is reserved before it
    is sent against what the run has really spent. The activity adds what it spent
    itself, earlier attempts included (carried in heartbeat details), to
    ``spent_usd`` and refuses a request that no longer fits with the non-retryable
    ``BudgetExhausted``.
    """

    spent_usd: float = 0.0
    """What the run had spent when the workflow scheduled this activity."""
    limit_usd: float = 0.0
    """The run's ``maxUSDPerRun``."""
    day_limit_usd: float = 0.0
    """The agent's ``maxUSDPerDay``, reserved from the day's ledger before each request
    (0: no ledger, as in activities scheduled before it existed)."""
    ledger: str = ""
    """Whose day's ledger (:func:`steadfast_contract.budget.ledger_key`)."""


@dataclass
class GenerateQueriesInput:
    topic: str
    count: int = 3
    model: str = DEFAULT_MODEL
    max_tokens: int = DEFAULT_MAX_TOKENS
    pricing: Pricing | None = None
    max_reasks: int = 2
    """Re-asks after unparsable output before failing with ``InvalidModelOutput``."""
    budget: RunBudget | None = None
    """None in activities scheduled before per-request checks existed: none is made."""


@dataclass
class GenerateQueriesOutput:
    queries: list[str]
    llm: LlmCall = field(default_factory=LlmCall)
    attempt: int = 1
    reasks: int = 0


@dataclass
class SearchResult:
    title: str
    url: str
    snippet: str = ""


@dataclass
class WebSearchInput:
    query: str
    max_results: int = 5
    model: str = DEFAULT_MODEL
    """Used only by provider ``anthropic-web-search``."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    pricing: Pricing | None = None
    budget: RunBudget | None = None
    """``anthropic-web-search``: the run's budget and the day's ledger the request is
    granted from (None in inputs recorded before searches were granted from them)."""


@dataclass
class WebSearchOutput:
    query: str
    results: list[SearchResult] = field(default_factory=list)
    provider: str = "http"
    llm: LlmCall | None = None
    """Set when the search ran through the LLM's server-side web search tool."""
    attempt: int = 1


@dataclass
class WebSearchesInput:
    """A pipeline run's whole search step (``http`` provider): every query, one activity.

    The queries are searched concurrently. A query that answered or failed for good
    is kept in the heartbeat details, so a retry (after a fault or a lost worker)
    searches only the ones still open, under the ``search`` retry policy.
    """

    queries: list[str]
    max_results: int = 5


@dataclass
class SearchFailure:
    """A query of :class:`WebSearchesInput` that failed for good."""

    query: str
    type: str
    message: str
    attempt: int = 1
    """The step's attempt on which it failed (each attempt searches every open query)."""


@dataclass
class WebSearchesOutput:
    """What the search step found.

    When a query failed for good and no query brought a result, the activity fails
    instead, with the first failed query's error, and its details' ``attempt``
    counts the step as one activity would: 1 plus every query's retries.
    """

    searches: list[WebSearchOutput] = field(default_factory=list)
    """The queries that answered, in the input's order."""
    failures: list[SearchFailure] = field(default_factory=list)


@dataclass
class WriteReportInput:
    topic: str
    results: list[SearchResult] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    max_tokens: int = DEFAULT_MAX_TOKENS
    pricing: Pricing | None = None
    budget: RunBudget | None = None
    """None in activities scheduled before per-request checks existed: none is made."""


@dataclass
class WriteReportOutput:
    markdown: str
    llm: LlmCall = field(default_factory=LlmCall)
    attempt: int = 1
    stop_reason: str = ""
    tail: ReportChunk | None = None
    """Where the streamed text the activity did not publish starts (at most its last
    fraction of a second, or the whole reply when it came at once); the workflow
    publishes it, which saves a signal and a workflow task per call. Its text is
    empty when the output holds the whole text (``markdown`` here, a deep turn's
    ``report``): the workflow takes it from there rather than history holding it
    twice. None when everything was published, as in older histories."""


@dataclass
class SaveReportInput:
    workflow_id: str
    run_id: str
    """With the workflow id, the key of the report's row: each run keeps its own."""
    report_id: str
    """Proposed id (from ``workflow.uuid4()``); a retried save finds its run's row,
    which keeps the id it was first given."""
    topic: str
    markdown: str
    agent: str = "local"
    namespace: str = "default"
    cost_usd: float = 0.0
    conversation: str = ""
    """``deep``: the run's transcript, deleted with the save (the loop is over and the
    report keeps its sources); empty for a pipeline run, or in an older input."""


@dataclass
class SaveReportOutput:
    report_id: str
    created: bool = True
    """False when the row already existed (a retried or repeated save)."""
    backend: str = "sqlite"
    attempt: int = 1


@dataclass
class SendEmailInput:
    workflow_id: str
    topic: str
    report_id: str
    summary: str = ""
    reviewer: str = ""
    agent: str = "local"
    namespace: str = "default"
    run_id: str = ""
    """The run whose mail this is (the claim is per workflow id and run id); empty in
    inputs recorded before it existed, where the activity uses the run that scheduled it."""


@dataclass
class SendEmailOutput:
    email: str
    """``sent``, ``skipped`` (no recipients) or ``unknown`` (claimed by an earlier
    attempt that never confirmed: the mail may or may not have been accepted)."""
    message: str = ""
    attempt: int = 1


@dataclass
class RecordRunInput:
    agent: str
    namespace: str
    phase: str
    cost_usd: float = 0.0
    budget: str = ""
    """With phase ``AwaitingBudget``: which budget paused the run (``run``/``day``)."""
    avoided_usd: float = 0.0
    """When the run ended: what resuming saved it (``RunStatus.avoided_usd``)."""
    model: str = ""
    """The run's model, the label the avoided spend is counted under."""


# -- the ``deep`` strategy (docs/deep-agent.md) -------------------------------------

#: The tools Claude is offered in a deep run.
TOOL_WEB_SEARCH = "web_search"


def search_ask(query: str) -> str:
    """The request a search through the model (``anthropic-web-search``) sends for
    ``query``: what its activity reserves, and the workflow before it."""
    return (
        "Search the web and summarise the most relevant findings "
        f"in a few sentences.\nTopic: {query}"
    )


TOOL_FETCH_PAGE = "fetch_page"
TOOL_RECORD_FINDING = "record_finding"


@dataclass
class ToolCall:
    """One ``tool_use`` block of a turn: what the workflow schedules (inputs are small)."""

    id: str
    name: str
    input: dict[str, str] = field(default_factory=dict)
    """String fields only (every tool's schema is strings), each cut to a bounded length;
    empty with ``problem`` set when the model's input broke the schema."""
    problem: str = ""


@dataclass
class DeepTurnInput:
    conversation: str
    """The transcript's key in the report store: the workflow id and its first run id,
    the same across continue-as-new, different for a re-run."""
    topic: str
    turn: int
    max_turns: int
    model: str = DEFAULT_MODEL
    max_tokens: int = DEFAULT_MAX_TOKENS
    pricing: Pricing | None = None
    budget: RunBudget | None = None
    answers: list[ToolAnswer] = field(default_factory=list)
    """The previous turn's results the workflow made (stored before the prompt is read)."""
    request_key: str = ""
    """``x-steadfast-request-key``: ``{workflow id}/turn{n}``, stable across attempts and
    continue-as-new (the activity id restarts with each run of the chain)."""
    prompt_chars: int = 0
    """The workflow's size of this turn's prompt, in the budget's characters: the
    conversation as the API counted it so far, and the newest tool results. The
    request is reserved at no less, whatever its own characters say."""


@dataclass
class DeepTurnOutput:
    stop_reason: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    report: str = ""
    """The reply's text when it called no tool (the final report); empty otherwise."""
    llm: LlmCall = field(default_factory=LlmCall)
    attempt: int = 1
    prompt_chars: int = 0
    """Characters of the request this turn sent (for the next turn's budget estimate)."""
    reused: bool = False
    """The reply was already in the transcript (an earlier attempt finished the call and
    was lost before reporting it): not asked again, not paid twice."""
    tail: ReportChunk | None = None
    """As :attr:`WriteReportOutput.tail`."""


@dataclass
class DeepToolInput:
    conversation: str
    turn: int
    call: ToolCall
    search_max_results: int = 5
    fetch: FetchRules = field(default_factory=FetchRules)
    model: str = DEFAULT_MODEL
    """Used only by search provider ``anthropic-web-search``."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    pricing: Pricing | None = None
    budget: RunBudget | None = None
    """As :attr:`WebSearchInput.budget`, for a ``web_search`` call."""


@dataclass
class DeepToolOutput:
    tool_use_id: str
    is_error: bool = False
    summary: str = ""
    """A short line for status and logs (the full result is in the transcript)."""
    chars: int = 0
    """Characters of the stored result as the budget counts them
    (:func:`~steadfast_contract.budget.token_chars`): what the next prompt grows by."""
    attempt: int = 1
    llm: LlmCall | None = None
    """Set when the search ran through the LLM's server-side web search tool."""
