"""``steadfast sim``: run the LLM and search simulators in the foreground.

For demos without an API key, for benchmarks (zero latency) and for chaos
experiments (fault rates, slow streams to kill a worker in the middle of). The
flags set the start-up plan; ``POST /_sim/faults`` changes it while running and
``POST /_sim/reset`` returns to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

from steadfast_cli import argtypes
from steadfast_cli.commands import _sandbox
from steadfast_cli.errors import refuse, say

if TYPE_CHECKING:
    from steadfast_dev.sim.state import SimConfig

HELP = (
    "Run the Anthropic Messages API and search simulators (with fault injection and a "
    "request log) on one local port."
)

_SERVICES = {"llm": "the Messages API", "search": "the search provider"}

#: Fault kind -> what it does, in the order of ``steadfast_dev.sim.faults.FAULT_KINDS``
#: (a unit test keeps the two equal). Held here so ``--help`` lists the fault flags
#: where the sandbox is not installed.
_FAULT_HELP = {
    "429": "429 rate limited, with retry-after",
    "500": "500 internal error",
    "529": "529 overloaded, with retry-after",
    "timeout": "a stall of --timeout-seconds, then 504",
    "hang": "no answer until the client disconnects",
    "400": "400 invalid request",
    "401": "401 authentication error",
    "bad_json": "200 with output that does not parse as JSON",
    "stream_error": "an overloaded_error event mid-stream (529 when not streaming)",
    "disconnect": "a dropped connection (mid-stream, or before any answer)",
}


def _dest(service: str, kind: str) -> str:
    return f"{service}_{kind}_rate"


EPILOG = (
    "The Anthropic base_url is the server root (POST /v1/messages); search is GET or POST "
    "/search. A prompt containing 'JSON array' (e.g. 'Return a JSON array of 4 search "
    "queries') gets a JSON array of queries, any other prompt a markdown report. While "
    "running: GET /_sim/health, GET|POST /_sim/faults (e.g. "
    '{"llm": {"first_n": 2, "kind": "429", "retry_after": 1}}), GET /_sim/log '
    "(attempts and served counts per logical request), POST /_sim/reset."
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument(
        "--port",
        type=argtypes.port_number,
        default=8089,
        help="TCP port for both services; 0 picks a free one",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for fault rates (same seed, same faults)"
    )
    parser.add_argument(
        "--latency-ms",
        type=argtypes.delay_ms,
        default=0,
        help="delay before every answer of both services",
    )
    parser.add_argument(
        "--chunk-delay-ms",
        type=argtypes.delay_ms,
        default=0,
        help="delay between streamed LLM chunks (also lengthens non-streamed answers)",
    )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="seconds in the retry-after header of 429 and 529 answers",
    )
    parser.add_argument(
        "--timeout-seconds",
        type=float,
        default=30.0,
        help="how long a `timeout` fault stalls before answering 504",
    )
    parser.add_argument(
        "--agent-turns",
        type=int,
        default=6,
        metavar="N",
        help="turns the simulated tool-use agent plays for requests with client tools "
        "(turns 1..N-1 call tools, turn N writes the report)",
    )
    parser.add_argument(
        "--page-links",
        action="store_true",
        help="search results link to the simulator's own pages (GET /pages/...), "
        "so an agent's fetch_page stays on this machine",
    )
    # Keys may come from the environment so they stay out of process listings.
    parser.add_argument(
        "--llm-api-key",
        default=None,
        help="if set, Messages API calls must send this x-api-key (env STEADFAST_SIM_LLM_API_KEY)",
    )
    parser.add_argument(
        "--search-api-key",
        default=None,
        help="if set, search calls must send it as x-api-key or a bearer token "
        "(env STEADFAST_SIM_SEARCH_API_KEY)",
    )
    for service, name in _SERVICES.items():
        group = parser.add_argument_group(f"{service} faults", f"fault rates of {name}")
        for kind in _FAULT_HELP:
            group.add_argument(
                f"--{service}-{kind.replace('_', '-')}-rate",
                dest=_dest(service, kind),
                type=float,
                default=0.0,
                metavar="P",
                help=f"probability that an attempt gets {_FAULT_HELP[kind]}",
            )
        group.add_argument(
            f"--{service}-first-n",
            dest=f"{service}_first_n",
            type=int,
            default=0,
            metavar="N",
            help="fail the first N attempts of every logical request (with --*-first-kind)",
        )
        group.add_argument(
            f"--{service}-first-kind",
            dest=f"{service}_first_kind",
            choices=list(_FAULT_HELP),
            default="500",
            help="the fault the first N attempts get",
        )


def _api_key(args: argparse.Namespace, service: str) -> str:
    flag: str | None = getattr(args, f"{service}_api_key")
    if flag is not None:
        return flag
    return os.environ.get(f"STEADFAST_SIM_{service.upper()}_API_KEY", "")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The start-up configuration the flags describe; ValueError names a bad flag."""
    from steadfast_dev.sim.faults import FAULT_KINDS, ServicePlan, update_plan
    from steadfast_dev.sim.state import SimConfig

    plans: dict[str, ServicePlan] = {}
    for service in _SERVICES:
        rates = {kind: getattr(args, _dest(service, kind)) for kind in FAULT_KINDS}
        data: dict[str, object] = {
            "rates": rates,
            "retry_after": args.retry_after,
            "timeout_s": args.timeout_seconds,
            "latency_ms": args.latency_ms,
            "chunk_delay_ms": args.chunk_delay_ms if service == "llm" else 0,
            "api_key": _api_key(args, service),
        }
        if service == "llm":
            data["agent_turns"] = args.agent_turns
        if service == "search":
            data["page_links"] = args.page_links
        first_n = getattr(args, f"{service}_first_n")
        if first_n:
            data["first_n"] = first_n
            data["kind"] = getattr(args, f"{service}_first_kind")
        plans[service] = update_plan(ServicePlan(), data, f"--{service}")
    return SimConfig(
        host=args.host, port=args.port, seed=args.seed, llm=plans["llm"], search=plans["search"]
    )


async def serve(config: SimConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    from steadfast_dev.sim.server import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Simulator(config) as sim:
        print(f"steadfast sim listening on {sim.base_url}", flush=True)
        print(f"  Anthropic base_url: {sim.llm_base_url}", flush=True)
        print(f"  search endpoint:    {sim.search_url}", flush=True)
        print(f"  admin:              {sim.base_url}/_sim/{{health,faults,log,reset}}", flush=True)
        await stop.wait()
    print("steadfast sim stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    if not _sandbox.installed():
        return _sandbox.refuse("sim")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return refuse("sim", exc)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        say("sim", f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    # `python -m steadfast_cli.commands.sim` starts only the simulators, without
    # importing every other verb (Temporal, Kopf): quicker for tests and benchmarks.
    _parser = argparse.ArgumentParser(
        prog="steadfast sim",
        description=HELP,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    configure(_parser)
    _code = run(_parser.parse_args())
    sys.stdout.flush()
    os._exit(_code)
