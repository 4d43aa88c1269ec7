import pytest
import torch

from d2l_lab.meta_train import DistillSettings, train_hypernet
from d2l_memory import AdapterHost, D2LMemoryError, ModelError
from d2l_memory.chunking import document_chunks, split_at_sentences, split_into
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.internalize import Internalizer
from d2l_memory.store import AdapterStore
from d2l_memory.testing import tiny_model, tiny_tokenizer

DOC = "the code of the city is 1 2 3 4 . the colour of w5 is w9 . " * 6
IDS = torch.tensor([[2, 5, 6, 7, 9]])


@pytest.fixture
def host():
    return AdapterHost(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture
def hypernet(host):
    torch.manual_seed(0)
    return DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=32))


def _wake(hypernet: DocToLoRA) -> DocToLoRA:
    """A trained hypernetwork has non-zero B scales; give the fresh one some."""
    for head in hypernet.heads.values():
        head.scale_B.data.normal_(0, 1.0)
    return hypernet


def test_fresh_hypernetwork_changes_nothing(host, hypernet):
    memory = Internalizer(host, hypernet).internalize(DOC)
    host.add(memory.id, memory.adapter)
    assert torch.equal(host.logits(IDS, [memory.id]), host.logits(IDS))


def test_long_documents_are_chunked_and_concatenated(host, hypernet):
    memory = Internalizer(host, _wake(hypernet)).internalize(DOC)
    assert memory.token_count == len(host.tokenizer(DOC, add_special_tokens=False).input_ids)
    assert memory.chunk_count == -(-memory.token_count // 32) > 1
    assert memory.adapter.max_rank == memory.chunk_count * hypernet.config.rank
    host.add(memory.id, memory.adapter)
    assert not torch.equal(host.logits(IDS, [memory.id]), host.logits(IDS))


def test_batched_chunks_equal_one_at_a_time(host, hypernet):
    chunks, _ = document_chunks(host.tokenizer, DOC + " the end", 24)
    assert len({len(c) for c in chunks}) > 1  # padding really happens
    exact = {"adapter_dtype": torch.float32}  # half precision would round tiny differences apart
    batched = list(Internalizer(host, _wake(hypernet), chunk_batch=8, **exact).chunk_adapters(chunks))
    single = list(Internalizer(host, hypernet, chunk_batch=1, **exact).chunk_adapters(chunks))
    for a, b in zip(batched, single):
        for key in a.modules:
            torch.testing.assert_close(a.weights[key].A, b.weights[key].A, rtol=0, atol=1e-5)
            torch.testing.assert_close(a.weights[key].B, b.weights[key].B, rtol=0, atol=1e-5)


def test_many_documents_share_batches_and_equal_one_at_a_time(tmp_path, host, hypernet):
    docs = ["the code of the city is 1 2 3 4 .", DOC, "w5 lives in the city .", DOC + " the end"]
    store = AdapterStore(tmp_path / "store")
    internalizer = Internalizer(host, _wake(hypernet), store=store, chunk_batch=4, adapter_dtype=torch.float32)
    many = internalizer.internalize_many(docs, namespace=("u1",), sources=["a", "b", "c", "d"], extra={"k": 1})
    for doc, memory, source in zip(docs, many, "abcd"):
        alone = Internalizer(host, hypernet, adapter_dtype=torch.float32).internalize(doc)
        assert (memory.token_count, memory.chunk_count) == (alone.token_count, alone.chunk_count)
        for key in alone.adapter.modules:  # the same chunk adapters, in chunk order
            torch.testing.assert_close(memory.adapter.weights[key].B, alone.adapter.weights[key].B, rtol=0, atol=1e-5)
            torch.testing.assert_close(memory.adapter.weights[key].A, alone.adapter.weights[key].A, rtol=0, atol=1e-5)
        record = store.record(("u1",), memory.id)
        assert record.source == source and record.extra["chunks"] == memory.chunk_count and record.extra["k"] == 1
    assert sum(m.seconds for m in many) > 0 and many[1].seconds > many[0].seconds  # shares by tokens
    assert internalizer.internalize_many([]) == []
    with pytest.raises(D2LMemoryError, match="as many sources"):
        internalizer.internalize_many(docs, sources=["a"])
    with pytest.raises(D2LMemoryError, match="empty"):
        internalizer.internalize_many([DOC, " "])


def test_memories_are_kept_in_half_precision_unless_asked_otherwise(tmp_path, host, hypernet):
    store = AdapterStore(tmp_path / "store")
    half = Internalizer(host, _wake(hypernet), store=store).internalize(DOC)
    full = Internalizer(host, hypernet, adapter_dtype=torch.float32).internalize(DOC)
    assert {w.B.dtype for w in half.adapter.weights.values()} == {torch.float16}
    assert half.adapter.nbytes * 2 == full.adapter.nbytes == 2 * store.record(("default",), half.id).nbytes
    assert store.get(("default",), half.id).weights[half.adapter.modules[0]].A.dtype == torch.float16
    host.add("half", half.adapter)
    host.add("full", full.adapter)
    torch.testing.assert_close(host.logits(IDS, ["half"]), host.logits(IDS, ["full"]), rtol=0, atol=1e-3)


def test_even_split():
    assert [len(p) for p in split_at_sentences(list(range(10)), [], 4)] == [4, 3, 3]  # no sentence ends known
    assert split_at_sentences([], [], 4) == []
    assert split_into(list(range(9)), 4) == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]
    assert [len(p) for p in split_into(list(range(2)), 4)] == [1, 1] and split_into([], 3) == []


