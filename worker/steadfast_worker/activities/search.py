"""Activity ``web_search``: one query, a handful of results, from either provider.

- ``http``: a search endpoint speaking ``GET <endpoint>?q=...&count=N`` and
  answering ``{"results": [{"title", "url", "snippet"}]}`` (the simulator's and
  a thin adapter's contract). The key, if any, comes from the environment
  variable the configuration names and goes out as a Bearer token.
- ``anthropic-web-search``: the model runs Claude's server-side web search tool;
  the result blocks become the results. This costs tokens and a per-search fee,
  so the workflow budgets it like any LLM call, and the request is granted from
  the run's budget and the day's ledger before it is sent.

Errors are classified by :mod:`steadfast_worker.errors`; a body that is not the
expected JSON is retried as a server fault (search engines have bad moments).

An answer is untrusted input that ends up in workflow history and in the report
prompt, so it is bounded three times: the body is read up to :data:`MAX_BODY_BYTES`
(a larger one fails the search, not the worker's memory or the history's size
limit), each result's fields are cut to a fixed length, and the results kept are
the leading ones that fit in :data:`MAX_ANSWER_BYTES` as a payload carries them.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

import anthropic
import httpx
from anthropic.types import WebSearchTool20250305Param
from temporalio import activity
from temporalio.exceptions import ApplicationError

from steadfast_contract import budget, pricing, stops
from steadfast_contract.activities import (
    WEB_SEARCH,
    LlmCall,
    SearchResult,
    WebSearchInput,
    WebSearchOutput,
    search_ask,
)
from steadfast_contract.text import well_formed
from steadfast_worker import errors, llm
from steadfast_worker.activities.base import ActivityBase, reserve_request, settle_request
from steadfast_worker.activities.heartbeat import Carried

log = logging.getLogger(__name__)

#: The largest search answer read, in bytes. A result list of 20 items is a few
#: tens of kilobytes; anything near this size is not a result list.
MAX_BODY_BYTES: Final = 2 * 1024 * 1024

#: Characters kept of each result field.
MAX_TITLE: Final = 300
MAX_URL: Final = 2048
MAX_SNIPPET: Final = 1000

#: The most one query's results may take in a payload. The fields' cuts alone let 50
#: results in a script of 6 escaped bytes a character reach 1 MB a query, and the
#: pipeline's search step, its heartbeat and the report's input carry three queries'
#: worth, over the 2 MB a payload may hold: the run failed after its queries were
#: paid for. Fifty results of full-length ASCII fields take 170 KB, so this cuts only
#: answers no engine sends in one language.
MAX_ANSWER_BYTES: Final = 256 * 1024

#: A result's bytes in a payload besides its three fields' (keys, quotes, commas).
_RESULT_FRAME_BYTES: Final = len('{"snippet":,"title":,"url":},')


def _result(title: object, url: str, snippet: object = "") -> SearchResult:
    """One result, bounded and as text every request and store can hold: an index's
    JSON may carry a NUL or a lone surrogate from the page it read
    (:func:`steadfast_contract.text.well_formed`), which no request body encodes."""
    return SearchResult(
        title=well_formed(str(title)[:MAX_TITLE]),
        url=well_formed(url[:MAX_URL]),
        snippet=well_formed(str(snippet)[:MAX_SNIPPET]),
    )


def result_bytes(result: SearchResult) -> int:
    """Bytes ``result`` takes in a payload of Temporal's JSON converter."""
    fields = (result.title, result.url, result.snippet)
    return _RESULT_FRAME_BYTES + sum(stops.payload_bytes(f) for f in fields)


def fit_results(results: list[SearchResult], limit: int = MAX_ANSWER_BYTES) -> list[SearchResult]:
    """The leading ``results`` that together fit in ``limit`` payload bytes."""
    kept: list[SearchResult] = []
    used = 0
    for result in results:
        used += result_bytes(result)
        if used > limit:
            log.warning(
                "search answer cut to %d of %d results: the rest would pass %d bytes",
                len(kept),
                len(results),
                limit,
            )
            break
        kept.append(result)
    return kept


