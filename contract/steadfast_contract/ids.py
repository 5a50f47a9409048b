"""Names derived from a ResearchAgent: task queues and workflow ids.

Both the operator and the command line start workflows, and a repeated start of
the same topic must land on the same workflow id so Temporal can deduplicate it.
Keeping the derivation in one pure module is what makes that true.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^a-z0-9]+")


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
