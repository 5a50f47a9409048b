"""The ``steadfast`` command line: one entry point, one module per verb.

Each verb lives in its own module (``steadfast_cli.commands.<verb>``, or the
operator package for ``operator``) exposing ``HELP``, ``configure(parser)`` and
``run(args) -> int``. Keeping the dispatcher this thin means a verb's imports
(Temporal, Kopf, the simulators) load only when that verb runs or documents
itself.

The process ends with ``os._exit`` after flushing: temporalio's Rust core can
segfault during interpreter teardown (sdk-python#300), and a clean run must not
report a crash.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from steadfast_contract import __version__

#: verb -> module implementing it. Order is the order ``--help`` lists them.
VERBS: dict[str, str] = {
    "dev": "steadfast_cli.commands.dev",
    "worker": "steadfast_cli.commands.worker",
    "run": "steadfast_cli.commands.run",
    "status": "steadfast_cli.commands.status",
    "report": "steadfast_cli.commands.report",
    "approve": "steadfast_cli.commands.approve",
    "budget": "steadfast_cli.commands.budget",
    "sim": "steadfast_cli.commands.sim",
    "operator": "steadfast_cli.commands.operator",
    "plan": "steadfast_cli.commands.plan",
}


class VerbModule(Protocol):
    """What a verb module provides."""

    HELP: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(verb: str) -> VerbModule:
    return cast(VerbModule, importlib.import_module(VERBS[verb]))


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser; every verb documents itself under ``--help``."""
    parser = argparse.ArgumentParser(
        prog="steadfast",
        description=(
            "Run AI research agents durably as Temporal workflows: locally with "
            "`steadfast dev`, or on Kubernetes through the ResearchAgent operator."
        ),
    )
    parser.add_argument("--version", action="version", version=f"steadfast {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        module = _load(verb)
        verb_parser = sub.add_parser(
            verb,
            help=module.HELP,
            description=module.HELP,
            formatter_class=DefaultsShown,
        )
        module.configure(verb_parser)
        verb_parser.set_defaults(verb_parser=verb_parser)
    return parser


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help, when it says something: not for a flag, an
    empty value or a list, nor when the help already says its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, "", [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def dispatch(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen verb; returns the exit code."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # said by the verb's parser: `steadfast VERB: error: ...`, as every other
        args.verb_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _load(args.verb).run(args)
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    code = dispatch(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
