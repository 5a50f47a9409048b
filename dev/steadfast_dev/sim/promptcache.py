"""The simulated prompt cache: which prefixes a Messages request reads and writes.

A request is cut into blocks in the order the real API caches them -- tools,
system, then each message's content blocks -- and every block boundary is a
prefix with a digest and a running token count. The rules follow the real API's
prompt-caching docs (``platform.claude.com/docs/en/build-with-claude/prompt-caching``):

* each block carrying ``cache_control`` is a breakpoint; its prefix is cached only
  if it reaches the model's minimum cacheable length
  (:func:`steadfast_contract.pricing.min_cacheable_tokens`): shorter ones are
  ignored without an error, so they neither read nor write;
* a breakpoint finds a cached prefix ending at itself or at any of the
  :data:`LOOKBACK_BLOCKS` block boundaries before it, and the request reads the
  longest one found; anything further back is not found;
* the request writes every breakpoint's prefix past what it read; the tokens up to
  the last breakpoint with a one-hour ``ttl`` are written for an hour, the rest up
  to the last breakpoint for five minutes (the API bills the two apart);
* an entry lives for its ``ttl`` (5 minutes, or an hour with ``"ttl": "1h"``)
  from its last write or read; an expired entry misses;
* ``tool_choice`` and the thinking settings belong to every message prefix: a
  change misses the messages' entries and still reads the tools and the system;
* more than four breakpoints, or an hour-long one after one of five minutes, is a 400.

:class:`PromptCache` holds the entries; it takes the time as an argument, so its
expiry is tested without a clock, while the simulator passes the monotonic clock.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

from steadfast_contract.pricing import min_cacheable_tokens
from steadfast_dev.sim import content, tooluse

#: Per-message framing tokens (role markers) the real tokenizer adds.
MESSAGE_OVERHEAD_TOKENS: Final = 3
#: The system prompt the real API adds when a request defines client tools
#: (Claude 4 models, ``tool_choice`` auto or none).
TOOL_SYSTEM_TOKENS: Final = 346
#: How many block boundaries before a breakpoint the API also checks for a hit.
LOOKBACK_BLOCKS: Final = 20
#: The API refuses a request with more ``cache_control`` blocks than this.
MAX_BREAKPOINTS: Final = 4
FIVE_MINUTES_S: Final = 300
ONE_HOUR_S: Final = 3600


@dataclass(frozen=True)
class Prefix:
    """The request up to the end of one block."""

    digest: str
    tokens: int


@dataclass(frozen=True)
class Breakpoint:
    """A prefix marked with ``cache_control``."""

    digest: str
    tokens: int
    ttl_s: int
    index: int = 0
    """The block it ends at (an index into :attr:`InputAccount.prefixes`)."""


@dataclass(frozen=True)
class InputAccount:
    """The input side of a request: its size, its block prefixes and its breakpoints."""

    total_tokens: int
    breakpoints: tuple[Breakpoint, ...]
    prefixes: tuple[Prefix, ...] = ()
    min_tokens: int = 0
    """The model's minimum cacheable length."""


@dataclass(frozen=True)
class CacheUse:
    """Tokens read from and written to the prompt cache by one request."""

    read: int = 0
    write: int = 0
    """Every token written, whatever its ``ttl``."""
    write_1h: int = 0
    """The part of ``write`` written for an hour."""
    touched: tuple[Breakpoint, ...] = ()
    """Breakpoints to (re)store in the cache once the request is served."""
    refreshed: tuple[str, ...] = ()
    """Digests of entries read (their lifetime restarts once the request is served)."""


def _ttl(block: Mapping[str, object]) -> int | None:
    control = block.get("cache_control")
    if not isinstance(control, Mapping):
        return None
    return ONE_HOUR_S if control.get("ttl") == "1h" else FIVE_MINUTES_S


def _bare(block: Mapping[str, object]) -> str:
    # Where the breakpoints sit is not part of the cached content.
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)


def _units(body: Mapping[str, object]) -> list[tuple[str, int, int | None]]:
    """(text, tokens, cache ttl or None) for each block, in cache-prefix order."""
    units: list[tuple[str, int, int | None]] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, Mapping):
            text = _bare(tool)
            units.append((text, content.estimate_tokens(text), _ttl(tool)))
    system = body.get("system")
    if isinstance(system, str):
        units.append((system, content.estimate_tokens(system), None))
    elif isinstance(system, list):
        for block in system:
            if isinstance(block, Mapping):
                text = content.block_text([block])
                units.append((text, content.estimate_tokens(text), _ttl(block)))
    # A change of tool_choice or of the thinking settings invalidates the messages'
    # cache, not the tools' and the system's: it is part of every message prefix.
    choice = body.get("tool_choice") or {"type": "auto"}
    settings = json.dumps([choice, body.get("thinking")], sort_keys=True)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, Mapping):
            continue
        blocks = message.get("content")
        if isinstance(blocks, str):
            blocks = [{"type": "text", "text": blocks}]
        overhead = MESSAGE_OVERHEAD_TOKENS
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, Mapping):
                continue
            text = content.block_text([block]) or _bare(block)
            tag = f"{settings}{message.get('role')}:{text}"
            settings = ""
            units.append((tag, content.estimate_tokens(text) + overhead, _ttl(block)))
            overhead = 0
    return units


