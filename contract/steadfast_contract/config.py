"""The worker's configuration: one validated document, secrets by reference.

A worker is configured by a YAML/JSON file (the operator renders it into a
ConfigMap from a ResearchAgent's spec; ``steadfast dev`` builds it from an
example manifest) plus environment variables for secrets. The file only ever
names *which* environment variable holds a secret, so the configuration can be
logged, diffed and stored in a ConfigMap without leaking anything.

Field names in the file are the ResearchAgent's camelCase names, so the operator
can copy a spec across with little translation. A bad file fails at start with
:class:`ConfigError`, whose message names the offending field.

The sections that mean the same thing in a ResearchAgent (``model.pricing``,
``budget``, ``retryPolicies``) are the spec's own models from :mod:`.specbase`,
and the defaults shared with the spec (model name, maxTokens, concurrency) are
the same constants, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from steadfast_contract import models
from steadfast_contract.durations import Duration
from steadfast_contract.researchspec import ResearchSpec
from steadfast_contract.specbase import (
    DEFAULT_MAX_CONCURRENT_ACTIVITIES,
    BudgetSpec,
    ConcurrentActivities,
    ContextTokens,
    EmailAddress,
    MaxTokens,
    ModelName,
    PricingSpec,
    RetryPoliciesSpec,
    Sender,
    SpecModel,
)


class ConfigError(ValueError):
    """The configuration cannot work; the message names the field to fix."""


class TLSConfig(SpecModel):
    """TLS to the Temporal frontend: a mounted TLS Secret, or certificate files."""

    secret_dir: str = ""
    """Directory where a ``kubernetes.io/tls`` Secret is mounted (what the operator
    renders): ``tls.crt`` and ``tls.key`` are required, ``ca.crt`` is used when the
    Secret has one and the system roots otherwise. Excludes the file fields."""
    cert_file: str = ""
    """PEM client certificate (``tls.crt`` of the ResearchAgent's TLS Secret)."""
    key_file: str = ""
    """PEM private key of the client certificate."""
    ca_file: str = ""
    """PEM CA bundle to verify the server; empty uses the system roots."""
    server_name: str = ""
    """Override of the TLS server name (SNI), when the address is an IP or alias."""

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if self.secret_dir and (self.cert_file or self.key_file or self.ca_file):
            raise ValueError("secretDir excludes certFile, keyFile and caFile")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("certFile and keyFile must be given together")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.secret_dir or self.cert_file or self.ca_file)


class TemporalConfig(SpecModel):
    """Where the Temporal frontend is and how to authenticate to it."""

    address: str = "127.0.0.1:7233"
    """host:port of the Temporal frontend."""
    namespace: str = "default"
    """Temporal namespace the workflows run in."""
    task_queue: str = ""
    """Task queue to poll; empty means ``steadfast.<namespace>.<agent>``."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """Client certificate for mTLS; empty disables TLS unless an API key is set."""
    api_key_env: str = "TEMPORAL_API_KEY"
    """Environment variable holding a Temporal Cloud API key (implies TLS)."""
    api_key_file: str = ""
    """File holding the API key instead (a mounted Secret key, what the operator
    renders); re-read while the worker runs, so a rotated key is used without a
    restart. Wins over ``apiKeyEnv``."""


class ModelConfig(SpecModel):
    """The LLM the agent calls."""

    provider: Literal["anthropic"] = "anthropic"
    name: ModelName = models.DEFAULT_MODEL
    max_tokens: MaxTokens = models.DEFAULT_MAX_TOKENS
    """Upper bound of output tokens per call; also what the budget reserves."""
    base_url: str = Field(default="", alias="baseURL")
    """Alternative API base URL (a gateway or the simulator); empty is the vendor's."""
    api_key_env: str = "ANTHROPIC_API_KEY"
    """Environment variable holding the API key."""
    pricing: PricingSpec | None = None
    """Price override; empty uses the built-in table for ``name``."""
    timeout: Duration = timedelta(seconds=120)
    """Per-request HTTP timeout of the LLM client."""
    context_tokens: ContextTokens = models.DEFAULT_CONTEXT_TOKENS
    """The model's context window; a deep run finishes before outgrowing it
    (:mod:`steadfast_contract.context`)."""


class SearchConfig(SpecModel):
    """The web search the agent uses."""

    provider: Literal["http", "anthropic-web-search"] = "http"
    endpoint: str = ""
    """Search endpoint URL for provider ``http``."""
    api_key_env: str = "STEADFAST_SEARCH_API_KEY"
    """Environment variable holding the search API key, if the endpoint needs one."""
    max_results: int = Field(default=5, ge=1, le=50)

    @model_validator(mode="after")
    def _endpoint(self) -> SearchConfig:
        if self.provider == "http" and not self.endpoint:
            raise ValueError("endpoint is required when provider is 'http'")
        return self


DEV_STATE_DIR = ".steadfast"
"""Where ``steadfast dev`` keeps its state by default (its ``--state-dir``)."""
REPORTS_FILE = "reports.db"
"""The SQLite report store's file name inside a ``steadfast dev`` state directory."""


def dev_reports_path(state_dir: str | Path) -> Path:
    """The SQLite report store of the ``steadfast dev`` whose ``--state-dir`` is
    ``state_dir`` (resolved as ``dev`` resolves it), for the verbs that read it."""
    return Path(state_dir).resolve() / REPORTS_FILE


