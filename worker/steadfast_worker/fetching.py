"""Reading one web page for the deep agent's ``fetch_page`` tool, within its rules.

The model chooses the addresses, so every address is untrusted: it may name a
host the agent's rules deny, redirect there, send 50 MB, send an image, or
trickle its body forever. This module is the one place those limits hold
(``spec.research.tools.fetchPage``, :class:`~steadfast_contract.models.FetchRules`):

- only ``http``/``https`` with a host; the domain rules are checked on the host
  httpx will dial, before dialing and again on every redirect hop (followed
  here, at most :data:`MAX_REDIRECTS`), deny first;
- the Content-Type must be text, judged before any body byte is read;
- body bytes are counted while they stream in (a Content-Length above the
  limit refuses early, a smaller one is not believed), and the connection is
  closed at the first byte past ``max_bytes``;
- the whole fetch, redirects and body included, has ``timeout_seconds``.

What the model may not have is a :class:`FetchRefused` (its reason becomes an
``is_error`` tool result, never retried). What may pass is raised as is for the
activity's error mapping (:func:`steadfast_worker.errors.to_application_error`)
to retry: :class:`FetchTimeout` and other ``httpx.TimeoutException``\\ s, transport
errors, and ``httpx.HTTPStatusError`` for 429 and 5xx.

A page's text is resent in every later prompt of the run, so it is cut to
:data:`MAX_RESULT_CHARS`; HTML keeps one line per paragraph, heading or list item
and drops scripts and styles. The decisions are pure functions, unit-tested
without a server; :func:`fetch_text` is the I/O around them.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import re
import socket
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

import httpx

from steadfast_contract.models import FetchRules

#: The longest page text handed to the model (about 3,000 tokens), "[truncated]" included.
MAX_RESULT_CHARS: Final = 12_000
#: Redirect hops followed before the page is refused.
MAX_REDIRECTS: Final = 5
TRUNCATED: Final = "[truncated]"

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TEXT_TYPES: Final = frozenset(
    {"application/json", "application/xml", "application/xhtml+xml", "application/javascript"}
)
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_HOST_RE: Final = re.compile(r"^[a-z0-9_]([-a-z0-9_.]*[a-z0-9_])?$")
#: Hosts a resolver would read as an IPv4 address (``127.1``, ``0x7f.1``, ``2130706433``).
_NUMERIC_HOST_RE: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")
_WHITESPACE_RE: Final = re.compile(r"\s+")
#: ``identity``: a compressed body is inflated before its bytes can be counted, so
#: one small read of a gzip bomb could take megabytes of memory; a server that
#: compresses anyway is still counted after inflating, chunk by chunk.
_HEADERS: Final = {
    "accept": "text/html, application/xhtml+xml, text/*;q=0.9, application/json;q=0.8",
    "accept-encoding": "identity",
}


# The name is the interface the activity is written against; a refusal is an
# answer to the model, not an error of the worker.
class FetchRefused(Exception):  # noqa: N818
    """The page is refused to the model: its reason becomes an is_error tool result.

    Never retried: the same page under the same rules is refused again.
    """


class FetchTimeout(httpx.TimeoutException):
    """The whole fetch outlasted ``timeout_seconds``: retryable, like any httpx timeout."""


@dataclass(frozen=True)
class _Rule:
    host: str
    subdomains_only: bool
    port: int | None

    def matches(self, host: str, port: int, is_ip: bool) -> bool:
        if self.port is not None and self.port != port:
            return False
        if is_ip:  # an address has no subdomains: 0.0.1 must not match 127.0.0.1
            return not self.subdomains_only and host == self.host
        if host.endswith("." + self.host):
            return True
        return not self.subdomains_only and host == self.host


def _rule(text: str) -> _Rule:
    rule = text.strip().lower()
    port: int | None = None
    head, colon, tail = rule.rpartition(":")
    if colon and tail.isdigit():
        rule, port = head, int(tail)
    subdomains_only = rule.startswith("*.")
    return _Rule(rule.removeprefix("*.").rstrip("."), subdomains_only, port)


def _host(url: httpx.URL) -> tuple[str, bool]:
    """(the host as the rules see it, whether it is an IP address); raises FetchRefused."""
    host = url.raw_host.decode("ascii", "replace").lower().rstrip(".")
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        return str(ipaddress.ip_address(host)), True
    except ValueError:
        pass
    if _NUMERIC_HOST_RE.match(host):
        # A resolver dials these as IPv4 addresses: judge them as the address.
        try:
            return socket.inet_ntoa(socket.inet_aton(host)), True
        except OSError:
            raise FetchRefused(f"{host} is not a valid host") from None
    if not _HOST_RE.match(host):
        raise FetchRefused(f"{host} is not a valid host name")
    return host, False


def _url_refusal(url: httpx.URL, rules: FetchRules) -> str | None:
    if url.scheme not in _DEFAULT_PORTS:
        return f"only http and https URLs can be fetched, not {url.scheme or 'this'!r}"
    try:
        host, is_ip = _host(url)
    except FetchRefused as refused:
        return str(refused)
    port = url.port or _DEFAULT_PORTS[url.scheme]
    if not 0 < port < 65536:
        return f"{port} is not a valid port"
    for text in rules.deny_domains:
        if _rule(text).matches(host, port, is_ip):
            return f"{host} is a denied domain ({text})"
    if rules.allow_domains and not any(
        _rule(text).matches(host, port, is_ip) for text in rules.allow_domains
    ):
        return f"{host} is not among the allowed domains"
    return None


def address_refusal(addresses: list[str]) -> str | None:
    """Why a host that resolves to ``addresses`` is never fetched, whatever the rules say.

    Link-local addresses (169.254.0.0/16, fe80::/10) are where clouds serve instance
    metadata and credentials; a page from there would go into the model's prompt and
    possibly the report. The unspecified address reaches this machine. Other private
    ranges stay the agent's choice (``denyDomains``): a cluster may research its own.
    """
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_link_local or ip.is_unspecified:
            return f"{ip} is a link-local or unspecified address (instance metadata): never fetched"
    return None


async def _resolved_refusal(url: httpx.URL) -> str | None:
    """:func:`address_refusal` for the addresses ``url``'s host resolves to now.

    httpx resolves again when it connects, so a name that changes its answer in
    between (DNS rebinding) is not caught here; the deny list is the other guard.
    """
    host, is_ip = _host(url)
    if is_ip:
        return address_refusal([host])
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, url.port or 80)
    except OSError:
        return None  # the connection attempt fails on its own, as a retryable error
    return address_refusal([str(info[4][0]) for info in infos])


def domain_refusal(url: str, rules: FetchRules) -> str | None:
    """Why ``url`` may not be fetched under ``rules`` (scheme, host, domain lists), or None.

    The host is the one httpx would dial (``http://a.com@b.com/`` dials ``b.com``),
    lower-cased, without a trailing dot, IDNA-encoded; numeric forms of an IPv4
    address (``127.1``) are judged as the address.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        return f"not a valid URL ({exc})"
    return _url_refusal(parsed, rules)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def content_type_refusal(content_type: str) -> str | None:
    """Why a response of this Content-Type is not read (it is not text), or None."""
    media = _media_type(content_type)
    if not media:
        return "the page has no Content-Type"
    if (
        media.startswith("text/")
        or media in _TEXT_TYPES
        or media.endswith(("+xml", "+json"))  # rss+xml, atom+xml, ld+json ...
    ):
        return None
    return f"the page is {media}, not text"


def _charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
            try:
                return codecs.lookup(charset).name
            except LookupError:
                break
    return "utf-8"


#: Elements whose text is not page text.
_SKIPPED: Final = frozenset({"script", "style", "noscript", "template", "svg"})
#: Elements that start a line of their own.
_BLOCKS: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl",
        "dt", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "td",
        "th", "title", "tr", "ul",
    }
)  # fmt: skip


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skipping.append(tag)
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._skipping:
            while self._skipping and self._skipping.pop() != tag:
                pass
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            # A line break in the source is a space: only elements start lines.
            self.parts.append(_WHITESPACE_RE.sub(" ", data))


