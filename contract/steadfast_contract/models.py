"""The dataclasses that cross the workflow boundary.

Everything here is recorded in Temporal's event history, so it is the wire
contract between the workflow, its starters (``steadfast run``, ``steadfast dev``,
the operator) and old histories replayed by new code. Rules that follow from
that: one dataclass per workflow, signal, update and query; new fields always get
defaults; nothing secret ever appears here (API keys are read from the
environment inside activities).

No ``from __future__ import annotations``, as in :mod:`.activities`: the payload
converter calls ``typing.get_type_hints`` on every conversion, and string
annotations are compiled again each time (3x the cost of converting a
``ResearchInput``), so a class is defined after the classes its fields name.
"""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from temporalio.contrib.workflow_streams import WorkflowStreamState

from steadfast_contract.phases import STEP_OF_PHASE as STEP_OF_PHASE  # re-exported
from steadfast_contract.phases import TOTAL_STEPS as TOTAL_STEPS  # re-exported
from steadfast_contract.phases import Phase as Phase  # re-exported

DEFAULT_MODEL: Final = "claude-sonnet-4-6"
"""The model a ResearchAgent calls unless ``spec.model.name`` says otherwise."""
DEFAULT_MAX_TOKENS: Final = 2000
"""Output tokens per call unless ``spec.model.maxTokens`` says otherwise."""
DEFAULT_MAX_USD_PER_RUN: Final = 1.0
"""A run's budget unless ``spec.budget.maxUSDPerRun`` says otherwise."""
DEFAULT_SAVE_TIMEOUT_SECONDS: Final = 7 * 24 * 3600.0
"""``storage.saveTimeout``'s default: a paid report waits a week for its store to come back."""
DEFAULT_CONTEXT_TOKENS: Final = 200_000
"""``model.contextTokens``' default: the context window of the Claude models this release
prices (prompt plus output)."""
DEFAULT_TRANSCRIPT_RETENTION_SECONDS: Final = 24 * 3600.0
"""``storage.transcriptRetention``'s default: a run that ended without a report keeps
its transcript a day after it closed, to find out why it ended."""
DEFAULT_APPROVAL_TIMEOUT_SECONDS: Final = 7 * 24 * 3600.0
"""How long a run waits for review unless ``spec.notify.approvalTimeout`` says otherwise."""
DEFAULT_MAX_USD_PER_DAY: Final = 50.0
"""An agent's daily budget unless ``spec.budget.maxUSDPerDay`` says otherwise."""
DEFAULT_BUDGET_PAUSE_SECONDS: Final = 24 * 3600.0
"""How long a run stopped by a budget waits for more unless ``spec.budget.pauseTimeout`` says."""
DEFAULT_MAX_TURNS: Final = 20
"""A deep run's LLM turns unless ``spec.research.maxTurns`` says otherwise."""
DEFAULT_FETCH_MAX_BYTES: Final = 2_000_000
DEFAULT_FETCH_TIMEOUT_SECONDS: Final = 20.0


@dataclass
class RetryPolicySpec:
    """A retry policy as the user writes it; durations in seconds.

    ``maximum_attempts`` 0 means unlimited, as in Temporal.
    """

    initial_interval_seconds: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: float | None = None
    maximum_attempts: int = 0


@dataclass
class RetryPolicies:
    """One retry policy per activity class. Defaults are the seed's patterns.

    These defaults are the only place they are written: the CRD shows them, the
    worker layers a spec's overrides over them, and old histories replay with them.
    """

    llm: RetryPolicySpec = field(
        default_factory=lambda: RetryPolicySpec(1.0, 2.0, 60.0, 5),
    )
    search: RetryPolicySpec = field(
        default_factory=lambda: RetryPolicySpec(5.0, 2.0, None, 3),
    )
    database: RetryPolicySpec = field(
        default_factory=lambda: RetryPolicySpec(0.5, 1.5, None, 10),
    )
    email: RetryPolicySpec = field(
        default_factory=lambda: RetryPolicySpec(1.0, 2.0, None, 1),
    )


