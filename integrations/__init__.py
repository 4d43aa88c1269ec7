"""LangChain and LangGraph integration: parametric memory as tools, a chat model, graph nodes,
agent middleware, a BaseStore bridge and a chat history.

Start with an :class:`AgentMemory` (a host, a store, an internalizer); every other piece takes it.
"""

from d2l_memory.agent_memory import AgentMemory, DocumentError, SkillMaker, check_document
from d2l_memory.refs import shared_namespace
from integrations.chat_model import D2LChatModel, chat_messages
from integrations.context import ScopeError, namespace_from
from integrations.defaults import agent_memory, default_agent_memory
from integrations.graph import (
    KEEP_KEY,
    MEMORY_ID_KEY,
    AdapterState,
    MemoryState,
    adapter_swap,
    internalize_node,
    internalize_tool_outputs,
    merge_ids,
    model_node,
    swap_adapters,
    thread_adapters,
)
from integrations.history import D2LChatMessageHistory
from integrations.middleware import D2LMemoryMiddleware, MemoryAgentState
from integrations.skills import TextToLoRASkills
from integrations.store import adapters_namespace, forget_record, mirror_namespace, mirror_record
from integrations.tokens import TokenCounter, estimate_tokens, token_counter
from integrations.tool_calls import ParsedReply, parse_tool_calls
from integrations.tools import (
    create_skill_tool,
    forget_tool,
    internalize_tool,
    list_adapters_tool,
    memory_tools,
    swap_adapters_tool,
)

__all__ = [
    "KEEP_KEY",
    "MEMORY_ID_KEY",
    "AdapterState",
    "AgentMemory",
    "D2LChatMessageHistory",
    "D2LChatModel",
    "D2LMemoryMiddleware",
    "DocumentError",
    "MemoryAgentState",
    "MemoryState",
    "ParsedReply",
    "ScopeError",
    "SkillMaker",
    "TextToLoRASkills",
    "TokenCounter",
    "adapter_swap",
    "adapters_namespace",
    "agent_memory",
    "chat_messages",
    "check_document",
    "create_skill_tool",
    "default_agent_memory",
    "estimate_tokens",
    "forget_record",
    "forget_tool",
    "internalize_node",
    "internalize_tool",
    "internalize_tool_outputs",
    "list_adapters_tool",
    "memory_tools",
    "merge_ids",
    "mirror_namespace",
    "mirror_record",
    "model_node",
    "namespace_from",
    "parse_tool_calls",
    "shared_namespace",
    "swap_adapters",
    "swap_adapters_tool",
    "thread_adapters",
    "token_counter",
]
