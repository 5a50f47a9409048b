"""No secret, nor a piece of one, in anything Steadfast writes -- whatever fails.

Every credential a worker reads (the Anthropic key, the search key, the SMTP URL's
password, the Postgres DSN's password, the Temporal API key) is planted with a
distinctive value holding ``/ # @ :``, the characters that break URL parsing (one
key also holds a stray newline, as a Secret made from a file can). Then runs are
made to fail in every way a credential can fail: a URL or DSN written without
percent-encoding, a key the simulator answers 401 to, a key no HTTP header may
carry, a password a real server refuses, a server that is not there.

Afterwards the full workflow histories (payloads decoded), each worker process's
log (at DEBUG, where client libraries log what they sent and how it failed), its
two ``/metrics`` pages and ``steadfast status`` (over TLS with the Temporal API
key) are searched for every 4-character piece of every planted secret. Every
piece of 4 or more characters contains one of those, so finding none proves no
such piece leaked.

Each scenario is its own ``steadfast worker`` process (a credential is per
process), on its own task queue, talking to the session's real servers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from tests.integration.conftest import SMTP_URL_ENV, SmtpServer, base_config
from tests.support.ports import free_port
from tests.support.sim import SimHandle
from tests.support.tlsproxy import TLSProxy

from steadfast_contract.config import parse_config
from steadfast_contract.ids import workflow_id
from steadfast_contract.models import WORKFLOW_NAME
from steadfast_contract.starter import research_input
from steadfast_dev.processes import steadfast_command

pytestmark = [pytest.mark.integration, pytest.mark.hostile, pytest.mark.timeout(240)]

ANTHROPIC_ENV = "STEADFAST_TEST_LEAK_ANTHROPIC_KEY"
SEARCH_ENV = "STEADFAST_TEST_LEAK_SEARCH_KEY"
DSN_ENV = "STEADFAST_TEST_LEAK_PG_DSN"
TEMPORAL_ENV = "STEADFAST_TEST_LEAK_TEMPORAL_KEY"

#: Letters that never occur in hex ids, log levels or protocol names (no vowels,
#: no H/T/P/L), so a 4-letter run of them in any output can only be a leak.
_RARE = "GJKMNQRSVWXZ"


def planted() -> str:
    """A secret like ``QZKX.../MNVR...#...@...:...``: five random runs, URL-breaking separators."""
    runs = ["".join(random.choices(_RARE, k=8)) for _ in range(5)]
    return "{}/{}#{}@{}:{}".format(*runs)


def pieces(secret: str) -> set[str]:
    """Every 4-character substring: any longer piece of ``secret`` contains one."""
    return {secret[i : i + 4] for i in range(len(secret) - 3)}


@dataclass
class Secrets:
    anthropic: str = field(default_factory=planted)
    anthropic_wrong: str = field(default_factory=planted)
    anthropic_newline: str = field(default_factory=lambda: f"{planted()}\n{planted()}")
    """A stray newline (a Secret made from a file) makes an illegal header value."""
    search: str = field(default_factory=planted)
    search_wrong: str = field(default_factory=planted)
    smtp: str = field(default_factory=planted)
    postgres: str = field(default_factory=planted)
    temporal: str = field(default_factory=planted)

    def all(self) -> dict[str, str]:
        return dict(vars(self))