@dataclass
class Pricing:
    """USD per million tokens for one model."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float
    cache_write_per_mtok: float
    """A cache write that lives 5 minutes (the default ``ttl``)."""
    cache_write_1h_per_mtok: float = 0.0
    """A cache write that lives an hour (``"ttl": "1h"``); 0 means twice the input rate."""


@dataclass
class FetchRules:
    """What ``fetch_page`` may read (``spec.research.tools.fetchPage``)."""

    allow_domains: list[str] = field(default_factory=list)
    deny_domains: list[str] = field(default_factory=list)
    max_bytes: int = DEFAULT_FETCH_MAX_BYTES
    timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS
    allow_private_hosts: list[str] = field(default_factory=list)
    """Hosts that may resolve to a non-public address (loopback, private, CGNAT,
    unique-local); any other host must resolve to public addresses only."""


@dataclass
class RunSettings:
    """The non-secret settings a run needs to make deterministic decisions.

    They travel in the workflow input (not read from the environment) because
    the workflow must decide budgets and retry policies identically on replay.
    """

    model: str = DEFAULT_MODEL
    max_tokens: int = DEFAULT_MAX_TOKENS
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    """The model's context window (``model.contextTokens``); a deep run finishes within it."""
    pricing: Pricing | None = None
    max_usd_per_run: float = DEFAULT_MAX_USD_PER_RUN
    require_approval: bool = False
    approval_timeout_seconds: float = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    """How long the run waits in ``AwaitingApproval`` before it ends ``ApprovalExpired``."""
    query_count: int = 3
    retry_policies: RetryPolicies = field(default_factory=RetryPolicies)
    heartbeat_timeout_seconds: float = 3.0
    search_provider: str = "http"
    """``http`` or ``anthropic-web-search``; the latter is an LLM call the budget covers."""
    search_max_results: int = 5
    max_output_reasks: int = 2
    """Re-asks when the model's query list does not parse, before ``InvalidModelOutput``."""
    budget_pause_seconds: float = DEFAULT_BUDGET_PAUSE_SECONDS
    """How long a run the budget stopped waits in ``AwaitingBudget`` (0: it ends at once)."""
    max_usd_per_day: float = 0.0
    """The agent's daily budget, granted call by call from the day's ledger (0: no
    ledger, as in inputs recorded before it existed)."""
    save_timeout_seconds: float = DEFAULT_SAVE_TIMEOUT_SECONDS
    """How long a paid report waits for an unreachable report store before the run fails."""
    strategy: str = "pipeline"
    """``pipeline`` (fixed steps) or ``deep`` (Claude's tool-use loop)."""
    max_turns: int = DEFAULT_MAX_TURNS
    continue_as_new_after_turns: int = 0
    fetch: FetchRules = field(default_factory=FetchRules)
    mail_recipients: bool = True
    """Whether ``notify.email.to`` named anyone as the run started (false: no ``send_email``,
    email ``skipped``; true in older inputs, which asked the activity)."""
    shape: int = 0
    """The workflow shape the run was started for (every starter sets
    :data:`CURRENT_SHAPE`). Recorded in the input, a run's shape costs no history
    event, where a ``workflow.patched`` marker costs two (the marker and the
    ``TemporalChangeVersion`` search attribute). 0 in older inputs, which replay on
    the markers they carry."""


@dataclass
class ToolAnswer:
    """A ``tool_result`` the workflow wrote itself (a recorded finding, a refused call);
    the next turn stores it in the transcript beside the results the tools stored."""

    tool_use_id: str
    text: str
    is_error: bool = False


@dataclass
class Finding:
    """A claim the model recorded (``record_finding``), with the page it came from."""

    claim: str
    source_url: str