class StorageConfig(SpecModel):
    """Where reports are saved."""

    postgres_dsn_env: str = "STEADFAST_POSTGRES_DSN"
    """Environment variable with a Postgres DSN; when unset or empty, SQLite is used."""
    sqlite_path: str = f"{DEV_STATE_DIR}/{REPORTS_FILE}"
    """SQLite file used when no Postgres DSN is set (the embedded default); empty for
    none (the operator's workers: a pod's disk is not a place for reports)."""
    save_timeout: Duration = timedelta(seconds=models.DEFAULT_SAVE_TIMEOUT_SECONDS)
    """How long a paid report waits for an unreachable report store before the run fails."""
    transcript_retention: Duration = Field(
        default=timedelta(seconds=models.DEFAULT_TRANSCRIPT_RETENTION_SECONDS),
        ge=timedelta(seconds=1),
        le=timedelta(days=90),
    )
    """How long a run that ended without a report keeps its transcript after it closed
    (the worker's sweep: :mod:`steadfast_worker.retention`)."""


class EmailConfig(SpecModel):
    """The review-request email."""

    to: list[EmailAddress] = Field(default_factory=list)
    """Recipients; empty skips the email step."""
    from_: Sender = Field(default="steadfast@localhost", alias="from")
    smtp_url_env: str = "STEADFAST_SMTP_URL"
    """Environment variable with ``smtp://[user:pass@]host:port`` (``smtps://`` for TLS)."""


class NotifyConfig(SpecModel):
    email: EmailConfig = Field(default_factory=EmailConfig)
    require_approval: bool = False
    """Wait for ``steadfast approve`` before sending the review-request email."""
    approval_timeout: Duration = timedelta(seconds=models.DEFAULT_APPROVAL_TIMEOUT_SECONDS)
    """How long a run waits for approval before it ends ``ApprovalExpired``."""


READY_PATH: Final = "/readyz"
"""Where the worker answers its pod's readiness probe, on ``worker.metricsPort``: 200
once it polls Temporal, 503 before and from SIGTERM on (``steadfast_worker.health``)."""


class WorkerTuning(SpecModel):
    """Process-level settings of the worker."""

    max_concurrent_activities: ConcurrentActivities = DEFAULT_MAX_CONCURRENT_ACTIVITIES
    max_concurrent_workflow_tasks: int = Field(default=20, ge=1, le=1000)
    graceful_shutdown: Duration = timedelta(seconds=30)
    """How long SIGTERM waits for running activities before cancelling them."""
    heartbeat_timeout: Duration = timedelta(seconds=3)
    """A dead worker's LLM call is retried elsewhere after this long. Each running
    activity heartbeats at most once per 0.8 x this (one RPC per 2.4 s by default)."""
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """prometheus-client metrics port (0 disables)."""
    sdk_metrics_port: int = Field(default=9465, ge=0, le=65535)
    """The Temporal SDK's own metrics port (0 disables)."""
    metrics_host: str = "0.0.0.0"


class WorkerConfig(SpecModel):
    """Everything one worker process needs, secrets excepted."""

    agent: str = "local"
    """Name of the ResearchAgent (a metric label)."""
    namespace: str = "default"
    """Kubernetes namespace of the ResearchAgent (a metric label)."""
    temporal: TemporalConfig = Field(default_factory=TemporalConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(
        default_factory=lambda: SearchConfig(endpoint="http://127.0.0.1:8788/search")
    )
    storage: StorageConfig = Field(default_factory=StorageConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    retry_policies: RetryPoliciesSpec = Field(default_factory=RetryPoliciesSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    research: ResearchSpec = Field(default_factory=ResearchSpec)
    worker: WorkerTuning = Field(default_factory=WorkerTuning)

    @property
    def task_queue(self) -> str:
        from steadfast_contract.ids import default_task_queue

        return self.temporal.task_queue or default_task_queue(self.namespace, self.agent)


def _format_errors(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return "invalid Steadfast worker configuration:\n" + "\n".join(lines)


def parse_config(data: Mapping[str, Any]) -> WorkerConfig:
    """Validate a configuration document; raise :class:`ConfigError` naming fields."""
    try:
        return WorkerConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def read_text(path: Path, what: str = "", error: type[ConfigError] = ConfigError) -> str:
    """A file's text, or ``error`` saying why it cannot be read (no traceback for a typo)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise error(f"cannot read {what}{path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise error(
            f"cannot read {what}{path}: not UTF-8 text (byte {err.start}: {err.reason})"
        ) from None


def yaml_problem(err: yaml.YAMLError | json.JSONDecodeError) -> str:
    """Where a YAML or JSON text is broken, on one line (``line 5, column 2: expected
    <block end>, but found '<block mapping start>'``), not PyYAML's several with the
    source quoted."""
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}, column {err.colno}: {err.msg}"
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {err.problem or err.context}"
    return " ".join(str(err).split())


def load_config(path: str | Path) -> WorkerConfig:
    """Read and validate a YAML or JSON configuration file."""
    p = Path(path)
    text = read_text(p, "configuration file ")
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"configuration file {p} is not valid YAML/JSON: {yaml_problem(err)}"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
    return parse_config(data)
