"""Switching on only the chunks of a long memory that a query is about."""

from __future__ import annotations

import pytest
import torch
from langgraph.store.memory import InMemoryStore

from d2l_memory import ChunkFocus, LexicalEncoder, NotFoundError
from d2l_memory.adapter import concat
from d2l_memory.chunking import chunk_texts, document_chunks
from d2l_memory.embedded import load_default
from d2l_memory.errors import D2LMemoryError
from d2l_memory.internalize import memory_chunks
from d2l_memory.refs import AdapterRef
from d2l_memory.routing import split_text, text_units
from tests.test_integrations_support import build_memory, call_tool, config, single_threaded_torch, tool_graph

__all__ = ["single_threaded_torch"]

# 9 sentences of 10 tokens: three 30-token chunks at the test hypernetwork's 32-token chunks.
LONG_DOC = " ".join(f"the code of the city 0 {i} is 1 ." for i in range(9))
QUERY = "what is the code of the city 0 7 ?"  # sentence 7, in the last chunk


def test_text_units_are_sentences_and_lines():
    text = "alpha beta. gamma delta epsilon\nzeta eta\n\ntheta"
    assert text_units(text, 2) == ["alpha beta.", "gamma delta", "epsilon", "zeta eta", "theta"]
    assert split_text(text, 4) == ["alpha beta.", "gamma delta epsilon", "zeta eta theta"]


def test_focus_picks_the_chunk_holding_the_matching_line():
    focus = ChunkFocus(LexicalEncoder(), chunks=1)
    focus.add("m", ["INFO user=Ama logged in\nINFO user=Bo logged out", "INFO user=Cyd door code 4471\nDEBUG tick"])
    assert focus.best(["m"], "What is the door code of Cyd?") == {"m": [1]}
    two = ChunkFocus(LexicalEncoder(), chunks=2)
    two.add("m", ["Ama", "Bo", "Cyd"])
    assert two.best(["m"], "Cyd and Ama") == {"m": [0, 2]}  # in chunk order
    with pytest.raises(NotFoundError):
        focus.best(["unknown"], "anything")
    focus.remove("m")
    assert "m" not in focus


def test_chunk_texts_are_the_document_cut_where_the_chunks_are():
    _, tokenizer = load_default()
    text = "\n".join(f"2026-01-03 INFO user=Ama{i} birthplace=Dunera pets={i}" for i in range(60))
    texts = chunk_texts(tokenizer, text, 128)
    chunks, _ = document_chunks(tokenizer, text, 128)
    assert len(texts) == len(chunks) > 1
    assert "".join(texts).strip() == text


def test_memory_chunks_are_the_chunk_adapters_bit_for_bit(tmp_path):
    memory = build_memory(tmp_path)
    for head in memory.internalizer.hypernet.heads.values():  # an untrained hypernetwork's B is zero
        torch.nn.init.normal_(head.scale_B, generator=torch.Generator().manual_seed(0))
    chunks, _ = document_chunks(memory.host.tokenizer, LONG_DOC, memory.internalizer.chunk_tokens)
    parts = list(memory.internalizer.chunk_adapters(chunks))
    whole = concat(parts)
    assert len(parts) == 3
    for keep in ([1], [0, 2]):
        picked = memory_chunks(whole, 3, keep)
        expected = concat([parts[i] for i in keep])
        for key, w in picked.weights.items():
            assert torch.equal(w.A, expected.weights[key].A) and torch.equal(w.B, expected.weights[key].B)
    for bad in ([], [3], [-1]):
        with pytest.raises(D2LMemoryError, match="chunk indices"):
            memory_chunks(whole, 3, bad)


def test_focused_ids_have_one_spelling():
    assert AdapterRef("abc", (4, 1, 4)).name == "abc@1,4"
    assert AdapterRef.parse("abc@1,4") == AdapterRef("abc", (1, 4))
    assert AdapterRef.parse("abc") == AdapterRef("abc")
    for bad in ("abc@x", "@1", "abc@", "abc@4,1", "abc@1,1", "abc@01", "abc@ 1", "abc@+1", "abc@1_0", "a@b@1"):
        with pytest.raises(NotFoundError, match="focused id"):
            AdapterRef.parse(bad)


