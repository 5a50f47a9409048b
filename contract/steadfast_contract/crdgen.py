"""Generates the ResearchAgent CRD from the spec model, so the two cannot disagree.

The CRD in ``crds/`` (and its copy in the chart) is the committed output of
``python -m steadfast_contract.crdgen``; a unit test fails when the two drift.
The ``spec`` schema is walked from :class:`~steadfast_contract.spec.AgentSpec`
by :mod:`.crdschema`, so a field, bound, default or CEL rule is written once, in
the model, and the four retry-policy classes and five secret references share
one definition each. This module adds what is not the spec: names, printer
columns, subresources and the envelope.

Choices worth knowing:

* Durations are strings with a single unit (``500ms``, ``2s``, ``1.5m``, ``1h``):
  both the worker's parser and CEL's ``duration()`` accept that form, so the
  ``maximumInterval >= initialInterval`` rule compares real durations.
* The cron check is a CEL regular expression of five fields (or ``@daily``-style
  descriptors and ``@every``); it catches typos, not every impossible value.
  Temporal parses the cron fully when the operator creates the Schedule, and a
  refusal there is reported as ``Ready=False``/``ScheduleInvalid``.
* The scale subresource points ``specReplicasPath`` at ``spec.workers.minReplicas``:
  ``kubectl scale ra/x --replicas=N`` (or an HPA) raises the floor the built-in
  autoscaler keeps, without adding a second owner of the Deployment's replicas.
  A value above ``maxReplicas`` is refused by the CEL rule on ``workers``.
* A root-level CEL rule refuses names the children cannot carry
  (:data:`steadfast_contract.ids.AGENT_NAME_RULE`): at the root, CEL sees
  ``self.metadata.name``, and a refusal at ``kubectl apply`` beats a 422 on
  every reconcile.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from steadfast_contract import ids
from steadfast_contract.crdschema import spec_schema, status_schema

GROUP = "steadfast.dev"
VERSION = "v1alpha1"
PLURAL = "researchagents"
KIND = "ResearchAgent"


Schema = dict[str, Any]


def name_rule() -> Schema:
    """The CEL rule on ``metadata.name`` (see :data:`steadfast_contract.ids.AGENT_NAME_RULE`)."""
    name = "self.metadata.name"
    return {
        "rule": f"{name}.size() <= {ids.AGENT_NAME_MAX}"
        f" && {name}.matches('{ids.AGENT_NAME_PATTERN}')",
        "message": ids.AGENT_NAME_RULE,
    }


def crd() -> Schema:
    """The whole CustomResourceDefinition object."""
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": "researchagent",
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": ["ra"],
                "categories": ["steadfast"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.workers.minReplicas",
                            "statusReplicasPath": ".status.workers.ready",
                            "labelSelectorPath": ".status.workers.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Ready", "type": "string", "jsonPath": ready},
                        {"name": "Workers", "type": "integer", "jsonPath": ".status.workers.ready"},
                        {
                            "name": "Backlog",
                            "type": "integer",
                            "jsonPath": ".status.taskQueue.backlog",
                        },
                        {"name": "Runs", "type": "string", "jsonPath": ".status.runsSummary"},
                        {
                            "name": "Cost (USD)",
                            "type": "number",
                            "jsonPath": ".status.cost.totalUSD",
                        },
                        {
                            "name": "Saved (USD)",
                            "type": "number",
                            "jsonPath": ".status.avoidedUSD",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A research agent: topics researched by an LLM as "
                            "durable Temporal workflows, run by autoscaled worker pods.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                            "x-kubernetes-validations": [name_rule()],
                        }
                    },
                }
            ],
        },
    }


HEADER = (
    "# Generated by `python -m steadfast_contract.crdgen`; edit the generator, not this file.\n"
    "# The chart's crds/ holds an identical copy (a unit test checks for drift).\n"
)


def render() -> str:
    """The CRD as committed YAML."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
