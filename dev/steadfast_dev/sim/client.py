"""A small client for a running simulator's admin API.

Used by ``steadfast dev --chaos`` to report that no finished LLM call was served
twice, and by the tests to set faults and read the request log; both talk to the
simulator over HTTP because it may live in another process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import httpx


class SimAdmin:
    """Admin calls against the simulator at ``base_url`` (e.g. ``http://127.0.0.1:8089``)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as http:
            response = await http.request(method, path, **kwargs)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    async def healthy(self) -> bool:
        try:
            return (await self._call("GET", "/_sim/health")).get("ok") is True
        except httpx.HTTPError:
            return False

    async def set_faults(self, plans: Mapping[str, object]) -> dict[str, Any]:
        """``POST /_sim/faults``; e.g. ``{"llm": {"first_n": 2, "kind": "429"}}``."""
        return await self._call("POST", "/_sim/faults", json=dict(plans))

    async def faults(self) -> dict[str, Any]:
        return await self._call("GET", "/_sim/faults")

    async def reset(self) -> dict[str, Any]:
        return await self._call("POST", "/_sim/reset")

    async def log(self, service: str | None = None, key: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("service", service), ("key", key)) if v is not None}
        return await self._call("GET", "/_sim/log", params=params)

    async def served(self, service: str = "llm") -> dict[str, int]:
        """Logical request key -> complete successful responses."""
        return cast(dict[str, int], (await self.log(service))["served"][service])


def served_more_than_once(served: Mapping[str, int]) -> dict[str, int]:
    """The keys that were paid for more than once: empty when durability held."""
    return {key: count for key, count in served.items() if count > 1}