def test_save_load_round_trip(tmp_path, host, hypernet):
    _wake(hypernet).save(tmp_path / "hn")
    assert (tmp_path / "hn" / "hypernet_config.json").exists()
    loaded = DocToLoRA.load(tmp_path / "hn")
    assert loaded.config == hypernet.config
    a = Internalizer(host, hypernet).internalize(DOC).adapter
    b = Internalizer(host, loaded).internalize(DOC).adapter
    key = a.modules[0]
    torch.testing.assert_close(a.weights[key].B, b.weights[key].B, rtol=1e-2, atol=1e-3)  # stored in fp16


def test_stored_memory_records_its_cost(tmp_path, host, hypernet):
    store = AdapterStore(tmp_path / "store")
    memory = Internalizer(host, hypernet, store=store).internalize(DOC, namespace=("u1",), source="doc.txt")
    record = store.record(("u1",), memory.id)
    assert record.kind == "memory" and record.generator == "d2l" and record.source == "doc.txt"
    assert record.token_count == memory.token_count and record.extra["chunks"] == memory.chunk_count
    assert store.get(("u1",), memory.id).max_rank == memory.adapter.max_rank
    assert "tokens" in memory.receipt()


def test_clear_errors(tmp_path, host, hypernet):
    with pytest.raises(D2LMemoryError, match="empty"):
        Internalizer(host, hypernet).internalize("  ")
    other = AdapterHost(tiny_model("llama", num_layers=3), tiny_tokenizer())
    with pytest.raises(D2LMemoryError, match="2 layers"):
        Internalizer(other, hypernet)
    with pytest.raises(ModelError, match="not a Doc-to-LoRA hypernetwork folder"):
        DocToLoRA.load(tmp_path)
    hypernet.save(tmp_path / "hn")
    config = hypernet.config.model_copy(update={"latent_dim": hypernet.config.latent_dim * 2})
    (tmp_path / "hn" / "hypernet_config.json").write_text(config.model_dump_json())  # weights of another shape
    with pytest.raises(ModelError, match="not a Doc-to-LoRA hypernetwork folder"):
        DocToLoRA.load(tmp_path / "hn")


@pytest.mark.parametrize("other", [{"num_layers": 3}, {"intermediate_size": 96}])
def test_a_hypernetwork_for_another_base_model_is_refused_up_front(hypernet, other, tmp_path):
    """Another depth, or the same width with another MLP size: refused before any forward, by
    internalization and by (warm-started) meta-training alike."""
    other_host = AdapterHost(tiny_model("llama", **other), tiny_tokenizer())
    with pytest.raises(D2LMemoryError, match="built for a base model with 2 layers"):
        Internalizer(other_host, hypernet)
    with pytest.raises(D2LMemoryError, match="built for a base model"):
        train_hypernet(other_host, hypernet, lambda rng: None, lambda d, q: [], DistillSettings(steps=1), tmp_path)


def test_an_early_layer_reader_runs_only_the_layers_below_it(tmp_path):
    """With ``context_layer`` the hypernetwork reads the state entering that layer alone: the
    layers from it up never run while a document is read, and the memory is the hypernetwork's
    output on that state, for every layer."""
    host = AdapterHost(tiny_model("llama", num_layers=4), tiny_tokenizer())
    torch.manual_seed(0)
    config = HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=32, context_layer=1)
    hypernet = _wake(DocToLoRA(config))
    ran: list[int] = []
    for index, layer in enumerate(host.model.get_decoder().layers):
        layer.register_forward_pre_hook(lambda *_, index=index: ran.append(index))
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32)
    (chunk,) = internalizer.chunk_adapters([IDS[0].tolist()])
    assert ran == [0]  # the state entering layer 1 is the output of layer 0

    with torch.no_grad():
        states = host.model.get_decoder()(input_ids=IDS, output_hidden_states=True).hidden_states
        expected = hypernet(states[1][:, None], torch.ones_like(IDS, dtype=torch.bool))
    for module, (A, B) in expected.items():
        for layer in range(4):
            key = next(k for k in chunk.modules if k.layer == layer and k.module == module)
            torch.testing.assert_close(chunk.weights[key].A, A[0, layer], rtol=0, atol=1e-5)
            torch.testing.assert_close(chunk.weights[key].B, B[0, layer], rtol=0, atol=1e-5)
    assert DocToLoRA.load(hypernet.save(tmp_path / "early")).config.context_layer == 1
    with pytest.raises(ValueError, match="context_layer must be below num_layers"):
        HypernetConfig.for_model(host.layout, context_layer=4)


def test_adapter_scale_multiplies_every_delta_and_is_saved(tmp_path, host, hypernet):
    _wake(hypernet).config = hypernet.config.model_copy(update={"adapter_scale": 1.5})
    hypernet.save(tmp_path / "scaled")
    scaled = DocToLoRA.load(tmp_path / "scaled")
    assert scaled.config.adapter_scale == 1.5
    memory = Internalizer(host, scaled, adapter_dtype=None).internalize(DOC).adapter
    scaled.config = scaled.config.model_copy(update={"adapter_scale": 1.0})
    plain = Internalizer(host, scaled, adapter_dtype=None).internalize(DOC).adapter
    for key in plain.modules:
        torch.testing.assert_close(memory.delta(key), 1.5 * plain.delta(key))
