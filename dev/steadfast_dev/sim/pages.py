"""The web pages an agent's ``fetch_page`` reads: deterministic bodies about their address.

The ``deep`` strategy fetches the pages its searches found. Tests cannot let a
worker dial the internet, and they need pages that misbehave on demand -- too
large, not text, slow, undecodable -- so the simulator serves the pages itself,
at ``/pages/<path>``, and its search results can point there (the ``search``
plan's ``page_links``). This module builds the bodies; the HTTP side is
:mod:`steadfast_dev.sim.pages_api`.

A page is HTML about the words of its path (``/pages/news.example.org/tidal-energy-
outlook/2`` is about "tidal energy outlook"), a few kilobytes of paragraphs whose
sentences state findings, the same for the same path. Asked for a size, the body is
exactly that many bytes (paragraphs repeat, then the text is cut); asked for a type
that is not text, the body is binary (``image/png`` starts with the PNG signature).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

HTML: Final = "text/html; charset=utf-8"
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_WORD_RE: Final = re.compile(r"[a-z]+")
_TEXT_TYPES: Final = ("text/", "application/json", "application/xhtml+xml", "application/xml")

_SENTENCES: Final = (
    "Adoption of {t} accelerated over the last year, led by early enterprise pilots.",
    "Spending on {t} is concentrated among a small number of large buyers.",
    "Open standards are emerging around {t}, which lowers switching costs for buyers.",
    "Analysts disagree on how quickly {t} will reach mainstream users in the next years.",
    "Regulatory attention to {t} is rising in several jurisdictions at the same time.",
    "Talent shortages remain the most cited constraint on {t} among surveyed teams.",
    "Costs for {t} fell markedly as the tooling matured and vendors competed on price.",
    "Incumbents are responding to {t} with partnerships rather than building their own.",
    "Independent benchmarks of {t} show wide variation between vendors and workloads.",
    "Early production deployments of {t} report savings that pilots did not predict.",
)


def is_text(content_type: str) -> bool:
    """Whether a Content-Type announces text a fetcher may read."""
    return content_type.lower().startswith(_TEXT_TYPES)


def page_url(base_url: str, url: str) -> str:
    """Where the simulator serves the page standing for ``url`` (same host and path)."""
    parts = urlsplit(url)
    return f"{base_url.rstrip('/')}/pages/{parts.netloc}{parts.path}"


def subject(path: str) -> str:
    """What a page is about: the words of its path after the host."""
    segments = [s for s in path.strip("/").split("/") if s]
    if len(segments) > 1 and "." in segments[0]:
        segments = segments[1:]
    words = [w for s in segments for w in _WORD_RE.findall(s.lower())]
    return " ".join(words[:12]) or "this subject"


def _pick(path: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{path}\x00{index}".encode()).digest()[:4], "big")


def paragraph(path: str, index: int) -> str:
    """The ``index``-th paragraph of the page at ``path``: three findings."""
    about = subject(path)
    picks = (_pick(path, index * 3 + k) % len(_SENTENCES) for k in range(3))
    return "<p>" + " ".join(_SENTENCES[p].format(t=about) for p in picks) + "</p>\n"


def page_html(path: str, paragraphs: int = 8) -> str:
    """The page at ``path`` at its natural size."""
    about = subject(path)
    head = (
        f"<!doctype html>\n<html><head><title>{about.title()}</title></head>\n<body>\n"
        f"<h1>{about.title()}</h1>\n"
    )
    body = "".join(paragraph(path, i) for i in range(paragraphs))
    return f"{head}{body}</body></html>\n"


@dataclass(frozen=True)
class Body:
    """A page body of a known length, produced in chunks (a 50 MB one never sits whole)."""

    length: int
    chunks: Iterator[bytes]


def page_body(
    path: str,
    *,
    size: int = 0,
    content_type: str = HTML,
    undecodable: bool = False,
    chunk_bytes: int = 65536,
) -> Body:
    """The body of the page at ``path``: ``size`` bytes exactly when given.

    ``undecodable`` puts bytes that are not UTF-8 in the middle of a text body
    (a page that lies about its charset).
    """
    if not is_text(content_type):
        length = size or 4096
        return Body(length, _binary(path, length, content_type, chunk_bytes))
    natural = page_html(path).encode()
    length = size or len(natural)
    return Body(length, _text(path, natural, length, undecodable, chunk_bytes))


def _text(
    path: str, natural: bytes, length: int, undecodable: bool, chunk_bytes: int
) -> Iterator[bytes]:
    def pieces() -> Iterator[bytes]:
        yield natural
        # Past its natural size a page repeats its paragraphs.
        repeat = "".join(paragraph(path, i) for i in range(16)).encode()
        while True:
            yield repeat

    middle = length // 2
    sent = 0
    buffer = b""
    for piece in pieces():
        buffer += piece
        while len(buffer) >= chunk_bytes or sent + len(buffer) >= length:
            chunk = buffer[: min(chunk_bytes, length - sent)]
            buffer = buffer[len(chunk) :]
            if undecodable and sent <= middle < sent + len(chunk):
                at = middle - sent
                chunk = chunk[:at] + b"\xff\xfe\xfd"[: len(chunk) - at] + chunk[at + 3 :]
            sent += len(chunk)
            if chunk:
                yield chunk
            if sent >= length:
                return


def _binary(path: str, length: int, content_type: str, chunk_bytes: int) -> Iterator[bytes]:
    seed = hashlib.sha256(f"{content_type}\x00{path}".encode()).digest()
    block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(2048))
    sent = 0
    while sent < length:
        take = min(chunk_bytes, length - sent)
        offset = sent % len(block)
        chunk = (block * (take // len(block) + 2))[offset : offset + take]
        if sent == 0 and "png" in content_type.lower():
            chunk = (PNG_SIGNATURE + chunk[len(PNG_SIGNATURE) :])[:take]
        yield chunk
        sent += take
