"""The README's table of ResearchAgent fields, generated from the spec model.

A hand-kept table drifts from the CRD the first time a default changes. This one
is printed from the same schema the CRD is (:func:`.crdschema.spec_schema`,
itself walked from :class:`~steadfast_contract.spec.AgentSpec`), and a unit test
fails when README.md's copy between :data:`START` and :data:`END` differs.

``python -m steadfast_contract.fieldtable`` prints the table;
``python -m steadfast_contract.fieldtable --write README.md`` replaces the copy
between the markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from steadfast_contract.crdschema import Schema, spec_schema
from steadfast_contract.durations import DURATION_HINT, DURATION_PATTERN

START: Final = "<!-- spec-table:start -->"
END: Final = "<!-- spec-table:end -->"


def _type(s: Schema) -> str:
    if "enum" in s:
        return " \\| ".join(f"`{v}`" for v in s["enum"])
    if s.get("x-kubernetes-int-or-string"):
        return "quantity"
    kind = s.get("type", "")
    if kind == "string" and s.get("pattern") == DURATION_PATTERN:
        return "duration"
    if kind == "array":
        return f"list of {_type(s['items'])}"
    if kind == "object" and "additionalProperties" in s:
        return f"map of {_type(s['additionalProperties'])}"
    if kind in ("integer", "number") and "minimum" in s:
        return f"{kind} ({_number(s['minimum'])} to {_number(s['maximum'])})"
    return str(kind)


def _number(n: float) -> str:
    return f"{n:,}".replace(",", " ") if isinstance(n, int) else f"{n:g}"


def _default(s: Schema, required: bool) -> str:
    if required:
        return "required"
    if "default" not in s or s.get("type") == "object":
        return ""
    value = s["default"]
    return f"`{value}`" if isinstance(value, str) and value else f"`{json.dumps(value)}`"


def _rows(s: Schema, path: str) -> Iterator[tuple[str, str, str, str]]:
    required = set(s.get("required", ()))
    for name, sub in s.get("properties", {}).items():
        where = f"{path}.{name}" if path else name
        # The type column says "duration"; the README states the form once, above the table.
        desc = sub.get("description", "").replace(DURATION_HINT, "")
        for char in "|<>":  # a table cell separator; what Markdown would read as HTML
            desc = desc.replace(char, "\\" + char)
        yield f"`{where}`", _type(sub), _default(sub, name in required), desc
        if sub.get("type") == "object":
            yield from _rows(sub, where)


def table(schema: Schema | None = None) -> str:
    """Every field of ``spec`` as a Markdown table: path, type, default, description."""
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    for row in _rows(schema or spec_schema(), ""):
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def between_markers(text: str) -> str:
    """The part of ``text`` between :data:`START` and :data:`END` (their lines excluded)."""
    start = text.index(START) + len(START) + 1
    return text[start : text.index(END)]


def replace_between_markers(text: str, body: str) -> str:
    start = text.index(START) + len(START) + 1
    return text[:start] + body + text[text.index(END) :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--write", metavar="FILE", help="replace the table between the markers")
    args: Any = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(replace_between_markers(path.read_text(), table()))
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
