"""Chat history that stays within a token budget by folding old messages into LoRA memory.

The newest messages stay verbatim; once they exceed ``max_tokens``, the oldest are internalized
as one memory and dropped from the verbatim list, down to ``keep_tokens`` (folding down to a
low-water mark, not just under the budget, means one hypernetwork pass per many messages
rather than one per message). The memories are the durable part: their ids are read back from
the store, so they survive the process, while the verbatim window lives in this object;
:meth:`~D2LChatMessageHistory.clear` forgets both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, ToolMessage

from d2l_memory.agent_memory import AgentMemory
from d2l_memory.errors import ConfigError
from integrations.tokens import TokenCounter, token_counter

HISTORY_ORIGIN = "chat_history"


class D2LChatMessageHistory(BaseChatMessageHistory):
    """Recent messages verbatim up to ``max_tokens``; older ones as memories in ``namespace``.

    Use the folded conversation by activating its memories on the model, e.g.
    ``model.invoke(history.messages, active_adapters=memory.resident_keys(ns, history.memory_ids[-4:]))``.
    """

    def __init__(
        self,
        memory: AgentMemory,
        namespace: Sequence[str],
        *,
        max_tokens: int = 1024,
        keep_tokens: int | None = None,
        count_tokens: TokenCounter | None = None,
    ) -> None:
        keep_tokens = max_tokens // 2 if keep_tokens is None else keep_tokens
        if not 0 <= keep_tokens <= max_tokens:
            raise ConfigError(f"need 0 <= keep_tokens <= max_tokens, got {keep_tokens} and {max_tokens}")
        self.memory = memory
        self.namespace = tuple(namespace)
        self.max_tokens = max_tokens
        self.keep_tokens = keep_tokens
        self.count_tokens = count_tokens or token_counter(memory.host)
        self._messages: list[BaseMessage] = []
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        with self._lock:
            return list(self._messages)

    @property
    def memory_ids(self) -> list[str]:
        """Ids of the memories older messages were folded into, oldest first."""
        records = self.memory.store.list(self.namespace, kind="memory", where={"origin": HISTORY_ORIGIN})
        return [record.id for record in records]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        with self._lock:
            self._messages.extend(messages)
            self._fold()

    def clear(self) -> None:
        """Forget the conversation: the verbatim messages and the memories older ones were folded into."""
        with self._lock:
            for memory_id in self.memory_ids:
                self.memory.forget(self.namespace, memory_id)
            self._messages = []

    def _fold(self) -> None:
        """Internalize the oldest messages until the rest fit in ``keep_tokens``.

        The cut never leaves a ToolMessage first, cut off from the call that asked for it. The
        memory is stored before the messages are dropped, so a failure loses nothing.
        """
        sizes = [self.count_tokens(message.text) for message in self._messages]
        total = sum(sizes)
        if total <= self.max_tokens:
            return
        cut = 0
        while cut < len(sizes) and total > self.keep_tokens:
            total -= sizes[cut]
            cut += 1
        while cut < len(self._messages) and isinstance(self._messages[cut], ToolMessage):
            cut += 1
        folded = self._messages[:cut]
        text = "\n".join(f"{message.type}: {message.text}" for message in folded)
        self.memory.internalize(
            text,
            namespace=self.namespace,
            source=f"chat history, {cut} messages",
            origin=HISTORY_ORIGIN,
        )
        self._messages = self._messages[cut:]
