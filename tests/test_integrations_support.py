"""Builders shared by the integration tests, and tests of the small pieces (namespaces, tokens, limits)."""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.store.memory import InMemoryStore
from transformers import PreTrainedModel

from d2l_memory import AdapterError, AdapterHost, AdapterStore, ConfigError, D2LMemoryError, LexicalEncoder
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.internalize import Internalizer
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer
from integrations import (
    AgentMemory,
    DocumentError,
    MemoryState,
    ScopeError,
    TextToLoRASkills,
    check_document,
    estimate_tokens,
    memory_tools,
    namespace_from,
    token_counter,
)
from t2l_skills import SkillLibrary, T2LConfig, TextToLoRA

DOC = "the code of the city is 4 2 7 . who lives in the city ? w1 w2 w3 likes the colour of w4 ."


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    """Tiny models run faster on one thread (thread overhead dominates their small matmuls), and far
    faster when other jobs share the cores; restored afterwards so other test modules are unaffected.
    Test modules that import this fixture get it too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RandomSkillMaker:
    """The test stand-in for Text-to-LoRA: a random adapter of kind "skill", seeded by the description."""

    def __init__(self, store: AdapterStore, model: PreTrainedModel) -> None:
        self.store, self.model = store, model

    def create_skill(self, description: str, *, namespace: Sequence[str]) -> tuple[str, str]:
        seed = int(hashlib.sha256(description.encode()).hexdigest()[:8], 16)
        record = self.store.put(
            random_adapter(self.model, seed=seed), namespace=namespace, kind="skill", source=description[:80]
        )
        return record.id, f"skill of rank {record.rank}"


def build_memory(root: Path, **options: Any) -> AgentMemory:
    """A tiny host, an untrained hypernetwork, a SQLite store under ``root`` and a skill maker."""
    host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=32))
    store = AdapterStore(root / "adapters")
    return AgentMemory(Internalizer(host, hypernet, store=store), skills=RandomSkillMaker(store, host.model), **options)


def config(user: str, thread: str = "t1") -> dict[str, Any]:
    return {"configurable": {"user_id": user, "thread_id": thread}}


def tool_graph(memory: AgentMemory, store: InMemoryStore | None = None):
    """START -> ToolNode(memory tools) -> END, checkpointed, with a BaseStore."""
    builder = StateGraph(MemoryState)
    builder.add_node("tools", ToolNode(memory_tools(memory)))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    return builder.compile(checkpointer=InMemorySaver(), store=store or InMemoryStore())


def call_tool(graph, run_config: dict[str, Any], name: str, **args: Any) -> tuple[ToolMessage, dict[str, Any]]:
    """Run one tool call through the graph, as a model would ask for it; returns its ToolMessage and the state."""
    call_id = f"call-{uuid.uuid4().hex[:8]}"
    request = AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])
    state = graph.invoke({"messages": [request]}, run_config)
    reply = next(m for m in state["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == call_id)
    return reply, state


# --- namespaces --------------------------------------------------------------------------------
def test_namespace_comes_from_config_or_context():
    assert namespace_from(config("alice", "t9")) == ("alice", "t9")
    assert namespace_from({"configurable": {"thread_id": "t9"}}, {"user_id": "alice"}) == ("alice", "t9")

    class Context:
        user_id = "bob"

    assert namespace_from({"configurable": {"thread_id": 7}}, Context()) == ("bob", "7")


@pytest.mark.parametrize(
    ("run_config", "context", "message"),
    [
        ({}, None, "no user_id"),
        ({"configurable": {"user_id": "alice"}}, None, "no thread_id"),
        (config("alice"), {"user_id": "mallory"}, "disagree|but"),
        (config("../etc"), None, "cannot name a namespace"),
        (config("a.b"), None, "cannot name a namespace"),
    ],
)
def test_namespace_errors_are_clear(run_config, context, message):
    with pytest.raises(ScopeError, match=message):
        namespace_from(run_config, context)


# --- token counting -----------------------------------------------------------------------------
def test_token_counter_uses_the_host_tokenizer(tmp_path):
    memory = build_memory(tmp_path)
    count = token_counter(memory.host)
    assert count == memory.host.count_tokens  # the base model's own tokenizer, no estimate
    assert count("the city") == 2


def test_token_counter_without_tiktoken_estimates(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken now raises ImportError
    assert token_counter() is estimate_tokens
    assert estimate_tokens("x" * 9) == 3


def test_token_counter_offline_tiktoken_estimates(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name: str):
        raise ConnectionError("no network to download the encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    assert token_counter() is estimate_tokens


# --- documents ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  \n\t", "empty"),
        ("x" * 10_000_001, "10.0 MB"),
        ("caf\udce9", "not valid UTF-8"),  # a byte that surrogateescape kept
    ],
)
def test_bad_documents_are_refused_before_any_work(text, message):
    with pytest.raises(DocumentError, match=message):
        check_document(text, 1_000_000)


def test_files_only_from_the_allowed_folder(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text(DOC)
    (shared / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "secret.txt").write_text("password")
    (shared / "link.txt").symlink_to(tmp_path / "secret.txt")
    (shared / "loop_a").symlink_to(shared / "loop_b")
    (shared / "loop_b").symlink_to(shared / "loop_a")
    memory = build_memory(tmp_path, files_root=shared)
    namespace = ("alice", "t1")

    stored = memory.internalize_file("notes.txt", namespace=namespace)
    assert memory.record(namespace, stored.id).source == "file:notes.txt"
    for path, message in [
        ("../secret.txt", "outside"),
        (str(tmp_path / "secret.txt"), "outside"),
        ("link.txt", "outside"),
        ("missing.txt", "not a file"),
        ("latin1.txt", "not UTF-8"),
        ("loop_a", "not a usable path"),
    ]:
        with pytest.raises(DocumentError, match=message):
            memory.internalize_file(path, namespace=namespace)
    with pytest.raises(DocumentError, match="disabled"):
        build_memory(tmp_path / "other").internalize_file("notes.txt", namespace=namespace)


def test_swap_keeps_the_newest_within_the_limit(tmp_path):
    memory = build_memory(tmp_path, max_active=3)
    assert memory.swap(["a", "b"], on=["c", "d"]) == ["b", "c", "d"]
    assert memory.swap(["a", "b", "c"], on=["a"], off=["b"]) == ["c", "a"]


@pytest.mark.parametrize("limits", [{"max_active": 0}, {"max_active": 5, "max_resident": 4}])
def test_impossible_limits_are_config_errors_of_the_one_family(tmp_path, limits):
    with pytest.raises(ConfigError, match="max_active") as info:
        build_memory(tmp_path, **limits)
    assert isinstance(info.value, D2LMemoryError) and isinstance(info.value, ValueError)


def test_residency_is_bounded_and_evicted_adapters_come_back_identical(tmp_path):
    memory = build_memory(tmp_path, max_active=1, max_resident=2)
    namespace = ("erin", "t-lru")
    ids = [memory.internalize(f"{DOC} page {i} .", namespace=namespace).id for i in range(3)]
    prompt = torch.tensor([[2, 5, 9, 11]])
    (first,) = memory.resident_keys(namespace, ids[:1])
    before = memory.host.logits(prompt, [first])
    for memory_id in ids[1:]:
        memory.resident_keys(namespace, [memory_id])
    ours = [key for key in memory.host.resident if key.startswith("erin/")]
    assert first not in memory.host and len(ours) == 2  # the least recently used left the host
    assert torch.equal(memory.host.logits(prompt, [first]), before)  # a key handed out earlier still works
    assert first in memory.host and len([key for key in memory.host.resident if key.startswith("erin/")]) == 2
    assert memory.resident_keys(namespace, ids[:1]) == [first]
    with pytest.raises(AdapterError, match="not resident"):
        memory.host.logits(prompt, ["erin/t-lru/no-such-memory"])
    (evicted,) = [key for key in (f"erin/t-lru/{i}" for i in ids) if key not in memory.host]
    memory.close()  # a closed memory's store is not read again
    with pytest.raises(AdapterError, match="not resident"):
        memory.host.logits(prompt, [evicted])


def test_text_to_lora_skills_live_on_the_host_once_under_the_namespaced_key(tmp_path):
    memory = build_memory(tmp_path)
    encoder = LexicalEncoder()
    library = SkillLibrary(
        memory.host, TextToLoRA(T2LConfig.for_model(memory.host.layout, encoder, latent_dim=32)), encoder, memory.store
    )
    skill_id, receipt = TextToLoRASkills(library).create_skill("Reverse the words.", namespace=("frank", "t-skill"))
    assert skill_id not in memory.host and "skill" in receipt
    (key,) = memory.resident_keys(("frank", "t-skill"), [skill_id])
    assert key == f"frank/t-skill/{skill_id}" and key in memory.host
    assert not [k for k in memory.host.resident if k.endswith(skill_id) and k != key]
