"""The ResearchAgent spec as the operator reads it, and the checks the schema cannot make.

The API server already enforces the CRD's schema and CEL rules, so most bad
input never reaches the operator. What does reach it is validated again here
(an older CRD, a hand-edited object, defaults the schema filled in), and the
checks that need more than one field's syntax live here too: a search endpoint
for the ``http`` provider, a budget that fits at least one call, an image to run,
a durable report store (``steadfast dev`` keeps SQLite; a pod's disk does not).

A failure is a :class:`InvalidSpec`, a :class:`kopf.PermanentError` carrying the
object's name and a message naming the field, so Kopf stops retrying the same
generation and the handler reports ``Ready=False`` instead of crash-looping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from steadfast_contract import ids
from steadfast_contract.agentfile import AgentError, describe_errors
from steadfast_contract.budget import one_call_usd
from steadfast_contract.config import WorkerConfig
from steadfast_contract.pricing import UnknownModelError, lookup
from steadfast_contract.spec import AgentSpec
from steadfast_operator import render


class InvalidSpec(kopf.PermanentError):
    """A spec that cannot work as written; retrying the same generation will not help."""

    def __init__(self, namespace: str, name: str, message: str, reason: str = "InvalidSpec"):
        super().__init__(f"ResearchAgent {namespace}/{name}: {message}")
        self.namespace = namespace
        self.name = name
        self.reason = reason
        self.detail = message


NO_DURABLE_STORE = (
    "spec.storage.postgresSecretRef: required in a cluster, where a report saved on a "
    "pod's disk is lost with the pod; create a Secret holding a postgresql:// DSN and name "
    "it and its key in spec.storage.postgresSecretRef (no worker runs until then)"
)
"""Why an agent without a durable report store gets no worker (docs/design.md §2)."""


def parse_spec(namespace: str, name: str, spec: Mapping[str, Any]) -> AgentSpec:
    """Validate a spec; raise :class:`InvalidSpec` naming the field on failure."""
    try:
        return AgentSpec.model_validate(dict(spec))
    except ValidationError as err:
        raise InvalidSpec(namespace, name, "; ".join(describe_errors(err))) from None


def check_semantics(
    namespace: str,
    name: str,
    spec: AgentSpec,
    *,
    default_image: str,
    default_temporal_address: str,
    output_price_per_mtok: float | None,
) -> None:
    """Cross-field checks the schema cannot express; :class:`InvalidSpec` on failure.

    ``output_price_per_mtok`` is the model's output price in the worker's price
    table, ``None`` when the table has no row for ``model.name``: such a model
    needs ``model.pricing``, or no run could keep its budget (the workflow's
    input resolves the price at start and would fail on every start).
    """
    if spec.search.provider == "http" and not spec.search.endpoint:
        raise InvalidSpec(
            namespace, name, "spec.search.endpoint: required when search.provider is http"
        )
    if not (spec.workers.image or default_image):
        raise InvalidSpec(
            namespace,
            name,
            "spec.workers.image: empty and the operator has no default image "
            "(set workers.image or the chart's worker image)",
        )
    if not (spec.temporal.address or default_temporal_address):
        raise InvalidSpec(
            namespace,
            name,
            "spec.temporal.address: empty and the operator has no default Temporal address",
        )
    for i, topic in enumerate(spec.topics):
        # The CRD only refuses an empty topic; a blank one is a mistake all the same
        # (``steadfast run`` and ``dev`` refuse it too), and its run would be paid for.
        if not topic.strip():
            raise InvalidSpec(
                namespace, name, f"spec.topics[{i}]: expected a topic, got only spaces"
            )
    owner = ids.default_queue_owner(spec.temporal.task_queue)
    if owner is not None and owner != (namespace, name):
        raise InvalidSpec(
            namespace,
            name,
            f"spec.temporal.taskQueue: {spec.temporal.task_queue} is the default task queue "
            f"of the agent {owner[1]} in namespace {owner[0]}: its workers would take this "
            "agent's runs (and this agent's workers its runs), each with its own store, "
            "recipients and keys; leave taskQueue empty or name a queue of this agent's own",
        )
    if spec.notify.email.to and not spec.notify.email.smtp_secret_ref.set:
        raise InvalidSpec(
            namespace,
            name,
            "spec.notify.email.smtpSecretRef: required when notify.email.to lists recipients",
        )
    if not spec.storage.postgres_secret_ref.set:
        raise InvalidSpec(namespace, name, NO_DURABLE_STORE, reason="NoDurableStore")
    price = spec.model.pricing.output_per_m_tok if spec.model.pricing else output_price_per_mtok
    if price is None:
        raise InvalidSpec(
            namespace,
            name,
            f"spec.model.name: no built-in price for model {spec.model.name!r}; set "
            "spec.model.pricing (inputPerMTok, outputPerMTok) or name a priced model",
        )
    one_call = one_call_usd(spec.model.max_tokens, price)
    if one_call > spec.budget.max_usd_per_run:
        raise InvalidSpec(
            namespace,
            name,
            f"spec.budget.maxUSDPerRun: {spec.budget.max_usd_per_run} USD is below one call "
            f"({spec.model.max_tokens} tokens x {price} USD/MTok = {one_call:.4f} USD); "
            "raise the budget or lower model.maxTokens",
            reason="BudgetBelowOneCall",
        )


def _output_price(spec: AgentSpec) -> float | None:
    """The price table's output price for the spec's model; ``None`` for an unknown model."""
    try:
        return lookup(spec.model.name).output_per_mtok
    except UnknownModelError:
        return None


def validate(
    agent: render.AgentRef, raw: Mapping[str, Any], defaults: render.Defaults
) -> AgentSpec:
    """The spec, if the operator would run it; :class:`InvalidSpec` naming the field if not.

    The agent's name is checked too: the CRD refuses a name its children cannot
    carry, but an older CRD (or ``steadfast plan``) does not.
    """
    if not ids.agent_name_ok(agent.name):
        raise InvalidSpec(agent.namespace, agent.name, ids.AGENT_NAME_RULE)
    spec = parse_spec(agent.namespace, agent.name, raw)
    check_semantics(
        agent.namespace,
        agent.name,
        spec,
        default_image=defaults.image,
        default_temporal_address=defaults.temporal_address,
        output_price_per_mtok=_output_price(spec),
    )
    return spec


def worker_config(
    agent: render.AgentRef, spec: AgentSpec, defaults: render.Defaults
) -> WorkerConfig:
    """The workers' configuration; :class:`InvalidSpec` when the manifest cannot give one."""
    try:
        return render.worker_config(agent, spec, defaults)
    except AgentError as err:
        raise InvalidSpec(agent.namespace, agent.name, str(err)) from None
