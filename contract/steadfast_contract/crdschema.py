"""The ResearchAgent's OpenAPI schema, generated from the spec model.

:class:`~steadfast_contract.spec.AgentSpec` is the one description of the spec;
this module walks its fields and writes each as the structural schema the API
server wants: pydantic's types, bounds, patterns and defaults become OpenAPI
keywords, and the :class:`~steadfast_contract.specbase.Crd` and
:class:`~steadfast_contract.specbase.Rule` markers add what pydantic does not
know (CEL rules, list types, the defaults shown per retry class). pydantic's own
``model_json_schema`` is not used: its ``$ref``/``anyOf`` form is not structural.

The status schema is output-only (the operator writes it, nobody validates
against a model), so it stays written out by hand here, next to the generator.
:mod:`.crdgen` assembles the CRD around both.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from steadfast_contract.durations import (
    DURATION_HINT,
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    MAX_DURATION_TEXT,
    format_duration,
)
from steadfast_contract.spec import AgentSpec
from steadfast_contract.specbase import Crd, Rule, Within

Schema = dict[str, Any]

MAX_RUNS_LISTED = 50
"""Runs listed in ``status.runs`` at most (the status object's size)."""

# Keyword order per type, so the YAML reads the same way everywhere (and diffs stay small).
_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "string": ("maxLength", "minLength", "pattern", "enum", "x-kubernetes-validations", "default"),
    "integer": ("minimum", "maximum", "default"),
    "number": ("minimum", "maximum", "default"),
    "boolean": ("default",),
    "array": ("minItems", "maxItems", "x-kubernetes-list-type", "default", "items"),
    "object": (
        "maxProperties",
        "additionalProperties",
        "properties",
        "default",
        "x-kubernetes-validations",
        "required",
    ),
}
_NO_DEFAULT: Final = object()
_TOO_LONG: Final = f"must be at most {MAX_DURATION_TEXT} (about 292 years)"


@dataclass
class _Facts:
    """What an annotation says once ``Optional`` and ``Annotated`` are peeled off."""

    base: Any
    description: str = ""
    bounds: dict[str, Any] = field(default_factory=dict)
    crd: Crd = field(default_factory=Crd)


def _facts(annotation: Any, metadata: list[Any], description: str | None) -> _Facts:
    facts = _Facts(annotation, description or "")
    pending = list(metadata)
    while True:
        for item in pending:
            _note(facts, item)
        base = facts.base
        if get_origin(base) in (Union, types.UnionType) and type(None) in get_args(base):
            rest = [a for a in get_args(base) if a is not type(None)]
            facts.base = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007 - runtime form
            pending = []
        elif get_origin(base) is Annotated:
            inner = FieldInfo.from_annotation(base)
            facts.base = inner.annotation
            facts.description = facts.description or inner.description or ""
            pending = list(inner.metadata)
        else:
            return facts


def _note(facts: _Facts, item: Any) -> None:
    if isinstance(item, Crd):
        facts.crd = item
    elif isinstance(item, Within):
        facts.crd = item.crd()
    elif isinstance(item, at.MaxLen):
        facts.bounds["max_length"] = item.max_length
    elif isinstance(item, at.MinLen):
        facts.bounds["min_length"] = item.min_length
    elif isinstance(item, at.Ge):
        facts.bounds["minimum"] = item.ge
    elif isinstance(item, at.Le):
        facts.bounds["maximum"] = item.le
    elif getattr(item, "pattern", None) is not None:
        facts.bounds["pattern"] = item.pattern


def _rules(rules: tuple[Rule, ...]) -> list[Schema]:
    out = []
    for r in rules:
        rule: Schema = {"rule": r.rule, "message": r.message}
        if r.field_path:
            rule["fieldPath"] = r.field_path
        out.append(rule)
    return out


def _ordered(kind: str, description: str, parts: Schema) -> Schema:
    keys = _ORDER[kind]
    unknown = set(parts) - set(keys)
    assert not unknown, f"no place for {unknown} in a {kind} schema"
    head: Schema = {"type": kind}
    if description:
        head["description"] = description
    return head | {k: parts[k] for k in keys if k in parts}


