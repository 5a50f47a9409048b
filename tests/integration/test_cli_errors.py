"""Bad input, verb by verb: one line ``steadfast <verb>: error: ...`` on stderr, exit 2.

The verbs said it four ways: ``error:`` on stdout (dev, run, status, approve),
``error:`` on stderr (plan), ``steadfast worker:`` with no ``error:``, and a YAML
error as PyYAML's seven lines quoting the file. Each case runs the real command as
a user would; none needs a server (nothing is dialled: the address is a closed port).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.stack import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

#: A manifest PyYAML cannot parse: a key indented one space less, at line 5.
BROKEN = """apiVersion: steadfast.dev/v1alpha1
kind: ResearchAgent
metadata:
  name: x
 spec: [
  topics: a
"""
CLOSED = ["--address", "127.0.0.1:1"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["plan", "-f", "{missing}"], "cannot read {missing}: No such file or directory"),
        (["plan", "-f", "{broken}"], "{broken} is not valid YAML: line 5, column 2: expected"),
        (["run", "-f", "{broken}", *CLOSED], "{broken} is not valid YAML: line 5, column 2:"),
        (["status", "-f", "{missing}", *CLOSED], "cannot read {missing}"),
        (["dev", "--port", "0", "-f", "{broken}"], "{broken} is not valid YAML: line 5"),
        (["worker", "--config", "{broken}"], "is not valid YAML/JSON: line 5, column 2:"),
        (["report", "any", "-f", "{broken}"], "{broken} is not valid YAML: line 5"),
        (["approve", "wf", *CLOSED], "--reviewer is required to approve"),
        (["budget", "wf", *CLOSED], "give --max-usd and/or --max-usd-per-day"),
        (["run", "--topic", "", *CLOSED], "--topic '': a topic is one line"),
    ],
    ids=[
        "plan-missing",
        "plan-yaml",
        "run-yaml",
        "status-missing",
        "dev-yaml",
        "worker-yaml",
        "report-yaml",
        "approve-no-reviewer",
        "budget-no-limit",
        "run-empty-topic",
    ],
)
def test_bad_input_is_one_line_with_the_verbs_prefix_and_exit_2(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    names = {"missing": str(tmp_path / "missing.yaml"), "broken": str(broken)}
    argv = [a.format(**names) for a in argv]
    out = cli(*argv, "--state-dir", str(tmp_path / "state")) if argv[0] == "dev" else cli(*argv)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"steadfast {argv[0]}: error: "), out.stderr
    assert said.format(**names) in lines[0]


def test_an_unknown_flag_is_said_by_the_verb_as_argparse_says_its_other_errors() -> None:
    """It was ``steadfast: error: unrecognized arguments`` while every other flag error
    named the verb (``steadfast plan: error: ...``)."""
    out = cli("plan", "-f", "x.yaml", "--address", "127.0.0.1:1")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "steadfast plan: error: unrecognized arguments: --address 127.0.0.1:1"
    )
