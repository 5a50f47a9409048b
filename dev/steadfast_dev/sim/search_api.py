"""``GET|POST /search``: a minimal web search provider for the ``http`` search backend.

Real search APIs differ in shape; this one is the contract of Steadfast's
``search.provider: http``. Request: ``GET /search?q=...&count=5`` or ``POST
/search`` with ``{"query": "...", "count": 5}`` (``q`` is accepted too). Answer:
``{"query": "...", "results": [{"title", "url", "snippet"}, ...]}``, the same
results for the same query. When the simulator has a search API key, requests
must send it as ``x-api-key`` or ``Authorization: Bearer``. Errors are
``{"error": {"type": ..., "message": ...}}`` with the fault's HTTP status;
``bad_json`` answers 200 with a body that does not parse, ``stream_error`` 500,
``disconnect`` closes the connection without an answer. A plan's ``answer_bytes``
pads the answer to at least that size; its ``answer`` is the text of every field of
every result (an engine that indexed one hostile site: the longest answer a count
allows once a client cuts each field). With the plan's ``page_links`` the results
link to the simulator's own pages (``http://<its address>/pages/<host>/<path>``,
see :mod:`steadfast_dev.sim.pages_api`) instead of external ``https://`` addresses,
which stay the default.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from steadfast_dev.sim import content, pages
from steadfast_dev.sim.faults import matches
from steadfast_dev.sim.pages_api import own_base_url
from steadfast_dev.sim.state import STATE, drop_connection, error_response, preamble

DEFAULT_COUNT: Final = 5
#: As many results as ``search.maxResults`` may ask for.
MAX_COUNT: Final = 50
#: A UTF-16 half on its own: JSON carries it only as a ``\uXXXX`` escape.
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def utf8_json(value: object) -> str:
    """JSON as search APIs send it: UTF-8 text, escaping only what UTF-8 cannot hold."""
    text = json.dumps(value, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _error_body(status: int, message: str) -> Mapping[str, object]:
    kinds = {400: "bad_request", 401: "unauthorized", 429: "rate_limited", 504: "timeout"}
    return {"error": {"type": kinds.get(status, "server_error"), "message": message}}


def parse_search(params: Mapping[str, str], body: object) -> tuple[str, int] | str:
    """(query, count) from the query string or JSON body, or the 400 message."""
    source: Mapping[str, object] = body if isinstance(body, Mapping) else params
    query = source.get("query", source.get("q", ""))
    if not isinstance(query, str) or not query.strip():
        return "query: a non-empty `q` or `query` is required"
    raw = source.get("count", DEFAULT_COUNT)
    try:
        count = int(str(raw))
    except ValueError:
        return f"count: expected an integer, got {raw!r}"
    if not 1 <= count <= MAX_COUNT:
        return f"count: must be within 1..{MAX_COUNT}"
    return query.strip(), count


async def handle_search(request: web.Request) -> web.StreamResponse:
    """Answer one search call (one attempt in the request log)."""
    state = request.app[STATE]
    body: object = None
    if request.method == "POST" and request.can_read_body:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = "<unparsable>"
    parsed = parse_search(request.query, body)
    # The key is the normalised query, so GET and POST of the same search match.
    keyed = {"q": parsed[0], "count": parsed[1]} if isinstance(parsed, tuple) else body
    text = parsed[0] if isinstance(parsed, tuple) else ""
    entry, fault = state.begin("search", request, keyed, text=text)
    early = await preamble(state, "search", request, entry, fault, _error_body)
    if early is not None:
        return early
    if isinstance(parsed, str):
        state.log.finish(entry, "rejected", 400)
        return error_response(400, parsed, _error_body)
    if fault == "disconnect":
        state.log.finish(entry, "fault", None)
        return drop_connection(request)
    if fault == "stream_error":
        state.log.finish(entry, "fault", 500)
        return error_response(500, "simulated upstream failure", _error_body)
    query, count = parsed
    results = content.search_results(query, count)
    plan = state.plans["search"]
    if plan.answer_bytes and matches(plan, query):
        # An oversized answer: a search engine (or something posing as one) that
        # sends far more than any result list needs.
        results[0]["snippet"] += "x" * plan.answer_bytes
    if plan.answer and matches(plan, query):
        tag = hashlib.sha256(query.encode()).hexdigest()[:8]
        for i, result in enumerate(results):
            result["title"] = result["snippet"] = plan.answer
            # Distinct within the 2,048 characters a client keeps, across queries too.
            result["url"] = f"https://{tag}-{i}.{plan.answer}"
    if plan.says and matches(plan, query):
        # What a hostile page's title or snippet may hold, as the engine indexed it.
        results[0]["snippet"] += " " + plan.says
    if plan.page_links:
        base = own_base_url(request)
        for result in results:
            result["url"] = pages.page_url(base, result["url"])
    # UTF-8 as search APIs send it, not escaped: a wide result list stays a small body.
    answer = utf8_json({"query": query, "results": results})
    if fault == "bad_json":
        answer = answer[: len(answer) // 2]
    state.log.finish(entry, "served", 200)
    return web.Response(text=answer, content_type="application/json")
