"""The worker's configuration: one validated document, secrets by reference.

A worker is configured by a YAML/JSON file (the operator renders it into a
ConfigMap from a ResearchAgent's spec; ``steadfast dev`` builds it from an
example manifest) plus environment variables for secrets. The file only ever
names *which* environment variable holds a secret, so the configuration can be
logged, diffed and stored in a ConfigMap without leaking anything.

Field names in the file are the ResearchAgent's camelCase names, so the operator
can copy a spec across with little translation. A bad file fails at start with
:class:`ConfigError`, whose message names the offending field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from steadfast_contract import models

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class ConfigError(ValueError):
    """The configuration cannot work; the message names the field to fix."""


def parse_duration(value: object) -> timedelta:
    """Parse ``"500ms"``, ``"2s"``, ``"1m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '2s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '500ms', '2s' or '1m', got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Inverse of :func:`parse_duration`: ``"500ms"``, ``"2s"``, ``"1.5s"``."""
    ms = round(value.total_seconds() * 1000)
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class TLSConfig(_Model):
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


class TemporalConfig(_Model):
    """Where the Temporal frontend is and how to authenticate to it."""

    address: str = "127.0.0.1:7233"
    """host:port of the Temporal frontend."""
    namespace: str = "default"
    """Temporal namespace the workflows run in."""
    task_queue: str = ""
    """Task queue to poll; empty means ``steadfast-<namespace>-<agent>``."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """Client certificate for mTLS; empty disables TLS unless an API key is set."""
    api_key_env: str = "TEMPORAL_API_KEY"
    """Environment variable holding a Temporal Cloud API key (implies TLS)."""
    api_key_file: str = ""
    """File holding the API key instead (a mounted Secret key, what the operator
    renders); re-read while the worker runs, so a rotated key is used without a
    restart. Wins over ``apiKeyEnv``."""


class PricingConfig(_Model):
    """USD per million tokens; overrides the built-in table for the model."""

    input_per_m_tok: float = Field(ge=0, alias="inputPerMTok")
    output_per_m_tok: float = Field(ge=0, alias="outputPerMTok")
    cache_read_per_m_tok: float = Field(default=0.0, ge=0, alias="cacheReadPerMTok")
    cache_write_per_m_tok: float = Field(default=0.0, ge=0, alias="cacheWritePerMTok")

    def to_pricing(self) -> models.Pricing:
        return models.Pricing(
            self.input_per_m_tok,
            self.output_per_m_tok,
            self.cache_read_per_m_tok,
            self.cache_write_per_m_tok,
        )


class ModelConfig(_Model):
    """The LLM the agent calls."""

    provider: Literal["anthropic"] = "anthropic"
    name: str = Field(default="claude-sonnet-4-6", min_length=1)
    max_tokens: int = Field(default=2000, ge=1, le=128_000)
    """Upper bound of output tokens per call; also what the budget reserves."""
    base_url: str = Field(default="", alias="baseURL")
    """Alternative API base URL (a gateway or the simulator); empty is the vendor's."""
    api_key_env: str = "ANTHROPIC_API_KEY"
    """Environment variable holding the API key."""
    pricing: PricingConfig | None = None
    """Price override; empty uses the built-in table for ``name``."""
    timeout: Duration = timedelta(seconds=120)
    """Per-request HTTP timeout of the LLM client."""


class SearchConfig(_Model):
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


class StorageConfig(_Model):
    """Where reports are saved."""

    postgres_dsn_env: str = "STEADFAST_POSTGRES_DSN"
    """Environment variable with a Postgres DSN; when unset or empty, SQLite is used."""
    sqlite_path: str = ".steadfast/reports.db"
    """SQLite file used when no Postgres DSN is set (the embedded default)."""


class EmailConfig(_Model):
    """The review-request email."""

    to: list[str] = Field(default_factory=list)
    """Recipients; empty skips the email step."""
    from_: str = Field(default="steadfast@localhost", alias="from")
    smtp_url_env: str = "STEADFAST_SMTP_URL"
    """Environment variable with ``smtp://[user:pass@]host:port`` (``smtps://`` for TLS)."""


