"""From a ResearchAgent manifest to a worker configuration.

A user describes an agent once, as a ``ResearchAgent`` resource (docs/design.md §2).
``steadfast dev`` and ``steadfast run`` read that resource from a file, and the
operator reads it from the Kubernetes API; both must turn it into the same
:class:`~steadfast_contract.config.WorkerConfig`, so the mapping lives here as
pure functions of the manifest. A file is validated by the same model as the
cluster's objects (:class:`~steadfast_contract.spec.AgentSpec`, from which the
CRD is generated), so a typo such as ``spec.model.nmae`` is refused here with
the field's path, as the API server would refuse it.

Secrets never travel in the configuration. A ``...SecretRef`` in the manifest
names a Kubernetes Secret; the worker reads the value from an environment
variable that the operator fills from that Secret (``secretKeyRef``) and that a
local user exports by hand. The mapping is fixed:

=============================================  ==========================
manifest field                                 environment variable
=============================================  ==========================
``spec.model.apiKeySecretRef``                 ``ANTHROPIC_API_KEY``
``spec.search.apiKeySecretRef``                ``STEADFAST_SEARCH_API_KEY``
``spec.storage.postgresSecretRef``             ``STEADFAST_POSTGRES_DSN``
``spec.notify.email.smtpSecretRef``            ``STEADFAST_SMTP_URL``
``spec.temporal.apiKeySecretRef``              ``TEMPORAL_API_KEY``
=============================================  ==========================

``spec.temporal.tls.secretName`` names a ``kubernetes.io/tls`` Secret; the
worker reads its ``tls.crt``, ``tls.key`` and, when present, ``ca.crt`` from
``tls_dir`` (where the operator mounts the Secret). The operator also mounts the
Temporal API key as a file (``api_key_file``) instead of the environment
variable, so a rotated key reaches a running worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, get_args

import yaml
from pydantic import BaseModel, ValidationError

from steadfast_contract.config import (
    ConfigError,
    WorkerConfig,
    parse_config,
    read_text,
    yaml_problem,
)
from steadfast_contract.spec import AgentSpec, ModelSpec, NotifySpec, SearchSpec, TemporalSpec

API_VERSION: Final = "steadfast.dev/v1alpha1"
KIND: Final = "ResearchAgent"

#: Secret reference (dotted path under ``spec``) -> environment variable.
SECRET_ENV: Final[Mapping[str, str]] = {
    "model.apiKeySecretRef": "ANTHROPIC_API_KEY",
    "search.apiKeySecretRef": "STEADFAST_SEARCH_API_KEY",
    "storage.postgresSecretRef": "STEADFAST_POSTGRES_DSN",
    "notify.email.smtpSecretRef": "STEADFAST_SMTP_URL",
    "temporal.apiKeySecretRef": "TEMPORAL_API_KEY",
}

#: Where the operator mounts the Temporal client certificate Secret.
DEFAULT_TLS_DIR: Final = "/etc/steadfast/temporal-tls"
DEFAULT_API_KEY_FILE: Final = "/etc/steadfast/temporal-api-key/api-key"


class AgentError(ConfigError):
    """The manifest is not a usable ResearchAgent; the message names the field."""


@dataclass(frozen=True)
class Agent:
    """A ResearchAgent read from a file: its worker configuration and its work."""

    name: str
    namespace: str
    config: WorkerConfig
    topics: tuple[str, ...]
    schedule: str


def check_manifest(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check the envelope (apiVersion, kind, metadata.name); return ``spec`` unvalidated."""
    if manifest.get("apiVersion") != API_VERSION:
        got = manifest.get("apiVersion")
        raise AgentError(f"apiVersion: expected {API_VERSION!r}, got {got!r}")
    if manifest.get("kind") != KIND:
        raise AgentError(f"kind: expected {KIND!r}, got {manifest.get('kind')!r}")
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata.get("name"):
        raise AgentError("metadata.name: required")
    spec = manifest.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise AgentError("spec: expected a mapping")
    return spec


