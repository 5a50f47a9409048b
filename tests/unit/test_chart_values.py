"""The chart's values contract, checked without Helm.

values.yaml is the chart's user interface: every value needs a full-sentence
comment, and values.schema.json must know every value (and nothing else) with
``additionalProperties: false``, so that a typo fails at install instead of being
silently ignored. These checks read the files as data; rendering is tested in
test_chart_render.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import steadfast_contract

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "charts" / "steadfast"
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())

#: A mapping key at any indentation, as written in values.yaml (keys may contain dots and slashes).
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_./-]+):(?: |$)")


def _keys_with_comments() -> list[tuple[int, str, list[str]]]:
    """Each key line of values.yaml with the comment lines right above it."""
    found: list[tuple[int, str, list[str]]] = []
    comments: list[str] = []
    for number, line in enumerate(VALUES_TEXT.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if match:
            found.append((number, match["key"], comments))
        comments = []
    return found


def _paths(values: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not isinstance(values, dict):
        return set()
    out: set[tuple[str, ...]] = set()
    for key, value in values.items():
        out.add((*prefix, key))
        out |= _paths(value, (*prefix, key))
    return out


def _schema_at(path: tuple[str, ...]) -> dict[str, Any] | None:
    node: dict[str, Any] = SCHEMA
    for key in path:
        props = node.get("properties")
        if props is not None and key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def _schema_objects(node: Any, where: str = "$") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "properties" in node:
            out.append((where, node))
        for key, child in node.items():
            out.extend(_schema_objects(child, f"{where}.{key}"))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out.extend(_schema_objects(child, f"{where}[{index}]"))
    return out


def test_every_value_has_a_full_sentence_comment() -> None:
    uncommented = []
    for number, key, comments in _keys_with_comments():
        text = " ".join(c.removeprefix("--").strip() for c in comments)
        # A sentence: starts with a capital (or a quoted value) and ends with a full stop.
        if not text or not re.match(r"^[A-Z\"`]", text) or not text.endswith("."):
            uncommented.append(f"line {number}: {key}")
    assert not uncommented, f"values without a full-sentence comment above them: {uncommented}"


def test_comment_scan_sees_every_key() -> None:
    # Guards the check above: if the line scanner missed keys, it would pass vacuously.
    scanned = [key for _, key, _ in _keys_with_comments()]
    assert len(scanned) == len(_paths(VALUES))


def test_every_schema_object_forbids_unknown_keys() -> None:
    objects = _schema_objects(SCHEMA)
    assert len(objects) > 10
    loose = [where for where, node in objects if node.get("additionalProperties") is not False]
    assert not loose, f"schema objects that accept unknown keys: {loose}"


def test_schema_and_values_name_the_same_keys() -> None:
    in_values = _paths(VALUES)
    missing_in_schema = sorted(".".join(p) for p in in_values if _schema_at(p) is None)
    assert not missing_in_schema, f"values.yaml keys the schema does not know: {missing_in_schema}"

    def schema_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        out: set[tuple[str, ...]] = set()
        for key, child in node.get("properties", {}).items():
            out.add((*prefix, key))
            out |= schema_paths(child, (*prefix, key))
        return out

    # "global" is Helm's, shared with subcharts; resource quantities are optional
    # Kubernetes fields (a CPU limit is deliberately unset); neither needs a default.
    undocumented = sorted(
        ".".join(p)
        for p in schema_paths(SCHEMA) - in_values
        if p[0] != "global" and "resources" not in p[:-1]
    )
    assert not undocumented, f"schema properties with no default in values.yaml: {undocumented}"


PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


def test_defaults_have_the_schema_types() -> None:
    wrong = []
    for path in _paths(VALUES):
        node = _schema_at(path)
        assert node is not None
        value: Any = VALUES
        for key in path:
            value = value[key]
        declared = node.get("type")
        if declared is None:
            continue
        names = declared if isinstance(declared, list) else [declared]
        allowed = tuple(t for name in names for t in PY_TYPES[name])
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok or ("enum" in node and value not in node["enum"]):
            wrong.append(f"{'.'.join(path)}={value!r} (schema: {declared})")
        if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
            wrong.append(f"{'.'.join(path)}={value!r} does not match {node['pattern']}")
    assert not wrong, wrong


def test_chart_declares_a_kube_version_and_the_crds_are_shipped() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert re.match(r"^>=\s*1\.\d+\.\d+-0$", chart["kubeVersion"]), chart["kubeVersion"]
    # The images are tagged with the release, and the chart's default tag is its appVersion.
    assert chart["appVersion"] == steadfast_contract.__version__
    # Helm installs crds/ before the templates; the operator cannot start without it.
    # The chart's crds/ is a link to the canonical crds/ (test_chart_shipped.py checks
    # what a packaged chart carries; test_operator_spec.py that it matches the generator).
    shipped = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert shipped == ["researchagents.steadfast.dev.yaml"]