class NotifyConfig(_Model):
    email: EmailConfig = Field(default_factory=EmailConfig)
    require_approval: bool = False
    """Wait for ``steadfast approve`` before sending the review-request email."""


class RetryPolicyConfig(_Model):
    """A Temporal retry policy; unset fields take the activity class's defaults."""

    initial_interval: Duration | None = None
    backoff_coefficient: float | None = Field(default=None, ge=1.0)
    maximum_interval: Duration | None = None
    maximum_attempts: int | None = Field(default=None, ge=0)
    """0 means unlimited, as in Temporal."""

    def over(self, base: models.RetryPolicySpec) -> models.RetryPolicySpec:
        """This policy's fields layered over ``base``."""
        spec = models.RetryPolicySpec(
            initial_interval_seconds=(
                self.initial_interval.total_seconds()
                if self.initial_interval is not None
                else base.initial_interval_seconds
            ),
            backoff_coefficient=(
                self.backoff_coefficient
                if self.backoff_coefficient is not None
                else base.backoff_coefficient
            ),
            maximum_interval_seconds=(
                self.maximum_interval.total_seconds()
                if self.maximum_interval is not None
                else base.maximum_interval_seconds
            ),
            maximum_attempts=(
                self.maximum_attempts
                if self.maximum_attempts is not None
                else base.maximum_attempts
            ),
        )
        if (
            spec.maximum_interval_seconds is not None
            and spec.maximum_interval_seconds < spec.initial_interval_seconds
        ):
            raise ValueError("maximumInterval must be at least initialInterval")
        return spec


class RetryPoliciesConfig(_Model):
    llm: RetryPolicyConfig = Field(default_factory=RetryPolicyConfig)
    search: RetryPolicyConfig = Field(default_factory=RetryPolicyConfig)
    database: RetryPolicyConfig = Field(default_factory=RetryPolicyConfig)
    email: RetryPolicyConfig = Field(default_factory=RetryPolicyConfig)

    def resolve(self) -> models.RetryPolicies:
        """Overrides layered over the seed's default patterns."""
        base = models.RetryPolicies()
        return models.RetryPolicies(
            llm=self.llm.over(base.llm),
            search=self.search.over(base.search),
            database=self.database.over(base.database),
            email=self.email.over(base.email),
        )

    @model_validator(mode="after")
    def _consistent(self) -> RetryPoliciesConfig:
        base = models.RetryPolicies()
        for name in ("llm", "search", "database", "email"):
            try:
                getattr(self, name).over(getattr(base, name))
            except ValueError as err:
                # Name the activity class: the defaults it layers over differ.
                raise ValueError(f"{name}: {err}") from None
        return self


class BudgetConfig(_Model):
    max_usd_per_run: float = Field(default=1.0, gt=0, alias="maxUSDPerRun")
    max_usd_per_day: float = Field(default=50.0, gt=0, alias="maxUSDPerDay")


class WorkerTuning(_Model):
    """Process-level settings of the worker."""

    max_concurrent_activities: int = Field(default=20, ge=1, le=1000)
    max_concurrent_workflow_tasks: int = Field(default=20, ge=1, le=1000)
    graceful_shutdown: Duration = timedelta(seconds=30)
    """How long SIGTERM waits for running activities before cancelling them."""
    heartbeat_timeout: Duration = timedelta(seconds=10)
    """A dead worker's LLM call is retried elsewhere after this long."""
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """prometheus-client metrics port (0 disables)."""
    sdk_metrics_port: int = Field(default=9465, ge=0, le=65535)
    """The Temporal SDK's own metrics port (0 disables)."""
    metrics_host: str = "0.0.0.0"


class WorkerConfig(_Model):
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
    retry_policies: RetryPoliciesConfig = Field(default_factory=RetryPoliciesConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
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


def load_config(path: str | Path) -> WorkerConfig:
    """Read and validate a YAML or JSON configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {p}: {err.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"configuration file {p} is not valid YAML/JSON: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
    return parse_config(data)
