"""Agent tools for the three memory actions: internalize, create a skill, swap adapters (plus
list and forget).

Each tool reads its namespace from the run (``ToolRuntime``: config and context), never from
its arguments, so a model cannot name another user's memories. Every failure of ours becomes a
``ToolException``, which the tool turns into an error ``ToolMessage``: the agent reads what went
wrong and the graph keeps running. Tools that change what is active return a ``Command`` that
updates ``active_adapters`` and ``memory_ids`` in graph state (see :class:`AdapterState`), as
switches relative to the state, so parallel tool calls in one step all take effect.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, ParamSpec, Self, TypeVar

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command
from pydantic import BaseModel, Field, ValidationError, model_validator

from d2l_memory.agent_memory import AgentMemory, swap
from d2l_memory.errors import D2LMemoryError
from d2l_memory.refs import AdapterRef, shared_namespace
from d2l_memory.store import AdapterRecord
from integrations.chat_model import ADAPTERS_KEY
from integrations.context import Namespace, owner_update, thread_namespace
from integrations.graph import FORGET_MARK, KEEP_KEY, MEMORY_ID_KEY, adapter_swap
from integrations.store import forget_record, mirror_record

P = ParamSpec("P")
R = TypeVar("R")


def _tool_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into ToolExceptions, which ``handle_tool_error`` shows to the agent."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except D2LMemoryError as err:
            raise ToolException(str(err)) from err

    return wrapper


def _tool(func: Callable[..., Any], name: str, description: str, args_schema: type[BaseModel]) -> BaseTool:
    return StructuredTool.from_function(
        func=_tool_errors(func),
        name=name,
        description=description,
        args_schema=args_schema,
        handle_tool_error=True,
        handle_validation_error=_invalid_arguments,
    )


def _invalid_arguments(error: ValidationError) -> str:
    """What was wrong with the arguments, briefly (pydantic's own text is long and has links)."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
    return f"invalid arguments: {problems}"


def _namespace(runtime: ToolRuntime) -> Namespace:
    """The run's namespace, refused when the thread's state belongs to another (see ``thread_namespace``)."""
    return thread_namespace(runtime.state, runtime.config, runtime.context)


def _active(runtime: ToolRuntime) -> list[str]:
    return list(runtime.state.get(ADAPTERS_KEY) or [])


def _mirror(runtime: ToolRuntime, record: AdapterRecord | None) -> None:
    if runtime.store is not None and record is not None:
        mirror_record(runtime.store, record)


def _reply(
    runtime: ToolRuntime,
    content: str,
    state: Mapping[str, Any] | None = None,
    *,
    memory_id: str | None = None,
) -> Command:
    """The tool's answer to the agent plus graph-state changes, as one update.

    The answer is marked so the internalize node leaves it in the prompt: it is short, and it is
    what the agent needs to read (a receipt names the memory it stands for).
    """
    marks = {MEMORY_ID_KEY: memory_id} if memory_id else {KEEP_KEY: "memory tool reply"}
    message = ToolMessage(content, tool_call_id=runtime.tool_call_id, response_metadata=marks)
    return Command(update={"messages": [message], **owner_update(_namespace(runtime)), **(state or {})})


_SHARE = "Keep it for all of this user's conversations, not only this one."


def _target(runtime: ToolRuntime, share: bool) -> tuple[str, ...]:
    """Where a new adapter goes: this thread's namespace, or its user's shared one."""
    namespace = _namespace(runtime)
    return shared_namespace(namespace) if share else namespace


# --- internalize ------------------------------------------------------------------------------
class InternalizeArgs(BaseModel):
    text: str | None = Field(None, description="The text to remember.")
    path: str | None = Field(
        None,
        description="A UTF-8 text file to remember, relative to the shared files folder.",
    )
    tool_call: str | None = Field(None, description="The id of an earlier tool call whose output to remember.")
    activate: bool = Field(True, description="Switch the new memory on for the following answers.")
    share: bool = Field(False, description=_SHARE)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("text", "path", "tool_call") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, path or tool_call, not {given or 'none'}")
        return self


def internalize_tool(memory: AgentMemory) -> BaseTool:
    """``internalize``: a text, a file or an earlier tool output -> memory id and a one-line receipt."""

    def internalize(
        runtime: ToolRuntime,
        text: str | None = None,
        path: str | None = None,
        tool_call: str | None = None,
        activate: bool = True,
        share: bool = False,
    ) -> Command:
        namespace = _target(runtime, share)
        if text is not None:
            stored = memory.internalize(text, namespace=namespace, source="agent")
        elif path is not None:
            stored = memory.internalize_file(path, namespace=namespace)
        else:
            output = _tool_output(runtime, tool_call)
            if MEMORY_ID_KEY in output.response_metadata:
                return _already_internalized(memory, runtime, output, activate)
            stored = memory.internalize(
                output.text, namespace=namespace, source=f"tool:{output.name or tool_call}", origin="tool_output"
            )
        _mirror(runtime, stored.record)
        state: dict[str, Any] = {"memory_ids": [stored.id]}
        if activate:
            state[ADAPTERS_KEY] = adapter_swap(on=[stored.id], limit=memory.max_active)
        return _reply(runtime, stored.receipt(), state, memory_id=stored.id)

    return _tool(
        internalize,
        "internalize",
        "Remember a document for good without keeping it in the conversation: give its text, a file path,"
        " or the id of an earlier tool call. Returns the memory id; the memory is switched on by default.",
        InternalizeArgs,
    )


def _tool_output(runtime: ToolRuntime, tool_call: str | None) -> ToolMessage:
    for message in runtime.state.get("messages", []):
        if isinstance(message, ToolMessage) and message.tool_call_id == tool_call:
            return message
    raise ToolException(f"no earlier tool call {tool_call!r} in this conversation")


def _already_internalized(memory: AgentMemory, runtime: ToolRuntime, output: ToolMessage, activate: bool) -> Command:
    memory_id = output.response_metadata[MEMORY_ID_KEY]
    if not memory.held(_namespace(runtime), [memory_id]):
        raise ToolException(
            f"the output of tool call {output.tool_call_id!r} was folded into memory {memory_id}, which this"
            " conversation no longer holds (it was forgotten); only its receipt is left"
        )
    state = {ADAPTERS_KEY: adapter_swap(on=[memory_id], limit=memory.max_active)} if activate else {}
    content = f"the output of tool call {output.tool_call_id!r} is already memory {memory_id}"
    return _reply(runtime, content, state, memory_id=memory_id)


# --- create a skill ---------------------------------------------------------------------------
class SkillArgs(BaseModel):
    description: str = Field(description="The task the skill should perform, described in plain words.")
    activate: bool = Field(True, description="Switch the new skill on for the following answers.")
    share: bool = Field(False, description=_SHARE)


def create_skill_tool(memory: AgentMemory) -> BaseTool:
    """``create_skill``: a task description -> skill id, through ``memory.skills``."""

    def create_skill(runtime: ToolRuntime, description: str, activate: bool = True, share: bool = False) -> Command:
        namespace = _target(runtime, share)
        skill_id, receipt = memory.create_skill(description, namespace=namespace)
        _mirror(runtime, memory.record(namespace, skill_id))
        state = {ADAPTERS_KEY: adapter_swap(on=[skill_id], limit=memory.max_active)} if activate else {}
        return _reply(runtime, f"skill {skill_id}: {receipt}", state)

    return _tool(
        create_skill,
        "create_skill",
        "Learn a new skill from a description of a task (e.g. 'answer in formal French'). Returns the skill id;"
        " the skill is switched on by default.",
        SkillArgs,
    )


# --- swap -------------------------------------------------------------------------------------
class SwapArgs(BaseModel):
    activate: list[str] = Field(default_factory=list, description="Ids of memories or skills to switch on.")
    deactivate: list[str] = Field(
        default_factory=list,
        description="Ids of active memories or skills to switch off.",
    )
    query: str | None = Field(
        None,
        description="Switch on the memories and skills most relevant to this text.",
    )
    top_k: int = Field(2, ge=1, le=8, description="How many adapters the query switches on.")

    @model_validator(mode="after")
    def _something_to_do(self) -> Self:
        if not (self.activate or self.deactivate or self.query):
            raise ValueError("give ids to activate or deactivate, or a query")
        return self


def swap_adapters_tool(memory: AgentMemory) -> BaseTool:
    """``swap_adapters``: switch memories and skills on or off, by id or by relevance to a query."""

    def swap_adapters(
        runtime: ToolRuntime,
        activate: list[str] | None = None,
        deactivate: list[str] | None = None,
        query: str | None = None,
        top_k: int = 2,
    ) -> Command:
        namespace, active = _namespace(runtime), _active(runtime)
        activate, deactivate = activate or [], deactivate or []
        memory.require(namespace, activate)
        on = {*active, *(AdapterRef.parse(i).id for i in active)}  # a memory's id also names its focused chunks
        inactive = [i for i in deactivate if i not in on]
        if inactive:
            raise ToolException(f"not active: {inactive}; active now: {active or 'none'}")
        routed = memory.route(namespace, query, top_k=top_k) if query else []
        if query and not routed:
            raise ToolException(f"no memory or skill in this conversation matches {query!r}")
        wanted = [*activate, *routed]
        dropped = swap(active, on=wanted, off=deactivate)[: -memory.max_active]
        changes = [f"{how} {ids}" for how, ids in (("on", list(dict.fromkeys(wanted))), ("off", deactivate)) if ids]
        content = f"switched {' and '.join(changes)}"  # the change, not the set: parallel calls may change it too
        if dropped:
            content += f"; switched off to stay within {memory.max_active}: {dropped}"
        return _reply(runtime, content, {ADAPTERS_KEY: adapter_swap(wanted, deactivate, memory.max_active)})

    return _tool(
        swap_adapters,
        "swap_adapters",
        "Switch memories and skills on or off for the following answers: by id, or the ones most relevant"
        f" to a query. At most {memory.max_active} are on at once; the oldest make room.",
        SwapArgs,
    )


# --- list -------------------------------------------------------------------------------------
class ListArgs(BaseModel):
    kind: Literal["memory", "skill"] | None = Field(None, description="Only memories, or only skills.")
    limit: int = Field(20, ge=1, le=100, description="How many of the newest to list.")


def list_adapters_tool(memory: AgentMemory) -> BaseTool:
    """``list_adapters``: this conversation's memories and skills, newest first."""

    def list_adapters(
        runtime: ToolRuntime,
        kind: Literal["memory", "skill"] | None = None,
        limit: int = 20,
    ) -> Command:
        namespace = _namespace(runtime)
        records = memory.records(namespace, kind=kind)
        if not records:
            return _reply(runtime, "no memories or skills yet")
        active = {
            ref.id: ref.chunks for ref in map(AdapterRef.parse, _active(runtime))
        }  # memory id -> its focused chunks (None: whole)
        lines = [f"{len(records)} adapter(s), newest first:"]
        for record in reversed(records[-limit:]):
            chunks = active.get(record.id)
            state = (
                ""
                if record.id not in active
                else " (active)"
                if chunks is None
                else f" (active: chunks {list(chunks)})"
            )
            shared = "" if record.namespace == namespace else " (shared by all your conversations)"
            lines.append(
                f"{record.id} {record.kind}{shared}, {record.token_count} tokens, from {_source(record)}{state}"
            )
        return _reply(runtime, "\n".join(lines))

    return _tool(
        list_adapters,
        "list_adapters",
        "List the memories and skills of this conversation.",
        ListArgs,
    )


# --- forget -----------------------------------------------------------------------------------
class ForgetArgs(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=32, description="Ids of the memories or skills to forget.")


def forget_tool(memory: AgentMemory) -> BaseTool:
    """``forget``: delete memories or skills for good, and switch them off."""

    def forget(runtime: ToolRuntime, ids: list[str]) -> Command:
        namespace = _namespace(runtime)
        memory.require(namespace, ids)  # all or nothing: one unknown id forgets none
        stored = list(dict.fromkeys(AdapterRef.parse(i).id for i in ids))
        records = [record for i in stored for record in memory.forget(namespace, i)]
        if runtime.store is not None:
            for record in records:
                forget_record(runtime.store, record)
        state = {
            ADAPTERS_KEY: adapter_swap(off=stored),
            "memory_ids": [FORGET_MARK + i for i in dict.fromkeys(r.id for r in records if r.kind == "memory")],
        }
        lines = [
            f"forgot {r.kind} {r.id}{' (shared copy)' if r.namespace != namespace else ''}"
            f" ({r.token_count} tokens, from {_source(r)})"
            for r in records
        ]
        return _reply(runtime, "\n".join(lines), state)

    return _tool(
        forget,
        "forget",
        "Delete memories or skills for good (not just switch them off), e.g. when the user asks you to forget"
        " something or a memory is wrong or outdated. Give their ids.",
        ForgetArgs,
    )


def _source(record: AdapterRecord) -> str:
    """Where an adapter came from, quoted: a file's name is not the agent's to read as instructions."""
    return json.dumps(record.source, ensure_ascii=True) if record.source else "?"


def memory_tools(memory: AgentMemory) -> list[BaseTool]:
    """All the tools ``memory`` supports (``create_skill`` only with a skill maker)."""
    tools = [
        internalize_tool(memory),
        swap_adapters_tool(memory),
        list_adapters_tool(memory),
        forget_tool(memory),
    ]
    if memory.skills is not None:
        tools.insert(1, create_skill_tool(memory))
    return tools
