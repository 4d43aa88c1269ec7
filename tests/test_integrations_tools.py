"""The memory tools: LangChain's standard tool tests, and every action through a real ToolNode graph."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_tests.unit_tests import ToolsUnitTests
from langgraph.store.memory import InMemoryStore
from test_integrations_support import (  # noqa: F401 (single_threaded_torch: autouse)
    DOC,
    build_memory,
    call_tool,
    config,
    single_threaded_torch,
    tool_graph,
)

from d2l_memory import NotFoundError
from integrations import (
    MEMORY_ID_KEY,
    adapters_namespace,
    create_skill_tool,
    forget_tool,
    internalize_tool,
    list_adapters_tool,
    memory_tools,
    swap_adapters_tool,
)


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    (root / "shared").mkdir()
    (root / "shared" / "notes.txt").write_text(DOC)
    (root / "shared" / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    return build_memory(root, files_root=root / "shared", max_active=3)


# --- LangChain standard tests, one class per tool ------------------------------------------------
class _Standard(ToolsUnitTests):
    make = staticmethod(internalize_tool)

    @property
    def tool_constructor(self) -> BaseTool:
        return self.make(self.memory)

    @pytest.fixture(autouse=True)
    def _memory(self, memory) -> None:
        self.memory = memory


class TestInternalizeToolStandard(_Standard):
    tool_invoke_params_example: ClassVar[dict[str, Any]] = {"text": DOC}


class TestCreateSkillToolStandard(_Standard):
    make = staticmethod(create_skill_tool)
    tool_invoke_params_example: ClassVar[dict[str, Any]] = {"description": "answer in one word"}


class TestSwapAdaptersToolStandard(_Standard):
    make = staticmethod(swap_adapters_tool)
    tool_invoke_params_example: ClassVar[dict[str, Any]] = {"activate": ["0f3a"], "query": "the code of the city"}


class TestListAdaptersToolStandard(_Standard):
    make = staticmethod(list_adapters_tool)
    tool_invoke_params_example: ClassVar[dict[str, Any]] = {"kind": "memory"}


class TestForgetToolStandard(_Standard):
    make = staticmethod(forget_tool)
    tool_invoke_params_example: ClassVar[dict[str, Any]] = {"ids": ["0f3a"]}


def test_the_namespace_is_never_a_tool_argument(memory):
    tools = memory_tools(memory)
    assert [tool.name for tool in tools] == ["internalize", "create_skill", "swap_adapters", "list_adapters", "forget"]
    for tool in tools:
        visible = set(tool.tool_call_schema.model_json_schema()["properties"])
        assert not visible & {"runtime", "user_id", "thread_id", "namespace"}, tool.name


# --- behaviour through a graph ---------------------------------------------------------------------
def test_internalize_text_file_and_earlier_tool_output(memory):
    store = InMemoryStore()
    graph = tool_graph(memory, store)
    alice = config("alice", "t-internalize")

    reply, state = call_tool(graph, alice, "internalize", text=DOC)
    memory_id = state["memory_ids"][0]
    assert reply.status == "success" and f"as memory {memory_id}" in reply.content and "chunk(s)" in reply.content
    assert state["active_adapters"] == [memory_id]
    assert memory.record(("alice", "t-internalize"), memory_id).extra["origin"] == "agent"
    assert store.get(adapters_namespace(("alice", "t-internalize")), memory_id).value["kind"] == "memory"

    reply, state = call_tool(graph, alice, "internalize", path="notes.txt", activate=False)
    assert reply.status == "success" and len(state["memory_ids"]) == 2 and state["active_adapters"] == [memory_id]

    # the output of an earlier tool call, by its id
    output = ToolMessage("2026-01-02 INFO user=w7 code=1234 " * 10, tool_call_id="call-fetch", name="fetch")
    graph.update_state(
        alice, {"messages": [AIMessage("", tool_calls=[{"name": "fetch", "args": {}, "id": "call-fetch"}]), output]}
    )
    reply, state = call_tool(graph, alice, "internalize", tool_call="call-fetch")
    fetched = state["memory_ids"][2]
    assert reply.status == "success" and memory.record(("alice", "t-internalize"), fetched).source == "tool:fetch"

    # an output the internalize node already replaced is not internalized twice
    folded = ToolMessage("receipt", tool_call_id="call-old", response_metadata={MEMORY_ID_KEY: fetched})
    graph.update_state(
        alice, {"messages": [AIMessage("", tool_calls=[{"name": "x", "args": {}, "id": "call-old"}]), folded]}
    )
    reply, state = call_tool(graph, alice, "internalize", tool_call="call-old")
    assert f"already memory {fetched}" in reply.content and len(state["memory_ids"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"text": ""}, "empty"),
        ({"text": "x" * 10_000_001}, "10.0 MB"),
        ({"text": "caf\udce9"}, "not valid UTF-8"),
        ({"path": "latin1.txt"}, "not UTF-8"),
        ({"path": "../../etc/passwd"}, "outside"),
        ({"path": "notes\x00.txt"}, "not a usable path"),
        ({"tool_call": "call-nope"}, "no earlier tool call"),
        ({}, "exactly one of text, path or tool_call"),
        ({"text": DOC, "path": "notes.txt"}, "exactly one of text, path or tool_call"),
    ],
)
def test_bad_input_is_a_tool_error_and_stores_nothing(memory, args, message):
    graph = tool_graph(memory)
    before = memory.records(("carol", "t-bad"))
    reply, state = call_tool(graph, config("carol", "t-bad"), "internalize", **args)
    assert reply.status == "error" and message in reply.content
    assert memory.records(("carol", "t-bad")) == before and not state.get("memory_ids")


def test_two_users_never_see_each_other(memory):
    graph = tool_graph(memory)
    alice, bob = config("alice", "t-alice"), config("bob", "t-bob")
    _, state = call_tool(graph, alice, "internalize", text=DOC)
    alices = state["memory_ids"][0]
    _, state = call_tool(graph, bob, "internalize", text=DOC)  # the same text: still a separate memory
    bobs = state["memory_ids"][0]
    assert alices != bobs

    reply, state = call_tool(graph, bob, "swap_adapters", activate=[alices])
    assert reply.status == "error" and "unknown adapter id" in reply.content
    assert state["active_adapters"] == [bobs]  # unchanged
    reply, _ = call_tool(graph, bob, "list_adapters")
    assert bobs in reply.content and alices not in reply.content
    reply, _ = call_tool(graph, bob, "swap_adapters", query="the code of the city", top_k=8)
    assert alices not in reply.content
    # Checkpoints are keyed by thread_id alone, so thread ids must not be shared between users; even
    # then, an id in state resolves only inside the run's own (user, thread) namespace.
    with pytest.raises(NotFoundError):
        memory.resident_keys(("bob", "t-alice"), [alices])
    assert memory.resident_keys(("alice", "t-alice"), [alices]) == [f"alice/t-alice/{alices}"]


def test_swap_by_id_and_query_within_the_limit(memory):
    graph = tool_graph(memory)
    dave = config("dave", "t-swap")
    ids = []
    for text in ("the code of w1 is 1 2 3 .", "w2 lives in the city .", "the colour of w3 .", "w4 likes code ."):
        _, state = call_tool(graph, dave, "internalize", text=text, activate=False)
        ids = state["memory_ids"]
    assert not state.get("active_adapters")

    reply, state = call_tool(graph, dave, "swap_adapters", activate=ids)
    assert state["active_adapters"] == ids[1:] and f"switched off to stay within 3: ['{ids[0]}']" in reply.content
    reply, state = call_tool(graph, dave, "swap_adapters", deactivate=[ids[1], ids[2]])
    assert state["active_adapters"] == [ids[3]]
    reply, state = call_tool(graph, dave, "swap_adapters", deactivate=[ids[0]])
    assert reply.status == "error" and "not active" in reply.content

    reply, state = call_tool(graph, dave, "swap_adapters", query="where does w2 live ?", top_k=1)
    assert state["active_adapters"] == [ids[3], ids[1]]
    reply, _ = call_tool(graph, dave, "swap_adapters", activate=["deadbeef0000"])
    assert reply.status == "error" and "unknown adapter id(s) ['deadbeef0000']" in reply.content
    reply, _ = call_tool(graph, dave, "swap_adapters", activate=["../../escape"])
    assert reply.status == "error" and "not allowed" in reply.content
    reply, _ = call_tool(graph, dave, "swap_adapters")
    assert reply.status == "error" and "give ids" in reply.content


def test_create_skill_and_list(memory):
    store = InMemoryStore()
    graph = tool_graph(memory, store)
    erin = config("erin", "t-skill")
    reply, state = call_tool(graph, erin, "create_skill", description="answer in one word")
    skill_id = state["active_adapters"][0]
    assert reply.content.startswith(f"skill {skill_id}: skill of rank 4")
    assert memory.record(("erin", "t-skill"), skill_id).kind == "skill"
    assert store.get(adapters_namespace(("erin", "t-skill")), skill_id).value["kind"] == "skill"
    reply, _ = call_tool(graph, erin, "list_adapters", kind="skill")
    assert f"{skill_id} skill" in reply.content and "(active)" in reply.content
    reply, _ = call_tool(graph, erin, "create_skill", description=" ")
    assert reply.status == "error" and "empty" in reply.content
    # a skill is an adapter like any other: the host can apply it
    keys = memory.resident_keys(("erin", "t-skill"), [skill_id])
    ids = torch.tensor([memory.host.tokenizer("the city").input_ids])
    assert not torch.allclose(memory.host.logits(ids, keys), memory.host.logits(ids))


def test_missing_user_is_a_tool_error(memory):
    reply, _ = call_tool(tool_graph(memory), {"configurable": {"thread_id": "t"}}, "list_adapters")
    assert reply.status == "error" and "no user_id" in reply.content


def test_skill_tool_needs_a_skill_maker(tmp_path):
    memory = build_memory(tmp_path)
    memory.skills = None
    assert [tool.name for tool in memory_tools(memory)] == ["internalize", "swap_adapters", "list_adapters", "forget"]
