"""Tool calls in and out of a chat template: LangChain messages to template dicts, generated text to calls.

Open models write tool calls as text in one of a few shapes, which :func:`parse_tool_calls` reads:

- Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, one block per call,
  with any prose around them (a block cut off by the token limit is read up to the end);
- Llama 3.1+ and Mistral (their marker tokens are special, so decoding drops them): the whole
  reply is one JSON object, or a list of them, with ``name`` and ``arguments`` or ``parameters``.

A tagged call that cannot be used (bad JSON, no name, a tool that was not offered) becomes an
``invalid_tool_call`` with the reason, as LangChain expects, instead of failing the turn. An
untagged JSON reply that is not a call to an offered tool is an answer, not a call.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
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


@dataclass(frozen=True)
class _Call:
    name: str | None
    args: dict[str, Any] | None  # None: unusable, see problem
    args_text: str  # the arguments as written, for an invalid call
    id: str
    problem: str | None = None


def parse_tool_calls(text: str, tool_names: Collection[str] | None = None) -> ParsedReply:
    """The tool calls written in ``text``, to the tools named ``tool_names`` (None: any name)."""
    blocks = _TAGGED.findall(text)
    if blocks:
        reply = ParsedReply(_TAGGED.sub("", text).strip())
        for block in blocks:
            _add(reply, _read_call(block.strip(), tool_names))
        return reply
    stripped = text.strip()
    if stripped[:1] not in ("[", "{"):
        return ParsedReply(text)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        return ParsedReply(text)  # prose that happens to start with a bracket
    calls = [_read_call(item, tool_names) for item in (value if isinstance(value, list) else [value])]
    if not calls or any(call.problem is not None for call in calls):
        return ParsedReply(text)  # e.g. an answer given as JSON: only clean calls count untagged
    reply = ParsedReply("")
    for call in calls:
        _add(reply, call)
    return reply


def _add(reply: ParsedReply, call: _Call) -> None:
    if call.problem is None and call.name is not None and call.args is not None:
        reply.tool_calls.append(tool_call(name=call.name, args=call.args, id=call.id))
    else:
        reply.invalid_tool_calls.append(
            invalid_tool_call(name=call.name, args=call.args_text, id=call.id, error=call.problem)
        )


def _read_call(raw: str | Any, tool_names: Collection[str] | None) -> _Call:
    """One call, read from a tagged block (text) or an item of a JSON reply."""
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            return _Call(None, None, text, new_call_id(), f"the tool call is not JSON: {error}")
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        return _Call(None, None, text, new_call_id(), 'a tool call must be a JSON object with a "name"')
    name, written_id = raw["name"], raw.get("id")
    call_id = written_id if isinstance(written_id, str) and written_id else new_call_id()
    if "arguments" not in raw and "parameters" not in raw:
        return _Call(name, None, "", call_id, 'a tool call needs "arguments" (or "parameters")')
    args = raw.get("arguments", raw.get("parameters"))
    args_text = args if isinstance(args, str) else json.dumps(args)
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError as error:
            return _Call(name, None, args_text, call_id, f"the arguments are not JSON: {error}")
    if not isinstance(args, dict):
        return _Call(name, None, args_text, call_id, "a tool call's arguments must be a JSON object")
    if tool_names is not None and name not in tool_names:
        return _Call(name, None, args_text, call_id, f"no tool named {name!r}; the tools are {sorted(tool_names)}")
    return _Call(name, args, args_text, call_id)


def new_call_id() -> str:
    """Nine letters and digits: the one id shape every chat template accepts (Mistral's require it)."""
    return uuid.uuid4().hex[:9]


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