def account_input(body: Mapping[str, object], density: float = 1.0) -> InputAccount:
    """Count the request's input tokens and find its block prefixes and breakpoints;
    ``density``: the model's tokens per token of the rule of thumb, for each block
    (``ServicePlan.token_density``)."""
    model = str(body.get("model", ""))
    running = hashlib.sha256(model.encode())
    total = TOOL_SYSTEM_TOKENS if tooluse.client_tools(body) else 0
    prefixes: list[Prefix] = []
    breakpoints: list[Breakpoint] = []
    for text, tokens, ttl in _units(body):
        running.update(text.encode() + b"\x00")
        total += tokens if density == 1.0 else math.ceil(tokens * density)
        prefixes.append(Prefix(running.copy().hexdigest()[:32], total))
        if ttl is not None:
            breakpoints.append(Breakpoint(prefixes[-1].digest, total, ttl, len(prefixes) - 1))
    return InputAccount(
        max(total, 1), tuple(breakpoints), tuple(prefixes), min_cacheable_tokens(model)
    )


def validate_breakpoints(body: Mapping[str, object]) -> str | None:
    """Why the request's breakpoints are refused (the 400 message), or None.

    At most :data:`MAX_BREAKPOINTS`, and a one-hour one may not follow one of five
    minutes (the real API's rules).
    """
    ttls = [ttl for _, _, ttl in _units(body) if ttl is not None]
    if len(ttls) > MAX_BREAKPOINTS:
        return (
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(ttls)}."
        )
    if any(a < b for a, b in pairwise(ttls)):
        return "a cache_control block with ttl='1h' must not come after one with ttl='5m'"
    return None


def _hit(account: InputAccount, point: Breakpoint, is_cached: Callable[[str], bool]) -> Prefix:
    """The longest cached prefix ``point`` finds: itself or one of the blocks before it."""
    for index in range(point.index, max(point.index - LOOKBACK_BLOCKS, 0) - 1, -1):
        prefix = account.prefixes[index]
        if prefix.tokens < account.min_tokens:
            break  # too short to have been cached, and so is everything before it
        if is_cached(prefix.digest):
            return prefix
    return Prefix("", 0)


def cache_use(account: InputAccount, is_cached: Callable[[str], bool]) -> CacheUse:
    """How the request uses the cache, given which prefixes are cached now."""
    eligible = [b for b in account.breakpoints if b.tokens >= account.min_tokens]
    if not eligible:
        return CacheUse()
    hit = max((_hit(account, b, is_cached) for b in eligible), key=lambda p: p.tokens)
    read = hit.tokens
    last = eligible[-1]
    hour_end = max((b.tokens for b in eligible if b.ttl_s >= ONE_HOUR_S), default=read)
    write_1h = max(hour_end - read, 0)
    write = max(last.tokens - read, 0)
    # Breakpoints past the hit are written now, the ones before it refreshed.
    refreshed = (hit.digest,) if hit.digest else ()
    return CacheUse(read, write, write_1h, tuple(eligible), refreshed)


@dataclass
class PromptCache:
    """Cached prefixes by digest: when each expires and the ``ttl`` it was written with."""

    entries: dict[str, tuple[float, int]] = field(default_factory=dict)

    def holds(self, digest: str, now: float) -> bool:
        """Whether the prefix is cached at ``now`` (an expired entry misses)."""
        entry = self.entries.get(digest)
        return entry is not None and entry[0] > now

    def store(self, digest: str, ttl_s: int, now: float) -> None:
        """Write (or rewrite) a prefix; an entry never loses the longer of two lifetimes."""
        expiry, kept_ttl = self.entries.get(digest, (now, 0))
        ttl = max(ttl_s, kept_ttl) if expiry > now else ttl_s
        self.entries[digest] = (max(expiry, now + ttl), ttl)

    def refresh(self, digest: str, now: float) -> None:
        """A read restarts the entry's lifetime, with the ``ttl`` it was written with."""
        if self.holds(digest, now):
            self.store(digest, self.entries[digest][1], now)

    def clear(self) -> None:
        self.entries.clear()
