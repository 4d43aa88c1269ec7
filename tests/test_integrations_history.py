"""D2LChatMessageHistory: recent messages verbatim within a budget, older ones folded into memories."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from test_integrations_support import build_memory, single_threaded_torch  # noqa: F401 (autouse)

from integrations import D2LChatMessageHistory, D2LChatModel, DocumentError

NAMESPACE = ("alice", "t-history")


def turn(i: int) -> list:
    return [HumanMessage(f"what is the code of w{i} ? " * 3), AIMessage(f"the code of w{i} is {i} {i} {i} .")]


def test_history_stays_within_budget_and_folds_the_rest(tmp_path):
    memory = build_memory(tmp_path)
    history = D2LChatMessageHistory(memory, NAMESPACE, max_tokens=120)
    sent = []
    for i in range(12):
        sent += turn(i)
        history.add_messages(turn(i))
        assert sum(memory.host.count_tokens(m.text) for m in history.messages) <= 120

    kept = history.messages
    assert kept == sent[-len(kept) :]  # the newest, verbatim and in order
    ids = history.memory_ids
    assert 1 < len(ids) < 12  # folded in batches down to keep_tokens, not one message at a time
    folded_tokens = sum(memory.record(NAMESPACE, i).token_count for i in ids)
    assert folded_tokens >= sum(memory.host.count_tokens(m.text) for m in sent[: -len(kept)])
    # the memories persist: a fresh history object in the same namespace finds them
    assert D2LChatMessageHistory(memory, NAMESPACE).memory_ids == ids
    # and the model can use the newest of them with the verbatim messages
    model = D2LChatModel(host=memory.host, max_tokens=3)
    reply = model.invoke(kept, active_adapters=memory.resident_keys(NAMESPACE, ids[-2:]))
    assert reply.usage_metadata["input_tokens"] < 200

    other = memory.internalize("the code of the city is 1 2 3 .", namespace=NAMESPACE)  # not the history's
    history.clear()
    assert history.messages == [] and history.memory_ids == []
    assert not any(memory.store.exists(NAMESPACE, i) for i in ids)
    assert [r.id for r in memory.records(NAMESPACE)] == [other.id]


def test_a_fold_never_orphans_tool_results(tmp_path):
    memory = build_memory(tmp_path)
    history = D2LChatMessageHistory(memory, NAMESPACE, max_tokens=20, keep_tokens=5)
    call = AIMessage("let me fetch .", tool_calls=[{"name": "fetch", "args": {}, "id": "c1"}])  # 4 tokens
    result = ToolMessage("w1", tool_call_id="c1")  # 2 tokens
    # 16 + 4 + 2 tokens: folding down to 5 cuts right before the tool result, so it goes too
    history.add_messages([HumanMessage("the city " * 8), call, result])
    assert history.messages == [] and len(history.memory_ids) == 1
    history.add_messages([AIMessage("the code is 7 .")])
    assert [m.content for m in history.messages] == ["the code is 7 ."]


def test_a_failed_fold_loses_nothing(tmp_path):
    memory = build_memory(tmp_path, max_document_bytes=50)
    history = D2LChatMessageHistory(memory, NAMESPACE, max_tokens=10)
    with pytest.raises(DocumentError, match="at most 50 bytes"):
        history.add_messages(turn(1))
    assert history.messages == turn(1) and history.memory_ids == []


def test_budget_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="keep_tokens"):
        D2LChatMessageHistory(build_memory(tmp_path), NAMESPACE, max_tokens=10, keep_tokens=20)
