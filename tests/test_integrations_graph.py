"""A real LangGraph loop (checkpointer + store) over 20 tool outputs: the prompt stays bounded, nothing is lost."""

from __future__ import annotations

import itertools
import operator
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.store.memory import InMemoryStore
from test_integrations_support import build_memory, config, single_threaded_torch  # noqa: F401 (autouse)

from d2l_lab.world.tool_outputs import make_log_document
from d2l_memory import NotFoundError
from d2l_memory.testing import random_adapter
from integrations import (
    MEMORY_ID_KEY,
    AgentMemory,
    D2LChatModel,
    MemoryState,
    adapters_namespace,
    internalize_node,
    internalize_tool_outputs,
    mirror_namespace,
    model_node,
    swap_adapters,
)

STEPS = 20
THRESHOLD = 64


@tool
def read_logs(day: int) -> str:
    """Read one day of service logs."""
    return make_log_document(day, n_facts=16).text


class LoopState(MemoryState):
    steps: Annotated[int, operator.add]


def plan(state: LoopState) -> dict[str, Any]:
    """Stands in for a tool-calling model: always asks for the next day of logs."""
    day = state.get("steps", 0)
    call = {"name": "read_logs", "args": {"day": day}, "id": f"call-{day}"}
    return {"messages": [AIMessage("", tool_calls=[call])], "steps": 1}


def build_loop(memory: AgentMemory, *, internalize: bool, steps: int = STEPS):
    """plan -> tools -> [internalize] -> model, until ``steps`` tool outputs have been read."""
    builder = StateGraph(LoopState)
    builder.add_node("plan", plan)
    builder.add_node("tools", ToolNode([read_logs]))
    builder.add_node("model", model_node(D2LChatModel(host=memory.host, max_tokens=3), memory))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "tools")
    if internalize:
        builder.add_node("internalize", internalize_node(memory, threshold_tokens=THRESHOLD))
        builder.add_edge("tools", "internalize")
        builder.add_edge("internalize", "model")
    else:
        builder.add_edge("tools", "model")
    builder.add_conditional_edges("model", lambda state: END if state["steps"] >= steps else "plan")
    return builder.compile(checkpointer=InMemorySaver(), store=InMemoryStore())


def prompt_sizes(state: dict[str, Any]) -> list[int]:
    return [
        m.usage_metadata["input_tokens"] for m in state["messages"] if isinstance(m, AIMessage) and m.usage_metadata
    ]


@pytest.fixture(scope="module")
def memory(tmp_path_factory) -> AgentMemory:
    return build_memory(tmp_path_factory.mktemp("graph"))


def test_twenty_tool_outputs_keep_the_prompt_bounded(memory):
    run = {**config("alice", "t-loop"), "recursion_limit": 10 * STEPS}
    output_tokens = [memory.host.count_tokens(read_logs.invoke({"day": day})) for day in range(STEPS)]
    assert min(output_tokens) > 250  # "a few hundred tokens" per tool output

    graph = build_loop(memory, internalize=True)
    state = graph.invoke({"messages": [HumanMessage("what happened ?")]}, run)
    # The baseline keeps every output in the prompt; 5 steps show its growth (more would only be slow).
    baseline = build_loop(memory, internalize=False, steps=5)
    grown = prompt_sizes(baseline.invoke({"messages": [HumanMessage("what happened ?")]}, run))

    sizes = prompt_sizes(state)
    assert len(sizes) == STEPS and len(grown) == 5
    assert min(later - earlier for earlier, later in itertools.pairwise(grown)) > 250  # a whole output per step
    assert max(later - earlier for earlier, later in itertools.pairwise(sizes)) < 60  # a receipt per step
    assert max(sizes) < grown[-1]  # 20 internalized steps stay below 5 baseline steps

    # every output was internalized: ids in state, records in both stores, receipts in the prompt
    outputs = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    ids = state["memory_ids"]
    assert len(ids) == len(set(ids)) == STEPS == len(outputs)
    assert [m.response_metadata[MEMORY_ID_KEY] for m in outputs] == ids
    assert all(m.content.startswith("internalized ") and len(m.content) < 150 for m in outputs)
    namespace = ("alice", "t-loop")
    assert [r.id for r in memory.records(namespace)] == ids
    assert all(r.extra["origin"] == "tool_output" and r.source == "tool:read_logs" for r in memory.records(namespace))
    mirrored = graph.store.search(adapters_namespace(namespace), limit=100)
    assert sorted(item.key for item in mirrored) == sorted(ids)
    # the newest memories are active (up to the limit) and the model ran with them
    assert state["active_adapters"] == ids[-memory.max_active :]
    last_reply = state["messages"][-1]
    assert last_reply.response_metadata["active_adapters"] == [f"alice/t-loop/{i}" for i in ids[-memory.max_active :]]

    # the checkpointer kept the thread: a later step sees the same memories
    assert graph.get_state(run).values["memory_ids"] == ids


