"""The ResearchAgent's ``spec``, described once (docs/design.md §2).

Every field is written here with its description, default, bounds, pattern or
enum, and the CEL rules the API server enforces sit next to the fields they
guard; the sections the worker configuration shares, and the markers that carry
the CEL rules, are in :mod:`.specbase`. Everything else is derived from these models:

* the CRD's OpenAPI schema (:mod:`.crdschema`, written to ``crds/`` by :mod:`.crdgen`);
* the README's field table (:mod:`.fieldtable`);
* the worker configuration's shared sections (:mod:`.config` reuses
  :class:`PricingSpec`, :class:`BudgetSpec` and :class:`RetryPoliciesSpec`);
* the validation of a manifest, by the operator and by the command line alike.

Pydantic enforces the types, bounds and patterns; the CEL rules only run in the
API server (the operator's own cross-field checks are in ``steadfast_operator.spec``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from steadfast_contract import models
from steadfast_contract.durations import Duration
from steadfast_contract.researchspec import ResearchSpec
from steadfast_contract.specbase import (
    DEFAULT_MAX_CONCURRENT_ACTIVITIES,
    ONE_LINE_PATTERN,
    BudgetSpec,
    ConcurrentActivities,
    ContextTokens,
    Crd,
    EmailAddress,
    MaxTokens,
    ModelName,
    PricingSpec,
    RetryPoliciesSpec,
    RetryPolicy,
    Rule,
    Sender,
    SpecModel,
    Within,
)

__all__ = [
    "AgentSpec",
    "BudgetSpec",
    "EmailSpec",
    "ModelSpec",
    "NotifySpec",
    "PricingSpec",
    "ResearchSpec",
    "RetryPoliciesSpec",
    "RetryPolicy",
    "SearchSpec",
    "SecretRef",
    "StorageSpec",
    "TemporalSpec",
    "TemporalTLS",
    "WorkersSpec",
]

_DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_SECRET_KEY: Final = r"^[-._a-zA-Z0-9]+$"
_NUMBER: Final = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
#: Kubernetes' quantity form, without the minus sign: a worker's request or limit below
#: zero is a Deployment the API server refuses on every reconcile.
_QUANTITY_PATTERN: Final = rf"^\+?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
_CRON_RULE: Final = (
    "self == '' || self.matches('^(@(yearly|annually|monthly|weekly|daily|hourly)"
    "|@every [0-9]+(s|m|h)"
    "|([0-9*/,?LW#A-Za-z-]+ ){4}[0-9*/,?LW#A-Za-z-]+)$')"
)


class SecretRef(SpecModel):
    """``{name, key}`` of a Secret in the agent's namespace; empty means none."""

    crd_rules = (
        Rule("(self.name == '') == (self.key == '')", "name and key must be given together"),
    )

    name: str = Field(
        default="",
        max_length=253,
        pattern=r"^$|" + _DNS_SUBDOMAIN,
        description="Name of the Secret.",
    )
    key: str = Field(
        default="",
        max_length=253,
        pattern=r"^$|" + _SECRET_KEY,
        description="Key inside the Secret.",
    )

    @property
    def set(self) -> bool:
        return bool(self.name)


def _secret(what: str) -> Any:
    return Field(
        default_factory=SecretRef,
        description=f"Secret (in the agent's namespace) and key holding {what}. "
        "Leave both empty for none.",
    )


class TemporalTLS(SpecModel):
    secret_name: str = Field(
        default="",
        max_length=253,
        pattern=r"^$|" + _DNS_SUBDOMAIN,
        description="Secret with tls.crt, tls.key and (optionally) ca.crt; empty disables mTLS.",
    )


#: A run stays on the Temporal (address), namespace and task queue it was started on, and
#: the agent's day ledger is kept there too: moving any would leave running runs with no
#: worker (or no operator watching them) and start the day's budget again from zero.
#: Refused at ``kubectl apply``; an operator under an older CRD keeps the queue its status
#: records (:func:`steadfast_operator.topics.pin_task_queue`).
_IMMUTABLE = Crd(
    rules=(
        Rule(
            "self == oldSelf",
            "cannot change once the agent exists: its runs and its day's budget live there "
            "(create a new agent to move)",
        ),
    )
)


class TemporalSpec(SpecModel):
    address: Annotated[str, _IMMUTABLE] = Field(
        default="",
        max_length=255,
        description="host:port of the Temporal frontend. Empty uses the operator's default "
        "(the chart's temporal.address). Cannot change once the agent exists.",
    )
    namespace: Annotated[str, _IMMUTABLE] = Field(
        default="default",
        max_length=255,
        description="Temporal namespace. Cannot change once the agent exists.",
    )
    task_queue: Annotated[str, _IMMUTABLE] = Field(
        default="",
        max_length=255,
        description="Task queue the workers poll. Empty means steadfast.<namespace>.<name> "
        "(an agent already running on the earlier steadfast-<namespace>-<name> keeps it). "
        "Give each agent its own: the operator refuses a queue an agent created earlier "
        "uses (TaskQueueShared), and a worker refuses the runs of any other agent it finds "
        "on its queue. Cannot change once the agent exists.",
    )
    tls: TemporalTLS = Field(
        default_factory=TemporalTLS,
        description="mTLS client certificate for the Temporal frontend.",
    )
    api_key_secret_ref: SecretRef = _secret("a Temporal Cloud API key (implies TLS)")