@dataclass
class Scenario:
    name: str
    env: dict[str, str]
    temporal: dict[str, Any] = field(default_factory=dict)
    expect_failure: bool = True


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but never listening: connections to it are refused, and no
    other process can take it meanwhile (as it could a port merely found free)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def scenarios(
    s: Secrets, smtp: SmtpServer, postgres_dsn: str, proxy: TLSProxy, closed: int
) -> Iterator[Scenario]:
    pg = httpx.URL(postgres_dsn)
    pg_at = f"{pg.host}:{pg.port}{pg.path}"
    enc = quote(s.smtp, safe="")
    good = {ANTHROPIC_ENV: s.anthropic, SEARCH_ENV: s.search, TEMPORAL_ENV: s.temporal}
    smtp_url = f"smtp://bot:{enc}@{smtp.host}:{smtp.port}"
    yield Scenario("llm-401", {**good, ANTHROPIC_ENV: s.anthropic_wrong, SMTP_URL_ENV: smtp_url})
    yield Scenario(
        "llm-key-with-newline",
        {**good, ANTHROPIC_ENV: s.anthropic_newline, SMTP_URL_ENV: smtp_url},
    )
    yield Scenario(
        "search-401",
        {**good, SEARCH_ENV: s.search_wrong, SMTP_URL_ENV: smtp_url},
        expect_failure=False,  # a run may finish with what the other searches found
    )
    yield Scenario("smtp-unencoded", {**good, SMTP_URL_ENV: f"smtp://bot:{s.smtp}@127.0.0.1:25"})
    # The session's SMTP server offers no AUTH: the login cannot even be tried.
    yield Scenario("smtp-no-auth", {**good, SMTP_URL_ENV: smtp_url})
    yield Scenario(
        "smtp-unreachable-over-temporal-api-key",
        {**good, SMTP_URL_ENV: f"smtp://bot:{enc}@127.0.0.1:{closed}"},
        temporal={
            "address": proxy.address,
            "tls": {"caFile": str(proxy.pki.ca)},
            "apiKeyEnv": TEMPORAL_ENV,
        },
    )
    pg_enc = quote(s.postgres, safe="")
    yield Scenario(
        "dsn-unencoded",
        {**good, SMTP_URL_ENV: smtp_url, DSN_ENV: f"postgresql://steadfast:{s.postgres}@{pg_at}"},
    )
    yield Scenario(
        "dsn-wrong-password",
        {**good, SMTP_URL_ENV: smtp_url, DSN_ENV: f"postgresql://steadfast:{pg_enc}@{pg_at}"},
    )
    yield Scenario(
        "dsn-unreachable",
        {
            **good,
            SMTP_URL_ENV: smtp_url,
            DSN_ENV: f"postgresql://steadfast:{pg_enc}@127.0.0.1:{closed}/steadfast",
        },
    )


@dataclass
class Spawned:
    scenario: Scenario
    config: dict[str, Any]
    process: asyncio.subprocess.Process
    log: Path
    handle: WorkflowHandle[Any, Any] | None = None


def worker_doc(
    sim: SimHandle, scenario: Scenario, tmp: Path, *, metrics: int, sdk_metrics: int
) -> dict[str, Any]:
    doc = base_config(sim, f"leak-{scenario.name}-{os.urandom(4).hex()}", tmp / "reports.db")
    doc["model"]["apiKeyEnv"] = ANTHROPIC_ENV
    doc["search"]["apiKeyEnv"] = SEARCH_ENV
    doc["storage"]["postgresDsnEnv"] = DSN_ENV
    doc["temporal"].update(scenario.temporal)
    doc["worker"].update({"metricsPort": metrics, "sdkMetricsPort": sdk_metrics})
    doc["retryPolicies"]["database"]["maximumAttempts"] = 3
    # An unreachable store (or a refused password) is waited out for saveTimeout: the
    # run must still end within settle()'s wait, so its failure can be searched too.
    doc["storage"]["saveTimeout"] = "3s"
    return doc


def prepare(sim: SimHandle, scenario: Scenario, tmp: Path) -> tuple[dict[str, Any], Path, int, int]:
    """The worker's configuration file in ``tmp``, and its two metrics ports."""
    tmp.mkdir(parents=True, exist_ok=True)
    metrics, sdk_metrics = free_port(), free_port()
    doc = worker_doc(sim, scenario, tmp, metrics=metrics, sdk_metrics=sdk_metrics)
    path = tmp / "worker.json"
    path.write_text(json.dumps(doc))
    return doc, path, metrics, sdk_metrics


async def spawn(
    sim: SimHandle, scenario: Scenario, tmp: Path, temporal_address: str
) -> tuple[Spawned, int, int]:
    doc, path, *ports = await asyncio.to_thread(prepare, sim, scenario, tmp)
    argv = ["worker", "--config", str(path)]
    if not scenario.temporal:
        argv += ["--address", temporal_address]
    log = tmp / "worker.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            # DEBUG: client libraries log what they sent and how it failed.
            *steadfast_command(*argv, "--log-level", "DEBUG"),
            env={**os.environ, **scenario.env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Spawned(scenario, doc, process, log), ports[0], ports[1]


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as http:
        for _ in range(50):
            try:
                return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"no /metrics on port {port}")


