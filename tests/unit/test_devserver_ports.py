"""The port a dev server failed to bind, read from its log, and the spec that frees it.

``steadfast dev`` starts the dev server again on a new port when the one it chose was
taken meanwhile (``tests/integration/test_devserver_ports.py`` holds one on purpose);
these are the pure decisions under that retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from steadfast_dev import devserver

pytestmark = pytest.mark.unit


def test_a_bind_failure_is_read_from_the_log() -> None:
    line = (
        'level=ERROR msg="Failed to start gRPC listener" error="listen tcp '
        '127.0.0.1:42421: bind: address already in use" service=frontend'
    )
    assert devserver.taken_port(f"a\n{line}\npanic: runtime error") == 42421
    assert devserver.taken_port("panic: runtime error") is None


def test_only_a_taken_port_of_the_spec_is_replaced() -> None:
    spec = devserver.DevServerSpec(state_dir=Path("/nonexistent"), port=7233, ui_port=8233)
    assert devserver.with_port_freed(spec, 7233, lambda: 40001).port == 40001
    assert devserver.with_port_freed(spec, 8233, lambda: 40002).ui_port == 40002
    # A port the dev server chose for itself: its next start chooses anew.
    assert devserver.with_port_freed(spec, 51234, lambda: 40003) == spec
