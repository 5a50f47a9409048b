"""Durations as users write them: ``500ms``, ``2s``, ``1.5m``, ``1h``.

The ResearchAgent spec and the worker configuration both carry durations, and
the CRD checks their syntax with a pattern and compares them with CEL's
``duration()``. One parser, one formatter and one pattern live here so the three
agree on the form: a number with a single unit.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import BeforeValidator, PlainSerializer

DURATION_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$"
"""What the CRD accepts; CEL's ``duration()`` parses every string it matches."""
DURATION_MAX_LENGTH: Final = 16
DURATION_HINT: Final = " A number with one unit: ms, s, m or h (for example 500ms, 2s, 1m)."
"""Appended to the description of every duration field of the CRD."""
MAX_DURATION: Final = timedelta(hours=2_562_047)
"""The longest duration there is: Go's (about 292 years), which CEL's ``duration()`` and
Temporal can hold. Anything longer is refused, by the CRD and by the parser alike; a
deadline it sets lies well within the calendar."""

# Looser than DURATION_PATTERN on purpose: a worker configuration file may also
# give a bare number of seconds.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> timedelta:
    """Parse ``"500ms"``, ``"2s"``, ``"1m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '2s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration like '500ms', '2s' or '1m', got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"a duration must be at most {MAX_DURATION_TEXT} (about 292 years)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Inverse of :func:`parse_duration`: ``"500ms"``, ``"2s"``, ``"1500ms"``, ``"168h"``."""
    ms = round(value.total_seconds() * 1000)
    if ms and not ms % 3_600_000:
        return f"{ms // 3_600_000}h"  # a week reads 168h, not 604800s
    if ms % 1000:
        return f"{ms}ms"
    return f"{ms // 1000}s"


MAX_DURATION_TEXT: Final = format_duration(MAX_DURATION)
""":data:`MAX_DURATION` as the CRD and messages write it (``2562047h``)."""

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A ``timedelta`` read with :func:`parse_duration` and written with :func:`format_duration`."""
