"""From a ResearchAgent manifest to a worker configuration.

A user describes an agent once, as a ``ResearchAgent`` resource (docs/design.md §2).
``steadfast dev`` and ``steadfast run`` read that resource from a file, and the
operator reads it from the Kubernetes API; both must turn it into the same
:class:`~steadfast_contract.config.WorkerConfig`, so the mapping lives here as
pure functions of the manifest.

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
from typing import Any, Final

import yaml

from steadfast_contract.config import ConfigError, WorkerConfig, parse_config

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

#: Fields of ``spec`` and of its sections. The CRD rejects unknown fields on a
#: cluster; a local file gets the same treatment so a typo is not silently ignored.
_SPEC_FIELDS: Final[Mapping[str, frozenset[str] | None]] = {
    "temporal": frozenset({"address", "namespace", "taskQueue", "tls", "apiKeySecretRef"}),
    "model": frozenset({"provider", "name", "maxTokens", "apiKeySecretRef", "baseURL", "pricing"}),
    "search": frozenset({"provider", "endpoint", "apiKeySecretRef"}),
    "storage": frozenset({"postgresSecretRef"}),
    "notify": frozenset({"email", "requireApproval"}),
    "topics": None,
    "schedule": None,
    "retryPolicies": frozenset({"llm", "search", "database", "email"}),
    "budget": frozenset({"maxUSDPerRun", "maxUSDPerDay"}),
    "workers": frozenset(
        {
            "image",
            "minReplicas",
            "maxReplicas",
            "targetBacklogPerWorker",
            "scaleDownDelay",
            "autoscaler",
            "maxConcurrentActivities",
            "resources",
        }
    ),
    "deletionPolicy": None,
}


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


def _section(spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise AgentError(f"spec.{key}: expected a mapping, got {type(value).__name__}")
    return value


def _secret_set(ref: object, where: str) -> bool:
    """Whether a ``{name, key}`` Secret reference is filled in."""
    if ref is None:
        return False
    if not isinstance(ref, Mapping):
        raise AgentError(f"spec.{where}: expected {{name, key}}, got {ref!r}")
    return bool(ref.get("name"))


def check_manifest(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check the envelope and field names; return ``spec``."""
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
    for key, value in spec.items():
        if key not in _SPEC_FIELDS:
            raise AgentError(f"spec.{key}: unknown field (known: {', '.join(_SPEC_FIELDS)})")
        allowed = _SPEC_FIELDS[key]
        if allowed is not None and isinstance(value, Mapping):
            for sub in value:
                if sub not in allowed:
                    raise AgentError(
                        f"spec.{key}.{sub}: unknown field (known: {', '.join(sorted(allowed))})"
                    )
    return spec


def topics_from_agent(manifest: Mapping[str, Any]) -> list[str]:
    """The topics to research, one workflow each, in the manifest's order, deduplicated."""
    spec = check_manifest(manifest)
    topics = spec.get("topics") or []
    if not isinstance(topics, list):
        raise AgentError("spec.topics: expected a list of strings")
    seen: list[str] = []
    for i, topic in enumerate(topics):
        if not isinstance(topic, str) or not topic.strip():
            raise AgentError(f"spec.topics[{i}]: expected a non-empty string, got {topic!r}")
        if topic not in seen:
            seen.append(topic)
    return seen


def schedule_from_agent(manifest: Mapping[str, Any]) -> str:
    """The optional cron expression that re-runs the topics ("" when none)."""
    value = check_manifest(manifest).get("schedule") or ""
    if not isinstance(value, str):
        raise AgentError("spec.schedule: expected a cron string")
    return value


def _temporal(spec: Mapping[str, Any], tls_dir: str, api_key_file: str) -> dict[str, Any]:
    src = _section(spec, "temporal")
    out: dict[str, Any] = {}
    for key in ("address", "namespace", "taskQueue"):
        if src.get(key):
            out[key] = src[key]
    tls = src.get("tls") or {}
    if not isinstance(tls, Mapping):
        raise AgentError("spec.temporal.tls: expected {secretName}")
    if tls.get("secretName"):
        out["tls"] = {"secretDir": tls_dir}
    if _secret_set(src.get("apiKeySecretRef"), "temporal.apiKeySecretRef") and api_key_file:
        out["apiKeyFile"] = api_key_file
    out["apiKeyEnv"] = SECRET_ENV["temporal.apiKeySecretRef"]
    return out


