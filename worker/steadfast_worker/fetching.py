"""Reading one web page for the deep agent's ``fetch_page`` tool, within its rules.

The model chooses the addresses, so every address is untrusted: it may name a
host the agent's rules deny, redirect there, send 50 MB, send an image, or
trickle its body forever. This module is the one place those limits hold
(``spec.research.tools.fetchPage``, :class:`~steadfast_contract.models.FetchRules`):

- only ``http``/``https`` with a host; the domain rules are checked on the host
  httpx will dial, before dialing and again on every redirect hop (followed
  here, at most :data:`MAX_REDIRECTS`), deny first;
- only public addresses are dialed, unless ``allowPrivateHosts`` names the host
  (a page must not lead the model to the cluster's own services), and a
  link-local one (instance metadata) never: the name is resolved once per hop,
  checked, and the connection made to the address checked, so a name cannot
  answer one address to the check and another to the connection;
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

The page becomes text for the model in :mod:`steadfast_worker.pagetext`. The
decisions are pure functions, unit-tested without a server; :func:`fetch_text` is
the I/O around them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import httpx

from steadfast_contract.models import FetchRules
from steadfast_worker.pagetext import media_type, page_text

#: Redirect hops followed before the page is refused.
MAX_REDIRECTS: Final = 5

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TEXT_TYPES: Final = frozenset(
    {"application/json", "application/xml", "application/xhtml+xml", "application/javascript"}
)
_HOST_RE: Final = re.compile(r"^[a-z0-9_]([-a-z0-9_.]*[a-z0-9_])?$")
#: Hosts a resolver would read as an IPv4 address (``127.1``, ``0x7f.1``, ``2130706433``).
_NUMERIC_HOST_RE: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$")
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
    if rule.startswith("["):  # an IPv6 address, as a URL writes it: [fd00::1]:8080
        inside, _, after = rule[1:].partition("]")
        tail = after.removeprefix(":")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            host = inside  # matches no URL's host
        return _Rule(host, False, int(tail) if tail.isdigit() else None)
    head, colon, tail = rule.rpartition(":")
    if colon and tail.isdigit():
        rule, port = head, int(tail)
    subdomains_only = rule.startswith("*.")
    return _Rule(rule.removeprefix("*.").rstrip("."), subdomains_only, port)


def _first_match(rules: list[str], host: str, port: int, is_ip: bool) -> str | None:
    """The first of ``rules`` (domain-list entries) that ``host:port`` matches, or None."""
    return next((text for text in rules if _rule(text).matches(host, port, is_ip)), None)


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
    denied = _first_match(rules.deny_domains, host, port, is_ip)
    if denied is not None:
        return f"{host} is a denied domain ({denied})"
    if rules.allow_domains and _first_match(rules.allow_domains, host, port, is_ip) is None:
        return f"{host} is not among the allowed domains"
    return None


_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through: mapped, 6to4, Teredo or NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(addresses: list[str], private_allowed: bool = False) -> str | None:
    """Why a host that resolves to ``addresses`` is not fetched, or None.

    * Link-local addresses (169.254.0.0/16, fe80::/10) are where clouds serve
      instance metadata and credentials: never fetched, whatever the rules say. Nor
      is the unspecified address (it reaches this machine) or a multicast one.
    * Any other address that is not public (loopback, the private ranges, shared
      100.64.0.0/10, unique-local fc00::/7, the reserved and documentation ranges)
      is where a worker pod reaches its cluster's services: Temporal's HTTP API,
      Prometheus, the dashboards, the simulator. A page the model read may name
      one, so these are fetched only when ``private_allowed`` (the host is in
      ``allowPrivateHosts``).

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is
    judged by the IPv4 address too. Every address of the name counts, not only the
    one dialed.
    """
    judged: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return f"{text!r} is not an address"
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if inner is None:
            judged.append(ip)
        elif isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            judged.append(inner)  # a mapped address is the IPv4 one
        else:  # 6to4, Teredo, NAT64: the IPv6 address and the IPv4 one it reaches
            judged += [ip, inner]
    for ip in judged:
        if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            return (
                f"{ip} is a link-local (instance metadata), unspecified or multicast "
                "address: never fetched"
            )
    for ip in judged:
        if not ip.is_global and not private_allowed:
            return (
                f"{ip} is not a public address; a host inside the cluster is fetched "
                "only if research.tools.fetchPage.allowPrivateHosts names it"
            )
    return None


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the addresses to dial, as the system's resolver would answer."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class _Dial:
    """Where one hop connects: the checked address, and the name the server is told."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str]


async def _pinned(url: httpx.URL, rules: FetchRules, resolve: Resolver) -> _Dial:
    """Resolve ``url``'s host once, refuse what :func:`address_refusal` refuses, and dial
    the address that was checked, never a second answer of the resolver.

    Resolving again at connect time would let a name answer a harmless address to
    the check and a link-local one to the connection (DNS rebinding). The server
    still sees the name: in the Host header, and in TLS (SNI, and the certificate
    is verified against it).
    """
    host, is_ip = _host(url)
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
    private_allowed = _first_match(rules.allow_private_hosts, host, port, is_ip) is not None
    if is_ip:
        refusal = address_refusal([host], private_allowed)
        if refusal is not None:
            raise FetchRefused(refusal)
        return _Dial(url, {}, {})
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise httpx.ConnectError(f"could not resolve {host}: {exc}") from None
    if not addresses:
        raise httpx.ConnectError(f"could not resolve {host}")
    refusal = address_refusal(addresses, private_allowed)
    if refusal is not None:
        raise FetchRefused(f"{host} resolves to an address not fetched: {refusal}")
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return _Dial(url.copy_with(host=addresses[0]), {"Host": url.netloc.decode("ascii")}, extensions)


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


def content_type_refusal(content_type: str) -> str | None:
    """Why a response of this Content-Type is not read (it is not text), or None."""
    media = media_type(content_type)
    if not media:
        return "the page has no Content-Type"
    if (
        media.startswith("text/")
        or media in _TEXT_TYPES
        or media.endswith(("+xml", "+json"))  # rss+xml, atom+xml, ld+json ...
    ):
        return None
    return f"the page is {media}, not text"


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


async def _fetch(
    client: httpx.AsyncClient, url: str, rules: FetchRules, resolve: Resolver
) -> tuple[str, str]:
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"not a valid URL ({exc})") from None
    for hop in range(MAX_REDIRECTS + 1):
        try:
            refusal = _url_refusal(current, rules)
            if refusal is not None:
                raise FetchRefused(refusal)
            dial = await _pinned(current, rules, resolve)
        except FetchRefused as refused:
            message = f"redirected to {current}: {refused}" if hop else str(refused)
            raise FetchRefused(message) from None
        async with client.stream(
            "GET",
            dial.url,
            headers={**_HEADERS, **dial.headers},
            extensions=dial.extensions,
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
            return str(current), page_text(body, response.headers.get("content-type", ""))
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


async def fetch_text(
    client: httpx.AsyncClient,
    url: str,
    rules: FetchRules,
    resolve: Resolver = system_resolver,
) -> tuple[str, str]:
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
            return await _fetch(client, url, rules, resolve)
    except TimeoutError:
        raise FetchTimeout(f"fetching {url} took longer than {rules.timeout_seconds:g} s") from None