def _where(loc: tuple[int | str, ...]) -> str:
    # pydantic marks a bad mapping key with a "[key]" step; the path is the mapping's.
    steps = [p for p in loc if p != "[key]"]
    return "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in steps)


def _known_fields(loc: tuple[int | str, ...]) -> str:
    """The field names allowed where ``loc`` (an unknown field) was found."""
    model: Any = AgentSpec
    for part in loc[:-1]:
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        info = fields.get(str(part))
        if info is None:
            return ""
        model = next(
            (
                t
                for t in (info.annotation, *get_args(info.annotation))
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            None,
        )
        if model is None:
            return ""
    names = sorted(info.alias or name for name, info in model.model_fields.items())
    return f" (known: {', '.join(names)})"


def describe_errors(err: ValidationError) -> list[str]:
    """One ``spec.path: problem`` line per error of :class:`AgentSpec` validation."""
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{_where(loc)}: unknown field{_known_fields(loc)}")
        else:
            lines.append(f"{_where(loc)}: {item['msg'].removeprefix('Value error, ')}")
    return lines


def parse_agent_spec(manifest: Mapping[str, Any]) -> AgentSpec:
    """The manifest's ``spec``, validated by the same model the operator and the CRD use."""
    raw = check_manifest(manifest)
    name = manifest["metadata"]["name"]
    try:
        spec = AgentSpec.model_validate(dict(raw))
    except ValidationError as err:
        raise AgentError(f"ResearchAgent {name}: " + "; ".join(describe_errors(err))) from None
    for i, topic in enumerate(spec.topics):
        # The CRD only refuses an empty topic; a blank one is a mistake all the same.
        if not topic.strip():
            raise AgentError(
                f"ResearchAgent {name}: spec.topics[{i}]: expected a non-empty string, "
                f"got {topic!r}"
            )
    return spec


def topics_from_agent(manifest: Mapping[str, Any]) -> list[str]:
    """The topics to research, one workflow each, in the manifest's order, deduplicated."""
    return parse_agent_spec(manifest).unique_topics()


def schedule_from_agent(manifest: Mapping[str, Any]) -> str:
    """The optional cron expression that re-runs the topics ("" when none)."""
    return parse_agent_spec(manifest).schedule


def _temporal(spec: TemporalSpec, tls_dir: str, api_key_file: str) -> dict[str, Any]:
    out: dict[str, Any] = {"apiKeyEnv": SECRET_ENV["temporal.apiKeySecretRef"]}
    # Empty means "the worker's default" here, as it does in the spec.
    for key, value in (
        ("address", spec.address),
        ("namespace", spec.namespace),
        ("taskQueue", spec.task_queue),
    ):
        if value:
            out[key] = value
    if spec.tls.secret_name:
        out["tls"] = {"secretDir": tls_dir}
    if spec.api_key_secret_ref.set and api_key_file:
        out["apiKeyFile"] = api_key_file
    return out


def _model(spec: ModelSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiKeyEnv": SECRET_ENV["model.apiKeySecretRef"],
        "provider": spec.provider,
        "name": spec.name,
        "maxTokens": spec.max_tokens,
        "pricing": spec.pricing,
        "contextTokens": spec.context_tokens,
    }
    if spec.base_url:
        out["baseURL"] = spec.base_url
    return out


def _search(spec: SearchSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiKeyEnv": SECRET_ENV["search.apiKeySecretRef"],
        "provider": spec.provider,
    }
    if spec.endpoint:
        out["endpoint"] = spec.endpoint
    return out


def _notify(spec: NotifySpec) -> dict[str, Any]:
    email: dict[str, Any] = {"smtpUrlEnv": SECRET_ENV["notify.email.smtpSecretRef"]}
    if spec.email.to:
        email["to"] = list(spec.email.to)
    if spec.email.from_:
        email["from"] = spec.email.from_
    return {
        "email": email,
        "requireApproval": spec.require_approval,
        "approvalTimeout": spec.approval_timeout,
    }


def worker_config_from_spec(
    name: str,
    namespace: str,
    spec: AgentSpec,
    *,
    temporal_address: str | None = None,
    model_base_url: str | None = None,
    search_endpoint: str | None = None,
    sqlite_path: str | None = None,
    tls_dir: str = DEFAULT_TLS_DIR,
    api_key_file: str = "",
    metrics_port: int | None = None,
    sdk_metrics_port: int | None = None,
) -> WorkerConfig:
    """Map a validated spec to the configuration of its workers.

    Keyword overrides replace what the spec says, for the places where the
    runtime knows better than the author: ``steadfast dev`` points the model and
    search at its simulators and Temporal at its embedded server; the operator
    chooses metrics ports. Fields that only the operator uses (replicas,
    autoscaler, image, deletionPolicy, schedule) do not reach the worker. The
    pricing, budget and retry sections are the same models on both sides and
    pass through as they are.
    """
    doc: dict[str, Any] = {
        "agent": name,
        "namespace": namespace,
        "temporal": _temporal(spec.temporal, tls_dir, api_key_file),
        "model": _model(spec.model),
        "search": _search(spec.search),
        "storage": {
            "postgresDsnEnv": SECRET_ENV["storage.postgresSecretRef"],
            "saveTimeout": spec.storage.save_timeout,
            "transcriptRetention": spec.storage.transcript_retention,
        },
        "notify": _notify(spec.notify),
        "retryPolicies": spec.retry_policies,
        "budget": spec.budget,
        "research": spec.research,
        "worker": {"maxConcurrentActivities": spec.workers.max_concurrent_activities},
    }
    overrides: list[tuple[str, str, object]] = [
        ("temporal", "address", temporal_address),
        ("model", "baseURL", model_base_url),
        ("search", "endpoint", search_endpoint),
        # An endpoint given by the runtime is the simulator's: plain HTTP search.
        ("search", "provider", None if search_endpoint is None else "http"),
        ("storage", "sqlitePath", sqlite_path),
        ("worker", "metricsPort", metrics_port),
        ("worker", "sdkMetricsPort", sdk_metrics_port),
    ]
    for section, key, value in overrides:
        if value is not None:
            doc[section][key] = value
    try:
        return parse_config(doc)
    except ConfigError as err:
        # The configuration's field paths are the spec's, so say where they came from.
        raise AgentError(f"ResearchAgent {name} (spec.*): {err}") from None


def worker_config_from_agent(manifest: Mapping[str, Any], **overrides: Any) -> WorkerConfig:
    """Validate a ResearchAgent manifest and map it to the configuration of its workers.

    ``overrides`` are those of :func:`worker_config_from_spec`.
    """
    spec = parse_agent_spec(manifest)
    metadata = manifest["metadata"]
    namespace = metadata.get("namespace") or "default"
    return worker_config_from_spec(metadata["name"], namespace, spec, **overrides)


def load_manifest(path: str | Path) -> Mapping[str, Any]:
    """Read the first ResearchAgent document of a YAML file."""
    p = Path(path)
    text = read_text(p, error=AgentError)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise AgentError(f"{p} is not valid YAML: {yaml_problem(err)}") from None
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == KIND:
            return doc
    raise AgentError(f"{p}: no document with kind: {KIND}")


def agent_from_manifest(manifest: Mapping[str, Any], **overrides: Any) -> Agent:
    """Everything ``steadfast dev``/``run`` need from one manifest."""
    spec = parse_agent_spec(manifest)
    metadata = manifest["metadata"]
    namespace = metadata.get("namespace") or "default"
    config = worker_config_from_spec(metadata["name"], namespace, spec, **overrides)
    return Agent(
        name=config.agent,
        namespace=config.namespace,
        config=config,
        topics=tuple(spec.unique_topics()),
        schedule=spec.schedule,
    )
