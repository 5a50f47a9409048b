"""The ResearchAgent's ``spec`` as one typed model (docs/design.md §2).

The operator validates what the API server hands it against this model, and the
command line validates a local manifest against it; field names, defaults and
bounds are those of the CRD.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from steadfast_contract.config import Duration


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class SecretRef(_Model):
    """``{name, key}`` of a Secret in the agent's namespace; empty means none."""

    name: str = ""
    key: str = ""

    @property
    def set(self) -> bool:
        return bool(self.name)


class TemporalTLS(_Model):
    secret_name: str = ""


class TemporalSpec(_Model):
    address: str = ""
    namespace: str = "default"
    task_queue: str = ""
    tls: TemporalTLS = Field(default_factory=TemporalTLS)
    api_key_secret_ref: SecretRef = Field(default_factory=SecretRef)


class PricingSpec(_Model):
    input_per_m_tok: float = Field(ge=0, alias="inputPerMTok")
    output_per_m_tok: float = Field(ge=0, alias="outputPerMTok")
    cache_read_per_m_tok: float = Field(default=0.0, ge=0, alias="cacheReadPerMTok")
    cache_write_per_m_tok: float = Field(default=0.0, ge=0, alias="cacheWritePerMTok")


class ModelSpec(_Model):
    provider: Literal["anthropic"] = "anthropic"
    name: str = "claude-sonnet-4-6"
    max_tokens: int = Field(default=2000, ge=1, le=128_000)
    api_key_secret_ref: SecretRef = Field(default_factory=SecretRef)
    base_url: str = Field(default="", alias="baseURL")
    pricing: PricingSpec | None = None


class SearchSpec(_Model):
    provider: Literal["http", "anthropic-web-search"] = "http"
    endpoint: str = ""
    api_key_secret_ref: SecretRef = Field(default_factory=SecretRef)


class StorageSpec(_Model):
    postgres_secret_ref: SecretRef = Field(default_factory=SecretRef)


class EmailSpec(_Model):
    to: list[str] = Field(default_factory=list)
    from_: str = Field(default="", alias="from")
    smtp_secret_ref: SecretRef = Field(default_factory=SecretRef)


class NotifySpec(_Model):
    email: EmailSpec = Field(default_factory=EmailSpec)
    require_approval: bool = False


class BudgetSpec(_Model):
    max_usd_per_run: float = Field(default=1.0, gt=0, alias="maxUSDPerRun")
    max_usd_per_day: float = Field(default=50.0, gt=0, alias="maxUSDPerDay")


class WorkersSpec(_Model):
    image: str = ""
    min_replicas: int = Field(default=0, ge=0, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_backlog_per_worker: int = Field(default=5, ge=1, le=10_000)
    scale_down_delay: Duration = timedelta(seconds=60)
    autoscaler: Literal["builtin", "keda", "none"] = "builtin"
    max_concurrent_activities: int = Field(default=20, ge=1, le=1000)
    resources: dict[str, dict[str, str | int]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounds(self) -> WorkersSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas cannot exceed maxReplicas")
        return self


class AgentSpec(_Model):
    """``spec`` of a ResearchAgent (docs/design.md §2), defaults as in the CRD."""

    temporal: TemporalSpec = Field(default_factory=TemporalSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    notify: NotifySpec = Field(default_factory=NotifySpec)
    topics: list[str] = Field(min_length=1)
    schedule: str = ""
    retry_policies: dict[str, dict[str, Any]] = Field(default_factory=dict)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    deletion_policy: Literal["Cancel", "Abandon"] = "Cancel"

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
