"""Stand-ins for the Anthropic Messages API and a web search provider.

The services Steadfast calls cannot be reached from CI, and tests need them to
misbehave on demand (429 with ``retry-after``, 500, 529, timeouts, hangs, bad
JSON) and to count how often each logical request was served. The worker talks
to these simulators with the same client code it uses in production: the real
``anthropic`` SDK pointed at ``base_url`` and ``httpx`` for search.

Start one with ``steadfast sim``, ``async with Simulator(config)`` or
``SimulatorThread(config)``; drive it with :class:`SimAdmin`.
"""

from steadfast_dev.sim.client import SimAdmin, served_more_than_once
from steadfast_dev.sim.content import JSON_MARKER
from steadfast_dev.sim.faults import FAULT_KINDS, FaultKind, ServicePlan
from steadfast_dev.sim.requestlog import body_key, request_key
from steadfast_dev.sim.server import Simulator, SimulatorThread
from steadfast_dev.sim.state import SimConfig

__all__ = [
    "FAULT_KINDS",
    "JSON_MARKER",
    "FaultKind",
    "ServicePlan",
    "SimAdmin",
    "SimConfig",
    "Simulator",
    "SimulatorThread",
    "body_key",
    "request_key",
    "served_more_than_once",
]