def _model(spec: Mapping[str, Any]) -> dict[str, Any]:
    src = _section(spec, "model")
    out: dict[str, Any] = {"apiKeyEnv": SECRET_ENV["model.apiKeySecretRef"]}
    _secret_set(src.get("apiKeySecretRef"), "model.apiKeySecretRef")
    for key in ("provider", "name", "maxTokens", "baseURL", "pricing"):
        if src.get(key) not in (None, ""):
            out[key] = src[key]
    return out


def _search(spec: Mapping[str, Any]) -> dict[str, Any]:
    src = _section(spec, "search")
    _secret_set(src.get("apiKeySecretRef"), "search.apiKeySecretRef")
    out: dict[str, Any] = {"apiKeyEnv": SECRET_ENV["search.apiKeySecretRef"]}
    for key in ("provider", "endpoint"):
        if src.get(key):
            out[key] = src[key]
    return out


def _notify(spec: Mapping[str, Any]) -> dict[str, Any]:
    src = _section(spec, "notify")
    email = src.get("email") or {}
    if not isinstance(email, Mapping):
        raise AgentError("spec.notify.email: expected {to, from, smtpSecretRef}")
    unknown = set(email) - {"to", "from", "smtpSecretRef"}
    if unknown:
        raise AgentError(f"spec.notify.email.{sorted(unknown)[0]}: unknown field")
    _secret_set(email.get("smtpSecretRef"), "notify.email.smtpSecretRef")
    out_email: dict[str, Any] = {"smtpUrlEnv": SECRET_ENV["notify.email.smtpSecretRef"]}
    if email.get("to"):
        out_email["to"] = email["to"]
    if email.get("from"):
        out_email["from"] = email["from"]
    out: dict[str, Any] = {"email": out_email}
    if "requireApproval" in src:
        out["requireApproval"] = src["requireApproval"]
    return out


def worker_config_from_agent(
    manifest: Mapping[str, Any],
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
    """Map a ResearchAgent manifest to the configuration of its workers.

    Keyword overrides replace what the manifest says, for the places where the
    runtime knows better than the author: ``steadfast dev`` points the model and
    search at its simulators and Temporal at its embedded server; the operator
    chooses metrics ports. Fields that only the operator uses (replicas,
    autoscaler, image, deletionPolicy, schedule) do not reach the worker.
    """
    spec = check_manifest(manifest)
    metadata = manifest["metadata"]
    storage = _section(spec, "storage")
    _secret_set(storage.get("postgresSecretRef"), "storage.postgresSecretRef")
    workers = _section(spec, "workers")
    doc: dict[str, Any] = {
        "agent": metadata["name"],
        "namespace": metadata.get("namespace") or "default",
        "temporal": _temporal(spec, tls_dir, api_key_file),
        "model": _model(spec),
        "search": _search(spec),
        "storage": {"postgresDsnEnv": SECRET_ENV["storage.postgresSecretRef"]},
        "notify": _notify(spec),
        "retryPolicies": dict(_section(spec, "retryPolicies")),
        "budget": dict(_section(spec, "budget")),
        "worker": {},
    }
    if "maxConcurrentActivities" in workers:
        doc["worker"]["maxConcurrentActivities"] = workers["maxConcurrentActivities"]
    if temporal_address is not None:
        doc["temporal"]["address"] = temporal_address
    if model_base_url is not None:
        doc["model"]["baseURL"] = model_base_url
    if search_endpoint is not None:
        doc["search"]["endpoint"] = search_endpoint
        doc["search"]["provider"] = "http"
    if sqlite_path is not None:
        doc["storage"]["sqlitePath"] = sqlite_path
    if metrics_port is not None:
        doc["worker"]["metricsPort"] = metrics_port
    if sdk_metrics_port is not None:
        doc["worker"]["sdkMetricsPort"] = sdk_metrics_port
    try:
        return parse_config(doc)
    except ConfigError as err:
        # The configuration's field paths are the spec's, so say where they came from.
        raise AgentError(f"ResearchAgent {metadata['name']} (spec.*): {err}") from None


def load_manifest(path: str | Path) -> Mapping[str, Any]:
    """Read the first ResearchAgent document of a YAML file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise AgentError(f"cannot read {p}: {err.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise AgentError(f"{p} is not valid YAML: {err}") from None
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == KIND:
            return doc
    raise AgentError(f"{p}: no document with kind: {KIND}")


def agent_from_manifest(manifest: Mapping[str, Any], **overrides: Any) -> Agent:
    """Everything ``steadfast dev``/``run`` need from one manifest."""
    config = worker_config_from_agent(manifest, **overrides)
    return Agent(
        name=config.agent,
        namespace=config.namespace,
        config=config,
        topics=tuple(topics_from_agent(manifest)),
        schedule=schedule_from_agent(manifest),
    )