def parse_results(data: Any, limit: int) -> list[SearchResult]:
    """Results from an ``http`` provider's JSON body; ValueError if it has none."""
    items = data.get("results") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("expected an object with a `results` array")
    results = []
    for item in items[:limit]:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            snippet = item.get("snippet", item.get("description", ""))
            results.append(_result(item.get("title", ""), item["url"], snippet))
    return fit_results(results)


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed ``response``; ApplicationError once it passes ``limit``."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApplicationError:
    # Not retried: the same query would bring the same answer.
    return ApplicationError(
        f"search endpoint answered more than {limit} bytes; the answer was not read",
        type=errors.RESPONSE_TOO_LARGE,
        non_retryable=True,
    )


def results_from_blocks(blocks: list[Any], limit: int) -> list[SearchResult]:
    """Results from the ``web_search_tool_result`` blocks of a Messages reply."""
    found: list[SearchResult] = []
    summary = ""
    for block in blocks:
        if block.type == "web_search_tool_result" and isinstance(block.content, list):
            for item in block.content:
                if getattr(item, "type", "") == "web_search_result":
                    found.append(_result(item.title, item.url))
        elif block.type == "text":
            summary += block.text
    if summary and found:
        # The tool's page contents are encrypted; the model's own summary is the
        # only readable snippet, so it is attached to the first result.
        found[0].snippet = well_formed(summary.strip()[:MAX_SNIPPET])
    return fit_results(found[:limit])


class SearchActivities(ActivityBase):
    @activity.defn(name=WEB_SEARCH)
    async def web_search(self, inp: WebSearchInput) -> WebSearchOutput:
        async with self.tracked(
            WEB_SEARCH, billed=True, model=inp.model, run_budget=inp.budget
        ) as beat:
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
        request = self.http_client().stream(
            "GET", cfg.endpoint, params={"q": inp.query, "count": count}, headers=headers
        )
        async with request as response:
            response.raise_for_status()
            body = await read_bounded(response, MAX_BODY_BYTES)
        try:
            results = parse_results(json.loads(body), count)
        except (ValueError, RecursionError) as err:
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
        ask = search_ask(inp.query)
        # A paid request like any other: the run's budget and the day's grant it first,
        # its results (billed as input) included.
        prompt_tokens = budget.estimate_tokens(budget.token_chars(ask))
        reserve = budget.reserve_usd(inp.max_tokens, prompt_tokens, price, web_searches=1)
        ledger, key = await reserve_request(inp.budget, carried, reserve)
        try:
            reply = await self.llm_client().messages.create(
                model=inp.model,
                max_tokens=inp.max_tokens,
                tools=[tool],
                messages=[{"role": "user", "content": ask}],
                extra_headers={llm.REQUEST_KEY_HEADER: f"{info.workflow_id}/{info.activity_id}"},
            )
        except anthropic.APIStatusError:
            # An error answer bills nothing; a lost one keeps its reservation.
            await settle_request(carried, ledger, key, 0.0)
            raise
        usage = llm.usage_of(reply.usage)
        cost = pricing.cost_usd(usage, price)
        await settle_request(carried, ledger, key, cost)
        if cost > reserve:
            log.warning(
                "a web search through the model cost $%.4f, more than the $%.4f reserved for "
                "it: its results read %d input tokens, %d were reserved; the run's and the "
                "day's budgets may be exceeded by the difference",
                cost,
                reserve,
                usage.input_tokens,
                prompt_tokens + pricing.WEB_SEARCH_RESULT_TOKENS,
            )
        carried.calls += 1
        self.metrics.record_llm(self.labels, inp.model, usage, cost)
        with self.unused_if_raised(carried, inp.model, key, cost):
            results = results_from_blocks(list(reply.content), inp.max_results)
        call = LlmCall(inp.model, usage, cost, carried.failed_cost_usd, carried.calls)
        return WebSearchOutput(inp.query, results, "anthropic-web-search", call, info.attempt)
