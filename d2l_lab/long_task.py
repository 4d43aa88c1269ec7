"""A long-horizon agent run: a LangGraph agent reads a hundred pages of service logs, keeping
its prompt small by folding each page into LoRA memory, learns a skill from a description,
and answers questions about early and late pages from memory along the way.

This is the main job (``d2l-memory demo``) and the agent benchmark (``benchmarks.agent``). The
agent's decisions are scripted (:func:`plan_actions`): the embedded 5M-parameter model answers
questions but cannot choose tools, so a fixed policy stands in for a tool-calling model, and
everything else is the real machinery: a :class:`~langgraph.graph.StateGraph` with a
checkpointer and a store, ``ToolNode`` over our tools, :func:`~integrations.graph.internalize_node`,
the ``swap_adapters`` and ``create_skill`` tools, and :class:`~integrations.chat_model.D2LChatModel`.

What "prompt" means here: at every agent step, the messages a tool-calling model would be sent
(:func:`policy_prompt`). With memory, every tool output is a one-line receipt and the prompt is
the whole conversation of receipts and calls (or, with ``prompt_budget``, its newest messages
within that many tokens: the receipts are also in graph state and the outputs in the store);
the prompt-growing baseline (``keep_outputs=True``, no memory, no memory tools) sends every
message, outputs included. Questions go to the model on their own, with the memory the agent
switched on for them.
"""

from __future__ import annotations

import operator
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage, trim_messages
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from d2l_lab.formats import task_messages
from d2l_lab.world import QA, FactDocument, make_log_document, task_family
from d2l_memory.agent_memory import AgentMemory
from d2l_memory.errors import D2LMemoryError
from d2l_memory.refs import AdapterRef
from integrations.chat_model import ADAPTERS_KEY, D2LChatModel
from integrations.graph import MEMORY_ID_KEY, MemoryState, internalize_node, thread_adapters
from integrations.tokens import TokenCounter
from integrations.tools import create_skill_tool, swap_adapters_tool

TASK = "Read the service logs page by page and answer questions about the users in them."
MAX_ANSWER_TOKENS = 24  # skill outputs are up to 12 words; digits are one token each


def task_prompt(query: str) -> str:
    """A skill input as the embedded default's task format shows it (no description, no examples)."""
    return task_messages(None, (), query)[0]["content"]


class LongTaskSettings(BaseModel):
    """The shape of the run: how much the agent reads, and what it is asked."""

    pages: int = Field(100, ge=1, description="tool calls, each returning one page of logs")
    facts_per_page: int = Field(4, ge=1, description="user facts hidden among each page's log lines")
    noise_lines: int = Field(90, ge=0, description="other log lines per page (about 28 tokens each)")
    question_every: int = Field(
        10,
        ge=1,
        description="after this many pages, ask about an early and the latest page",
    )
    skill_family: str = Field("reverse_words", description="the task the agent learns a skill for, halfway")
    skill_queries: int = Field(5, ge=0, description="inputs the new skill is applied to (0: no skill is learnt)")
    prompt_budget: int | None = Field(
        None, ge=64, description="keep only the newest messages within this many tokens (None: the whole conversation)"
    )
    threshold_tokens: int = Field(256, ge=1, description="tool outputs above this are internalized")
    keep_outputs: bool = Field(False, description="the prompt-growing baseline: no memory, every output stays")
    seed: int = 0


# --- the world the agent works in ------------------------------------------------------------
def log_pages(settings: LongTaskSettings) -> list[FactDocument]:
    """The pages ``read_logs`` returns, the same for every run with these settings."""
    return [
        make_log_document(
            random.Random(f"{settings.seed}-page-{page}"),
            settings.facts_per_page,
            settings.noise_lines,
        )
        for page in range(settings.pages)
    ]


def answerable(pages: Sequence[FactDocument]) -> list[list[QA]]:
    """Per page, its questions about users named on no other page.

    Names are drawn from a pool, so a user may appear on several pages; a question about such a
    user has no single right page to recall (or to route to), so it is never asked.
    """
    seen = Counter(entity for page in pages for entity in {fact.entity for fact in page.facts})
    return [[qa for qa in page.questions if seen[qa.fact.entity] == 1] for page in pages]


ActionKind = Literal["read", "ask", "clear", "learn", "apply"]


@dataclass(frozen=True)
class Action:
    """One agent step. ``prompt``/``gold``: the question or skill input and its answer;
    ``about``: what the question tests ("early", "late" or "skill")."""

    kind: ActionKind
    page: int = -1
    prompt: str = ""
    gold: str = ""
    about: str = ""