def test_agent_memory_routes_a_query_to_the_chunk_that_holds_it(tmp_path):
    memory = build_memory(tmp_path, focus=ChunkFocus(LexicalEncoder(), chunks=1))
    namespace = ("u1", "t1")
    long = memory.internalize(LONG_DOC, namespace=namespace)
    short = memory.internalize("who lives in the city 5 5 ? a .", namespace=namespace)
    texts = chunk_texts(memory.host.tokenizer, LONG_DOC, memory.internalizer.chunk_tokens)
    assert len(texts) == 3 and "0 7 is" in texts[2]

    routed = memory.route(namespace, QUERY, top_k=1)
    assert routed == [AdapterRef(long.id, (2,)).name]
    assert memory.route(namespace, "who lives in the city 5 5 ?", top_k=1) == [short.id]  # one chunk: whole

    [key] = memory.resident_keys(namespace, routed)
    assert key == f"u1/t1/{long.id}@2"
    ranks = {A.shape[0] for A, _ in memory.host.compose([key]).factors.values()}
    assert ranks == {memory.internalizer.hypernet.config.rank}  # one chunk's rows, not three
    memory.require(namespace, routed)
    with pytest.raises(NotFoundError, match="unknown adapter") as error:
        memory.require(namespace, [f"{long.id}@7", f"{short.id}@1", "nope", f"{long.id}@x"])
    assert all(bad in str(error.value) for bad in (f"{long.id}@7", f"{short.id}@1", "nope", "focused id"))
    with pytest.raises(NotFoundError, match="unknown adapter"):
        memory.require(("u2", "t1"), routed)  # another user's memory, focused or not
    with pytest.raises(D2LMemoryError, match="not allowed"):  # another namespace's resident key is no shortcut
        memory.resident_keys(("u1",), [f"t1/{long.id}@2"])


def test_a_memory_is_on_once_whole_or_focused(tmp_path):
    memory = build_memory(tmp_path, max_active=3)
    assert memory.swap(["abc", "x"], on=["abc@2"]) == ["x", "abc@2"]
    assert memory.swap(["abc@2", "x"], on=["abc@5"]) == ["x", "abc@5"]
    assert memory.swap(["abc@2", "x"], on=["abc"]) == ["x", "abc"]
    assert memory.swap(["abc@2", "x"], off=["abc"]) == ["x"]
    assert memory.swap(["abc@2", "abc@3"], off=["abc@2"]) == ["abc@3"]


def test_swap_tool_switches_on_the_focused_chunk(tmp_path):
    memory = build_memory(tmp_path, focus=ChunkFocus(LexicalEncoder(), chunks=1))
    graph = tool_graph(memory, InMemoryStore())
    run = config("u1")
    _, state = call_tool(graph, run, "internalize", text=LONG_DOC)
    [memory_id] = state["memory_ids"]
    assert state["active_adapters"] == [memory_id]  # internalize switches the whole memory on
    reply, state = call_tool(graph, run, "swap_adapters", query=QUERY, top_k=1)
    assert reply.status != "error" and "switched off" not in reply.text
    assert state["active_adapters"] == [AdapterRef(memory_id, (2,)).name]  # replaced, not added beside it
    reply, _ = call_tool(graph, run, "list_adapters")
    assert f"{memory_id} memory" in reply.text and "(active: chunks [2])" in reply.text
    reply, state = call_tool(graph, run, "swap_adapters", deactivate=[memory_id])  # the memory's id
    assert reply.status != "error" and state["active_adapters"] == []
    reply, _ = call_tool(graph, run, "swap_adapters", activate=[f"{memory_id}@02"])
    assert reply.status == "error" and "focused id" in reply.text