@dataclass
class Interruption:
    """An activity attempt that did not finish (its worker was lost, or it failed and was
    retried), and what resuming instead of restarting saved there."""

    activity: str = ""
    call: int = 0
    """The LLM call (1-based, in the run's order) it interrupted; for a tool, search,
    save or mail step, the number of LLM calls finished before it."""
    attempts: int = 1
    """Attempts of this step that did not finish."""
    finished_calls: int = 0
    """LLM calls finished before it, none of them made again."""
    avoided_usd: float = 0.0
    """Their spend, times ``attempts``: what restarts from scratch would have re-paid."""


#: How many interruptions a run's status lists (the totals count them all).
MAX_INTERRUPTIONS_KEPT: Final = 10


@dataclass
class RunStatus:
    """Answer of the ``status`` query, and the core of the workflow result."""

    topic: str = ""
    phase: Phase = Phase.PENDING
    step: int = 0
    total_steps: int = TOTAL_STEPS
    cost_usd: float = 0.0
    """Everything billed so far, failed attempts (re-asks, cut-off streams) included."""
    reserved_usd: float = 0.0
    """What the LLM call in flight may cost at most (the budget's reservation)."""
    input_tokens: int = 0
    """All prompt tokens: uncached input plus cache reads and cache writes."""
    output_tokens: int = 0
    llm_calls: int = 0
    """LLM API calls that returned an answer (each one billed)."""
    retries: int = 0
    """Activity attempts beyond the first, summed over the run's activities."""
    report_id: str = ""
    email: str = ""
    """``""`` (not yet), ``sent``, ``skipped``, ``failed``, or ``unknown`` when the
    process may have died between the SMTP server accepting the mail and its record."""
    reviewer: str = ""
    message: str = ""
    max_usd_per_run: float = 0.0
    """The run's budget now (a ``budget`` update may have raised it); 0 before it existed."""
    max_usd_per_day: float = 0.0
    """The daily budget this run asks the day's ledger against (0: none)."""
    stopped_by: str = ""
    """While ``AwaitingBudget`` (and after ``BudgetExhausted``): ``run`` or ``day``."""
    strategy: str = ""
    """``pipeline`` or ``deep`` (empty in runs recorded before strategies existed)."""
    turn: int = 0
    """``deep``: the LLM turn in flight or last finished (1-based)."""
    max_turns: int = 0
    tool_calls: int = 0
    """``deep``: tool calls answered (recorded findings included)."""
    findings: int = 0
    """``deep``: findings the model recorded, each with its source."""
    finished_usd: float = 0.0
    """Spend of the LLM calls whose activities finished: what a restart from scratch
    would pay again (failed attempts' spend is not in it: a restart would not repeat it)."""
    finished_calls: int = 0
    """LLM calls whose activities finished."""
    avoided_usd: float = 0.0
    """What durability saved: for each lost worker or failed attempt, the spend of the
    calls finished before it, which a restart from scratch would have paid again."""
    calls_not_repeated: int = 0
    """Finished LLM calls a restart from scratch would have made again, summed likewise."""
    interruptions: list[Interruption] = field(default_factory=list)
    """The last :data:`MAX_INTERRUPTIONS_KEPT` interruptions, oldest first."""


@dataclass
class DeepResume:
    """What a deep run carries into its next run when it continues as new: small,
    because the conversation itself is in the report store."""

    conversation: str
    turn: int = 0
    """Turns finished."""
    answers: list[ToolAnswer] = field(default_factory=list)
    """The last turn's results the workflow made, not yet stored by a turn."""
    findings: list[Finding] = field(default_factory=list)
    prompt_chars: int = 0
    """Size of the next turn's prompt, as far as the workflow knows (for its budget)."""
    status: RunStatus | None = None


@dataclass
class ResearchInput:
    """Input of ``ResearchWorkflow``: one topic, one report."""

    topic: str
    agent: str = "local"
    namespace: str = "default"
    settings: RunSettings = field(default_factory=RunSettings)
    resume: DeepResume | None = None
    """``deep``: where the run was when it continued as new (None at its start)."""
    stream: WorkflowStreamState | None = None
    """The workflow stream's offsets, carried across continue-as-new."""


