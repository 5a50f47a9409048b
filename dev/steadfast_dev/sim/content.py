"""What the simulated model and search engine say: deterministic text from the request.

The research workflow needs two kinds of model output, and the worker relies on
this contract when it talks to the simulator (a real model follows the same
instructions, so the worker's prompts need no simulator-specific branches):

* **Search queries.** When the prompt (system or messages, case-insensitive)
  contains the marker ``JSON array`` -- e.g. "Return a JSON array of 4 search
  queries" -- the answer is a bare JSON array of query strings, no prose and no
  code fence. Its length is the number written before ``queries`` ("4 search
  queries", "5 queries"), else 3, capped at 20. The topic is what follows the
  last ``Topic:`` (case-insensitive, to the end of its line; "Research topic: X"
  works too), else the first line of the last user message.
* **Reports.** Any other prompt gets a markdown report on the topic, a few hundred
  words long, that cites the ``http(s)://`` URLs found in the prompt (the search
  results the worker passes in).

The same request always yields the same text. Token counts are estimated as one
token per four ASCII characters, the rule of thumb for English text, and a token for
each other character (two outside the BMP), roughly what the real tokenizer makes of
Chinese, Japanese or Russian text (:func:`estimate_tokens`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Final

from steadfast_contract import budget, stops

#: The marker that asks for a JSON array of search queries (case-insensitive).
JSON_MARKER: Final = "json array"
DEFAULT_QUERY_COUNT: Final = 3
MAX_QUERY_COUNT: Final = 20

_COUNT_RE: Final = re.compile(r"(\d+)\s+(?:[a-z-]+\s+){0,2}queries", re.IGNORECASE)
_TOPIC_RE: Final = re.compile(r"\btopic\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_URL_RE: Final = re.compile(r"https?://[^\s)\]\"'<>,]+")

_QUERY_ANGLES: Final = (
    "{t}",
    "{t} latest developments",
    "{t} market size and growth forecast",
    "{t} key companies and competitors",
    "{t} risks and challenges",
    "{t} expert analysis",
    "{t} statistics 2026",
    "{t} regulation and policy",
    "{t} case studies",
    "{t} open source projects",
    "{t} investment and funding",
    "{t} customer adoption survey",
)
_DOMAINS: Final = (
    "example.com",
    "news.example.org",
    "research.example.net",
    "blog.example.io",
    "data.example.edu",
    "analysis.example.co",
)
_FINDINGS: Final = (
    "Adoption of {t} accelerated over the last year, led by early enterprise pilots.",
    "Spending on {t} is concentrated among a small number of large buyers.",
    "Open standards are emerging around {t}, lowering switching costs.",
    "Analysts disagree on how quickly {t} will reach mainstream users.",
    "Regulatory attention to {t} is rising in several jurisdictions.",
    "Talent shortages remain the most cited constraint on {t}.",
    "Costs for {t} fell markedly as tooling matured.",
    "Incumbents are responding to {t} with partnerships rather than builds.",
)
_PARAGRAPHS: Final = (
    "The evidence gathered points to a market for {t} that is growing but uneven. "
    "Most sources describe rapid experimentation, while fewer report production use "
    "at scale. Where deployments succeed, they pair clear ownership with measurable "
    "goals and a willingness to retire what does not work.",
    "Competitive dynamics around {t} favour teams that can integrate with existing "
    "systems. Buyers report that reliability, cost predictability and auditability "
    "weigh more heavily than raw capability once pilots move toward production.",
    "Several sources caution that headline figures for {t} mix announced intentions "
    "with realised spending. Readers should treat forecasts as directional and watch "
    "for consolidation among smaller vendors over the next few quarters.",
    "Looking ahead, the most credible signals for {t} are renewal rates, the share of "
    "workloads moved from pilot to production, and the depth of ecosystem support.",
)


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` (at least 1 if non-empty): four ASCII characters a token, and
    a token for each other character (two outside the BMP), as the budget estimates
    them (:func:`steadfast_contract.budget.token_chars`)."""
    return -(-budget.token_chars(text) // budget.CHARS_PER_TOKEN)


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


def block_text(content: object) -> str:
    """The text of a message's ``content``: a string, or the text of its blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") == "tool_result":
            parts.append(block_text(block.get("content")))
    return "\n".join(p for p in parts if p)


def prompt_text(body: Mapping[str, object]) -> str:
    """System prompt and every message's text, in order, as one string."""
    parts = [block_text(body.get("system"))]
    messages = body.get("messages")
    if isinstance(messages, list):
        parts.extend(block_text(m.get("content")) for m in messages if isinstance(m, Mapping))
    return "\n\n".join(p for p in parts if p)


def last_user_text(body: Mapping[str, object]) -> str:
    """Text of the last user message, or an empty string."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return block_text(message.get("content"))
    return ""


def wants_query_json(text: str) -> bool:
    """Whether the prompt asks for a JSON array of search queries."""
    return JSON_MARKER in text.lower()


def query_count(text: str) -> int:
    """How many queries the prompt asks for (the number before ``queries``)."""
    match = _COUNT_RE.search(text)
    count = int(match.group(1)) if match else DEFAULT_QUERY_COUNT
    return max(1, min(count, MAX_QUERY_COUNT))


def topic_of(text: str, fallback: str = "") -> str:
    """The research topic: after the last ``Topic:``, else the first line of ``fallback``."""
    found = _TOPIC_RE.findall(text)
    if found:
        return str(found[-1]).strip("\"'")
    first_line = next((line.strip() for line in fallback.splitlines() if line.strip()), "")
    return (first_line or "the requested topic")[:80]


def search_queries(topic: str, count: int) -> list[str]:
    """``count`` distinct search queries about ``topic``, deterministic."""
    start = _digest("queries", topic) % len(_QUERY_ANGLES)
    angles = [_QUERY_ANGLES[(start + i) % len(_QUERY_ANGLES)] for i in range(len(_QUERY_ANGLES))]
    queries = [angle.format(t=topic) for angle in angles[:count]]
    # Past the template list, number the extras so the array stays duplicate-free.
    queries += [f"{topic} perspective {i + 1}" for i in range(count - len(queries))]
    return queries


def queries_json(text: str, fallback: str) -> str:
    """The answer to a query-generation prompt: a JSON array of strings."""
    return json.dumps(search_queries(topic_of(text, fallback), query_count(text)))


def bad_json(text: str, fallback: str) -> str:
    """An answer that looks like the query array but does not parse (``bad_json`` fault)."""
    good = queries_json(text, fallback)
    return "Sure! Here are the queries you asked for:\n" + good[: max(2, len(good) // 2)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "page"


def search_results(query: str, count: int) -> list[dict[str, str]]:
    """``count`` search results for ``query``: title, url and snippet, deterministic."""
    results = []
    for i in range(max(0, count)):
        pick = _digest("result", query, str(i))
        domain = _DOMAINS[pick % len(_DOMAINS)]
        finding = _FINDINGS[(pick >> 8) % len(_FINDINGS)].format(t=query)
        results.append(
            {
                "title": f"{query.title()} - {['Overview', 'Report', 'Analysis', 'Guide'][i % 4]}",
                "url": f"https://{domain}/{_slug(query)}/{i + 1}",
                "snippet": finding,
            }
        )
    return results


def web_search_result_blocks(query: str, count: int) -> list[dict[str, object]]:
    """Search results in the shape of the Messages API's ``web_search_result`` blocks."""
    return [
        {
            "type": "web_search_result",
            "title": r["title"],
            "url": r["url"],
            "encrypted_content": base64.b64encode(r["snippet"].encode()).decode(),
            "page_age": f"{_digest('age', r['url']) % 30 + 1} days ago",
        }
        for r in search_results(query, count)
    ]


def report_markdown(text: str, fallback: str, max_sources: int = 20, says: str = "") -> str:
    """A markdown research report on the prompt's topic, citing the prompt's URLs;
    ``says`` is written as a paragraph of its own after the summary."""
    topic = topic_of(text, fallback)
    seed = _digest("report", text)
    urls = list(dict.fromkeys(_URL_RE.findall(text)))
    findings = [
        _FINDINGS[(seed + i * 3) % len(_FINDINGS)].format(t=topic) for i in range(3 + seed % 3)
    ]
    lines = [f"# {topic}: research report", "", "## Summary", ""]
    lines.append(_PARAGRAPHS[seed % len(_PARAGRAPHS)].format(t=topic))
    if says:
        lines += ["", says]
    lines += ["", "## Key findings", ""]
    for i, finding in enumerate(findings):
        cite = f" [{i % len(urls) + 1}]" if urls else ""
        lines.append(f"- {finding}{cite}")
    lines += ["", "## Analysis", ""]
    for i in range(2):
        lines += [_PARAGRAPHS[(seed + i + 1) % len(_PARAGRAPHS)].format(t=topic), ""]
    lines += ["## Outlook", "", _PARAGRAPHS[(seed + 3) % len(_PARAGRAPHS)].format(t=topic)]
    if urls:
        lines += ["", "## Sources", ""]
        lines += [f"{i + 1}. {url}" for i, url in enumerate(urls[:max_sources])]
    return "\n".join(lines) + "\n"


def model_answer(
    body: Mapping[str, object], *, broken_json: bool = False, context: str = "", says: str = ""
) -> str:
    """The full text the simulated model writes for ``body`` (before ``max_tokens``).

    ``context`` is text the model "saw" besides the prompt: its own web search results;
    ``says`` goes into a report (:func:`report_markdown`), never into query JSON.
    """
    text = "\n\n".join(p for p in (prompt_text(body), context) if p)
    user = last_user_text(body)
    if wants_query_json(text):
        return bad_json(text, user) if broken_json else queries_json(text, user)
    return report_markdown(text, user, says=says)


def truncate(
    text: str, max_tokens: int, stop_sequences: Sequence[str] = ()
) -> tuple[str, str, str | None]:
    """Cut ``text`` at a stop sequence or at ``max_tokens``.

    Returns (text, stop_reason, the stop sequence that matched or None).
    """
    hits = sorted((text.find(s), s) for s in stop_sequences if s and s in text)
    if hits and estimate_tokens(text[: hits[0][0]]) <= max_tokens:
        return text[: hits[0][0]], "stop_sequence", hits[0][1]
    if estimate_tokens(text) > max_tokens:
        return within_tokens(text, max_tokens), "max_tokens", None
    return text, "end_turn", None


def within_tokens(text: str, max_tokens: int) -> str:
    """The longest head of ``text`` that :func:`estimate_tokens` counts at most
    ``max_tokens`` tokens."""
    if text.isascii():
        return text[: max_tokens * budget.CHARS_PER_TOKEN]
    return stops.longest_head(text, lambda head: estimate_tokens(head) <= max_tokens)
