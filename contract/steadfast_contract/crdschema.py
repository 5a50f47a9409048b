"""The ResearchAgent's OpenAPI schema: every field described, typed, bounded, defaulted.

Split from :mod:`.crdgen` (which assembles the CRD around it) so each stays
readable. See :mod:`.crdgen` for the choices behind durations, cron and scale.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

MAX_RUNS_LISTED = 50
"""Runs listed in ``status.runs`` at most (the status object's size)."""

_DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
_CRON_RULE = (
    "self == '' || self.matches('^(@(yearly|annually|monthly|weekly|daily|hourly)"
    "|@every [0-9]+(s|m|h)"
    "|([0-9*/,?LW#A-Za-z-]+ ){4}[0-9*/,?LW#A-Za-z-]+)$')"
)
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


def _str(desc: str, default: str | None = "", max_length: int = 253, **kw: Any) -> Schema:
    s: Schema = {"type": "string", "description": desc, "maxLength": max_length, **kw}
    if default is not None:
        s["default"] = default
    return s


def _int(desc: str, default: int | None, minimum: int, maximum: int) -> Schema:
    s: Schema = {"type": "integer", "description": desc, "minimum": minimum, "maximum": maximum}
    if default is not None:
        s["default"] = default
    return s


def _num(desc: str, default: float | None, minimum: float, maximum: float) -> Schema:
    s: Schema = {"type": "number", "description": desc, "minimum": minimum, "maximum": maximum}
    if default is not None:
        s["default"] = default
    return s


def _duration(desc: str, default: str | None) -> Schema:
    return _str(
        desc + " A number with one unit: ms, s, m or h (for example 500ms, 2s, 1m).",
        default,
        max_length=16,
        pattern=_DURATION_PATTERN,
    )


def _obj(desc: str, props: dict[str, Schema], **kw: Any) -> Schema:
    # The default is spelled out in full: the API server validates a default (CEL
    # rules included) as written, without applying the defaults nested inside it.
    default = {k: v["default"] for k, v in props.items() if "default" in v}
    return {"type": "object", "description": desc, "properties": props, "default": default, **kw}


def _secret_ref(what: str) -> Schema:
    return _obj(
        f"Secret (in the agent's namespace) and key holding {what}. Leave both empty for none.",
        {
            "name": _str("Name of the Secret.", pattern=r"^$|" + _DNS_SUBDOMAIN),
            "key": _str("Key inside the Secret.", pattern=r"^$|" + _SECRET_KEY),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "(self.name == '') == (self.key == '')",
                    "message": "name and key must be given together",
                }
            ]
        },
    )


def _retry(cls: str, initial: str, coeff: float, max_interval: str | None, attempts: int) -> Schema:
    max_desc = "Longest wait between attempts."
    if max_interval is None:
        max_desc += " Unset means Temporal's default of 100 x initialInterval."
    return _obj(
        f"Retry policy of {cls} activities. Unset fields take the defaults shown.",
        {
            "initialInterval": _duration("Wait before the first retry.", initial),
            "backoffCoefficient": _num(
                "Factor by which the wait grows after each attempt.", coeff, 1.0, 100.0
            ),
            "maximumInterval": _duration(max_desc, max_interval),
            "maximumAttempts": _int(
                "Attempts in all, the first included; 0 means unlimited.", attempts, 0, 1000
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.maximumInterval) || "
                    "duration(self.maximumInterval) >= duration(self.initialInterval)",
                    "message": "maximumInterval must be at least initialInterval",
                    "fieldPath": ".maximumInterval",
                }
            ]
        },
    )


