"""Whether the dev sandbox (:mod:`steadfast_dev`) is installed.

The production images install the contract, their runtime package and this
command line, but not the simulators, the embedded stack or the chaos driver. A
checkout installed with ``pip install -e '.[dev]'`` has all of it. The verbs that
need the sandbox (``dev``, ``sim``) import it only when they run, so
``steadfast --help`` works in an image, and they say in one line why they cannot
run instead of raising an ImportError.
"""

from __future__ import annotations

import importlib.util
import sys

PACKAGE = "steadfast_dev"


def installed() -> bool:
    """True when ``steadfast_dev`` can be imported here."""
    return importlib.util.find_spec(PACKAGE) is not None


def missing_message(verb: str) -> str:
    """The one line a sandbox verb prints where the sandbox is not installed."""
    return (
        f"steadfast {verb}: the dev sandbox ({PACKAGE}) is not installed here; production "
        f"images leave it out. Run `steadfast {verb}` from a source checkout installed with "
        "pip install -e '.[dev]'."
    )


def refuse(verb: str) -> int:
    """Print :func:`missing_message` to stderr; the exit code for the verb."""
    print(missing_message(verb), file=sys.stderr)
    return 1
