"""LangGraph building blocks: the state keys, and the two nodes around a model call.

* :func:`internalize_node` turns every tool output above a token threshold into a memory and
  puts a one-line receipt in its place, so the prompt grows by a receipt per tool call instead
  of by the output.
* :func:`model_node` calls a :class:`D2LChatModel` with the thread's active adapters.

Both record what they did in graph state (``memory_ids``, ``active_adapters``), which the
checkpointer persists with the thread; :mod:`integrations.middleware` does the same for agents
built with ``langchain.agents.create_agent``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime

# AgentState is a typing_extensions TypedDict; ours must be the same flavour for the two to mix.
from typing_extensions import TypedDict

from d2l_memory.agent_memory import AgentMemory, DocumentError, swap
from d2l_memory.errors import NotFoundError
from integrations.chat_model import ADAPTERS_KEY, D2LChatModel
from integrations.context import Namespace, keep_owner, owner_update, thread_namespace
from integrations.store import mirror_record
from integrations.tokens import TokenCounter, token_counter

logger = logging.getLogger(__name__)

MEMORY_ID_KEY = "d2l_memory_id"
"""``ToolMessage.response_metadata`` key: the memory this tool output was internalized into."""

KEEP_KEY = "d2l_keep"
"""``ToolMessage.response_metadata`` key: why this output is never internalized automatically (the
memory tools' own replies, which the agent must read; notes about outputs that failed)."""


FORGET_MARK = "-"
"""In an update of ``memory_ids``, ``"-" + id`` takes ``id`` out (the forget tool sends these).
Stored ids never start with it (see ``d2l_memory.store``'s name rule)."""


def merge_ids(left: Sequence[str] | None, right: Sequence[str] | None) -> list[str]:
    """Reducer for ``memory_ids``: append new ids, keep order, never duplicate; ``"-<id>"`` removes one."""
    merged = dict.fromkeys(left or ())
    for item in right or ():
        if item.startswith(FORGET_MARK):
            merged.pop(item[len(FORGET_MARK) :], None)
        else:
            merged[item] = None
    return list(merged)


def adapter_swap(on: Sequence[str] = (), off: Sequence[str] = (), limit: int | None = None) -> dict[str, Any]:
    """An update of ``active_adapters`` that swaps ids in and out rather than naming the whole
    set (see :func:`swap_adapters`); ``limit`` keeps only the newest that many."""
    return {"on": list(on), "off": list(off), "limit": limit}


def swap_adapters(current: Sequence[str] | None, update: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    """Reducer for ``active_adapters``: a list replaces the set; a swap (:func:`adapter_swap`)
    is applied to the set as it stands.

    The memory tools send switches, so the tool calls a model makes in parallel in one step all
    take effect, each applied after the one before, instead of the last overwriting the others.
    """
    if update is None:
        return list(current or [])
    if not isinstance(update, Mapping):
        return list(update)
    swapped = swap(current or [], update.get("on", ()), update.get("off", ()))
    limit = update.get("limit")
    return swapped[-limit:] if limit is not None else swapped


class AdapterState(TypedDict):
    """The state keys this package reads and writes; mix them into your own state schema."""

    active_adapters: NotRequired[Annotated[list[str], swap_adapters]]  # ids switched on for the thread's model calls
    memory_ids: NotRequired[Annotated[list[str], merge_ids]]  # every memory internalized in the thread, not forgotten
    memory_owner: NotRequired[Annotated[str, keep_owner]]  # "user/thread" whose memory the thread uses


class MemoryState(AdapterState):
    """Messages plus the adapter keys: a ready-made state schema for memory-using graphs."""

    messages: Annotated[list[AnyMessage], add_messages]


def internalize_tool_outputs(
    memory: AgentMemory,
    state: Mapping[str, Any],
    config: RunnableConfig | None,
    runtime: Runtime | None,
    *,
    threshold_tokens: int,
    count_tokens: TokenCounter,
    activate: bool,
) -> dict[str, Any] | None:
    """The state update that folds every oversized, not yet folded ToolMessage into memory.

    Replacements keep the message's id (``add_messages`` then updates it in place) and its
    ``tool_call_id``, so the call/result pairing models require stays intact. An output that
    cannot be internalized (too large, not UTF-8) is replaced by an error note with
    ``status="error"``: the graph goes on, and the original remains in earlier checkpoints.
    """
    oversized = [
        message
        for message in state.get("messages", [])
        if isinstance(message, ToolMessage)
        and MEMORY_ID_KEY not in message.response_metadata
        and KEEP_KEY not in message.response_metadata
        and count_tokens(message.text) > threshold_tokens
    ]
    if not oversized:
        return None
    namespace = thread_namespace(state, config, runtime.context if runtime is not None else None)
    store = runtime.store if runtime is not None else None
    replaced, accepted, documents = [], [], []
    for message in oversized:
        try:
            documents.append(memory.prepare(message.text))
        except DocumentError as err:
            logger.warning("tool output %s was not internalized: %s", message.tool_call_id, err)
            note = f"[this tool output could not be internalized and was removed from the prompt: {err}]"
            replaced.append(_replace(message, note, {KEEP_KEY: "could not be internalized"}, status="error"))
            continue
        accepted.append(message)
    memories = memory.internalize_many(  # outputs of parallel tool calls share batches
        documents,
        namespace=namespace,
        sources=[f"tool:{message.name or message.tool_call_id}" for message in accepted],
        origin="tool_output",
    )
    for message, stored in zip(accepted, memories):
        if store is not None and stored.record is not None:
            mirror_record(store, stored.record)
        replaced.append(_replace(message, stored.receipt(), {MEMORY_ID_KEY: stored.id}))
    new_ids = [stored.id for stored in memories]
    update: dict[str, Any] = {"messages": replaced, "memory_ids": new_ids, **owner_update(namespace)}
    if activate and new_ids:
        update[ADAPTERS_KEY] = adapter_swap(on=new_ids, limit=memory.max_active)
    return update


def internalize_node(
    memory: AgentMemory,
    *,
    threshold_tokens: int = 256,
    count_tokens: TokenCounter | None = None,
    activate: bool = True,
) -> Callable[..., dict[str, Any] | None]:
    """A node that internalizes tool outputs over ``threshold_tokens`` (put it right after the tool node).

    With ``activate``, new memories are switched on (the oldest active ones make room beyond
    ``memory.max_active``), so the model still knows what the removed output said.
    """
    count = count_tokens or token_counter(memory.host)

    # `state` is typed loosely on purpose: LangGraph narrows a node's input (and the branch after
    # it) to the schema its annotation names, which would hide the keys of the caller's own state.
    def internalize(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any] | None:
        return internalize_tool_outputs(
            memory,
            state,
            config,
            runtime,
            threshold_tokens=threshold_tokens,
            count_tokens=count,
            activate=activate,
        )

    return internalize


def model_node(model: D2LChatModel, memory: AgentMemory) -> Callable[..., dict[str, Any]]:
    """A node that calls ``model`` on the messages with the thread's ``active_adapters`` applied.

    While the state names none, the model falls back to the run's config and its own default; a
    state whose ids were all forgotten gets the base model.
    """

    def call_model(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        if not state.get(ADAPTERS_KEY):  # the model falls back to the config and its own default
            return {"messages": [model.invoke(state["messages"], config)]}
        namespace = _namespace(state, config, runtime)
        keys = thread_adapters(memory, state, config, runtime)
        reply = model.invoke(state["messages"], config, **{ADAPTERS_KEY: keys})
        return {"messages": [reply], **owner_update(namespace)}

    return call_model


def thread_adapters(
    memory: AgentMemory,
    state: Mapping[str, Any],
    config: RunnableConfig | None,
    runtime: Runtime | None,
) -> list[str]:
    """Host keys of the state's active adapters, made resident (no namespace needed when none are active).

    An id the namespace no longer holds is skipped with a warning: the tools check ids when
    they switch them on, so a missing one was forgotten since (by ``AgentMemory.forget`` in
    application code, say), and the thread answers without it rather than failing.
    """
    ids = state.get(ADAPTERS_KEY) or []
    if not ids:
        return []
    namespace = _namespace(state, config, runtime)
    try:  # one store lookup per id in the usual case, where the thread still holds them all
        return memory.resident_keys(namespace, ids)
    except NotFoundError:
        held = memory.held(namespace, ids)
    logger.warning(
        "active adapters %s are not in this thread's memory (forgotten?): skipped", sorted(set(ids) - set(held))
    )
    return memory.resident_keys(namespace, held)


def _namespace(state: Mapping[str, Any], config: RunnableConfig | None, runtime: Runtime | None) -> Namespace:
    return thread_namespace(state, config, runtime.context if runtime is not None else None)


def _replace(
    message: ToolMessage,
    content: str,
    marks: dict[str, str],
    *,
    status: str | None = None,
) -> ToolMessage:
    update: dict[str, Any] = {
        "content": content,
        "response_metadata": {**message.response_metadata, **marks},
    }
    if status is not None:
        update["status"] = status
    return message.model_copy(update=update)
