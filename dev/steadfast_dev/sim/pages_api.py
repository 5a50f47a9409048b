"""``GET /pages/<path>``: web pages for an agent's ``fetch_page``, on the simulator's own port.

Each fetch is an attempt in the request log (service ``pages``, keyed by the
path), so tests count fetches as they count LLM calls, and the ``pages`` plan
applies the usual faults (429, 500, timeout, hang, ...) and these knobs, to every
page or to those whose path contains the plan's ``match``:

* ``answer_bytes`` -- the body is exactly this many bytes (e.g. 50 MB);
* ``content_type`` -- sent instead of ``text/html``; not text means a binary body;
* ``latency_ms`` -- delay before the headers; ``chunk_delay_ms`` -- delay between
  4 KiB chunks of the body (a slow body);
* fault ``bad_json`` -- a text body with bytes that are not UTF-8 in the middle;
  ``stream_error`` -- 500; ``disconnect`` -- the connection drops once the
  plan's ``stream_cut`` fraction of the body has been sent.

The page's own address can ask for what a plan cannot say per page, so one
test can chain a redirect to a page that misbehaves differently (query string):

* ``redirect_to=<URL>`` -- answer 302 with that Location (a path, or an absolute
  URL on a loopback host: test traffic never leaves the machine), e.g. from a
  ``localhost`` address to a ``127.0.0.1`` one, or to itself (a redirect loop);
* ``status=<N>`` -- answer that error status (400..599) with a JSON body;
* ``chunked=1`` -- send the body without Content-Length (chunked), as a server
  that does not announce its size does.

Every other body is sent with its Content-Length; ``HEAD`` is not served (405).
:func:`own_base_url` is the address search results link pages at.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from steadfast_dev.sim import pages
from steadfast_dev.sim.faults import matches
from steadfast_dev.sim.state import STATE, drop_connection, error_response, pause, preamble

#: Body chunk size when the plan slows the body down, and otherwise.
SLOW_CHUNK_BYTES = 4096
FAST_CHUNK_BYTES = 262144


def _error_body(status: int, message: str) -> Mapping[str, object]:
    return {"error": {"status": status, "message": message}}


def _is_loopback_name(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def own_base_url(request: web.Request) -> str:
    """``http://host:port`` of this simulator as the client reached it.

    The request's Host when it names a loopback address (``127.0.0.1``,
    ``localhost``: a test may rely on the difference for domain lists) or the
    address the connection came in on; otherwise that address itself, so a
    forged Host never sends a fetcher to a machine the simulator is not on.
    """
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    local = str(sockname[0]) if sockname else "127.0.0.1"
    port = int(sockname[1]) if sockname else 80
    host = request.url.host or ""
    if host and (_is_loopback_name(host) or host.strip("[]") == local):
        return f"http://{request.host}"
    shown = f"[{local}]" if ":" in local else local
    return f"http://{shown}:{port}"


def _redirect_target(location: str) -> str | None:
    """``location`` if the simulator may send a client there (a path or a loopback URL)."""
    try:
        target = urlsplit(location)
        host = target.hostname or ""
    except ValueError:
        return None
    if not target.scheme and not target.netloc:
        return location if location.startswith("/") else None
    if target.scheme in ("http", "https") and _is_loopback_name(host):
        return location
    return None


def _asked_status(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and 400 <= int(raw) <= 599 else None


async def handle_page(request: web.Request) -> web.StreamResponse:
    """Serve one page (one attempt in the request log)."""
    state = request.app[STATE]
    path = request.match_info["path"]
    entry, fault = state.begin("pages", request, {"page": path}, text=path)
    early = await preamble(state, "pages", request, entry, fault, _error_body)
    if early is not None:
        return early
    if fault == "stream_error":
        state.log.finish(entry, "fault", 500)
        return error_response(500, "simulated upstream failure", _error_body)
    query = request.rel_url.query
    if "redirect_to" in query:
        target = _redirect_target(query["redirect_to"])
        if target is None:
            state.log.finish(entry, "rejected", 400)
            return error_response(400, "redirect_to: a path or a loopback URL", _error_body)
        state.log.finish(entry, "served", 302)
        raise web.HTTPFound(target)
    if "status" in query:
        status = _asked_status(query["status"])
        if status is None:
            state.log.finish(entry, "rejected", 400)
            return error_response(400, "status: a number within 400..599", _error_body)
        state.log.finish(entry, "fault", status)
        return error_response(status, f"the page asked for {status}", _error_body)
    plan = state.plans["pages"]
    applies = matches(plan, path)
    content_type = plan.content_type if applies and plan.content_type else pages.HTML
    delay = plan.chunk_delay_ms / 1000 if applies else 0.0
    body = pages.page_body(
        path,
        size=plan.answer_bytes if applies else 0,
        content_type=content_type,
        undecodable=fault == "bad_json",
        chunk_bytes=SLOW_CHUNK_BYTES if delay else FAST_CHUNK_BYTES,
    )
    cut = int(body.length * plan.stream_cut) if fault == "disconnect" else -1
    response = web.StreamResponse(headers={"content-type": content_type})
    if query.get("chunked") in ("1", "true"):
        response.enable_chunked_encoding()
    else:
        response.content_length = body.length
    await response.prepare(request)
    sent = 0
    try:
        for chunk in body.chunks:
            if 0 <= cut < sent + len(chunk):
                await response.write(chunk[: cut - sent])
                state.log.finish(entry, "fault", 200)
                drop_connection(request)
                return response
            if sent and delay and not await pause(request, delay, state.stopping):
                raise ConnectionResetError("client left mid-body")
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
    except ConnectionError:
        state.log.finish(entry, "aborted", 200)
        return response
    state.log.finish(entry, "served", 200)
    return response