def plan_actions(settings: LongTaskSettings, pages: Sequence[FactDocument]) -> list[Action]:
    """The scripted policy: read every page; every ``question_every`` pages ask one question about
    one of the first pages and one about the page just read; halfway, switch every adapter off,
    learn a skill from a held-out wording of a trained task (a description the hypernetwork never
    saw), apply it, and switch it off again."""
    questions = answerable(pages)
    rng = random.Random(f"{settings.seed}-questions")
    early_pages = [p for p in range(min(settings.question_every, len(pages))) if questions[p]]
    family = task_family(settings.skill_family)
    actions: list[Action] = []
    for page in range(len(pages)):
        actions.append(Action("read", page))
        done = page + 1
        if done % settings.question_every == 0:
            checkpoint = done // settings.question_every - 1
            for about, asked in (
                (
                    "early",
                    early_pages[checkpoint % len(early_pages)] if early_pages else None,
                ),
                ("late", page),
            ):
                if asked is not None and questions[asked]:
                    qa = rng.choice(questions[asked])
                    actions.append(Action("ask", asked, qa.question, qa.answer, about))
        if done == max(1, len(pages) // 2) and settings.skill_queries:
            actions += [
                Action("clear"),
                Action("learn", prompt=family.heldout_descriptions[0]),
            ]
            for _ in range(settings.skill_queries):
                query, output = family.make_example(rng)
                actions.append(Action("apply", prompt=query, gold=output.strip(), about="skill"))
            actions.append(Action("clear"))
    return actions


def read_logs_tool(pages: Sequence[FactDocument]) -> BaseTool:
    """The environment's tool: one page of logs per call."""

    @tool
    def read_logs(page: int) -> str:
        """Read one page of the service logs (pages are numbered from 0)."""
        if not 0 <= page < len(pages):
            raise ValueError(f"there are pages 0 to {len(pages) - 1}")
        return pages[page].text

    return read_logs


# --- the graph -------------------------------------------------------------------------------
class LongTaskState(MemoryState):
    step: NotRequired[Annotated[int, operator.add]]  # actions taken
    pending: NotRequired[int | None]  # the action whose answer the model owes
    log: NotRequired[Annotated[list[dict[str, Any]], operator.add]]  # one record per agent step and answer


class MessageTokens:
    """Token counts of messages, each message counted once (a prompt is re-counted every step)."""

    def __init__(self, count: TokenCounter) -> None:
        self.count = count
        self._cache: dict[tuple[str | None, int], int] = {}

    def __call__(self, messages: Sequence[AnyMessage]) -> int:
        return sum(self.one(m) for m in messages)

    def one(self, message: AnyMessage) -> int:
        text = message.text or ""
        if isinstance(message, AIMessage):
            text += " ".join(f"{c['name']}({c['args']})" for c in message.tool_calls)
        key = (message.id, hash(text))
        if message.id is None or key not in self._cache:
            self._cache[key] = self.count(text) if text else 0
        return self._cache[key]


def policy_prompt(messages: Sequence[AnyMessage], settings: LongTaskSettings, count: MessageTokens) -> list[AnyMessage]:
    """What a tool-calling model would be sent: the whole conversation (always, for the baseline),
    or the task and the newest messages within ``prompt_budget``."""
    if settings.prompt_budget is None or settings.keep_outputs:
        return list(messages)
    return trim_messages(
        messages,
        max_tokens=settings.prompt_budget,
        token_counter=count,
        strategy="last",
        include_system=True,
        start_on="ai",  # never a ToolMessage without the call it answers
    )


def _tool_call(action: Action, state: dict[str, Any], step: int, settings: LongTaskSettings) -> dict[str, Any] | None:
    """The tool call that carries out ``action``; None when there is nothing to do (applying a
    skill, or any memory action of the baseline, which has no memory)."""
    call_id = f"call-{step}"
    if action.kind == "read":
        return {"name": "read_logs", "args": {"page": action.page}, "id": call_id}
    if action.kind == "apply" or settings.keep_outputs:
        return None
    if action.kind == "learn":
        return {
            "name": "create_skill",
            "args": {"description": action.prompt},
            "id": call_id,
        }
    active = list(state.get(ADAPTERS_KEY) or [])
    if action.kind == "ask":  # switch on only the memory the question is about
        return {
            "name": "swap_adapters",
            "args": {"query": action.prompt, "top_k": 1, "deactivate": active},
            "id": call_id,
        }
    return {"name": "swap_adapters", "args": {"deactivate": active}, "id": call_id} if active else None  # clear


def build_long_task(
    memory: AgentMemory,
    model: D2LChatModel,
    settings: LongTaskSettings,
    pages: Sequence[FactDocument],
    actions: Sequence[Action],
) -> CompiledStateGraph:
    """agent -> tools -> [internalize] -> agent | answer, with a checkpointer and a store."""
    if memory.skills is None and not settings.keep_outputs and any(a.kind == "learn" for a in actions):
        raise D2LMemoryError("the plan learns a skill but the memory has no skill maker: set skill_queries=0")
    count = MessageTokens(memory.host.count_tokens)
    tools: list[BaseTool] = [read_logs_tool(pages), swap_adapters_tool(memory)]
    if memory.skills is not None:
        tools.append(create_skill_tool(memory))

    def agent(state: dict[str, Any]) -> dict[str, Any]:
        step = state.get("step", 0)
        record = {
            "step": step,
            "node": "agent",
            "prompt_tokens": count(policy_prompt(state["messages"], settings, count)),
        }
        if step >= len(actions):
            return {"log": [record], "pending": None}
        action = actions[step]
        update: dict[str, Any] = {"step": 1, "log": [record | {"action": action.kind}]}
        update["pending"] = step if action.kind in ("ask", "apply") else None
        call = _tool_call(action, state, step, settings)
        if call is not None:
            update["messages"] = [AIMessage("", tool_calls=[call])]
        return update

    def answer(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        action = actions[state["pending"]]
        prompt = action.prompt if action.kind == "ask" else task_prompt(action.prompt)
        record = {
            "step": state["pending"],
            "node": "answer",
            "about": action.about,
            "gold": action.gold,
            "page": action.page,
        }
        if settings.keep_outputs:  # the baseline would have to read everything; only its size is measured
            tokens = count([*state["messages"], HumanMessage(prompt)])
            return {"pending": None, "log": [record | {"prompt_tokens": tokens}]}
        # An ask's swap_adapters call just ran; if it failed, what is active is stale: answer without.
        last = state["messages"][-1]
        failed = action.kind == "ask" and isinstance(last, ToolMessage) and last.status == "error"
        active = [] if failed else list(state.get(ADAPTERS_KEY) or [])
        keys = thread_adapters(memory, {ADAPTERS_KEY: active}, config, runtime)
        reply = model.invoke([HumanMessage(prompt)], config, **{ADAPTERS_KEY: keys})
        tokens = reply.usage_metadata["input_tokens"] if reply.usage_metadata else 0
        reply_record = {"reply": reply.text.strip(), "prompt_tokens": tokens, "adapters": active}
        if failed:
            reply_record["tool_error"] = last.text
        return {"pending": None, "log": [record | reply_record]}

    def after_agent(state: dict[str, Any]) -> str:
        last = state["messages"][-1]
        if isinstance(last, AIMessage) and last.tool_calls:  # only ever unanswered right after the agent
            return "tools"
        if state.get("pending") is not None:  # nothing to call first: answer now
            return "answer"
        return "agent" if state.get("step", 0) < len(actions) else END

    builder = StateGraph(LongTaskState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_node("answer", answer)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", after_agent, ["tools", "answer", "agent", END])
    after_tools = "tools"
    if not settings.keep_outputs:
        builder.add_node(
            "internalize",
            internalize_node(memory, threshold_tokens=settings.threshold_tokens, activate=False),
        )
        builder.add_edge("tools", "internalize")
        after_tools = "internalize"
    builder.add_conditional_edges(
        after_tools,
        lambda s: "answer" if s.get("pending") is not None else "agent",
        ["answer", "agent"],
    )
    builder.add_edge("answer", "agent")
    return builder.compile(checkpointer=InMemorySaver(), store=InMemoryStore())


# --- running it ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LongTaskResult:
    """What a run did: the per-step log (prompt sizes, answers), its memories and its wall time."""

    settings: LongTaskSettings
    actions: list[Action]
    log: list[dict[str, Any]]
    seconds: float
    memory_bytes: int
    memory_tokens: int  # tokens internalized
    internalize_seconds: float
    memories: int
    page_memories: dict[int, str]  # the memory each page was internalized into

    @property
    def agent_prompt_tokens(self) -> list[int]:
        """The policy prompt at each agent step, in order."""
        return [r["prompt_tokens"] for r in self.log if r["node"] == "agent"]

    @property
    def max_prompt_tokens(self) -> int:
        """The largest prompt of the run: the agent's, or a question's."""
        return max(r["prompt_tokens"] for r in self.log)

    def answers(self, about: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.log if r["node"] == "answer" and (about is None or r["about"] == about)]

    def accuracy(self, about: str | None = None) -> float | None:
        """Exact-match accuracy of the model's answers (``about``: "early", "late", "skill", or None
        for all questions about pages); None when nothing of the kind was asked."""
        scored = [r for r in self.answers(about) if "reply" in r and (about is not None or r["about"] != "skill")]
        return exact_match(scored)

    @property
    def routing_accuracy(self) -> float | None:
        """The share of questions whose switched-on memory is the one of the page they are about."""
        asked = [r for r in self.answers() if r["about"] in ("early", "late")]
        right = [[AdapterRef.parse(a).id for a in r["adapters"]] == [self.page_memories.get(r["page"])] for r in asked]
        return sum(right) / len(right) if right else None

    @property
    def tool_errors(self) -> int:
        """Questions answered after the memory tool call before them failed."""
        return sum("tool_error" in r for r in self.answers())


def exact_match(rows: Sequence[dict[str, Any]]) -> float | None:
    """The share of ``rows`` whose ``reply`` equals their ``gold``; None for no rows."""
    return sum(r["reply"] == r["gold"] for r in rows) / len(rows) if rows else None


def run_long_task(
    memory: AgentMemory,
    model: D2LChatModel,
    settings: LongTaskSettings,
    *,
    user: str = "demo-user",
    thread: str = "long-task",
    progress: bool = True,
) -> LongTaskResult:
    """Run the agent through every action of :func:`plan_actions` in one LangGraph thread."""
    pages = log_pages(settings)
    actions = plan_actions(settings, pages)
    graph = build_long_task(memory, model, settings, pages, actions)
    config: RunnableConfig = {
        "configurable": {"user_id": user, "thread_id": thread},
        "recursion_limit": 6 * len(actions) + 10,
    }
    start = {
        "messages": [
            SystemMessage(TASK),
            HumanMessage(f"There are {len(pages)} pages of logs. Begin."),
        ]
    }
    label = "prompt-growing baseline" if settings.keep_outputs else "agent with LoRA memory"
    started = time.perf_counter()
    with tqdm(total=len(actions), desc=label, unit="step", disable=not progress) as bar:
        for update in _updates(graph, start, config):
            bar.update(sum(r["node"] == "agent" and "action" in r for r in update.get("log", [])))
    seconds = time.perf_counter() - started
    state = graph.get_state(config).values
    records = [memory.record((user, thread), i) for i in state.get("memory_ids", [])]  # this run's, not the store's
    return LongTaskResult(
        settings=settings,
        actions=actions,
        log=state.get("log", []),
        seconds=seconds,
        memory_bytes=sum(r.nbytes for r in records),
        memory_tokens=sum(r.token_count for r in records),
        internalize_seconds=sum(r.extra.get("seconds", 0.0) for r in records),
        memories=len(records),
        page_memories=_page_memories(state["messages"]),
    )


def _page_memories(messages: Sequence[AnyMessage]) -> dict[int, str]:
    """Page -> memory id, from the read_logs calls and the receipts that replaced their outputs."""
    pages = {
        c["id"]: c["args"]["page"]
        for m in messages
        if isinstance(m, AIMessage)
        for c in m.tool_calls
        if c["name"] == "read_logs"
    }
    return {
        pages[m.tool_call_id]: m.response_metadata[MEMORY_ID_KEY]
        for m in messages
        if isinstance(m, ToolMessage) and m.name == "read_logs" and MEMORY_ID_KEY in m.response_metadata
    }


def _updates(graph: CompiledStateGraph, start: dict[str, Any], config: RunnableConfig) -> Iterator[dict[str, Any]]:
    """Each node's state update, as the graph runs."""
    for chunk in graph.stream(start, config, stream_mode="updates"):
        for update in chunk.values():
            if isinstance(update, dict):
                yield update


def oracle_answers(
    memory: AgentMemory,
    settings: LongTaskSettings,
    result: LongTaskResult,
    *,
    window_tokens: int = 448,
) -> list[dict[str, Any]]:
    """The run's questions answered by reading the page they are about, in the prompt.

    A page (~2,600 tokens) is longer than the embedded default's 512-token window, so the prompt
    holds only the lines around the fact's own line, up to ``window_tokens``: reading at its best
    (the model never has to find the fact), a reference for memory rather than a strict bound.
    """
    pages = log_pages(settings)
    count = memory.host.count_tokens
    replies = []
    for record in result.answers():
        if record["about"] not in ("early", "late"):
            continue
        action = result.actions[record["step"]]
        lines = pages[action.page].text.splitlines()
        entity = next(qa.fact.entity for qa in pages[action.page].questions if qa.question == action.prompt)
        center = next(i for i, line in enumerate(lines) if f"user={entity} " in line and action.gold in line)
        low, high = center, center + 1
        while (low > 0 or high < len(lines)) and count("\n".join(lines[max(0, low - 1) : high + 1])) <= window_tokens:
            low, high = max(0, low - 1), min(len(lines), high + 1)
        prompt = [
            {
                "role": "user",
                "content": "\n".join(lines[low:high]) + "\n\n" + action.prompt,
            }
        ]
        reply = memory.host.generate(prompt, max_new_tokens=MAX_ANSWER_TOKENS).text.strip()
        replies.append(
            {
                "about": record["about"],
                "gold": action.gold,
                "reply": reply,
                "prompt_tokens": count(prompt[0]["content"]),
            }
        )
    return replies


def summarize(
    ours: LongTaskResult,
    baseline: LongTaskResult,
    oracle: Sequence[dict[str, Any]],
    skill_base: Sequence[str],
) -> dict[str, Any]:
    """The figures of a run next to the prompt-growing baseline and the reading oracle.

    ``skill_base``: the base model's own replies to the skill inputs (no skill), for comparison.
    """
    skill = ours.answers("skill")
    steps = len(ours.actions)
    return {
        "steps": steps,
        "pages": ours.settings.pages,
        "question_every": ours.settings.question_every,
        "questions": len(ours.answers()) - len(skill),
        "prompt_budget": ours.settings.prompt_budget,
        "max_prompt_tokens": ours.max_prompt_tokens,
        "baseline_max_prompt_tokens": baseline.max_prompt_tokens,
        "prompt_ratio": ours.max_prompt_tokens / max(1, baseline.max_prompt_tokens),
        "accuracy": ours.accuracy(),
        "accuracy_early": ours.accuracy("early"),
        "accuracy_late": ours.accuracy("late"),
        "routing_accuracy": ours.routing_accuracy,
        "tool_errors": ours.tool_errors,
        "oracle_in_context_accuracy": exact_match(oracle),
        "oracle_early": exact_match([r for r in oracle if r["about"] == "early"]),
        "oracle_late": exact_match([r for r in oracle if r["about"] == "late"]),
        "skill_queries": len(skill),
        "skill_accuracy": ours.accuracy("skill"),
        "skill_base_accuracy": exact_match([r | {"reply": b} for b, r in zip(skill_base, skill)]),
        "tokens_internalized": ours.memory_tokens,
        "memories": ours.memories,
        "internalize_seconds": ours.internalize_seconds,
        "internalize_tokens_per_second": ours.memory_tokens / max(ours.internalize_seconds, 1e-9),
        "memory_bytes": ours.memory_bytes,
        "seconds": ours.seconds,
        "seconds_per_step": ours.seconds / max(1, steps),
        "prompt_tokens_per_step": ours.agent_prompt_tokens,
        "baseline_prompt_tokens_per_step": baseline.agent_prompt_tokens,
    }


def skill_base_replies(memory: AgentMemory, result: LongTaskResult) -> list[str]:
    """The base model's replies to the run's skill inputs without any adapter."""
    replies = []
    for record in result.answers("skill"):
        prompt = [{"role": "user", "content": task_prompt(result.actions[record["step"]].prompt)}]
        replies.append(memory.host.generate(prompt, max_new_tokens=MAX_ANSWER_TOKENS).text.strip())
    return replies


def compare_with_baseline(
    memory: AgentMemory,
    model: D2LChatModel,
    settings: LongTaskSettings,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the agent with memory and the prompt-growing baseline, answer the questions by
    reading, and :func:`summarize` the three."""
    ours = run_long_task(memory, model, settings, progress=progress)
    baseline_settings = settings.model_copy(update={"keep_outputs": True})
    baseline = run_long_task(memory, model, baseline_settings, thread="baseline", progress=progress)
    return summarize(
        ours,
        baseline,
        oracle_answers(memory, settings, ours),
        skill_base_replies(memory, ours),
    )
