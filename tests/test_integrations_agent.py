"""D2LMemoryMiddleware in agents built with langchain.agents.create_agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from pydantic import Field
from test_integrations_support import build_memory, config, single_threaded_torch  # noqa: F401 (autouse)

from d2l_lab.world.tool_outputs import make_log_document
from d2l_memory import D2LMemoryError
from integrations import (
    MEMORY_ID_KEY,
    D2LChatModel,
    D2LMemoryMiddleware,
    adapters_namespace,
    thread_adapters,
)

THRESHOLD = 64


@tool
def read_logs(day: int) -> str:
    """Read one day of service logs."""
    return make_log_document(day, n_facts=16).text


class ScriptedModel(BaseChatModel):
    """Stands in for a tool-calling model: replies from a script and records every prompt it gets."""

    replies: list[AIMessage]
    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.prompts.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=self.replies[len(self.prompts) - 1])])

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def calls(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call-{name}-{len(str(args))}-{args}"[:40]}])


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    return build_memory(tmp_path_factory.mktemp("agent"))


def test_agent_loop_internalizes_tool_outputs_and_surfaces_tool_errors(memory):
    foreign = memory.internalize("the code of the city is 9 9 9 .", namespace=("mallory", "t-m")).id
    script = [calls("read_logs", day=day) for day in range(3)]
    script += [calls("swap_adapters", activate=[foreign]), calls("list_adapters"), AIMessage("done")]
    model = ScriptedModel(replies=script)
    store = InMemoryStore()
    agent = create_agent(
        model,
        tools=[read_logs],
        middleware=[D2LMemoryMiddleware(memory, threshold_tokens=THRESHOLD, activate=False, tools=True)],
        checkpointer=InMemorySaver(),
        store=store,
    )
    state = agent.invoke({"messages": [HumanMessage("summarise the logs")]}, config("alice", "t-agent"))

    assert state["messages"][-1].content == "done" and len(model.prompts) == len(script)
    logs = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "read_logs"]
    ids = state["memory_ids"]
    assert len(ids) == 3 and [m.response_metadata[MEMORY_ID_KEY] for m in logs] == ids
    # the model never saw a raw log after it was read: every prompt holds receipts only
    for prompt in model.prompts[1:]:
        outputs = [m for m in prompt if isinstance(m, ToolMessage) and m.name == "read_logs"]
        assert outputs and all(m.content.startswith("internalized ") for m in outputs)
    assert sorted(i.key for i in store.search(adapters_namespace(("alice", "t-agent")))) == sorted(ids)
    swap, listing = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.name != "read_logs"]
    assert swap.status == "error" and "unknown adapter id" in swap.content
    assert listing.status == "success" and all(i in listing.content for i in ids) and foreign not in listing.content


def test_agent_with_the_hosted_model_runs_with_the_new_memory(memory):
    model = D2LChatModel(host=memory.host, max_tokens=4)
    agent = create_agent(
        model,
        middleware=[D2LMemoryMiddleware(memory, threshold_tokens=THRESHOLD)],
        checkpointer=InMemorySaver(),
        store=InMemoryStore(),
    )
    logs = read_logs.invoke({"day": 1})
    history = [
        HumanMessage("what happened ?"),
        AIMessage("", tool_calls=[{"name": "read_logs", "args": {"day": 1}, "id": "call-1"}]),
        ToolMessage(logs, tool_call_id="call-1", name="read_logs"),
    ]
    state = asyncio.run(agent.ainvoke({"messages": history}, config("bob", "t-hosted")))  # async hooks too
    (memory_id,) = state["memory_ids"]
    assert state["active_adapters"] == [memory_id]
    reply = state["messages"][-1]
    assert reply.response_metadata["active_adapters"] == [f"bob/t-hosted/{memory_id}"]
    assert reply.usage_metadata["input_tokens"] < memory.host.count_tokens(logs) / 2


def test_active_adapters_with_a_model_off_the_host_is_a_clear_error(memory):
    memory_id = memory.internalize("the code of the city is 1 2 3 .", namespace=("carol", "t-off")).id
    agent = create_agent(ScriptedModel(replies=[AIMessage("hi")]), middleware=[D2LMemoryMiddleware(memory)])
    with pytest.raises(D2LMemoryError, match="not a D2LChatModel"):
        agent.invoke({"messages": [HumanMessage("hi")], "active_adapters": [memory_id]}, config("carol", "t-off"))


def test_a_tool_calling_planner_switches_adapters_on_for_the_hosted_model(memory):
    script = [calls("read_logs", day=4), calls("swap_adapters", query="service logs"), AIMessage("done")]
    planner = ScriptedModel(replies=script)
    agent = create_agent(
        planner,
        tools=[read_logs],
        middleware=[D2LMemoryMiddleware(memory, threshold_tokens=THRESHOLD, activate=False, tools=True)],
        checkpointer=InMemorySaver(),
        store=InMemoryStore(),
    )
    run = config("dave", "t-planner")
    state = agent.invoke({"messages": [HumanMessage("read the logs")]}, run)

    assert state["messages"][-1].content == "done" and len(planner.prompts) == len(script)
    swap = next(m for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "swap_adapters")
    assert swap.status == "success" and state["active_adapters"] == state["memory_ids"]
    answer = D2LChatModel(host=memory.host, max_tokens=2).invoke(
        [HumanMessage("what happened ?")], active_adapters=thread_adapters(memory, state, run, None)
    )
    assert answer.response_metadata["active_adapters"] == [f"dave/t-planner/{state['memory_ids'][0]}"]
