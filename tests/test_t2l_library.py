import pytest
import torch

from d2l_memory import AdapterHost, AdapterStore, D2LMemoryError, LexicalEncoder, concat
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer
from t2l_skills import SkillLibrary, T2LConfig, TextToLoRA, normalize_description

IDS = torch.tensor([[2, 5, 6, 7, 9, 11]])


class CountingEncoder(LexicalEncoder):
    """Counts the texts it encodes, to tell a cache hit from a recomputation."""

    def __init__(self) -> None:
        super().__init__(dim=32)
        self.texts: list[str] = []

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.texts += texts
        return super().encode(texts)


@pytest.fixture
def host():
    return AdapterHost(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture
def encoder():
    return CountingEncoder()


@pytest.fixture
def hypernet(host, encoder):
    torch.manual_seed(0)
    hypernet = TextToLoRA(T2LConfig.for_model(host.layout, encoder, latent_dim=32))
    for head in hypernet.heads.values():  # as if trained: skills that change the model
        head.weight.data.normal_(0, 0.1)
    return hypernet


def test_cache_hit_returns_the_same_skill_without_recomputation(host, hypernet, encoder):
    library = SkillLibrary(host, hypernet, encoder)
    first = library.create_skill("Reverse the order of the words.")
    encoded = len(encoder.texts)
    again = library.create_skill("  Reverse the order of  the\twords.  ")
    assert again.id == first.id and again.cached and not first.cached
    assert len(encoder.texts) == encoded  # nothing was encoded or generated
    assert again.adapter is first.adapter
    assert library.create_skill("Add one to the number.").id != first.id
    assert normalize_description(" A  b\nC ") == "A b C"


def test_an_id_names_one_adapter_made_from_the_text_as_written(host, hypernet, encoder):
    first = SkillLibrary(host, hypernet, encoder).create_skill("Reverse the order of the words.")
    spaced = SkillLibrary(host, hypernet, encoder).create_skill(" Reverse the  order of the words.")
    lower = SkillLibrary(host, hypernet, encoder).create_skill("reverse the order of the words.")
    assert spaced.id == first.id != lower.id
    assert encoder.texts[-1] == "reverse the order of the words."  # case reaches the encoder
    for key in first.adapter.modules:
        assert torch.equal(first.adapter.weights[key].B, spaced.adapter.weights[key].B)


def test_skill_is_stored_as_kind_skill_and_reloaded_from_the_store(tmp_path, host, hypernet, encoder):
    store = AdapterStore(tmp_path / "store")
    skill = SkillLibrary(host, hypernet, encoder, store=store).create_skill(
        "Reverse the order of the words.", namespace=("u1",)
    )
    record = store.record(("u1",), skill.id)
    assert record.kind == "skill" and record.generator == "t2l" and record.generator_version == hypernet.config.version
    assert record.extra["description"] == "Reverse the order of the words." and record.extra["encoder"] == encoder.name
    assert skill.record == record and "generated skill" in skill.receipt()

    fresh_host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    fresh_encoder = CountingEncoder()
    reloaded = SkillLibrary(fresh_host, hypernet, fresh_encoder, store=store).create_skill(
        "Reverse the order of the  words.", namespace=("u1",)
    )
    assert reloaded.id == skill.id and reloaded.cached and fresh_encoder.texts == []
    assert skill.id in fresh_host
    torch.testing.assert_close(fresh_host.logits(IDS, [skill.id]), host.logits(IDS, [skill.id]))


def test_a_cached_skill_deleted_from_the_store_is_stored_again(tmp_path, host, hypernet, encoder):
    store = AdapterStore(tmp_path / "store")
    library = SkillLibrary(host, hypernet, encoder, store=store)
    skill = library.create_skill("Reverse the order of the words.", namespace=("u1",))
    store.delete(("u1",), skill.id)  # forgotten by the agent
    again = library.create_skill("Reverse the order of the words.", namespace=("u1",))
    assert again.id == skill.id and not again.cached and store.exists(("u1",), skill.id)


def test_a_retrained_hypernetwork_never_reuses_old_skills(host, hypernet, encoder):
    old = SkillLibrary(host, hypernet, encoder).skill_id("Reverse the words.")
    hypernet.heads["self_attn__q_proj"].weight.data += 0.01
    assert SkillLibrary(host, hypernet, encoder).skill_id("Reverse the words.") != old


def test_skill_composes_with_a_memory(host, hypernet, encoder):
    memory = random_adapter(host.model, modules=("down_proj",), name="memory")
    host.add("memory", memory)
    skill = SkillLibrary(host, hypernet, encoder).create_skill("Reverse the order of the words.")
    assert skill.id in host.resident
    both = host.logits(IDS, ["memory", skill.id])
    host.add("together", concat([memory, skill.adapter]))
    torch.testing.assert_close(both, host.logits(IDS, ["together"]))
    for alone in (["memory"], [skill.id], None):
        assert not torch.allclose(both, host.logits(IDS, alone))
    generation = host.generate("the code of the city", adapters=["memory", skill.id], max_new_tokens=3)
    assert generation.completion_tokens == 3


def test_a_removed_skill_is_made_resident_again(host, hypernet, encoder):
    library = SkillLibrary(host, hypernet, encoder)
    skill = library.create_skill("Reverse the words.")
    host.remove(skill.id)
    assert library.create_skill("Reverse the words.").id in host


def test_clear_errors(host, hypernet, encoder):
    with pytest.raises(D2LMemoryError, match="empty description"):
        SkillLibrary(host, hypernet, encoder).create_skill(" \n ")
    with pytest.raises(D2LMemoryError, match="reads embeddings of encoder"):
        SkillLibrary(host, hypernet, LexicalEncoder(dim=16))
    other = AdapterHost(tiny_model("llama", num_layers=3), tiny_tokenizer())
    with pytest.raises(D2LMemoryError, match="2 layers"):
        SkillLibrary(other, hypernet, encoder)


def test_the_cache_keeps_the_most_recently_asked_for_skills(host, hypernet, encoder):
    library = SkillLibrary(host, hypernet, encoder, max_cached=2)
    for description in ("Reverse the words.", "Add one.", "Reverse the words.", "Count the words."):
        library.create_skill(description)
    encoded = len(encoder.texts)
    assert library.create_skill("Reverse the words.").cached  # asked for recently: kept
    assert not library.create_skill("Add one.").cached and len(encoder.texts) == encoded + 1  # the oldest went
