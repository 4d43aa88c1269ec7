"""The vLLM host against a real vLLM server on the embedded default (started by the fixtures).

The server runs in its own virtual environment (``.venv-vllm`` in the checkout, made on first use
by :func:`d2l_memory.vllm_server.vllm_environment`: a few minutes). ``D2L_VLLM_TESTS=0`` skips
these tests on a machine that cannot install vLLM for CPUs.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.store.memory import InMemoryStore

from d2l_lab.formats import qa_messages
from d2l_lab.world import FactDocument, make_fact_document
from d2l_memory import AdapterError, AdapterHost, ModelError, ServerError
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, DEFAULT_MODEL_DIR, load_host
from d2l_memory.hypernet import DocToLoRA
from d2l_memory.internalize import Internalizer, Memory
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer
from d2l_memory.vllm_host import VLLMHost
from d2l_memory.vllm_server import VLLMServer, free_port, vllm_environment
from integrations import (
    AgentMemory,
    D2LChatModel,
    MemoryState,
    agent_memory,
    internalize_node,
    memory_tools,
    model_node,
)
from integrations.chat_model import chat_messages

ROOT = Path(__file__).resolve().parents[1]
SERVER_RANK = 16  # sets of three and four rank-8 memories are compressed to it
EVAL_SEED = 2_000_017  # an evaluation seed: no training run draws documents from it

pytestmark = pytest.mark.skipif(os.environ.get("D2L_VLLM_TESTS") == "0", reason="D2L_VLLM_TESTS=0")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = vllm_environment(ROOT / ".venv-vllm")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(DEFAULT_MODEL_DIR, python=python, max_lora_rank=SERVER_RANK, max_loras=8, log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def local() -> AdapterHost:
    return load_host()


@pytest.fixture(scope="module")
def remote(server, local) -> VLLMHost:
    with VLLMHost(
        load_host().model, local.tokenizer, url=server.url, model_id=local.model_id, max_lora_rank=16
    ) as host:
        yield host


@pytest.fixture(scope="module")
def memories(local, remote) -> dict[str, tuple[Memory, FactDocument]]:
    """Fact documents as benchmarks.d2l makes them, internalized and resident on both hosts."""
    internalizer = Internalizer(local, DocToLoRA.load(D2L_CHECKPOINT_DIR))
    rng = random.Random(EVAL_SEED)
    made = {}
    for n_facts in (1, 2, 4):
        for _ in range(4):
            doc = make_fact_document(rng, n_facts)
            memory = internalizer.internalize(doc.text, progress=False)
            local.add(memory.id, memory.adapter)
            remote.add(memory.id, memory.adapter)
            made[memory.id] = (memory, doc)
    return made


@pytest.fixture(scope="module")
def questions(memories) -> list[tuple[str, list[dict[str, Any]]]]:
    """(memory id, the question's chat) for every question of every document."""
    return [
        (memory_id, qa_messages(None, [qa])[:-1]) for memory_id, (_, doc) in memories.items() for qa in doc.questions
    ]


def answers(host: AdapterHost, items, **options) -> list[str]:
    return [host.generate(chat, adapters=adapters, max_new_tokens=12, **options).text for adapters, chat in items]


def test_memories_answer_on_vllm_as_in_process(local, remote, questions):
    items = [([memory_id], chat) for memory_id, chat in questions]
    theirs, ours = answers(remote, items), answers(local, items)
    assert len(items) >= 20
    assert theirs == ours
    base = [(None, chat) for _, chat in questions]
    assert answers(remote, base) == answers(local, base)


def test_eight_concurrent_requests_with_eight_memories_answer_as_alone(remote, questions):
    by_memory = {memory_id: chat for memory_id, chat in questions}
    items = [([memory_id], chat) for memory_id, chat in itertools.islice(by_memory.items(), 8)]
    items.append((None, items[0][1]))  # a base-model request in the same engine steps
    alone = answers(remote, items)
    with ThreadPoolExecutor(len(items)) as pool:
        together = list(pool.map(lambda item: answers(remote, [item])[0], items * 2))
    assert together == alone * 2


def test_composed_sets_answer_like_the_in_process_set(local, remote, questions):
    memory_ids = list(dict.fromkeys(memory_id for memory_id, _ in questions))
    skill = random_adapter(local.model, rank=4, scale=0.02, seed=3)
    local.add("skill", skill)
    remote.add("skill", skill)
    agree, errors = [], {}
    for size in (2, 3, 4):
        members = memory_ids[:size]
        served = remote.serve(members)
        assert served.composed_rank == 8 * size
        assert served.rank == min(8 * size, SERVER_RANK)
        errors[size] = served.relative_error
        items = [(members, chat) for memory_id, chat in questions if memory_id in members]
        agree += [a == b for a, b in zip(answers(remote, items), answers(local, items))]
    items = [([memory_ids[0], "skill"], chat) for memory_id, chat in questions if memory_id == memory_ids[0]]
    assert answers(remote, items) == answers(local, items)  # rank 12: not compressed
    assert errors[2] == 0.0 and 0.0 < errors[3] < errors[4] < 1.0
    assert sum(agree) / len(agree) >= 0.6, (sum(agree), len(agree), errors)


def test_streaming_stop_strings_and_token_counts_as_in_process(local, remote, questions):
    memory_id, chat = questions[0]
    streamed = "".join(remote.stream(chat, adapters=[memory_id], max_new_tokens=12))
    assert streamed == remote.generate(chat, adapters=[memory_id], max_new_tokens=12).text
    ours = local.generate(chat, adapters=[memory_id], max_new_tokens=12)
    theirs = remote.generate(chat, adapters=[memory_id], max_new_tokens=12)
    assert theirs.prompt_tokens == ours.prompt_tokens
    assert theirs.text == ours.text
    stop = ours.text.strip()[-1:]
    assert stop
    cut = remote.generate(chat, adapters=[memory_id], max_new_tokens=12, stop=[stop])
    reference = local.generate(chat, adapters=[memory_id], max_new_tokens=12, stop=[stop])
    assert (cut.text, cut.stopped_by) == (reference.text, reference.stopped_by) and cut.stopped_by == stop
    assert "".join(remote.stream(chat, adapters=[memory_id], max_new_tokens=12, stop=[stop])) == cut.text


def test_removing_an_adapter_unloads_every_set_of_its_weights(remote, memories, questions):
    memory_id, chat = questions[0]
    twin = f"{memory_id}-twin"
    remote.add(twin, memories[memory_id][0].adapter)  # the same weights under another id: one served name
    name = remote.serve([memory_id]).name
    assert remote.serve([twin]).name == name
    remote.remove(twin)
    assert name not in remote.loaded  # unloaded, though memory_id is still resident
    with pytest.raises(AdapterError, match="not resident"):
        remote.generate(chat, adapters=[twin])
    assert remote.serve([memory_id]).name == name  # loaded again for the id that remains


def test_a_server_of_another_model_or_none_is_refused(server, local):
    with pytest.raises(ModelError, match="tokenizer differs"):
        VLLMHost(tiny_model("llama"), tiny_tokenizer(), url=server.url)
    other = load_host()
    other.model.model.layers[0].mlp.down_proj.weight.data.mul_(-3.0)  # the same tokenizer, other weights
    with pytest.raises(ModelError, match="serve the same weights"):
        VLLMHost.over(other, server.url)
    with pytest.raises(ServerError, match="no answer from the vLLM server"):
        VLLMHost.over(local, f"http://127.0.0.1:{free_port()}")


def test_an_adapter_the_server_refuses_is_a_clear_error(server, local, memories):
    with VLLMHost(load_host().model, local.tokenizer, url=server.url, max_lora_rank=32) as host:
        memory_ids = list(memories)[:3]
        for memory_id in memory_ids:
            host.add(memory_id, memories[memory_id][0].adapter)
        with pytest.raises(AdapterError, match="max-lora-rank"):
            host.serve(memory_ids)  # rank 24 > the server's 16


def test_agent_memory_forgets_on_the_server_and_a_restarted_server_reloads(server, local, tmp_path):
    host = VLLMHost(load_host().model, local.tokenizer, url=server.url, max_lora_rank=16)
    memory = agent_memory(host, tmp_path / "store", D2L_CHECKPOINT_DIR, encoder="lexical", focus_chunks=None)
    kept = memory.internalize("the code of the city 3 4 is 7 1 .", namespace=("u", "t"))
    gone = memory.internalize("the code of the city 5 5 is 2 2 .", namespace=("u", "t"))
    keys = memory.resident_keys(("u", "t"), [kept.id, gone.id])
    chat = [{"role": "user", "content": "what is the code of the city 3 4 ?"}]
    before = host.generate(chat, adapters=keys[:1]).text
    served = host.serve(keys[1:]).name
    assert served in {m["id"] for m in host.client.models()}
    memory.forget(("u", "t"), gone.id)
    assert served not in {m["id"] for m in host.client.models()}
    with pytest.raises(AdapterError):
        host.generate(chat, adapters=keys[1:])
    server.stop()
    server.start()
    assert host.generate(chat, adapters=keys[:1]).text == before  # loaded again from its folder
    memory.close()
    host.close()


REPORT = "the code of the city 3 4 is 7 1 . w1 lives in the city 3 4 ."
QUESTION = "what is the code of the city 3 4 ?"


@tool
def read_report() -> str:
    """Read the report."""
    return REPORT


def plan(state: MemoryState) -> dict[str, Any]:
    """Stands in for a tool-calling model: read the report, later switch its memory off."""
    if not state.get("memory_ids"):
        call = {"name": "read_report", "args": {}, "id": "call-read"}
    else:
        call = {"name": "swap_adapters", "args": {"deactivate": state["memory_ids"]}, "id": "call-swap"}
    return {"messages": [AIMessage("", tool_calls=[call])]}


def replies(state: dict[str, Any]) -> list[str]:
    return [m.text for m in state["messages"] if isinstance(m, AIMessage) and not m.tool_calls]


def run_agent(memory: AgentMemory) -> dict[str, Any]:
    """plan -> tools -> internalize -> model, twice: a tool output becomes a memory the model
    answers from, then the swap_adapters tool switches it off and the model answers again."""
    builder = StateGraph(MemoryState)
    builder.add_node("plan", plan)
    builder.add_node("tools", ToolNode([read_report, *memory_tools(memory)]))
    builder.add_node("internalize", internalize_node(memory, threshold_tokens=1))
    builder.add_node("model", model_node(D2LChatModel(host=memory.host, max_tokens=12), memory))
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "tools")
    builder.add_edge("tools", "internalize")
    builder.add_edge("internalize", "model")
    builder.add_conditional_edges("model", lambda state: END if len(replies(state)) >= 2 else "plan")
    graph = builder.compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    run = {"configurable": {"user_id": "ann", "thread_id": "t1"}}
    return graph.invoke({"messages": [HumanMessage(QUESTION)]}, run)