def test_a_tool_output_too_large_is_an_error_note_and_the_graph_goes_on(tmp_path):
    memory = build_memory(tmp_path, max_document_bytes=500)
    graph = build_loop(memory, internalize=True)
    state = graph.invoke({"messages": [HumanMessage("go")]}, {**config("bob", "t-big"), "recursion_limit": 10 * STEPS})
    outputs = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(outputs) == STEPS and all(m.status == "error" and "at most 500 bytes" in m.content for m in outputs)
    assert not state.get("memory_ids") and memory.records(("bob", "t-big")) == []
    assert len(prompt_sizes(state)) == STEPS  # the model still answered every step


def test_outputs_of_parallel_tool_calls_are_internalized_together(tmp_path):
    memory = build_memory(tmp_path, max_document_bytes=3000)
    outputs = [
        ToolMessage(make_log_document(day, n_facts=16).text, tool_call_id=f"c{day}", name="read_logs")
        for day in range(3)
    ]
    outputs.append(ToolMessage("w1 " * 1500, tool_call_id="too-big"))
    update = internalize_tool_outputs(
        memory,
        {"messages": outputs},
        config("erin", "t-par"),
        None,
        threshold_tokens=THRESHOLD,
        count_tokens=memory.host.count_tokens,
        activate=True,
    )
    ids = update["memory_ids"]
    records = memory.records(("erin", "t-par"))
    assert [r.id for r in records] == ids and len(ids) == 3
    assert [r.source for r in records] == ["tool:read_logs"] * 3
    assert [r.token_count for r in records] == [memory.host.count_tokens(m.text) for m in outputs[:3]]
    receipts = {m.tool_call_id: m for m in update["messages"]}
    assert [receipts[f"c{day}"].response_metadata[MEMORY_ID_KEY] for day in range(3)] == ids
    assert receipts["too-big"].status == "error" and "at most 3.0 kB" in receipts["too-big"].content
    assert swap_adapters([], update["active_adapters"]) == ids


def test_mirror_namespace_rebuilds_the_store_copy(memory):
    namespace = ("carol", "t-mirror")
    kept = memory.internalize("the code of the city is 1 2 3 .", namespace=namespace)
    gone = memory.internalize("w1 lives in the city .", namespace=namespace)
    store = InMemoryStore()
    store.put(adapters_namespace(namespace), "stale", {"id": "stale"})
    memory.store.delete(namespace, gone.id)
    assert mirror_namespace(store, memory.store, namespace) == 1
    assert [item.key for item in store.search(adapters_namespace(namespace))] == [kept.id]
    assert store.get(adapters_namespace(namespace), kept.id).value["token_count"] == kept.token_count


def test_an_active_id_from_another_namespace_is_never_applied(memory, caplog):
    alices = memory.internalize("the code of the city is 1 2 3 .", namespace=("alice", "t-x")).id
    graph = build_loop(memory, internalize=False, steps=1)
    state = graph.invoke({"messages": [HumanMessage("go")], "active_adapters": [alices]}, config("mallory", "t-x"))
    assert state["messages"][-1].response_metadata["active_adapters"] == []  # answered by the base model
    assert alices in caplog.text and "skipped" in caplog.text
    with pytest.raises(NotFoundError):  # and no way round it by asking for the key directly
        memory.resident_keys(("mallory", "t-x"), [alices])


def test_without_state_adapters_the_model_uses_the_run_config(memory):
    memory.host.add("shared-skill", random_adapter(memory.host.model, seed=3))  # an app-wide adapter
    graph = build_loop(memory, internalize=False, steps=1)
    run = {"configurable": {"user_id": "dan", "thread_id": "t-cfg", "active_adapters": ["shared-skill"]}}
    state = graph.invoke({"messages": [HumanMessage("go")]}, run)
    assert state["messages"][-1].response_metadata["active_adapters"] == ["shared-skill"]
