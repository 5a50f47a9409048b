"""Reading a tool-use conversation the way the Messages API reads it.

A client-tool conversation alternates assistant messages holding ``tool_use``
blocks and user messages answering each of them with a ``tool_result``. The real
API refuses a request that breaks the pairing, or that carries tool blocks without
defining tools, with a 400 whose message a worker may have to recognise; the
simulated agent then plans its next turn from what the conversation holds (which
tools it called, what they returned). Both read the conversation through this
module, so the validation and the plan agree on what a conversation means.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from steadfast_dev.sim import content

#: Tool names the real API accepts.
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_URL_RE: Final = re.compile(r"https?://[^\s)\]\"'<>,]+")
_ID_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def client_tools(body: Mapping[str, object]) -> list[Mapping[str, object]]:
    """The request's client (custom) tools: defined by the caller, run by the caller.

    A tool with a ``type`` other than ``custom`` is a server tool (web search, code
    execution, ...) that the API runs itself.
    """
    tools = body.get("tools")
    return [
        tool
        for tool in (tools if isinstance(tools, list) else [])
        if isinstance(tool, Mapping) and tool.get("type", "custom") == "custom"
    ]


def tool_choice(body: Mapping[str, object]) -> Mapping[str, object]:
    """The request's ``tool_choice`` (``{"type": "auto"}`` when absent)."""
    choice = body.get("tool_choice")
    return choice if isinstance(choice, Mapping) else {"type": "auto"}


def _blocks(message: object) -> list[Mapping[str, object]]:
    if not isinstance(message, Mapping):
        return []
    blocks = message.get("content")
    return [b for b in blocks if isinstance(b, Mapping)] if isinstance(blocks, list) else []


def _messages(body: Mapping[str, object]) -> list[object]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


def validate_tools(body: Mapping[str, object]) -> str | None:
    """The real API's 400 message for a tool definition or tool pairing it refuses."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for i, tool in enumerate(client_tools(body)):
        if not isinstance(tool.get("name"), str) or not _NAME_RE.match(str(tool["name"])):
            return f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, Mapping):
            return f"tools.{i}.custom.input_schema: Field required"
        if schema.get("type") != "object":
            return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
    names = [t.get("name") for t in tools if isinstance(t, Mapping)] if tools else []
    if len(names) != len(set(map(str, names))):
        return "tools: Tool names must be unique."
    messages = _messages(body)
    uses_tools = any(
        block.get("type") in ("tool_use", "tool_result") for m in messages for block in _blocks(m)
    )
    if uses_tools and not tools:
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    return _pairing_problem(messages)


def _pairing_problem(messages: Sequence[object]) -> str | None:
    asked: list[str] = []
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        role = message.get("role") if isinstance(message, Mapping) else None
        answered = [str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result"]
        if role == "user":
            for j, block in enumerate(blocks):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                    return (
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
        missing = [tool_id for tool_id in asked if tool_id not in answered]
        if missing:
            return (
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        asked = (
            [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            if role == "assistant"
            else []
        )
    # A conversation may end on tool calls only as a prefill the model continues;
    # the API answers it, so the last assistant message is not checked here.
    return None


@dataclass(frozen=True)
class Call:
    """One tool call the model made earlier in the conversation, and its result."""

    turn: int
    """The 1-based turn (assistant message) that made the call."""
    name: str
    input: Mapping[str, object]
    result: str | None
    """The text of the ``tool_result`` answering it (None if unanswered)."""
    is_error: bool


@dataclass(frozen=True)
class Conversation:
    """What a tool-use conversation holds, as the simulated agent plans from it."""

    turn: int
    """The turn this request asks for: assistant messages so far + 1."""
    calls: tuple[Call, ...]

    def result_urls(self) -> list[str]:
        """URLs seen in the results of calls other than page fetches, first seen first."""
        found = (_URL_RE.findall(c.result or "") for c in self.calls if c.name != "fetch_page")
        return list(dict.fromkeys(url.rstrip(".") for urls in found for url in urls))

    def called(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


def read_conversation(body: Mapping[str, object]) -> Conversation:
    """The tool calls made so far, each with its result."""
    results: dict[str, tuple[str, bool]] = {}
    pending: list[tuple[int, Mapping[str, object]]] = []
    turn = 0
    for message in _messages(body):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "assistant":
            turn += 1
        for block in _blocks(message):
            if role == "assistant" and block.get("type") == "tool_use":
                pending.append((turn, block))
            elif role == "user" and block.get("type") == "tool_result":
                text = content.block_text(block.get("content"))
                results[str(block.get("tool_use_id"))] = (text, block.get("is_error") is True)
    calls = []
    for made_in, block in pending:
        answer = results.get(str(block.get("id")))
        raw = block.get("input")
        calls.append(
            Call(
                turn=made_in,
                name=str(block.get("name")),
                input=raw if isinstance(raw, Mapping) else {},
                result=answer[0] if answer else None,
                is_error=answer[1] if answer else False,
            )
        )
    return Conversation(turn=turn + 1, calls=tuple(calls))


def tool_use_id(*parts: str) -> str:
    """A ``toolu_01...`` id like the real API's, fixed by ``parts``."""
    number = int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:16], "big")
    chars = []
    for _ in range(22):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "toolu_01" + "".join(chars)
