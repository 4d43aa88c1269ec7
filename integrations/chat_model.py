"""A LangChain chat model over the adapter host: one base model, any set of adapters per call.

Which adapters a call uses comes, in this order, from the call's keyword argument
``active_adapters`` (``model.bind(active_adapters=...)``, agent middleware), from
``config["configurable"]["active_adapters"]``, or from the model's own ``active_adapters``.

Code names host keys: graph nodes and middleware translate a thread's adapter ids into keys with
:meth:`AgentMemory.resident_keys`, which checks them against the run's namespace. A run's config
is the caller's input, so it names adapter *ids*, which a model given ``memory=`` resolves within
the run's namespace (``user_id``/``thread_id``) only; without a memory it may name only keys of
adapters added to the host by hand, never a memory's namespaced key, so no config can switch on
another user's memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    LanguageModelInput,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.runtime import get_runtime
from pydantic import Field

from d2l_memory.agent_memory import AgentMemory
from d2l_memory.errors import ConfigError, D2LMemoryError
from d2l_memory.host import AdapterHost
from d2l_memory.refs import NAMESPACE_MARK
from integrations.context import ScopeError, namespace_from
from integrations.tool_calls import ParsedReply, parse_tool_calls, template_message

ADAPTERS_KEY = "active_adapters"

Adapters = list[str] | dict[str, float]
"""Resident adapter keys, or keys with a weight each."""

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


class D2LChatModel(BaseChatModel):
    """Chat with the host's base model and whichever adapters the call activates.

    Example:
        .. code-block:: python

            model = D2LChatModel(host=host, max_tokens=128)
            model.invoke("hi", config={"configurable": {"active_adapters": ["alice/t1/0f3a..."]}})
    """

    host: AdapterHost = Field(exclude=True)
    memory: AgentMemory | None = Field(
        default=None, exclude=True, description="resolves the adapter ids a run's config names"
    )
    max_tokens: int = Field(default=256, ge=1, description="most tokens to generate")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy decoding")
    stop: list[str] | None = None
    seed: int | None = Field(default=None, description="sampling seed (when temperature > 0)")
    active_adapters: Adapters = Field(default_factory=list, description="used when a call names none")
    streaming: bool = Field(default=False, description="make invoke stream (LangChain convention)")
    disable_streaming: bool | Literal["tool_calling"] = Field(
        default="tool_calling", description="with tools bound, stream() gives the whole reply as one chunk"
    )

    @property
    def _llm_type(self) -> str:
        return "d2l-memory"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.host.model_id,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            ADAPTERS_KEY: self.active_adapters,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="d2l_memory",
            ls_model_name=kwargs.get("model") or self.host.model_id,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Let the model call ``tools``: their schemas go through the base model's chat template,
        and the calls it writes come back as ``AIMessage.tool_calls`` (formats read: see
        :mod:`integrations.tool_calls`). The model must have been trained to call tools and its
        template must render them (e.g. Qwen or Llama 3.1+ instruct models); the embedded default
        was not, and is refused when called. ``tool_choice``: ``"auto"`` (default) lets the model
        choose, ``"none"`` shows it no tools; forcing a call is not supported (text generation
        cannot be made to pick one)."""
        if tool_choice not in (None, "auto", "none"):
            raise D2LMemoryError(
                f"tool_choice={tool_choice!r} is not supported: D2LChatModel can let the model choose"
                " ('auto') or show it no tools ('none'), not force a call"
            )
        schemas = [] if tool_choice == "none" else [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, **kwargs)

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        """Not supported: structured output needs a forced tool call or constrained decoding,
        and D2LChatModel does neither."""
        raise NotImplementedError(
            "D2LChatModel has no structured output: parse the reply yourself, or bind tools and let the model call one"
        )

    # --- the call's config is only visible here, so its adapters become a keyword argument ------
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_config_adapters(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_config_adapters(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **self._with_config_adapters(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **self._with_config_adapters(config, kwargs)):
            yield chunk

    # --- generation (async and async streaming run these in a worker thread, as LangChain does) -
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        result = self.host.generate(chat_messages(messages), tools=options.tools, **options.generate_kwargs())
        if options.tools:
            reply = parse_tool_calls(result.text, [tool["function"]["name"] for tool in options.tools])
        else:
            reply = ParsedReply(result.text)
        if reply.tool_calls:
            finish_reason = "tool_calls"
        elif result.stopped_by is None and result.completion_tokens >= options.max_new_tokens:
            finish_reason = "length"
        else:
            finish_reason = "stop"
        message = AIMessage(
            content=reply.content,
            tool_calls=reply.tool_calls,
            invalid_tool_calls=reply.invalid_tool_calls,
            usage_metadata=_usage(result.prompt_tokens, result.completion_tokens),
            response_metadata=self._response_metadata(options, finish_reason),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Yields text pieces, then a last chunk with usage (the completion re-tokenized: the host's
        stream reports text, not token counts). With tools bound, ``disable_streaming`` makes
        LangChain call :meth:`_generate` instead: a call can only be told from prose once complete."""
        options = self._options(stop, kwargs)
        if options.tools:
            raise D2LMemoryError("D2LChatModel cannot stream with tools bound: keep disable_streaming='tool_calling'")
        prompt = chat_messages(messages)
        text = ""
        for piece in self.host.stream(prompt, **options.generate_kwargs()):
            text += piece
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        prompt_tokens = int(self.host.encode_prompt(prompt).shape[1])
        last = AIMessageChunk(
            content="",
            usage_metadata=_usage(prompt_tokens, self.host.count_tokens(text) if text else 0),
            response_metadata=self._response_metadata(options, None),
            chunk_position="last",
        )
        yield ChatGenerationChunk(message=last)

    def _options(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> _Options:
        """This call's settings: its keyword arguments over the model's fields; unknown ones are refused."""
        extra = dict(kwargs)
        extra.pop("stream", None)  # LangChain's own switch between _generate and _stream
        options = _Options(
            adapters=extra.pop(ADAPTERS_KEY, self.active_adapters),
            max_new_tokens=extra.pop("max_tokens", self.max_tokens),
            temperature=extra.pop("temperature", self.temperature),
            seed=extra.pop("seed", self.seed),
            stop=list(stop if stop is not None else self.stop or []),
            tools=list(extra.pop("tools", None) or []),
        )
        if extra:
            raise ConfigError(f"D2LChatModel got unexpected keyword arguments {sorted(extra)}")
        return options

    def _with_config_adapters(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` plus the adapters the config names, as host keys, unless the call names its own.

        ``ensure_config`` also sees the config of an enclosing LangGraph node, so a model invoked
        inside a graph picks up the graph's ``configurable`` without being passed it.
        """
        if ADAPTERS_KEY in kwargs:
            return kwargs
        config = ensure_config(config)
        configurable = config.get("configurable") or {}
        named = configurable.get(ADAPTERS_KEY)
        if named is None:
            return kwargs
        ids = list(named)
        if self.memory is not None:
            keys = self.memory.resident_keys(namespace_from(config, _run_context()), ids)
        elif any(NAMESPACE_MARK in i for i in ids):  # a bare adapter id never holds one
            raise ScopeError(
                f"the run's config names {[i for i in ids if NAMESPACE_MARK in i]}, keys of an agent memory's"
                " namespaces: name adapter ids, and give D2LChatModel(memory=...) to resolve them in the run's"
                " namespace"
            )
        else:
            keys = ids
        adapters = dict(zip(keys, named.values())) if isinstance(named, Mapping) else keys
        return {**kwargs, ADAPTERS_KEY: adapters}

    def _response_metadata(self, options: _Options, finish_reason: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "model_name": self.host.model_id,
            ADAPTERS_KEY: list(options.adapters),
        }
        if finish_reason is not None:
            metadata["finish_reason"] = finish_reason
        return metadata


@dataclass(frozen=True)
class _Options:
    adapters: Adapters
    max_new_tokens: int
    temperature: float
    seed: int | None
    stop: list[str]
    tools: list[dict[str, Any]]

    def generate_kwargs(self) -> dict[str, Any]:
        return {
            "adapters": self.adapters or None,
            "max_new_tokens": self.max_new_tokens,
            "stop": self.stop,
            "temperature": self.temperature,
            "seed": self.seed,
        }


def _run_context() -> Any:
    """The LangGraph run context of the graph this call runs in (None outside a graph)."""
    try:
        runtime = get_runtime()
    except RuntimeError:  # not inside a runnable
        return None
    return getattr(runtime, "context", None)


def chat_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> ``{"role", "content"}`` dicts for the host's chat template (text only),
    with the tool calls of AI messages and the call ids of tool messages."""
    rendered = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else _ROLES.get(message.type)
        if role is None:
            raise D2LMemoryError(f"D2LChatModel cannot render a {message.type!r} message")
        rendered.append(template_message(message, role, _text(message)))
    return rendered


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(block["text"])
        else:
            raise D2LMemoryError(f"D2LChatModel reads text only; got a {block.get('type')!r} content block")
    return "".join(parts)


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=prompt_tokens,
        output_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
