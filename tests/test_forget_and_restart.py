"""Memories outlive the process that made them, routing included, and go for good when forgotten."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.store.memory import InMemoryStore

from d2l_memory import AdapterStore, ChunkFocus, D2LMemoryError, LexicalEncoder, MemoryRouter, NotFoundError
from d2l_memory.internalize import Internalizer
from d2l_memory.refs import AdapterRef
from d2l_memory.testing import random_adapter
from integrations import (
    AgentMemory,
    D2LChatModel,
    MemoryState,
    ScopeError,
    adapter_swap,
    adapters_namespace,
    merge_ids,
    mirror_record,
    model_node,
    namespace_from,
    shared_namespace,
    swap_adapters,
)
from tests.test_chunk_focus import LONG_DOC, QUERY
from tests.test_integrations_support import build_memory, call_tool, config, single_threaded_torch, tool_graph

__all__ = ["single_threaded_torch"]

NS = ("u1", "t1")
SHORT_DOC = "who lives in the city 5 5 ? a ."


def reopened(memory: AgentMemory) -> AgentMemory:
    """Another AgentMemory over the same store folder and models, as a restarted process would build."""
    store = AdapterStore(memory.store.root)
    internalizer = Internalizer(memory.host, memory.internalizer.hypernet, store=store)
    focus = ChunkFocus(LexicalEncoder(), chunks=1) if memory.focus is not None else None
    return AgentMemory(internalizer, focus=focus)


def test_routing_and_focus_survive_a_restart(tmp_path):
    before = build_memory(tmp_path, focus=ChunkFocus(LexicalEncoder(), chunks=1))
    long = before.internalize(LONG_DOC, namespace=NS)
    short = before.internalize(SHORT_DOC, namespace=NS)
    routed = before.route(NS, QUERY, top_k=2)
    assert routed[0] == AdapterRef(long.id, (2,)).name
    before.close()

    after = reopened(before)
    assert after.route(NS, QUERY, top_k=2) == routed  # the same memories, the same chunk
    assert after.route(NS, "who lives in the city 5 5 ?", top_k=1) == [short.id]
    assert after.route(("u2", "t1"), QUERY, top_k=2) == []  # keys stay in their namespace


def test_two_processes_on_one_store_route_to_each_others_memories(tmp_path):
    first = build_memory(tmp_path)
    second = reopened(first)
    memory = first.internalize(SHORT_DOC, namespace=NS)
    assert second.route(NS, "who lives in the city 5 5 ?", top_k=1) == [memory.id]
    second.forget(NS, memory.id)
    assert first.route(NS, "who lives in the city 5 5 ?", top_k=1) == []


def test_forgetting_removes_a_memory_everywhere_and_leaves_the_others(tmp_path):
    memory = build_memory(tmp_path, focus=ChunkFocus(LexicalEncoder(), chunks=1))
    keep = memory.internalize(SHORT_DOC, namespace=NS)
    drop = memory.internalize(LONG_DOC, namespace=NS)
    [focused] = memory.route(NS, QUERY, top_k=1)
    keys = memory.resident_keys(NS, [keep.id, drop.id, focused])
    kept = {k: (A.clone(), B.clone()) for k, (A, B) in memory.host.compose([keys[0]]).factors.items()}

    [record] = memory.forget(NS, focused)  # a focused id forgets the whole memory
    assert record.id == drop.id and not memory.store.exists(NS, drop.id)
    assert [k for k in keys if k in memory.host] == [keys[0]]  # whole and focused copies left the host
    assert memory.store.attachments(NS, memory.focus.key_name) == {}
    assert memory.route(NS, QUERY, top_k=2) == [keep.id]
    assert memory.held(NS, [drop.id, focused, keep.id, "bad@@id"]) == [keep.id]
    for key, (A, B) in memory.host.compose([keys[0]]).factors.items():
        assert torch.equal(A, kept[key][0]) and torch.equal(B, kept[key][1])  # the other memory is untouched
    with pytest.raises(NotFoundError):
        memory.forget(NS, drop.id)
    with pytest.raises(NotFoundError):
        memory.forget(("u2", "t1"), keep.id)  # never another namespace's


def test_key_indexes_restore_exactly_what_they_export():
    encoder = LexicalEncoder(dim=64)
    router, focus = MemoryRouter(encoder), ChunkFocus(encoder)
    router.add("m", LONG_DOC)
    focus.add("m", ["the code of the city 0 1 is 1 .", "w1 lives in the city ."])
    other_router, other_focus = MemoryRouter(encoder), ChunkFocus(encoder)
    other_router.restore("m", router.export("m"))
    other_focus.restore("m", focus.export("m"))
    assert other_router.scores(QUERY) == router.scores(QUERY)
    assert (
        other_focus.best(["m"], "who lives in the city ?") == focus.best(["m"], "who lives in the city ?") == {"m": [1]}
    )
    assert router.key_name != MemoryRouter(encoder, chunk_words=8).key_name  # other keys, other name
    with pytest.raises(D2LMemoryError, match="router keys"):
        router.restore("x", {"keys": torch.zeros(router.max_chunks + 1, 64)})
    with pytest.raises(D2LMemoryError, match="focus keys"):
        focus.restore("x", {"keys": torch.zeros(2, 64), "owners": torch.tensor([0.0, 1.0])})


def test_forget_tool_deletes_switches_off_and_updates_state(tmp_path):
    memory = build_memory(tmp_path)
    store = InMemoryStore()
    graph = tool_graph(memory, store)
    run = config("u1")
    _, state = call_tool(graph, run, "internalize", text=SHORT_DOC)
    _, state = call_tool(graph, run, "internalize", text=LONG_DOC)
    first, second = state["memory_ids"]
    assert state["active_adapters"] == [first, second]

    reply, state = call_tool(graph, run, "forget", ids=[first, "nope"])
    assert reply.status == "error" and "nope" in reply.text and memory.store.exists(NS, first)  # all or nothing
    reply, state = call_tool(graph, run, "forget", ids=[first])
    assert reply.status != "error" and reply.text.startswith(f"forgot memory {first}")
    assert state["active_adapters"] == [second] and state["memory_ids"] == [second]
    assert not memory.store.exists(NS, first)
    assert [item.key for item in store.search(adapters_namespace(NS))] == [second]
    reply, _ = call_tool(graph, run, "swap_adapters", activate=[first])
    assert reply.status == "error" and "unknown adapter" in reply.text


def test_internalizing_a_forgotten_tool_output_again_says_so(tmp_path):
    memory = build_memory(tmp_path)
    graph = tool_graph(memory)
    run = config("u1")
    reply, state = call_tool(graph, run, "internalize", text=SHORT_DOC)
    [memory_id] = state["memory_ids"]
    memory.forget(NS, memory_id)
    reply, _ = call_tool(graph, run, "internalize", tool_call=reply.tool_call_id)
    assert reply.status == "error" and "forgotten" in reply.text


def test_memory_ids_reducer_appends_and_removes():
    assert merge_ids(["a", "b"], ["c", "a"]) == ["a", "b", "c"]
    assert merge_ids(["a", "b", "c"], ["-b", "d", "-zz"]) == ["a", "c", "d"]
    assert merge_ids(None, ["-a", "a"]) == ["a"]


def test_a_shared_memory_serves_every_thread_of_its_user_and_no_one_else(tmp_path):
    memory = build_memory(tmp_path)
    graph = tool_graph(memory)
    reply, state = call_tool(graph, config("alice", "t1"), "internalize", text=SHORT_DOC, share=True)
    [shared] = state["memory_ids"]
    assert memory.store.exists(("alice", "all-threads"), shared) and not memory.store.exists(("alice", "t1"), shared)
    _, own = call_tool(graph, config("alice", "t2"), "internalize", text=LONG_DOC)

    # another thread of alice's finds it by query and by id, and lists it as shared
    reply, state = call_tool(graph, config("alice", "t2"), "swap_adapters", query="who lives in the city 5 5 ?")
    assert reply.status != "error" and shared in state["active_adapters"]
    assert memory.resident_keys(("alice", "t2"), [shared]) == [f"alice/all-threads/{shared}"]  # one for all threads
    reply, _ = call_tool(graph, config("alice", "t2"), "list_adapters")
    assert f"{shared} memory (shared by all your conversations)" in reply.text
    assert [r.id for r in memory.records(("alice", "t2"))] == [shared, *own["memory_ids"]]

    # bob cannot, in a thread of his own, nor in one that reuses the id of alice's
    reply, _ = call_tool(graph, config("bob", "t-bob"), "swap_adapters", activate=[shared])
    assert reply.status == "error" and "unknown adapter" in reply.text
    assert memory.route(("bob", "t1"), "who lives in the city 5 5 ?", top_k=2) == []
    reply, _ = call_tool(graph, config("bob", "t1"), "swap_adapters", activate=[shared])
    assert reply.status == "error" and "unique across users" in reply.text

    # forgotten from one thread, it is gone from all
    reply, _ = call_tool(graph, config("alice", "t2"), "forget", ids=[shared])
    assert reply.status != "error"
    assert memory.held(("alice", "t1"), [shared]) == [] and not memory.store.exists(("alice", "all-threads"), shared)
    assert shared not in memory.route(("alice", "t1"), "who lives in the city 5 5 ?", top_k=2)


def test_parallel_tool_calls_in_one_step_all_take_effect(tmp_path):
    memory = build_memory(tmp_path, max_active=3)
    graph = tool_graph(memory)
    run = config("u1")
    _, state = call_tool(graph, run, "internalize", text=SHORT_DOC)
    [first] = state["memory_ids"]
    calls = [
        {"name": "internalize", "args": {"text": LONG_DOC}, "id": "p1"},
        {"name": "internalize", "args": {"text": "the code of the city is 9 9 ."}, "id": "p2"},
        {"name": "swap_adapters", "args": {"deactivate": [first]}, "id": "p3"},
    ]
    state = graph.invoke({"messages": [AIMessage("", tool_calls=calls)]}, run)
    replies = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.tool_call_id in {"p1", "p2", "p3"}]
    assert len(replies) == 3 and all(m.status != "error" for m in replies)
    new = state["memory_ids"][1:]
    assert len(new) == 2 and sorted(state["active_adapters"]) == sorted(new)  # both on, the first off

    calls = [{"name": "internalize", "args": {"text": f"w{i} lives in the city ."}, "id": f"q{i}"} for i in range(4)]
    state = graph.invoke({"messages": [AIMessage("", tool_calls=calls)]}, run)
    assert len(state["active_adapters"]) == 3  # max_active holds across parallel calls
    assert set(state["active_adapters"]) <= set(state["memory_ids"][-4:])


def test_active_adapters_reducer_replaces_or_switches():
    assert swap_adapters(["a", "b"], ["c"]) == ["c"]  # a node that names the whole set
    assert swap_adapters(["a", "b@1"], adapter_swap(on=["b@2", "c"], off=["a"])) == ["b@2", "c"]
    assert swap_adapters(["a", "b"], adapter_swap(on=["c"], limit=2)) == ["b", "c"]
    assert swap_adapters(None, adapter_swap(on=["a"])) == ["a"]
    assert swap_adapters(["a"], None) == ["a"]


def test_nothing_outside_a_users_own_namespaces_is_shared_with_them(tmp_path):
    memory = build_memory(tmp_path)
    bare = memory.internalizer.internalize(SHORT_DOC)  # a bare internalizer writes to ("default",)
    memory.internalize(SHORT_DOC, namespace=("alice",))  # a one-segment namespace is no one's shared one
    graph = tool_graph(memory)
    reply, _ = call_tool(graph, config("default", "t1"), "swap_adapters", activate=[bare.id])
    assert reply.status == "error" and "unknown adapter" in reply.text
    assert memory.route(("default", "t1"), "who lives in the city 5 5 ?", top_k=2) == []
    assert memory.route(("alice", "t1"), "who lives in the city 5 5 ?", top_k=2) == []
    with pytest.raises(ScopeError, match="reserved"):
        namespace_from(config("alice", "all-threads"))


def test_an_id_in_the_thread_and_shared_is_routed_once_and_forgotten_from_both(tmp_path):
    memory = build_memory(tmp_path)
    adapter = random_adapter(memory.host.model, seed=5)
    for ns in (NS, shared_namespace(NS)):  # a skill made in the thread and shared: one content-derived id
        memory.store.put(adapter, namespace=ns, kind="skill", id="skill-x")
        memory.index.add(ns, "skill-x", "answer in formal french")
    assert memory.route(NS, "answer in formal french", top_k=2) == ["skill-x"]
    assert memory.resident_keys(NS, ["skill-x"]) == ["u1/t1/skill-x"]  # the thread's copy
    forgotten = memory.forget(NS, "skill-x")
    assert [tuple(r.namespace) for r in forgotten] == [NS, shared_namespace(NS)]  # both copies, the thread's first
    assert memory.held(NS, ["skill-x"]) == [] and memory.records(NS) == []


def test_the_forget_tool_drops_the_basestore_copy_of_each_namespace_it_forgets_from(tmp_path):
    memory = build_memory(tmp_path)
    store = InMemoryStore()
    adapter = random_adapter(memory.host.model, seed=5)
    for ns in (NS, shared_namespace(NS)):
        memory.store.put(adapter, namespace=ns, kind="skill", id="skill-x")
        mirror_record(store, memory.store.record(ns, "skill-x"))
    reply, _ = call_tool(tool_graph(memory, store), config("u1"), "forget", ids=["skill-x"])
    assert reply.text.count("forgot skill skill-x") == 2 and "(shared copy)" in reply.text
    for ns in (NS, shared_namespace(NS)):
        assert store.search(adapters_namespace(ns)) == []


def test_a_state_whose_adapters_were_all_forgotten_answers_with_the_base_model(tmp_path):
    memory = build_memory(tmp_path)
    memory.host.add("app-default", random_adapter(memory.host.model, seed=3))
    gone = memory.internalize(SHORT_DOC, namespace=NS).id
    memory.forget(NS, gone)
    builder = StateGraph(MemoryState)
    builder.add_node("model", model_node(D2LChatModel(host=memory.host, max_tokens=2), memory))
    builder.add_edge(START, "model")
    run = {"configurable": {"user_id": "u1", "thread_id": "t1", "active_adapters": ["app-default"]}}
    state = builder.compile().invoke({"messages": [HumanMessage("hi")], "active_adapters": [gone]}, run)
    assert state["messages"][-1].response_metadata["active_adapters"] == []  # not the config's fallback


def test_a_damaged_key_row_does_not_stop_routing(tmp_path, caplog):
    memory = build_memory(tmp_path)
    good = memory.internalize(SHORT_DOC, namespace=NS)
    bad = memory.internalize(LONG_DOC, namespace=NS)
    name = memory.index.router_key_name
    with closing(sqlite3.connect(memory.store.root / "index.sqlite")) as db, db:
        db.execute("UPDATE attachments SET data = ? WHERE id = ? AND name = ?", (b"not safetensors", bad.id, name))
    after = reopened(memory)
    assert after.route(NS, "who lives in the city 5 5 ?", top_k=2) == [good.id]
    assert bad.id in caplog.text and "damaged" in caplog.text
    assert after.resident_keys(NS, [bad.id])  # still switched on by id


def test_routing_keys_of_idle_namespaces_leave_the_process_and_come_back(tmp_path):
    memory = build_memory(tmp_path, focus=ChunkFocus(LexicalEncoder(), chunks=1), max_indexed_namespaces=2)
    long = memory.internalize(LONG_DOC, namespace=NS)
    expected = memory.route(NS, QUERY, top_k=1)
    assert expected == [AdapterRef(long.id, (2,)).name]
    for user in ("u2", "u3"):  # two other namespaces push NS's keys out
        memory.internalize(SHORT_DOC, namespace=(user, "t1"))
    assert len(memory.index._routers) == 2 and NS not in memory.index._routers
    assert f"u1/t1/{long.id}" not in memory.focus  # its focus keys went with it
    assert memory.route(NS, QUERY, top_k=1) == expected  # read back from the store
    with pytest.raises(ValueError, match="at least 2"):
        build_memory(tmp_path / "other", max_indexed_namespaces=1)