def spec_schema() -> Schema:
    """The ``spec`` of docs/design.md §2, every field described, typed, bounded and defaulted."""
    temporal = _obj(
        "Where the agent's workflows run.",
        {
            "address": _str(
                "host:port of the Temporal frontend. Empty uses the operator's default "
                "(the chart's temporal.address).",
                max_length=255,
            ),
            "namespace": _str("Temporal namespace.", "default", max_length=255),
            "taskQueue": _str(
                "Task queue the workers poll. Empty means steadfast-<namespace>-<name>.",
                max_length=255,
            ),
            "tls": _obj(
                "mTLS client certificate for the Temporal frontend.",
                {
                    "secretName": _str(
                        "Secret with tls.crt, tls.key and (optionally) ca.crt; empty disables "
                        "mTLS.",
                        pattern=r"^$|" + _DNS_SUBDOMAIN,
                    )
                },
            ),
            "apiKeySecretRef": _secret_ref("a Temporal Cloud API key (implies TLS)"),
        },
    )
    pricing = {
        "type": "object",
        "description": "USD per million tokens, overriding the built-in price table for "
        "the model. Omit to use the table.",
        "properties": {
            "inputPerMTok": _num("USD per million input tokens.", None, 0, 10000),
            "outputPerMTok": _num("USD per million output tokens.", None, 0, 10000),
            "cacheReadPerMTok": _num("USD per million cache-read tokens.", 0.0, 0, 10000),
            "cacheWritePerMTok": _num("USD per million cache-write tokens.", 0.0, 0, 10000),
        },
        "required": ["inputPerMTok", "outputPerMTok"],
    }
    model = _obj(
        "The LLM the agent calls.",
        {
            "provider": _str("LLM provider.", "anthropic", max_length=32, enum=["anthropic"]),
            "name": _str("Model name.", "claude-sonnet-4-6", max_length=100, minLength=1),
            "maxTokens": _int(
                "Most output tokens per call; the budget reserves this much before each call.",
                2000,
                1,
                128000,
            ),
            "apiKeySecretRef": _secret_ref("the model provider's API key"),
            "baseURL": _str(
                "Alternative API base URL (a gateway or the simulator); empty is the vendor's.",
                max_length=2048,
            ),
            "pricing": pricing,
        },
    )
    search = _obj(
        "The web search the agent uses.",
        {
            "provider": _str(
                "Search provider: http (an endpoint of your own) or anthropic-web-search.",
                "http",
                max_length=32,
                enum=["http", "anthropic-web-search"],
            ),
            "endpoint": _str("Search endpoint URL, required by provider http.", max_length=2048),
            "apiKeySecretRef": _secret_ref("the search API key, if the endpoint needs one"),
        },
    )
    storage = _obj(
        "Where reports are saved.",
        {
            "postgresSecretRef": _secret_ref(
                "a Postgres DSN; empty saves to SQLite inside the pod (for trials only)"
            )
        },
    )
    email = _obj(
        "The review-request email, sent at most once per run.",
        {
            "to": {
                "type": "array",
                "description": "Recipients; empty skips the email step.",
                "maxItems": 50,
                "default": [],
                "items": _str("An email address.", None, 254, pattern=r"^[^@\s]+@[^@\s]+$"),
            },
            "from": _str("Sender address; empty uses steadfast@localhost.", max_length=254),
            "smtpSecretRef": _secret_ref("an smtp:// or smtps:// URL"),
        },
    )
    notify = _obj(
        "Who hears about finished reports.",
        {
            "email": email,
            "requireApproval": {
                "type": "boolean",
                "description": "Wait for `steadfast approve` before sending the email.",
                "default": False,
            },
        },
    )
    retry = _obj(
        "Retry policies per activity class; defaults are the seed's patterns.",
        {
            "llm": _retry("LLM", "2s", 2.0, "60s", 5),
            "search": _retry("web search", "5s", 2.0, None, 3),
            "database": _retry("database", "500ms", 1.5, None, 10),
            "email": _retry("email (at most once by default)", "1s", 2.0, None, 1),
        },
    )
    budget = _obj(
        "Spending limits in USD.",
        {
            "maxUSDPerRun": _num(
                "A run stops with phase BudgetExhausted before a call that could exceed this.",
                1.0,
                0.0001,
                100000,
            ),
            "maxUSDPerDay": _num(
                "No new run starts on a UTC day once the agent's spend reached this.",
                50.0,
                0.0001,
                10000000,
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.maxUSDPerRun <= self.maxUSDPerDay",
                    "message": "maxUSDPerRun cannot exceed maxUSDPerDay",
                }
            ]
        },
    )
    quantity = {
        "type": "object",
        "description": "Resource name to quantity.",
        "maxProperties": 16,
        "additionalProperties": {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
        },
    }
    workers = _obj(
        "The worker Deployment and how its replicas are scaled.",
        {
            "image": _str(
                "Worker container image; empty uses the operator's default (the chart's).",
                max_length=512,
            ),
            "minReplicas": _int("Fewest workers; 0 allows scaling to zero.", 0, 0, 1000),
            "maxReplicas": _int("Most workers.", 10, 1, 1000),
            "targetBacklogPerWorker": _int(
                "Backlogged tasks one worker is expected to absorb.", 5, 1, 10000
            ),
            "scaleDownDelay": _duration(
                "Idle time (no backlog, no running run) before scaling down.", "60s"
            ),
            "autoscaler": _str(
                "Who owns the replicas: builtin (this operator), keda (a ScaledObject) or "
                "none (left to you).",
                "builtin",
                max_length=16,
                enum=["builtin", "keda", "none"],
            ),
            "maxConcurrentActivities": _int("Activities one worker runs at once.", 20, 1, 1000),
            "resources": _obj(
                "Container resources of each worker.",
                {"requests": quantity, "limits": quantity},
            ),
        },
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas cannot exceed maxReplicas",
                    "fieldPath": ".minReplicas",
                }
            ]
        },
    )
    return {
        "type": "object",
        "description": "What the agent researches, with which model, and how it runs.",
        "properties": {
            "temporal": temporal,
            "model": model,
            "search": search,
            "storage": storage,
            "notify": notify,
            "topics": {
                "type": "array",
                "description": "One workflow per topic, with an id derived from namespace, "
                "name and topic, so a repeated start never duplicates a run.",
                "minItems": 1,
                "maxItems": 200,
                "x-kubernetes-list-type": "set",
                "items": _str("A research topic.", None, 500, minLength=1),
            },
            "schedule": _str(
                "Optional cron (5 fields, UTC): a Temporal Schedule re-runs the topics.",
                "",
                128,
                **{"x-kubernetes-validations": [{"rule": _CRON_RULE, "message": "not a cron"}]},
            ),
            "retryPolicies": retry,
            "budget": budget,
            "workers": workers,
            "deletionPolicy": _str(
                "What happens to running workflows when the agent is deleted.",
                "Cancel",
                max_length=16,
                enum=["Cancel", "Abandon"],
            ),
        },
        "required": ["topics"],
    }


