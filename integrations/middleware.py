"""Agent middleware: parametric memory for agents built with ``langchain.agents.create_agent``.

Before each model call it folds oversized tool outputs into memories (as
:func:`~integrations.graph.internalize_node` does in a hand-built graph); around the call it
applies the thread's active adapters to a :class:`D2LChatModel`. With ``tools=True`` it also
registers the memory tools, for agents whose model can call tools: that planner is not the hosted
model, so the adapters its tool calls switch on stay in the agent's state, for a
:class:`D2LChatModel` to answer with (``thread_adapters`` reads them), and the planner runs as is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
)
from langgraph.config import get_config
from langgraph.runtime import Runtime

from d2l_memory.agent_memory import AgentMemory
from d2l_memory.errors import D2LMemoryError
from integrations.chat_model import ADAPTERS_KEY, D2LChatModel
from integrations.context import owner_update, thread_namespace
from integrations.graph import AdapterState, internalize_tool_outputs, thread_adapters
from integrations.tokens import TokenCounter, token_counter
from integrations.tools import memory_tools


class MemoryAgentState(AgentState, AdapterState):
    """The agent's state with the adapter keys (``active_adapters``, ``memory_ids``)."""


class D2LMemoryMiddleware(AgentMiddleware[MemoryAgentState, Any]):
    """Internalize tool outputs over ``threshold_tokens``; run the model with the active adapters."""

    state_schema = MemoryAgentState

    def __init__(
        self,
        memory: AgentMemory,
        *,
        threshold_tokens: int = 256,
        count_tokens: TokenCounter | None = None,
        activate: bool = True,
        tools: bool = False,
    ) -> None:
        super().__init__()
        self.memory = memory
        self.threshold_tokens = threshold_tokens
        self.count_tokens = count_tokens or token_counter(memory.host)
        self.activate = activate
        self.tools = memory_tools(memory) if tools else []

    def before_model(self, state: MemoryAgentState, runtime: Runtime) -> dict[str, Any] | None:
        return internalize_tool_outputs(
            self.memory,
            state,
            get_config(),
            runtime,
            threshold_tokens=self.threshold_tokens,
            count_tokens=self.count_tokens,
            activate=self.activate,
        )

    def after_model(self, state: MemoryAgentState, runtime: Runtime) -> dict[str, Any] | None:
        """Record whose thread this is once it uses memory (see ``integrations.context``)."""
        if not state.get(ADAPTERS_KEY):
            return None
        return owner_update(thread_namespace(state, get_config(), runtime.context))

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        return handler(self._with_adapters(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        return await handler(self._with_adapters(request))

    def _with_adapters(self, request: ModelRequest) -> ModelRequest:
        """The request with the thread's adapters bound, or unchanged when none are active."""
        if self.tools and not isinstance(request.model, D2LChatModel):
            return request  # a tool-calling planner: the adapters are not meant for it
        if not request.state.get(ADAPTERS_KEY):  # none named: the model's own default applies
            return request
        keys = thread_adapters(self.memory, request.state, get_config(), request.runtime)  # [] if all forgotten
        if not (isinstance(request.model, D2LChatModel) and request.model.host is self.memory.host):
            if not keys:
                return request
            raise D2LMemoryError(
                f"adapters {keys} are active, but the agent's model is not a D2LChatModel"
                " on this memory's host, so they would be ignored"
            )
        return request.override(model_settings={**request.model_settings, ADAPTERS_KEY: keys})