async def settle(handle: WorkflowHandle[Any, Any]) -> str | None:
    """Wait for the run to close; the failure's message, or None if it did not fail."""
    try:
        await asyncio.wait_for(handle.result(), 90)
    except WorkflowFailureError as failed:
        return str(failed.cause)
    return None


def readable(node: Any) -> Any:
    """A history's JSON with every payload's base64 decoded: a secret inside a payload
    shows only so, and base64 text would otherwise look like pieces of secrets."""
    if isinstance(node, dict):
        if isinstance(node.get("data"), str) and set(node) <= {"metadata", "data"}:  # a Payload
            return {
                "metadata": {k: _unbase64(v) for k, v in node.get("metadata", {}).items()},
                "data": _unbase64(node["data"]),
            }
        return {k: readable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [readable(v) for v in node]
    return node


def _unbase64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", errors="replace")


#: A task token as the SDK logs it: the server's opaque bytes in base64, whose random
#: letters can spell a piece of a planted secret (it once held "WQSQ") and hold none.
_TASK_TOKEN = re.compile(r"TaskToken\([A-Za-z0-9+/=_-]*\)")


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    text = _TASK_TOKEN.sub("TaskToken(...)", text)
    found = []
    for name, secret in secrets.items():
        for piece in sorted(pieces(secret)):
            at = text.find(piece)
            if at >= 0:
                found.append(f"{name}: {piece!r} in ...{text[max(0, at - 80) : at + 40]!r}...")
    return found


async def test_no_secret_nor_a_piece_of_one_is_written_anywhere(
    temporal_client: Client,
    temporal_address: str,
    sim: SimHandle,
    smtp_server: SmtpServer,
    postgres_dsn: str,
    tls_proxy: TLSProxy,
    closed_port: int,
    tmp_path: Path,
) -> None:
    s = Secrets()
    sim.set_faults({"llm": {"api_key": s.anthropic}, "search": {"api_key": s.search}})
    spawned: list[Spawned] = []
    metrics_ports: list[int] = []
    try:
        for scenario in scenarios(s, smtp_server, postgres_dsn, tls_proxy, closed_port):
            w, *ports = await spawn(sim, scenario, tmp_path / scenario.name, temporal_address)
            spawned.append(w)
            metrics_ports += ports
        for w in spawned:
            cfg = parse_config(w.config)
            topic = f"leak {w.scenario.name}"
            w.handle = await temporal_client.start_workflow(
                WORKFLOW_NAME,
                research_input(cfg, topic),
                id=workflow_id(cfg.namespace, cfg.agent, topic) + "-" + os.urandom(3).hex(),
                task_queue=cfg.task_queue,
            )
        outcomes = await asyncio.gather(*(settle(w.handle) for w in spawned if w.handle))
        for w, failed in zip(spawned, outcomes, strict=True):
            if w.scenario.expect_failure:
                assert failed, f"{w.scenario.name}: the run was meant to fail"
            if w.scenario.name.endswith("-unencoded"):
                # Told what to fix, in words that name the setting, not its value.
                assert failed is not None
                assert "percent-encode" in failed, failed
        texts = [await scrape(port) for port in metrics_ports]
        for w in spawned:
            assert w.handle is not None
            history = await w.handle.fetch_history()
            text = json.dumps(readable(history.to_json_dict()), ensure_ascii=False)
            assert f"leak {w.scenario.name}" in text  # the input's payload, decoded
            texts.append(text)
        flags = ["--address", tls_proxy.address, "--tls-ca", str(tls_proxy.pki.ca)]
        status = await asyncio.create_subprocess_exec(
            *steadfast_command(
                "status",
                *(w.handle.id for w in spawned if w.handle),
                *flags,
                "--api-key-env",
                TEMPORAL_ENV,
            ),
            env={**os.environ, TEMPORAL_ENV: s.temporal, "COLUMNS": "400"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        out, _ = await status.communicate()
        assert "Failed" in out.decode(), out.decode()
        texts.append(out.decode())
    finally:
        for w in spawned:
            if w.process.returncode is None:
                w.process.terminate()
        for w in spawned:
            await w.process.wait()
    for w in spawned:
        texts.append(w.log.read_text(errors="replace"))
    found = leaks("\n".join(texts), s.all())
    assert not found, "\n".join(found)
