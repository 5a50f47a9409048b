"""Argument types the commands share: a bad value is argparse's one-line error (exit 2),
never a traceback from the library it would have reached (``OverflowError`` from a
socket given port 99999)."""

from __future__ import annotations

import argparse


def port_number(text: str) -> int:
    """A TCP port (0 picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {port}")
    return port


def delay_ms(text: str) -> int:
    """A delay in whole milliseconds, 0 or more."""
    try:
        ms = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    if ms < 0:
        raise argparse.ArgumentTypeError(f"a delay cannot be negative, got {ms}")
    return ms
