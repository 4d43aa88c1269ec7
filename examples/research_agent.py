"""A research agent: it reads a corpus of documents into LoRA memory, then answers questions with
the relevant memory switched on instead of the documents pasted into its prompt.

    python examples/research_agent.py            # 40 invented documents on the embedded default
    python examples/research_agent.py --smoke    # 4 documents (what the test suite runs)

Shows: ``AgentMemory.internalize_file`` over a folder, routing a question to its memory
(``AgentMemory.route``), and a LangGraph graph ``route -> model`` whose model node
(:func:`integrations.model_node`) runs with the thread's active adapters. Memories belong to a
(user, thread) namespace, so every question runs in the thread that read the corpus. The
questions are answered by a second ``AgentMemory`` opened on the same store folder, as after a
restart: memories and their routing keys persist.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, StateGraph

from d2l_lab.world import make_fact_document
from integrations import (
    AgentMemory,
    D2LChatModel,
    MemoryState,
    default_agent_memory,
    model_node,
    namespace_from,
)


def write_corpus(folder: Path, documents: int, seed: int) -> dict[str, tuple[str, str]]:
    """Invented documents as text files; returns question -> (gold answer, its document)."""
    rng = random.Random(seed)
    questions = {}
    for i in range(documents):
        document = make_fact_document(rng, 3)
        (folder / f"doc{i:03d}.txt").write_text(document.text)
        questions |= {qa.question: (qa.answer, document.text) for qa in document.questions}
    return questions


def research_graph(memory: AgentMemory):
    """route (switch on the memory most relevant to the question) -> model."""

    def route(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        question = state["messages"][-1].text
        return {"active_adapters": memory.route(namespace_from(config), question, top_k=1)}

    builder = StateGraph(MemoryState)
    builder.add_node("route", route)
    builder.add_node("model", model_node(D2LChatModel(host=memory.host, max_tokens=12), memory))
    builder.add_edge(START, "route")
    builder.add_edge("route", "model")
    return builder.compile()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a few documents, for the test suite")
    args = parser.parse_args(argv)
    documents = 4 if args.smoke else args.documents
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        questions = write_corpus(corpus, documents, args.seed)
        namespace = ("researcher", "corpus")
        with default_agent_memory(Path(tmp) / "store") as memory:
            memory.files_root = corpus.resolve()  # the only folder the agent may read
            for path in sorted(corpus.iterdir()):
                print(memory.internalize_file(path.name, namespace=namespace).receipt())
        with default_agent_memory(Path(tmp) / "store") as memory:  # a restarted agent on the same store
            graph = research_graph(memory)
            config = {"configurable": {"user_id": namespace[0], "thread_id": namespace[1]}}
            reader = D2LChatModel(host=memory.host, max_tokens=12)
            right = read = 0
            for question, (gold, document) in sorted(questions.items()):
                reply = graph.invoke({"messages": [HumanMessage(question)]}, config)["messages"][-1].text.strip()
                reading = reader.invoke([HumanMessage(f"{document}\n\n{question}")]).text.strip()
                right, read = right + (reply == gold), read + (reading == gold)
                print(f"{question:<45} gold {gold:<10} from memory {reply:<10} reading the document {reading}")
    total = len(questions)
    print(f"\nfrom memory {right}/{total} (no document in the prompt); reading the document {read}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
