"""How every verb refuses bad input: one line on stderr, ``steadfast <verb>: error: ...``.

argparse already refuses a flag that way (``steadfast budget: error: argument
--max-usd: ...``, exit 2), on every verb; the verbs' own checks (a manifest that
cannot be read or is not YAML, a topic that is not one, a missing flag) said theirs
with ``error:`` on stdout, ``steadfast worker:`` or ``steadfast sim:`` on stderr,
and a YAML or validation error over several lines. They now say it as argparse
does, on one line, and exit 2, so a person or a script sees one shape whatever the
verb, and stdout carries only what the verb prints when it works.
"""

from __future__ import annotations

import sys

from steadfast_cli.safetext import printable

EXIT_BAD_INPUT = 2
"""The exit status of bad input, as argparse's own."""


def one_line(message: object) -> str:
    """``message`` on one line: a heading ending in ``:`` then its items, ``; ``-joined
    (``invalid configuration: a: ...; b: ...``); whitespace runs made one space."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return "; ".join(lines)


def say(verb: str, message: object) -> None:
    """``steadfast <verb>: error: <message>`` as one line on stderr, control characters shown."""
    print(printable(f"steadfast {verb}: error: {one_line(message)}"), file=sys.stderr)


def refuse(verb: str, message: object) -> int:
    """Say ``message`` (see :func:`say`); the exit status of bad input."""
    say(verb, message)
    return EXIT_BAD_INPUT