@dataclass
class Spend:
    """What a run has spent so far, kept in its memo under :data:`SPEND_MEMO`.

    Visibility lists return the memo with each workflow, so the spend of a run is
    known without a worker, a query or a result: even for a run terminated, timed
    out or cancelled from outside, which has neither a result nor a final status.
    The operator counts it towards the day's budget.
    """

    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0
    retries: int = 0


@dataclass
class ResearchResult:
    """Output of ``ResearchWorkflow``."""

    status: RunStatus
    report_markdown_chars: int = 0


@dataclass
class ApproveInput:
    """Argument of the ``approve`` update; ``reviewer`` is required."""

    reviewer: str
    comment: str = ""


@dataclass
class ApproveResult:
    accepted: bool
    message: str = ""


@dataclass
class SetBudgetInput:
    """Argument of the ``budget`` update: new limits for a run (``None``: unchanged)."""

    max_usd_per_run: float | None = None
    max_usd_per_day: float | None = None


@dataclass
class SetBudgetResult:
    accepted: bool
    message: str = ""
    spent_usd: float = 0.0
    max_usd_per_run: float = 0.0
    max_usd_per_day: float = 0.0


@dataclass
class RejectInput:
    """Argument of the ``reject`` signal."""

    reviewer: str = ""
    reason: str = ""


@dataclass
class ReportChunk:
    """One piece of report text on the workflow stream's :data:`REPORT_TOPIC`.

    ``offset`` is the character position in the report written by ``attempt``;
    when a retried attempt starts over, its chunks begin again at offset 0 with
    a higher ``attempt``, so a follower can tell a restart from a continuation.
    """

    attempt: int
    offset: int
    text: str
    turn: int = 0
    """``deep``: the turn whose reply this is (each turn's text starts at offset 0);
    0 in a pipeline run, which streams one report."""
    ask: int = 0
    """Which request of the attempt wrote it: a last turn whose reply called tools is
    asked again (``ask`` 1), and that text starts over at offset 0 too."""