class ModelSpec(SpecModel):
    provider: Literal["anthropic"] = Field(
        default="anthropic", max_length=32, description="LLM provider."
    )
    name: ModelName = Field(default=models.DEFAULT_MODEL, description="Model name.")
    max_tokens: MaxTokens = Field(
        default=models.DEFAULT_MAX_TOKENS,
        description="Most output tokens per call; the budget reserves this much before each call.",
    )
    api_key_secret_ref: SecretRef = _secret("the model provider's API key")
    base_url: str = Field(
        default="",
        alias="baseURL",
        max_length=2048,
        description="Alternative API base URL (a gateway or the simulator); empty is the vendor's.",
    )
    pricing: PricingSpec | None = Field(
        default=None,
        description="USD per million tokens, overriding the built-in price table for the model. "
        "Omit to use the table.",
    )
    context_tokens: ContextTokens = Field(
        default=models.DEFAULT_CONTEXT_TOKENS,
        description="The model's context window in tokens (prompt and output together). A deep "
        "run asks for its report while one more turn of tools would still fit, so no request is "
        "refused as too long. 200000 for the Claude models; raise it only for a model or a beta "
        "with a larger window.",
    )


class SearchSpec(SpecModel):
    provider: Literal["http", "anthropic-web-search"] = Field(
        default="http",
        max_length=32,
        description=(
            "Search provider: http (an endpoint of your own) or anthropic-web-search (each "
            "search a paid request, reserved as its $0.01 fee plus 20,000 input tokens of "
            "results)."
        ),
    )
    endpoint: str = Field(
        default="", max_length=2048, description="Search endpoint URL, required by provider http."
    )
    api_key_secret_ref: SecretRef = _secret("the search API key, if the endpoint needs one")


class StorageSpec(SpecModel):
    postgres_secret_ref: SecretRef = _secret(
        "a Postgres DSN, required in a cluster: without it the agent is not Ready "
        "(NoDurableStore) and no worker starts (`steadfast dev` saves to SQLite). The "
        "database must be in UTF-8: a worker refuses any other encoding at start"
    )
    save_timeout: Annotated[Duration, Within("1s")] = Field(
        default=timedelta(seconds=models.DEFAULT_SAVE_TIMEOUT_SECONDS),
        description="How long a paid report waits for an unreachable report store (phase "
        "Saving, retried at most 30s apart) before the run fails.",
    )

    transcript_retention: Annotated[Duration, Within("1s", "2160h", "90 days")] = Field(
        default=timedelta(seconds=models.DEFAULT_TRANSCRIPT_RETENTION_SECONDS),
        description="How long a deep run that ended without a report (failed, out of "
        "budget, cancelled) keeps its transcript (its replies and the pages it read) in the "
        "report store after it closed. A saved report deletes its transcript at once. "
        "Workers sweep every retention, at least 10s and at most 1h apart.",
    )


class EmailSpec(SpecModel):
    to: list[EmailAddress] = Field(
        default_factory=list, max_length=50, description="Recipients; empty skips the email step."
    )
    from_: Sender = Field(
        default="",
        alias="from",
        description="Sender address (no spaces, control characters or line breaks); "
        "empty uses steadfast@localhost.",
    )
    smtp_secret_ref: SecretRef = _secret("an smtp:// or smtps:// URL")


class NotifySpec(SpecModel):
    email: EmailSpec = Field(
        default_factory=EmailSpec,
        description="The review-request email, sent at most once per run.",
    )
    require_approval: bool = Field(
        default=False, description="Wait for `steadfast approve` before sending the email."
    )
    approval_timeout: Annotated[Duration, Within("1s")] = Field(
        default=timedelta(seconds=models.DEFAULT_APPROVAL_TIMEOUT_SECONDS),
        description="With requireApproval, how long a saved report waits for `steadfast "
        "approve` or a rejection; then the run ends in phase ApprovalExpired without mail.",
    )


@dataclass(frozen=True)
class _QuantityForm:
    """The CRD's pattern for a quantity (read by :mod:`.crdschema`). Pydantic cannot
    apply a pattern to ``int | str`` (it raised TypeError on ``cpu: 2``, which the
    operator could not report), so :func:`_quantity` checks the same form."""

    pattern: str = _QUANTITY_PATTERN


