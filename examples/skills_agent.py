"""An agent that creates skills from plain-language task descriptions and switches between them.

    python examples/skills_agent.py            # three skills, 8 inputs each, on the embedded default
    python examples/skills_agent.py --smoke    # one skill, 2 inputs (what the test suite runs)

Shows: the ``create_skill`` and ``swap_adapters`` tools run by a LangGraph ``ToolNode`` (the
namespace comes from the run's config, never from tool arguments), Text-to-LoRA behind them
(:class:`integrations.TextToLoRASkills`, the shipped checkpoint), and
:class:`integrations.D2LChatModel` answering with whichever skill the graph state has switched
on. The descriptions are ones the hypernetwork never saw in training.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode

from d2l_lab.formats import task_messages
from d2l_lab.world import task_family
from integrations import (
    D2LChatModel,
    MemoryState,
    default_agent_memory,
    memory_tools,
    thread_adapters,
)

FAMILIES = ("reverse_words", "double_number", "extract_colour")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--inputs", type=int, default=8, help="inputs per skill")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="one skill, two inputs, for the test suite")
    args = parser.parse_args(argv)
    families, inputs = (FAMILIES[:1], 2) if args.smoke else (FAMILIES, args.inputs)
    rng = random.Random(args.seed)
    config = {"configurable": {"user_id": "bob", "thread_id": "skills"}}
    with tempfile.TemporaryDirectory() as tmp, default_agent_memory(Path(tmp) / "store") as memory:
        model = D2LChatModel(host=memory.host, max_tokens=24)
        tools = ToolNode(memory_tools(memory))  # internalize, create_skill, swap_adapters, list_adapters, forget
        graph = StateGraph(MemoryState)
        graph.add_node("tools", tools)
        graph.add_edge(START, "tools")
        graph = graph.compile()
        state: dict = {"messages": []}

        def call(name: str, args: dict) -> dict:
            """Run one tool call, as a tool-calling model would emit it, through the graph."""
            request = AIMessage(
                "",
                tool_calls=[{"name": name, "args": args, "id": f"call-{len(state['messages'])}"}],
            )
            return graph.invoke({**state, "messages": [*state["messages"], request]}, config)

        for family in map(task_family, families):
            description = family.heldout_descriptions[0]
            state = call("create_skill", {"description": description})  # learn the skill ...
            print(f"\n{state['messages'][-1].text}")
            skill_id = [i for i in state["active_adapters"] if i.startswith("skill-")][-1]
            others = [i for i in state["active_adapters"] if i != skill_id]
            if others:  # ... and switch the others off
                state = call("swap_adapters", {"deactivate": others})
            keys = thread_adapters(memory, state, config, None)
            with_skill = without = 0
            for _ in range(inputs):
                query, gold = family.make_example(rng)
                prompt = [HumanMessage(task_messages(None, (), query)[0]["content"])]
                reply = model.invoke(prompt, active_adapters=keys).text.strip()
                base = model.invoke(prompt).text.strip()
                with_skill, without = (
                    with_skill + (reply == gold.strip()),
                    without + (base == gold.strip()),
                )
                print(f"  {query:<36} -> {reply:<28} (gold {gold.strip()}; base model: {base})")
            print(f"  with the skill {with_skill}/{inputs}, base model {without}/{inputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
