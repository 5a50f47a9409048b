"""``fetch_page``: read one web page for the model, within the agent's rules.

(Interim version; the full rules and their tests are being written separately.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from steadfast_contract.models import FetchRules

MAX_RESULT_CHARS = 12_000


class FetchRefused(Exception):  # noqa: N818  (a refusal, not an error of ours)
    """The page is refused to the model: its reason becomes an is_error tool result."""


def _matches(host: str, port: int, rule: str) -> bool:
    name, _, want = rule.partition(":")
    if want and int(want) != port:
        return False
    if name.startswith("*."):
        return host.endswith(name[1:])
    return host == name or host.endswith("." + name)


def domain_refusal(url: str, rules: FetchRules) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http(s) URLs with a host can be fetched"
    host = parts.hostname.lower().rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if any(_matches(host, port, r) for r in rules.deny_domains):
        return f"{host} is on the deny list"
    if rules.allow_domains and not any(_matches(host, port, r) for r in rules.allow_domains):
        return f"{host} is not on the allow list"
    return None


def content_type_refusal(content_type: str) -> str | None:
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("text/") or kind in ("application/json", "application/xhtml+xml"):
        return None
    return f"not a text page ({kind or 'no content type'})"


async def fetch_text(client: httpx.AsyncClient, url: str, rules: FetchRules) -> tuple[str, str]:
    refusal = domain_refusal(url, rules)
    if refusal:
        raise FetchRefused(refusal)
    async with client.stream("GET", url, timeout=rules.timeout_seconds) as response:
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise FetchRefused(f"HTTP {response.status_code}")
        response.raise_for_status()
        refusal = content_type_refusal(response.headers.get("content-type", ""))
        if refusal:
            raise FetchRefused(refusal)
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > rules.max_bytes:
                raise FetchRefused(f"larger than {rules.max_bytes} bytes")
    return str(response.url), body.decode("utf-8", "replace")[:MAX_RESULT_CHARS]