def _lines(text: str) -> str:
    return "\n".join(line for line in (" ".join(raw.split()) for raw in text.splitlines()) if line)


def _html_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return _lines("".join(parser.parts))


def cap(text: str, limit_chars: int = MAX_RESULT_CHARS) -> str:
    """``text`` if it fits in ``limit_chars``, else its head (cut at a space) and "[truncated]"."""
    if len(text) <= limit_chars:
        return text
    room = limit_chars - len(TRUNCATED) - 1
    if room <= 0:
        return text[: max(limit_chars, 0)]
    head = text[:room]
    space = max(head.rfind(" "), head.rfind("\n"))
    if space > room * 0.8:
        head = head[:space]
    return f"{head.rstrip()}\n{TRUNCATED}"


def page_text(body: bytes, content_type: str, limit_chars: int = MAX_RESULT_CHARS) -> str:
    """A page as the model reads it: decoded, HTML made into lines, whitespace collapsed, capped.

    The charset is the Content-Type's (UTF-8 when absent or unknown); bytes that
    do not decode become U+FFFD rather than failing the page.
    """
    text = body.decode(_charset(content_type), errors="replace")
    html = _media_type(content_type) in _HTML_TYPES
    return cap(_html_text(text) if html else _lines(text), limit_chars)


def _status_refusal(response: httpx.Response) -> str | None:
    """Raise for a status worth retrying (429, 5xx); say why any other non-2xx is refused."""
    status = response.status_code
    if status == 429 or status >= 500:
        response.raise_for_status()
    if 200 <= status < 300:
        return None
    return f"the server answered {status} {response.reason_phrase}".rstrip()


