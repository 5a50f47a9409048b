"""The LLM client: the real ``anthropic.AsyncAnthropic``, configured for Temporal.

Two rules make the client safe inside activities. ``max_retries=0``: the
activity's RetryPolicy owns retries, so every attempt is visible in history and
metrics and a retried call is never retried twice over. The API key is read from
the environment here, inside the activity worker, so it never enters workflow
inputs, history, logs or status.

The helpers convert the SDK's usage objects into :class:`~steadfast_contract.pricing.Usage`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import anthropic
from temporalio.exceptions import ApplicationError

from steadfast_contract import stops
from steadfast_contract.config import ModelConfig
from steadfast_contract.pricing import Usage
from steadfast_contract.text import well_formed
from steadfast_worker import errors

#: Sent with every call so the simulator's request log (and a gateway's) can tie
#: all attempts of one logical call together.
REQUEST_KEY_HEADER = "x-steadfast-request-key"


def api_key(cfg: ModelConfig, env: Mapping[str, str] | None = None) -> str:
    """The API key named by ``cfg.api_key_env``; a typed non-retryable error if unset."""
    source = os.environ if env is None else env
    key = source.get(cfg.api_key_env, "")
    if not key:
        raise ApplicationError(
            f"environment variable {cfg.api_key_env} (model.apiKeyEnv) holds no API key",
            type=errors.MISSING_CREDENTIALS,
            non_retryable=True,
        )
    return key


def make_client(cfg: ModelConfig, env: Mapping[str, str] | None = None) -> anthropic.AsyncAnthropic:
    """An ``AsyncAnthropic`` with no SDK retries, ``cfg``'s base URL and timeout."""
    return anthropic.AsyncAnthropic(
        api_key=api_key(cfg, env),
        base_url=cfg.base_url or None,
        max_retries=0,
        timeout=cfg.timeout.total_seconds(),
    )


def usage_of(raw: Any) -> Usage:
    """Convert the SDK's ``Usage``/``MessageDeltaUsage`` (fields may be None) to ours."""
    if raw is None:
        return Usage()
    server_tool = getattr(raw, "server_tool_use", None)
    # ``cache_creation`` splits the writes by ``ttl``; it is absent from a stream's
    # ``message_delta`` usage (and from older replies): every write is then 5-minute.
    creation = getattr(raw, "cache_creation", None)
    return Usage(
        input_tokens=getattr(raw, "input_tokens", 0) or 0,
        output_tokens=getattr(raw, "output_tokens", 0) or 0,
        cache_read_tokens=getattr(raw, "cache_read_input_tokens", 0) or 0,
        cache_write_tokens=getattr(raw, "cache_creation_input_tokens", 0) or 0,
        web_search_requests=(getattr(server_tool, "web_search_requests", 0) or 0)
        if server_tool is not None
        else 0,
        cache_write_1h_tokens=getattr(creation, "ephemeral_1h_input_tokens", 0) or 0,
    )


def text_of(message: anthropic.types.Message) -> str:
    """The concatenated text blocks of a reply, as text every store can hold
    (:func:`steadfast_contract.text.well_formed`)."""
    return well_formed("".join(block.text for block in message.content if block.type == "text"))


def refusal_of(message: anthropic.types.Message) -> str | None:
    """What a reply's refusal says (:func:`steadfast_contract.stops.refusal_reason`),
    or None when the model did not refuse."""
    if not stops.is_refusal(message.stop_reason):
        return None
    details = message.stop_details
    if details is None:
        return stops.refusal_reason(None, None)
    return stops.refusal_reason(details.category, details.explanation)
