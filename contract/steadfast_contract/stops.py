"""Why the model stopped, and what a run makes of a reply that is cut short or refused.

Every Messages API reply says why the model stopped (``stop_reason``). Two reasons leave
text that is not what was asked for, and a run must not hand either over as a
finished report:

* **cut short** (``max_tokens``, ``model_context_window_exceeded``): the text is whole
  up to where the model ran out of room. It was paid for, so the run keeps it, says so
  at its end and in the status, and names the setting to raise.
* **refused** (``refusal``: the API's streaming classifiers stopped the reply). The
  text is a fragment, billed up to where it stopped, and the API's guidance is that
  the same conversation will be refused again. So a refusal is final for the step: it
  is not retried and not re-asked (each ask would be paid for), and the run ends
  ``Failed`` with the type :data:`~steadfast_contract.errortypes.MODEL_REFUSED`,
  keeping what it had gathered (the findings or the search results) as a report
  marked unfinished.

Pure functions, used by the activities (which see the reply) and the workflow (which
writes the unfinished report); the wording lives here, once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Final

REFUSAL: Final = "refusal"
#: Reasons that leave the text whole up to where the model ran out of room.
CUT_SHORT: Final = frozenset({"max_tokens", "model_context_window_exceeded"})

#: The longest refusal explanation kept (the API's text is short; this bounds history).
MAX_EXPLANATION_CHARS: Final = 500

#: The most a report may take in a payload, as Temporal's JSON converter writes it
#: (ASCII only: a non-ASCII character takes 6 bytes, one outside the BMP 12). Half of
#: the 2 MB a payload may be (Temporal's default limit, and Temporal Cloud's), so the
#: report activity's output and the save's input, which carry it with a few small
#: fields, always fit. A report over it would fail its activity after it was paid for,
#: and the retry would pay again.
MAX_REPORT_BYTES: Final = 1_000_000


def is_refusal(stop_reason: str | None) -> bool:
    return stop_reason == REFUSAL


def is_cut_short(stop_reason: str | None) -> bool:
    return stop_reason in CUT_SHORT


def refusal_reason(category: str | None, explanation: str | None) -> str:
    """What a refusal says, for a message and a report: its category and explanation,
    either of which the API may leave out."""
    said = " ".join((explanation or "").split())[:MAX_EXPLANATION_CHARS]
    kind = f"category {category}" if category else "no category given"
    return f"{kind}: {said}" if said else kind


def refusal_message(step: str, reason: str) -> str:
    """The failure message of a refused step (``step``: "to write the report", "to go on
    at turn 5")."""
    return (
        f"the model declined {step} ({reason}); a refusal is not retried, since the same "
        "request would be refused again and paid for again"
    )


def _why_cut(stop_reason: str, max_tokens: int) -> str:
    if stop_reason == "model_context_window_exceeded":
        return "the model's context window filled up"
    return f"the model reached model.maxTokens ({max_tokens} tokens)"


def cut_note(stop_reason: str, max_tokens: int) -> str:
    """The lines that end a report the model could not finish."""
    why = _why_cut(stop_reason, max_tokens)
    return f"\n\n---\n*This report stops here: {why}. Raise model.maxTokens for a whole report.*\n"


def payload_bytes(text: str) -> int:
    """Bytes ``text`` takes in a payload of Temporal's JSON converter (``ensure_ascii``)."""
    return len(json.dumps(text))


def longest_head(text: str, fits: Callable[[str], bool], at_least: int = 0) -> str:
    """The longest head of ``text`` that ``fits`` (a test that holds for every head
    shorter than one it holds for), and never shorter than ``at_least`` characters."""
    if fits(text):
        return text
    lo, hi = at_least, len(text)  # the head of ``lo`` characters is kept; ``hi`` + 1 fails
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(text[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def head_within(text: str, limit: int) -> str:
    """The longest head of ``text`` that takes at most ``limit`` payload bytes (at least
    its first character, which takes at most 14)."""
    return longest_head(text, lambda head: payload_bytes(head) <= limit, at_least=1)


def _size_note(chars: int, kept: int, limit: int) -> str:
    return (
        f"\n\n---\n*This report stops here: the whole reply ({chars} characters) is more "
        f"than a run can carry in one Temporal payload ({limit} bytes), so its first {kept} "
        "characters are kept. It was paid for once and is not asked for again.*\n"
    )


def fit_report(markdown: str, limit: int = MAX_REPORT_BYTES) -> str:
    """``markdown`` if it fits in ``limit`` payload bytes; else its longest head that
    fits with a note saying so. A reply is paid for when it arrives: one too large to
    hand over would fail the activity and be paid for again on every retry."""
    if payload_bytes(markdown) <= limit:
        return markdown

    def fits_with_note(head: str) -> bool:
        return payload_bytes(head + _size_note(len(markdown), len(head), limit)) <= limit

    head = longest_head(markdown, fits_with_note)
    return head + _size_note(len(markdown), len(head), limit)


def cut_call(problem: str, max_tokens: int) -> str:
    """The answer to a tool call the reply was cut off inside (its input incomplete)."""
    return (
        f"{problem} (your reply was cut off at model.maxTokens, {max_tokens} tokens, before "
        "this call's input was complete: it was not run; make fewer or shorter calls)"
    )


def cut_queries_message(max_tokens: int) -> str:
    """The failure of a query list cut short (a re-ask would be cut again)."""
    return (
        f"the query list was cut off at model.maxTokens ({max_tokens} tokens): "
        "raise model.maxTokens"
    )


def cut_message(stop_reason: str, max_tokens: int) -> str:
    """The run's status message when its report was cut short."""
    why = _why_cut(stop_reason, max_tokens)
    return f"report saved, cut short: {why}; raise model.maxTokens for a whole report"


def unfinished_report(
    topic: str, why: str, gathered: Iterable[tuple[str, str]], heading: str
) -> str:
    """The report a run stopped before writing one saves (refused, or out of budget):
    what it gathered, marked unfinished.

    ``gathered`` holds (text, url) pairs (a finding's claim and source, or a search
    result's title and address), listed under ``heading``; "" when there are none,
    since then there is nothing to keep.
    """
    items = [(text.strip(), url.strip()) for text, url in gathered if text.strip() or url.strip()]
    if not items:
        return ""
    lines = [
        f"# {topic}",
        "",
        f"*Unfinished: {why}. What the run gathered before that follows; the model wrote "
        "no report.*",
        "",
        f"## {heading}",
        "",
    ]
    lines += [
        f"{i}. {text} ({url})" if url else f"{i}. {text}" for i, (text, url) in enumerate(items, 1)
    ]
    return "\n".join(lines) + "\n"
