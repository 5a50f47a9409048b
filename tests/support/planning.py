"""Observations for the planner's table tests: one agent, two topics, fixed time and ids.

Every value here is written out (workflow ids, the queue name); none is computed
with the planner or its building blocks.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from steadfast_contract.starter import RunRow
from steadfast_operator import render
from steadfast_operator.planner import Observed, Plan, TemporalView
from steadfast_operator.spec import validate, worker_config
from steadfast_operator.status import QueueInfo

AGENT = render.AgentRef(name="watch", namespace="research", uid="uid-1")
DEFAULTS = render.Defaults(image="steadfast/worker:test", temporal_address="temporal:7233")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
QUEUE = "steadfast-research-watch"
ID = {
    "alpha": "research-research-watch-alpha-b2adfec925",
    "beta": "research-research-watch-beta-6b8afc629c",
    "old": "research-research-watch-old-c9c6a53f75",
}
CRON = "0 6 * * 1"


def raw_spec(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "topics": ["alpha", "beta"],
        "search": {"endpoint": "http://search/"},
        "storage": {"postgresSecretRef": {"name": "reports-db", "key": "dsn"}},
        "budget": {"maxUSDPerRun": 1.0, "maxUSDPerDay": 1.0},
    }
    raw.update(over)
    return raw


def observed(raw: dict[str, Any] | None = None, **kw: Any) -> Observed:
    raw = raw or raw_spec()
    spec = validate(AGENT, raw, DEFAULTS)
    base = Observed(
        agent=AGENT,
        now=NOW,
        generation=2,
        defaults=DEFAULTS,
        spec=spec,
        config=worker_config(AGENT, spec, DEFAULTS),
    )
    return replace(base, **kw)


def run(topic: str, cost: float = 0.1, *, started: datetime = NOW, done: bool = True) -> RunRow:
    return RunRow(
        topic=topic,
        workflow_id=ID[topic],
        run_id=f"run-{topic}",
        phase="Completed" if done else "Writing",
        started_at=started - timedelta(minutes=10),
        closed_at=started - timedelta(minutes=5) if done else None,
        cost_usd=cost,
    )


def view(*runs: RunRow, backlog: int = 0, pollers: int = 1) -> TemporalView:
    return TemporalView(QueueInfo(QUEUE, backlog=backlog, pollers=pollers), tuple(runs))


def live(raw: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """What the cluster holds after the operator applied ``raw`` (as the API server keeps it)."""
    spec = validate(AGENT, raw, DEFAULTS)
    objs = {o["kind"]: o for o in render.children(AGENT, spec, DEFAULTS)}
    for kind in ("ScaledObject", "TriggerAuthentication", "PodDisruptionBudget"):
        objs.setdefault(kind, None)  # type: ignore[arg-type]
    return dict(objs)


def verbs(plan: Plan) -> list[tuple[str, str]]:
    return [(c.verb, c.kind) for c in plan.children]


def condition(plan: Plan, type_: str) -> tuple[str, str]:
    assert plan.status is not None
    (found,) = [c for c in plan.status["conditions"] if c["type"] == type_]
    return found["status"], found["reason"]
