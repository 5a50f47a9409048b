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


def default_task_queue(namespace: str, agent: str) -> str:
    """Task queue used when a ResearchAgent leaves ``spec.temporal.taskQueue`` empty."""
    return f"steadfast-{namespace}-{agent}"


def topic_slug(topic: str, limit: int = 40) -> str:
    """A readable, id-safe rendering of a topic (not unique on its own)."""
    slug = _UNSAFE.sub("-", topic.lower()).strip("-")
    return slug[:limit].rstrip("-") or "topic"


def workflow_id_prefix(namespace: str, agent: str) -> str:
    """What every workflow id of one agent starts with (for visibility queries)."""
    return f"research-{namespace}-{agent}-"


def workflow_id(namespace: str, agent: str, topic: str) -> str:
    """Stable workflow id for one topic of one agent.

    A short hash of the exact topic keeps ids unique when two topics share a
    slug, while the slug keeps them readable in the Temporal UI.
    """
    digest = hashlib.sha256(f"{namespace}\0{agent}\0{topic}".encode()).hexdigest()[:10]
    return f"{workflow_id_prefix(namespace, agent)}{topic_slug(topic)}-{digest}"