def _quantity(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a quantity such as 500m, 1Gi or 2, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a quantity cannot be negative")
    elif not re.fullmatch(_QUANTITY_PATTERN, value):
        raise ValueError("expected a quantity such as 500m, 1Gi or 2 (not negative)")
    return value


Quantity = Annotated[int | str, _QuantityForm(), BeforeValidator(_quantity)]
Quantities = Annotated[
    dict[str, Quantity], Field(max_length=16, description="Resource name to quantity.")
]


class WorkersSpec(SpecModel):
    crd_rules = (
        Rule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas cannot exceed maxReplicas",
            ".minReplicas",
        ),
    )

    image: str = Field(
        default="",
        max_length=512,
        description="Worker container image; empty uses the operator's default (the chart's).",
    )
    min_replicas: int = Field(
        default=0, ge=0, le=1000, description="Fewest workers; 0 allows scaling to zero."
    )
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most workers.")
    target_backlog_per_worker: int = Field(
        default=5, ge=1, le=10000, description="Backlogged tasks one worker is expected to absorb."
    )
    scale_down_delay: Duration = Field(
        default=timedelta(seconds=60),
        description="Idle time (no backlog, no running run) before scaling down.",
    )
    autoscaler: Literal["builtin", "keda", "none"] = Field(
        default="builtin",
        max_length=16,
        description="Who owns the replicas: builtin (this operator), keda (a ScaledObject) or "
        "none (left to you).",
    )
    max_concurrent_activities: ConcurrentActivities = Field(
        default=DEFAULT_MAX_CONCURRENT_ACTIVITIES, description="Activities one worker runs at once."
    )
    resources: dict[Literal["requests", "limits"], Quantities] = Field(
        default_factory=dict, description="Container resources of each worker."
    )

    @model_validator(mode="after")
    def _bounds(self) -> WorkersSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas cannot exceed maxReplicas")
        return self


Topic = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        pattern=ONE_LINE_PATTERN,
        description="A research topic: one line (it becomes the review email's subject).",
    ),
]

_TOPIC: Final = TypeAdapter(Topic)


def topic_problem(text: str) -> str | None:
    """Why ``text`` cannot be a topic (the schema's own rule), or None when it can.

    Topics given on the command line bypass the manifest's validation; this keeps
    them to the same rule, so a newline cannot reach the review email's subject
    after the run has paid for its report.
    """
    try:
        _TOPIC.validate_python(text)
    except ValidationError:
        return "a topic is one line of 1 to 500 characters, without control characters"
    return None


class AgentSpec(SpecModel):
    """``spec`` of a ResearchAgent; a manifest's or the API server's, validated."""

    crd_description: ClassVar[str] = "What the agent researches, with which model, and how it runs."

    temporal: TemporalSpec = Field(
        default_factory=TemporalSpec, description="Where the agent's workflows run."
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The LLM the agent calls.")
    search: SearchSpec = Field(
        default_factory=SearchSpec, description="The web search the agent uses."
    )
    storage: StorageSpec = Field(
        default_factory=StorageSpec, description="Where reports are saved."
    )
    notify: NotifySpec = Field(
        default_factory=NotifySpec, description="Who hears about finished reports."
    )
    topics: Annotated[list[Topic], Crd(list_type="set")] = Field(
        min_length=1,
        max_length=200,
        description="One workflow per topic, with an id derived from namespace, name and topic, "
        "so a repeated start never duplicates a run.",
    )
    schedule: Annotated[str, Crd(rules=(Rule(_CRON_RULE, "not a cron"),))] = Field(
        default="",
        max_length=128,
        description=(
            "Optional cron (5 fields, UTC): a Temporal Schedule per topic runs it, the first "
            "run at once, and skips a tick while its run is still going."
        ),
    )
    retry_policies: RetryPoliciesSpec = Field(
        default_factory=RetryPoliciesSpec,
        description="Retry policies per activity class; defaults are the seed's patterns.",
    )
    budget: BudgetSpec = Field(default_factory=BudgetSpec, description="Spending limits in USD.")
    research: ResearchSpec = Field(
        default_factory=ResearchSpec,
        description="How a run researches: the fixed pipeline or Claude's tool-use loop.",
    )
    workers: WorkersSpec = Field(
        default_factory=WorkersSpec,
        description="The worker Deployment and how its replicas are scaled.",
    )
    deletion_policy: Literal["Cancel", "Abandon"] = Field(
        default="Cancel",
        max_length=16,
        description=(
            "What deleting the agent does in Temporal. Cancel: its Schedules are deleted and "
            "its running workflows cancelled; the finalizer stays until Temporal confirms, "
            "however long it is unreachable (Ready=False, WaitingForTemporal), and while a "
            "cancelled run has yet to end, saving what it paid for or finishing a mail under "
            "way (WaitingForReports), so its workers outlive it. Abandon: one "
            "try, then the agent goes; running workflows are left, and its Schedules too "
            "when Temporal could not be reached."
        ),
    )

    def secret_refs(self) -> dict[str, SecretRef]:
        """Secret references that are set, by their spec path."""
        refs = {
            "temporal.apiKeySecretRef": self.temporal.api_key_secret_ref,
            "model.apiKeySecretRef": self.model.api_key_secret_ref,
            "search.apiKeySecretRef": self.search.api_key_secret_ref,
            "storage.postgresSecretRef": self.storage.postgres_secret_ref,
            "notify.email.smtpSecretRef": self.notify.email.smtp_secret_ref,
        }
        return {path: ref for path, ref in refs.items() if ref.set}

    def unique_topics(self) -> list[str]:
        """Topics in order, without repeats (a repeat would share a workflow id)."""
        return list(dict.fromkeys(self.topics))
