"""Names derived from a ResearchAgent: task queues, workflow ids, and which names work.

Both the operator and the command line start workflows, and a repeated start of
the same topic must land on the same workflow id so Temporal can deduplicate it.
Keeping the derivation in one pure module is what makes that true.

The agent's own name is the stem of its children's names, and the API server
accepts names (253 characters, dots, a leading digit) that those children cannot
carry: ``<name>-worker`` names a Service, a DNS-1035 label of at most 63
characters. :data:`AGENT_NAME_RULE` is the one statement of what works; the CRD
enforces it with a CEL rule (:mod:`.crdgen`) and the operator checks it again.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^a-z0-9]+")

WORKER_SUFFIX = "-worker"
"""What the worker Deployment, Service, PodDisruptionBudget and KEDA objects append."""
AGENT_NAME_MAX = 63 - len(WORKER_SUFFIX)
"""The longest agent name whose ``<name>-worker`` Service name is a DNS label (56)."""
AGENT_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1035 label: a lowercase letter first, then letters, digits and ``-``."""
AGENT_NAME_RULE = (
    f"metadata.name must be at most {AGENT_NAME_MAX} characters of lowercase letters, digits "
    "and '-', starting with a letter and ending with a letter or digit (no '.'): the agent's "
    f"Service is named <name>{WORKER_SUFFIX}, a DNS label of at most 63 characters"
)


def agent_name_ok(name: str) -> bool:
    """Whether every child of an agent called ``name`` gets a name the API server accepts."""
    return len(name) <= AGENT_NAME_MAX and re.fullmatch(AGENT_NAME_PATTERN, name) is not None


SEPARATOR = "."
"""Joins namespace and agent in names shared across agents. Neither a namespace (a
DNS-1123 label) nor an agent name (:data:`AGENT_NAME_PATTERN`) can hold it, so
``steadfast.a-b.c`` and ``steadfast.a.b-c`` are two queues, where ``-`` made one."""


def default_task_queue(namespace: str, agent: str) -> str:
    """Task queue used when a ResearchAgent leaves ``spec.temporal.taskQueue`` empty."""
    return f"steadfast{SEPARATOR}{namespace}{SEPARATOR}{agent}"


def default_queue_owner(task_queue: str) -> tuple[str, str] | None:
    """The (namespace, agent) whose default task queue ``task_queue`` is, or None.

    :data:`SEPARATOR` is in neither a namespace nor an agent name, so the default form
    is read one way only: another agent naming it would share that agent's workers.
    """
    head, sep, rest = task_queue.partition(SEPARATOR)
    namespace, sep2, agent = rest.partition(SEPARATOR)
    if head != "steadfast" or not (sep and sep2 and namespace and agent):
        return None
    if SEPARATOR in agent:
        return None
    return namespace, agent


def legacy_task_queue(namespace: str, agent: str) -> str:
    """The default task queue of releases before :data:`SEPARATOR`: ambiguous
    (namespace ``a-b`` agent ``c`` and namespace ``a`` agent ``b-c`` share it), kept
    only by agents already running on it (``steadfast_operator.planner.pin_task_queue``)."""
    return f"steadfast-{namespace}-{agent}"


def topic_slug(topic: str, limit: int = 40) -> str:
    """A readable, id-safe rendering of a topic (not unique on its own)."""
    slug = _UNSAFE.sub("-", topic.lower()).strip("-")
    return slug[:limit].rstrip("-") or "topic"


def workflow_id_prefix(namespace: str, agent: str) -> str:
    """What every workflow id of one agent starts with.

    Not unique to the agent (``news`` is a prefix of ``news-eu``, namespace ``a-b``
    agent ``c`` reads as namespace ``a`` agent ``b-c``): visibility queries name
    exact ids (:func:`visibility_queries`), never this prefix alone.
    """
    return f"research-{namespace}-{agent}-"


def workflow_id(namespace: str, agent: str, topic: str) -> str:
    """Stable workflow id for one topic of one agent.

    A short hash of the exact topic keeps ids unique when two topics share a
    slug, while the slug keeps them readable in the Temporal UI.
    """
    key = topic_key(namespace, agent, topic)
    return f"{workflow_id_prefix(namespace, agent)}{topic_slug(topic)}-{key}"


def topic_key(namespace: str, agent: str, topic: str) -> str:
    """A short hash of the exact (namespace, agent, topic); the NUL separators make
    the triple unambiguous, so two agents' ids never collide where their readable
    prefixes do. Unchanged since the first release: existing runs keep their ids."""
    return hashlib.sha256(f"{namespace}\0{agent}\0{topic}".encode()).hexdigest()[:10]


def schedule_id(workflow_id: str) -> str:
    """One Schedule per topic; its runs get ``<workflow_id>-<timestamp>`` ids and carry
    this id in the built-in ``TemporalScheduledById`` search attribute."""
    return f"{workflow_id}-schedule"


_SCHEDULED_TIME = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def scheduled_run(run_id: str, workflow_id: str) -> bool:
    """Whether ``run_id`` names a run the Schedule of ``workflow_id`` started: Temporal
    appends ``-`` and the scheduled time (RFC 3339, UTC, to the second). Any other
    suffix is another agent's id (``news`` topic ``ai`` is a prefix of every id of an
    agent named ``news-ai-<hash>``)."""
    suffix = run_id.removeprefix(workflow_id)
    return suffix != run_id and _SCHEDULED_TIME.fullmatch(suffix) is not None


QUERY_IDS = 50
"""Workflow ids per visibility query: keeps each query a few kilobytes."""


def visibility_queries(workflow_ids: list[str]) -> list[str]:
    """Queries that list exactly the runs of ``workflow_ids``, and their Schedules' runs.

    Exact ids, never a prefix: another agent's runs are never listed, so no limit
    can cut an agent's own runs off behind a sibling's. Ids are ``[a-z0-9-]``
    (:func:`workflow_id`), safe inside quotes.
    """
    out = []
    for i in range(0, len(workflow_ids), QUERY_IDS):
        chunk = workflow_ids[i : i + QUERY_IDS]
        runs = ", ".join(f"'{w}'" for w in chunk)
        scheduled = ", ".join(f"'{schedule_id(w)}'" for w in chunk)
        out.append(f"(WorkflowId IN ({runs}) OR TemporalScheduledById IN ({scheduled}))")
    return out
