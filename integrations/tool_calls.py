"""Tool calls in and out of a chat template: LangChain messages to template dicts, generated text to calls.

Open models write tool calls as text in one of a few shapes, which these functions read:

- Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call,
  with any prose around them (a block cut off by the token limit is read up to the end);
- Llama 3.1+ and Mistral (their marker tokens are special, so decoding drops them): the whole
  reply is one JSON object, or a list of them, with ``name`` and ``arguments`` or ``parameters``.

A call that cannot be read (bad JSON, no name) becomes an ``invalid_tool_call`` with the error,
as LangChain expects, so an agent loop can show the model its mistake instead of crashing.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call

_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


@dataclass
class ParsedReply:
    """A reply split into its prose and the tool calls it makes."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def parse_tool_calls(text: str) -> ParsedReply:
    """The tool calls written in ``text`` (see the module docstring for the shapes read)."""
    blocks = _TAGGED.findall(text)
    if blocks:
        reply = ParsedReply(_TAGGED.sub("", text).strip())
        for block in blocks:
            _add_call(reply, block.strip())
        return reply
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return ParsedReply(text)  # prose that happens to start with a bracket
        calls = value if isinstance(value, list) else [value]
        if calls and all(isinstance(c, dict) and "name" in c for c in calls):
            reply = ParsedReply("")
            for call in calls:
                _add_call(reply, call)
            return reply
    return ParsedReply(text)


def _add_call(reply: ParsedReply, raw: str | dict[str, Any]) -> None:
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    name, args, problem = _read_call(raw)
    if problem is None:
        reply.tool_calls.append(tool_call(name=name, args=args, id=call_id))
    else:
        text = raw if isinstance(raw, str) else json.dumps(raw)
        reply.invalid_tool_calls.append(invalid_tool_call(name=name, args=text, id=call_id, error=problem))


def _read_call(raw: str | dict[str, Any]) -> tuple[str | None, dict[str, Any], str | None]:
    """A call's name and arguments, and what is wrong with it (None when nothing is)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            return None, {}, f"the tool call is not JSON: {error}"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return None, {}, 'a tool call must be a JSON object with a "name"'
    args = raw.get("arguments", raw.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError as error:
            return raw["name"], {}, f"the arguments are not JSON: {error}"
    if not isinstance(args, dict):
        return raw["name"], {}, "a tool call's arguments must be a JSON object"
    return raw["name"], args, None


def template_message(message: BaseMessage, role: str, content: str) -> dict[str, Any]:
    """One message as chat templates take it, with the tool calls an AI message made and the
    call a tool message answers (Hugging Face's convention: arguments as a mapping)."""
    rendered: dict[str, Any] = {"role": role, "content": content}
    if isinstance(message, AIMessage) and message.tool_calls:
        rendered["tool_calls"] = [
            {"type": "function", "id": call["id"], "function": {"name": call["name"], "arguments": call["args"]}}
            for call in message.tool_calls
        ]
    if isinstance(message, ToolMessage):
        rendered["tool_call_id"] = message.tool_call_id
        if message.name:
            rendered["name"] = message.name
    return rendered