async def _body(response: httpx.Response, max_bytes: int) -> bytes:
    too_large = f"the page is larger than {max_bytes} bytes"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(too_large)
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise FetchRefused(too_large)  # leaving the stream closes the connection
        chunks.append(chunk)
    return b"".join(chunks)


async def _fetch(client: httpx.AsyncClient, url: str, rules: FetchRules) -> tuple[str, str]:
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"not a valid URL ({exc})") from None
    for hop in range(MAX_REDIRECTS + 1):
        refusal = _url_refusal(current, rules) or await _resolved_refusal(current)
        if refusal is not None:
            raise FetchRefused(f"redirected to {current}: {refusal}" if hop else refusal)
        async with client.stream(
            "GET",
            current,
            headers=_HEADERS,
            follow_redirects=False,
            timeout=rules.timeout_seconds,
        ) as response:
            if response.status_code in _REDIRECT_STATUSES:
                location = response.headers.get("location", "").strip()
                if not location:
                    raise FetchRefused(
                        f"the server answered {response.status_code} with no Location"
                    )
                try:
                    current = current.join(location)
                except httpx.InvalidURL as exc:
                    raise FetchRefused(f"redirected to an invalid URL ({exc})") from None
                continue
            refusal = _status_refusal(response) or content_type_refusal(
                response.headers.get("content-type", "")
            )
            if refusal is not None:
                raise FetchRefused(refusal)
            body = await _body(response, rules.max_bytes)
            return str(response.url), page_text(body, response.headers.get("content-type", ""))
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


async def fetch_text(client: httpx.AsyncClient, url: str, rules: FetchRules) -> tuple[str, str]:
    """(final URL after redirects, the page as text for the model, at most MAX_RESULT_CHARS).

    Raises :class:`FetchRefused` for a page the rules keep from the model, and
    lets retryable failures through: :class:`FetchTimeout` when the whole fetch
    outlasts ``rules.timeout_seconds``, httpx transport errors, and
    ``httpx.HTTPStatusError`` for 429 and 5xx (its ``retry-after`` honoured by
    the error mapping). ``client``'s own redirect and timeout settings are
    overridden per request.
    """
    try:
        async with asyncio.timeout(rules.timeout_seconds):
            return await _fetch(client, url, rules)
    except TimeoutError:
        raise FetchTimeout(f"fetching {url} took longer than {rules.timeout_seconds:g} s") from None