def test_a_langgraph_agent_internalizes_swaps_and_answers_on_vllm_as_in_process(server, local, tmp_path):
    host = VLLMHost(load_host().model, local.tokenizer, url=server.url, max_lora_rank=16)
    with agent_memory(host, tmp_path / "store", D2L_CHECKPOINT_DIR, encoder="lexical", focus_chunks=None) as memory:
        state = run_agent(memory)
        [memory_id] = state["memory_ids"]
        local.add("graph-memory", memory.internalizer.store.get(("ann", "t1"), memory_id))
    host.close()
    assert state["messages"][1].tool_calls[0]["name"] == "read_report" and state["active_adapters"] == []
    # each reply is what the in-process host answers to the same messages with the same memory (or none)
    turns = [i for i, m in enumerate(state["messages"]) if isinstance(m, AIMessage) and not m.tool_calls]
    expected = [
        local.generate(chat_messages(state["messages"][:i]), adapters=adapters, max_new_tokens=12).text
        for i, adapters in zip(turns, (["graph-memory"], None))
    ]
    assert replies(state) == expected


def test_the_serving_guide_snippet_runs_as_pasted(server, tmp_path):
    guide = (ROOT / "docs" / "serving.md").read_text()
    snippet = re.findall(r"^```python\n(.*?)^```$", guide, flags=re.DOTALL | re.MULTILINE)[0]
    script = snippet.replace("http://127.0.0.1:8000", server.url)  # the server these tests started
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("Ostholm")
