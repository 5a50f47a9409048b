"""Activity ``web_search``: one query, a handful of results, from either provider.

- ``http``: a search endpoint speaking ``GET <endpoint>?q=...&count=N`` and
  answering ``{"results": [{"title", "url", "snippet"}]}`` (the simulator's and
  a thin adapter's contract). The key, if any, comes from the environment
  variable the configuration names and goes out as a Bearer token.
- ``anthropic-web-search``: the model runs Claude's server-side web search tool;
  the result blocks become the results. This costs tokens and a per-search fee,
  so the workflow budgets it like any LLM call.

Errors are classified by :mod:`steadfast_worker.errors`; a body that is not the
expected JSON is retried as a server fault (search engines have bad moments).
"""

from __future__ import annotations

from typing import Any

from anthropic.types import WebSearchTool20250305Param
from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract import pricing
from steadfast_contract.activities import (
    WEB_SEARCH,
    LlmCall,
    SearchResult,
    WebSearchInput,
    WebSearchOutput,
)
from steadfast_worker import errors, llm
from steadfast_worker.activities.base import (
    ActivityBase,
    Carried,
)


def parse_results(data: Any, limit: int) -> list[SearchResult]:
    """Results from an ``http`` provider's JSON body; ValueError if it has none."""
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("expected an object with a `results` array")
    results = []
    for item in items[:limit]:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            results.append(
                SearchResult(
                    title=str(item.get("title", "")),
                    url=item["url"],
                    snippet=str(item.get("snippet", item.get("description", ""))),
                )
            )
    return results


def results_from_blocks(blocks: list[Any], limit: int) -> list[SearchResult]:
    """Results from the ``web_search_tool_result`` blocks of a Messages reply."""
    found: list[SearchResult] = []
    summary = ""
    for block in blocks:
        if block.type == "web_search_tool_result" and isinstance(block.content, list):
            for item in block.content:
                if getattr(item, "type", "") == "web_search_result":
                    found.append(SearchResult(title=item.title, url=item.url))
        elif block.type == "text":
            summary += block.text
    if summary and found:
        # The tool's page contents are encrypted; the model's own summary is the
        # only readable snippet, so it is attached to the first result.
        found[0].snippet = summary.strip()[:1000]
    return found[:limit]


class SearchActivities(ActivityBase):
    @activity.defn(name=WEB_SEARCH)
    async def web_search(self, inp: WebSearchInput) -> WebSearchOutput:
        async with self.tracked(WEB_SEARCH, billed=True) as beat:
            if self.config.search.provider == "anthropic-web-search":
                return await self._anthropic(inp, beat.state)
            return await self._search_http(inp)

    async def _search_http(self, inp: WebSearchInput) -> WebSearchOutput:
        cfg = self.config.search
        headers = {}
        key = self.env.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            headers["authorization"] = f"Bearer {key}"
        count = min(inp.max_results, cfg.max_results)
        response = await self.http_client().get(
            cfg.endpoint, params={"q": inp.query, "count": count}, headers=headers
        )
        response.raise_for_status()
        try:
            results = parse_results(response.json(), count)
        except ValueError as err:
            raise ApplicationError(
                f"search endpoint answered unparsable JSON: {err}", type=errors.SERVER_ERROR
            ) from None
        return WebSearchOutput(inp.query, results, "http", None, activity.info().attempt)

    async def _anthropic(self, inp: WebSearchInput, carried: Carried) -> WebSearchOutput:
        info = activity.info()
        price = pricing.lookup(inp.model, inp.pricing)
        tool: WebSearchTool20250305Param = {
            "type": "web_search_20250305",
            "name": "web_search",
            "max_uses": 1,
        }
        reply = await self.llm_client().messages.create(
            model=inp.model,
            max_tokens=inp.max_tokens,
            tools=[tool],
            messages=[
                {
                    "role": "user",
                    "content": "Search the web and summarise the most relevant findings "
                    f"in a few sentences.\nTopic: {inp.query}",
                }
            ],
            extra_headers={llm.REQUEST_KEY_HEADER: f"{info.workflow_id}/{info.activity_id}"},
        )
        usage = llm.usage_of(reply.usage)
        cost = pricing.cost_usd(usage, price)
        carried.calls += 1
        self.metrics.record_llm(self.labels, inp.model, usage, cost)
        results = results_from_blocks(list(reply.content), inp.max_results)
        call = LlmCall(inp.model, usage, cost, carried.failed_cost_usd, carried.calls)
        return WebSearchOutput(inp.query, results, "anthropic-web-search", call, info.attempt)
