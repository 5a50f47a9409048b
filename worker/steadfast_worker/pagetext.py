"""A fetched page as text for the model: decoded, HTML reduced to its lines, capped.

A page's text is resent in every later prompt of a deep run, so it is cut to
:data:`MAX_RESULT_CHARS` of the budget's characters (about 3,000 tokens in any
script); HTML keeps one line per paragraph, heading or list item and drops scripts
and styles. Pure functions, split from :mod:`.fetching` (which decides what may be
read at all) so each stays small.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from typing import Final

from steadfast_contract.budget import CHARS_PER_TOKEN, token_chars

#: The longest page text handed to the model (about 3,000 tokens), "[truncated]" included.
MAX_RESULT_CHARS: Final = 12_000
TRUNCATED: Final = "[truncated]"

_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_WHITESPACE_RE: Final = re.compile(r"\s+")


def media_type(content_type: str) -> str:
    """``text/html`` of ``text/HTML; charset=utf-8``."""
    return content_type.split(";", 1)[0].strip().lower()


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
    """``text`` if it fits in ``limit_chars``, else its head (cut at a space) and "[truncated]".

    Measured in the budget's characters (:func:`steadfast_contract.budget.token_chars`:
    an ASCII character is one, any other a token's worth), so the limit bounds tokens in
    every script: a deep run plans its context window on that bound
    (:mod:`steadfast_contract.context`), and 16,000 characters of Chinese are about
    16,000 tokens, four times what 16,000 of English are.
    """
    if token_chars(text) <= limit_chars:
        return text
    room = limit_chars - len(TRUNCATED) - 1
    if room <= 0:
        return head_within(text, max(limit_chars, 0))
    head = head_within(text, room)
    space = max(head.rfind(" "), head.rfind("\n"))
    if space > len(head) * 0.8:
        head = head[:space]
    return f"{head.rstrip()}\n{TRUNCATED}"


def head_within(text: str, limit_chars: int) -> str:
    """The longest head of ``text`` that counts at most ``limit_chars`` of the budget's
    characters (:func:`steadfast_contract.budget.token_chars`)."""
    if text.isascii():
        return text[:limit_chars]
    used = 0
    for i, ch in enumerate(text):
        used += 1 if ch.isascii() else CHARS_PER_TOKEN * (2 if ord(ch) > 0xFFFF else 1)
        if used > limit_chars:
            return text[:i]
    return text


def page_text(body: bytes, content_type: str, limit_chars: int = MAX_RESULT_CHARS) -> str:
    """A page as the model reads it: decoded, HTML made into lines, whitespace collapsed, capped.

    The charset is the Content-Type's (UTF-8 when absent or unknown); bytes that
    do not decode become U+FFFD rather than failing the page.
    """
    text = body.decode(_charset(content_type), errors="replace")
    html = media_type(content_type) in _HTML_TYPES
    return cap(_html_text(text) if html else _lines(text), limit_chars)
