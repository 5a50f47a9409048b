"""``steadfast plan -f agent.yaml``: what the operator would make of a manifest, offline.

Like ``helm template``: no cluster and no Temporal are needed. The manifest is
put through the operator's own code, not a copy of it: the same validation
(:func:`steadfast_operator.spec.validate`, so a manifest the operator would
refuse fails here with the same field-level message) and the same planner
(:func:`steadfast_operator.planner.plan`), asked about a first reconcile on an
empty cluster and an empty Temporal. What it prints is that plan: the children
as YAML, the task queue, the workflow id of each topic and the Schedules.

What only a cluster knows is not checked: whether the Secrets exist (they are
listed), whether Temporal is reachable, whether KEDA is installed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from steadfast_cli.errors import EXIT_BAD_INPUT, refuse, say
from steadfast_contract import __version__, crdgen, ids
from steadfast_contract.config import yaml_problem

if TYPE_CHECKING:
    from steadfast_operator.render import Defaults

HELP = (
    "Print what the operator would make of a ResearchAgent manifest, without a cluster "
    "(like `helm template`): its children as YAML, task queue, workflow ids and Schedules."
)

DEFAULT_TEMPORAL_ADDRESS = "temporal-frontend.temporal:7233"
EXIT_REFUSED = 1
"""The operator would refuse the manifest (``Ready=False``, reason ``InvalidSpec`` or another)."""
EXIT_UNREADABLE = EXIT_BAD_INPUT
"""The file is missing, not YAML, or not a ResearchAgent."""
UID_PLACEHOLDER = "<uid of the ResearchAgent>"
PLAN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""The clock of an offline plan (no runs yet, so only its determinism matters)."""


def _default_image() -> str:
    return f"steadfast/worker:{__version__}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        f"Exit status: 0 when the operator would accept the manifest, {EXIT_REFUSED} when it "
        f"would refuse it (the message names the field), {EXIT_UNREADABLE} when the file "
        "cannot be read as a ResearchAgent."
    )
    parser.add_argument(
        "--file", "-f", required=True, metavar="AGENT_YAML", help="the ResearchAgent manifest"
    )
    parser.add_argument(
        "--worker-image",
        default=_default_image(),
        help="the operator's default worker image, used when spec.workers.image is empty "
        "(the chart's worker.image; default: the chart's default for this version)",
    )
    parser.add_argument(
        "--temporal-address",
        default=DEFAULT_TEMPORAL_ADDRESS,
        help="the operator's default Temporal address, used when spec.temporal.address is "
        "empty (the chart's temporal.address)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        default="default",
        help="namespace of a manifest whose metadata names none (as kubectl apply -n would)",
    )


def run(args: argparse.Namespace) -> int:
    from steadfast_operator import render
    from steadfast_operator.spec import InvalidSpec

    try:
        manifest = _load(Path(args.file))
    except ValueError as err:
        return refuse("plan", err)
    defaults = render.Defaults(image=args.worker_image, temporal_address=args.temporal_address)
    try:
        text = render_plan(manifest, defaults, args.namespace)
    except InvalidSpec as err:
        say("plan", f"the operator would refuse this manifest ({err.reason}): {err}")
        return EXIT_REFUSED
    sys.stdout.write(text)
    return 0


def _load(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read {file}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read {file}: not UTF-8 text (byte {err.start})") from None
    try:
        manifest = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{file} is not valid YAML: {yaml_problem(err)}") from None
    want = (f"{crdgen.GROUP}/{crdgen.VERSION}", crdgen.KIND)
    if not isinstance(manifest, dict) or (manifest.get("apiVersion"), manifest.get("kind")) != want:
        raise ValueError(f"{file}: not a {want[1]} ({want[0]}) manifest")
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(manifest.get("spec"), dict) or not isinstance(name, str) or not name:
        raise ValueError(f"{file}: metadata.name (a string) and spec (a mapping) are required")
    return manifest


def render_plan(manifest: dict[str, Any], defaults: Defaults, namespace: str) -> str:
    """The operator's plan for a first reconcile of ``manifest``, as text.

    Raises :class:`steadfast_operator.spec.InvalidSpec` for a manifest the
    operator would refuse.
    """
    from steadfast_operator import planner, render, schedules
    from steadfast_operator.spec import validate, worker_config
    from steadfast_operator.status import QueueInfo

    meta = manifest["metadata"]
    agent = render.AgentRef(meta["name"], meta.get("namespace") or namespace, UID_PLACEHOLDER)
    raw = manifest["spec"]
    spec = validate(agent, raw, defaults)
    config = worker_config(agent, spec, defaults)
    plan = planner.plan(
        planner.Observed(
            agent=agent,
            now=PLAN_TIME,
            generation=1,
            defaults=defaults,
            spec=spec,
            config=config,
            changed=True,
            temporal=planner.TemporalView(QueueInfo(config.task_queue)),
        )
    )
    owner = {
        "builtin": "the operator's autoscaler (deployments/scale)",
        "keda": "KEDA (the ScaledObject below)",
        "none": "nobody: minReplicas at creation",
    }[spec.workers.autoscaler]
    lines = [
        f"# ResearchAgent {agent.namespace}/{agent.name}: the operator's plan for a first "
        "reconcile",
        f"# (defaults: worker image {defaults.image}, Temporal {defaults.temporal_address})",
        f"# taskQueue: {config.task_queue}",
        f"# temporal: {config.temporal.address} (namespace {config.temporal.namespace})",
        f"# replicas: {spec.workers.min_replicas} at creation; owned by {owner}",
        "# secrets the workers read (must exist in the namespace):",
    ]
    refs = sorted(spec.secret_refs().items())
    lines += [f"#   {path}: Secret {ref.name}, key {ref.key}" for path, ref in refs] or ["#   none"]
    if spec.temporal.tls.secret_name:
        lines.append(f"#   temporal.tls.secretName: Secret {spec.temporal.tls.secret_name}")
    if spec.schedule:
        lines.append(
            "# first runs (one per topic, started now through its Schedule, so the ticks "
            "skip while it runs):"
        )
        lines += [f"#   {s.workflow_id}-<time>: {s.topic}" for s in plan.start]
    else:
        lines.append("# workflows started (one per topic, idempotent ids):")
        lines += [f"#   {s.workflow_id}: {s.topic}" for s in plan.start]
    sched = plan.schedules
    if sched is not None and sched.upsert:
        lines.append(
            f"# schedules (cron {sched.cron!r}, overlap SKIP, paused when the day's "
            "budget is spent):"
        )
        lines += [
            f"#   {schedules.schedule_id(ids.workflow_id(agent.namespace, agent.name, t))}: {t}"
            for t in sched.upsert
        ]
    else:
        lines.append("# schedules: none (spec.schedule is empty)")
    for change in plan.children:
        lines.append("---")
        lines.append(f"# Source: {change.kind} {agent.namespace}/{change.name}")
        lines.append(yaml.dump(change.body, Dumper=_Dumper, sort_keys=False).rstrip())
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the worker configuration) as literal blocks, readable as files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