def status_schema() -> Schema:
    """What the operator reports; written only by the operator."""
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _str("Ready, WorkersAvailable or BudgetExhausted.", None, 64),
            "status": _str("True, False or Unknown.", None, 8),
            "reason": _str("CamelCase reason.", None, 128),
            "message": _str("What happened and, when False, what to fix.", None, 2048),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    run = {
        "type": "object",
        "properties": {
            "topic": {"type": "string"},
            "workflowId": {"type": "string"},
            "runId": {"type": "string"},
            "phase": {"type": "string"},
            "startedAt": {"type": "string"},
            "closedAt": {"type": "string"},
            "costUSD": {"type": "number"},
            "llmCalls": {"type": "integer"},
            "retries": {"type": "integer"},
            "reportId": {"type": "string"},
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator.",
        "properties": {
            "observedGeneration": {"type": "integer"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "workers": {
                "type": "object",
                "properties": {
                    "desired": {"type": "integer"},
                    "ready": {"type": "integer"},
                    "selector": {"type": "string"},
                    "lastActiveTime": {"type": "string"},
                    "lastScaleTime": {"type": "string"},
                },
            },
            "taskQueue": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "backlog": {"type": "integer"},
                    "backlogAgeSeconds": {"type": "number"},
                    "pollers": {"type": "integer"},
                    "addRate": {"type": "number"},
                    "dispatchRate": {"type": "number"},
                    "runningWorkflows": {"type": "integer"},
                },
            },
            "runs": {
                "type": "array",
                "description": (
                    "Each topic's newest run first, then older runs, newest first;"
                    f" at most {MAX_RUNS_LISTED}."
                ),
                "items": run,
            },
            "runsSummary": _str("Completed runs / all runs.", None, 32),
            "schedule": {"type": "object", "properties": {"id": {"type": "string"}}},
            "cost": {
                "type": "object",
                "properties": {
                    "totalUSD": {"type": "number"},
                    "todayUSD": {"type": "number"},
                    "day": {"type": "string"},
                    "inputTokens": {"type": "integer"},
                    "outputTokens": {"type": "integer"},
                },
            },
        },
    }