WORKFLOW_NAME = "ResearchWorkflow"
LEAN_SHAPE: Final = 1
"""A run of :attr:`RunSettings.shape` 1 or more has the lean shape (what the
``lean-run`` patch marks in runs recorded before shapes were in the input)."""
SEARCH_STEP_SHAPE: Final = 2
"""A pipeline run of shape 2 or more searches in one ``web_searches`` activity (``http``
provider), where older runs scheduled a ``web_search`` per query; see
:data:`SEARCH_STEP_PATCH`."""
CURRENT_SHAPE: Final = SEARCH_STEP_SHAPE
WORKFLOW_TASK_TIMEOUT: Final = timedelta(seconds=4)
"""Every Steadfast workflow's task timeout (Temporal's default is 10 s): a worker killed
while it held one of a workflow's tasks delays that workflow by this much, so with the
3 s heartbeat timeout a run resumes within 5 s of losing its worker. A task is one
activation of workflow code (the SDK's deadlock detector stops any that runs 2 s)
plus its replay, which continue-as-new keeps short."""
STATUS_QUERY = "status"
APPROVE_UPDATE = "approve"
REJECT_SIGNAL = "reject"
BUDGET_UPDATE = "budget"
#: Workflow-stream topics: report text (:class:`ReportChunk`), phase changes (:class:`RunStatus`).
REPORT_TOPIC = "report"
STATUS_TOPIC = "status"
SPEND_MEMO = "steadfast.spend"
#: The ``workflow.patched`` id that guards the memo upserts: runs recorded before
#: they existed replay without them.
SPEND_MEMO_PATCH = "spend-memo"
#: The ``workflow.patched`` id that guards the approval gate's timeout and the ``reject``
#: signal's phase check: runs recorded before them replay without either.
APPROVAL_GATE_PATCH = "approval-gate"
#: The ``workflow.patched`` id that guards the pause before an unaffordable call (and the
#: day's ledger): runs recorded before it replay ending ``BudgetExhausted`` at once.
BUDGET_PAUSE_PATCH = "budget-pause"
#: The ``workflow.patched`` id that a run of :data:`SEARCH_STEP_SHAPE` also needs before it
#: searches in one activity. A worker of the code before shape 2 does not know the shape
#: and would schedule a ``web_search`` per query for it; such a run carries no marker and
#: replays as it ran. The marker costs two events (with Temporal's change-version search
#: attribute); the one activity saves six to nine.
SEARCH_STEP_PATCH = "search-step"
#: The ``workflow.patched`` id that guards saving what a run stopped by its budget had
#: gathered (a deep run's findings, the pipeline's search results) as an unfinished
#: report: runs recorded before it replay ending ``BudgetExhausted`` with nothing saved.
BUDGET_KEEPS_GATHERED_PATCH = "budget-keeps-gathered"
#: The ``workflow.patched`` id that guards saving what a run had gathered (a deep run's
#: findings, the pipeline's sources) when the step that writes its report fails for good
#: (a 400, a key refused, retries run out); recorded only by a run that so fails. Runs
#: recorded before it replay ending ``Failed`` with nothing saved.
FAILURE_KEEPS_GATHERED_PATCH = "failure-keeps-gathered"
#: The ``workflow.patched`` id that guards reserving a server-side search's results
#: (:data:`~steadfast_contract.pricing.WEB_SEARCH_RESULT_TOKENS`) before searches through
#: the model: runs recorded before it replay with the fee and the prompt reserved alone.
SEARCH_RESULTS_RESERVED_PATCH = "search-results-reserved"
#: The ``workflow.patched`` id that guards counting the searches through the model a
#: budget granted before the run paused for the others (and keeping their results when
#: the pause runs out); recorded only by a run so paused. Runs recorded before it count
#: them after the pause, and keep nothing.
SEARCHES_COUNTED_PATCH = "searches-counted-before-pause"
#: The ``workflow.patched`` id that guards how a run honours a cancel that reaches it once
#: its report is paid for: a cancel in ``Saving`` lets the save finish, then ends the run
#: ``Cancelled`` without mail; one in ``Emailing`` lets the mail step finish (nothing to
#: undo), then ends it ``Cancelled``. Recorded only by a run so cancelled. Runs recorded
#: before it went on from the save to mail, and failed a cancelled mail step.
CANCEL_HOLDS_MAIL_PATCH = "cancel-holds-mail"
#: The ``workflow.patched`` id that guards ending a run ``Cancelled`` when the cancel
#: interrupts one of its activities (an LLM turn, a search, a tool): the activity then
#: fails with a ``CancelledError`` cause. Recorded only by a run so cancelled. Runs
#: recorded before it replay ending ``Failed`` ("Activity cancelled").
CANCEL_MID_STEP_PATCH = "cancel-mid-step"
#: The ``workflow.patched`` id that guards saving what a run had gathered (a deep run's
#: findings, the pipeline's sources once its report is being written) when a cancel
#: stops it before its report: saved as an unfinished report, never mailed, the run
#: still ending ``Cancelled``. Recorded only by a run so cancelled. Runs recorded before
#: it replay ending ``Cancelled`` with nothing saved.
CANCEL_KEEPS_GATHERED_PATCH = "cancel-keeps-gathered"
#: The ``workflow.patched`` id that guards counting a report prompt's characters outside
#: ASCII as a token each (:func:`~steadfast_contract.budget.token_chars`) when the
#: pipeline reserves for its report; asked only when that count differs from the
#: prompt's length, so a run whose search results are all ASCII records no marker. Runs
#: recorded before it reserved four characters a token, and replay so.
TOKENS_BY_SCRIPT_PATCH = "tokens-by-script"