def _json(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


def _node(facts: _Facts, default: Any) -> Schema:
    """The schema of one field (or list item, or map value); ``default`` already JSON."""
    base, bounds, parts = facts.base, facts.bounds, {}
    description = facts.description
    if default is _NO_DEFAULT or default is None:
        description += facts.crd.unset
    elif not (isinstance(base, type) and issubclass(base, BaseModel)):
        parts["default"] = default
    rules = facts.crd.rules
    if base is timedelta and not rules:
        # A rule has CEL read it as a duration, so the API server refuses what no
        # parser holds (CEL fails on a duration longer than Go's, refusing it too).
        rules = (Rule(f"duration(self) <= duration('{MAX_DURATION_TEXT}')", _TOO_LONG),)
    if rules:
        parts["x-kubernetes-validations"] = _rules(rules)
    origin, args = get_origin(base), get_args(base)
    if base is timedelta:
        parts |= {"maxLength": DURATION_MAX_LENGTH, "pattern": DURATION_PATTERN}
        return _ordered("string", description + DURATION_HINT, parts)
    if base is str or origin is Literal:
        if origin is Literal:
            parts["enum"] = list(args)
        for key, word in (("max_length", "maxLength"), ("min_length", "minLength")):
            if key in bounds:
                parts[word] = bounds[key]
        if "pattern" in bounds:
            parts["pattern"] = bounds["pattern"]
        return _ordered("string", description, parts)
    if base in (bool, int, float):
        parts |= {k: bounds[k] for k in ("minimum", "maximum") if k in bounds}
        kind = {bool: "boolean", int: "integer", float: "number"}[base]
        return _ordered(kind, description, parts)
    if origin is list:
        parts["items"] = _node(_facts(args[0], [], None), _NO_DEFAULT)
        if "min_length" in bounds:
            parts["minItems"] = bounds["min_length"]
        if "max_length" in bounds:
            parts["maxItems"] = bounds["max_length"]
        if facts.crd.list_type:
            parts["x-kubernetes-list-type"] = facts.crd.list_type
        return _ordered("array", description, parts)
    if origin is dict:
        value = _node(_facts(args[1], [], None), _NO_DEFAULT)
        if get_origin(args[0]) is Literal:
            # A fixed set of keys is an object with those properties (one shared schema).
            parts["properties"] = {key: value for key in get_args(args[0])}
        else:
            parts["additionalProperties"] = value
            if "max_length" in bounds:
                parts["maxProperties"] = bounds["max_length"]
        return _ordered("object", description, parts)
    if set(args) == {int, str}:
        quantity: Schema = {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
        return quantity | ({"pattern": bounds["pattern"]} if "pattern" in bounds else {})
    if isinstance(base, type) and issubclass(base, BaseModel):
        shown = facts.crd.shown or (None if default is _NO_DEFAULT else default)
        return _model(base, description, shown, parts)
    raise TypeError(f"no schema for {base!r}")


def _model(cls: type[BaseModel], description: str, shown: Any, parts: Schema) -> Schema:
    """An object: its defaults are ``shown``'s values (a model instance) when given."""
    props: Schema = {}
    required = []
    for name, info in cls.model_fields.items():
        alias = info.alias or name
        facts = _facts(info.annotation, list(info.metadata), info.description)
        if shown is not None:
            value = getattr(shown, name)
        elif info.is_required():
            value = _NO_DEFAULT
            required.append(alias)
        else:
            value = info.get_default(call_default_factory=True)
        is_model = isinstance(facts.base, type) and issubclass(facts.base, BaseModel)
        props[alias] = _node(facts, value if is_model else _json(value))
    parts["properties"] = props
    if shown is not None:
        # Spelled out in full: the API server validates a default (CEL rules included)
        # as written, without applying the defaults nested inside it.
        parts["default"] = {k: v["default"] for k, v in props.items() if "default" in v}
    rules = _rules(getattr(cls, "crd_rules", ()))
    if rules:
        parts["x-kubernetes-validations"] = rules
    if required:
        parts["required"] = required
    return _ordered("object", description, parts)


def spec_schema() -> Schema:
    """The ``spec``: every field described, typed, bounded and defaulted."""
    return _model(AgentSpec, AgentSpec.crd_description, None, {})


def _str(desc: str, max_length: int) -> Schema:
    return {"type": "string", "description": desc, "maxLength": max_length}


def _typed(**types: str) -> Schema:
    """Properties that only have a type (the status is output-only: no bounds needed)."""
    return {name: {"type": kind} for name, kind in types.items()}


def status_schema() -> Schema:
    """What the operator reports; written only by the operator."""
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": _str("Ready, WorkersAvailable or BudgetExhausted.", 64),
            "status": _str("True, False or Unknown.", 8),
            "reason": _str("CamelCase reason.", 128),
            "message": _str("What happened and, when False, what to fix.", 2048),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    run = {
        "type": "object",
        "properties": _typed(
            topic="string",
            workflowId="string",
            runId="string",
            phase="string",
            startedAt="string",
            closedAt="string",
            costUSD="number",
            llmCalls="integer",
            retries="integer",
            reportId="string",
            avoidedUSD="number",
        ),
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
                "properties": _typed(
                    desired="integer",
                    ready="integer",
                    selector="string",
                    lastActiveTime="string",
                    lastScaleTime="string",
                ),
            },
            "taskQueue": {
                "type": "object",
                "properties": _typed(
                    name="string",
                    backlog="integer",
                    backlogAgeSeconds="number",
                    pollers="integer",
                    addRate="number",
                    dispatchRate="number",
                    runningWorkflows="integer",
                ),
            },
            "runs": {
                "type": "array",
                "description": (
                    "Each topic's newest run first, then older runs, newest first;"
                    f" at most {MAX_RUNS_LISTED}."
                ),
                "items": run,
            },
            "runsSummary": _str("Completed runs / all runs.", 32),
            "avoidedUSD": {
                "type": "number",
                "description": (
                    "What resuming saved the agent's observed runs: for each lost worker or"
                    " retried attempt, the spend of the LLM calls finished before it, which"
                    " a restart from scratch would have paid again."
                ),
            },
            "startedTopics": {
                "type": "array",
                "description": (
                    "Topics the agent has started: never started again by the operator, "
                    "even after Temporal's retention removed their runs."
                ),
                "items": {"type": "string"},
            },
            "schedule": {"type": "object", "properties": {"id": {"type": "string"}}},
            "cost": {
                "type": "object",
                "properties": _typed(
                    totalUSD="number",
                    todayUSD="number",
                    day="string",
                    inputTokens="integer",
                    outputTokens="integer",
                ),
            },
        },
    }
