import pytest
import torch

from d2l_memory import AdapterHost, LexicalEncoder, ModelError
from d2l_memory.testing import tiny_model, tiny_tokenizer
from t2l_skills import T2LConfig, TextToLoRA
from t2l_skills.hypernet import delta_norms

IDS = torch.tensor([[2, 5, 6, 7, 9, 11]])
DESCRIPTIONS = ["Reverse the order of the words.", "Add one to the number."]


@pytest.fixture
def host():
    return AdapterHost(tiny_model("llama"), tiny_tokenizer())


@pytest.fixture
def encoder():
    return LexicalEncoder(dim=32)  # deterministic and instant: the hypernetwork only needs unit vectors


def make(host, encoder, head="M", **sizes) -> TextToLoRA:
    return TextToLoRA(T2LConfig.for_model(host.layout, encoder, head=head, latent_dim=32, **sizes))


def wake(hypernet: TextToLoRA) -> TextToLoRA:
    """A trained hypernetwork has non-zero heads; give the fresh one some."""
    for head in hypernet.heads.values():
        head.weight.data.normal_(0, 0.1)
    return hypernet


@pytest.mark.parametrize("head", ["L", "M", "S"])
def test_fresh_hypernetwork_makes_exactly_zero_deltas(host, encoder, head):
    hypernet = make(host, encoder, head)
    factors = hypernet(encoder.encode(DESCRIPTIONS))
    for A, B in factors.values():
        assert A.abs().sum() > 0  # A starts like a LoRA A: the gradient reaches B from step one
        assert torch.count_nonzero(B) == 0
    adapter = hypernet.to_adapters(factors, ["fresh"])[0]
    host.add("fresh", adapter)
    assert torch.equal(host.logits(IDS, ["fresh"]), host.logits(IDS))


@pytest.mark.parametrize("head", ["L", "M", "S"])
def test_shapes_follow_the_model(host, encoder, head):
    hypernet = wake(make(host, encoder, head, rank=4))
    factors = hypernet(encoder.encode(DESCRIPTIONS))
    assert set(factors) == {"self_attn.q_proj", "self_attn.v_proj"}
    shapes = host.layout.shapes()
    for module, (A, B) in factors.items():
        d_in, d_out = shapes[(0, module)]
        assert A.shape == (2, 2, 4, d_in) and B.shape == (2, 2, d_out, 4)
    adapters = hypernet.to_adapters(factors, ["a", "b"])
    assert [a.part_names for a in adapters] == [["a"], ["b"]] and adapters[0].max_rank == 4
    assert len(adapters[0].modules) == 2 * host.layout.num_layers
    host.add("a", adapters[0])  # validates against the model
    assert not torch.equal(host.logits(IDS, ["a"]), host.logits(IDS))
    assert not torch.allclose(adapters[0].delta(adapters[0].modules[0]), adapters[1].delta(adapters[1].modules[0]))


def test_head_sizes_order(host, encoder):
    sizes = {h: sum(p.numel() for p in make(host, encoder, h).heads.parameters()) for h in "LMS"}
    assert sizes["L"] > sizes["M"] > sizes["S"]


def test_targets_are_configurable(host, encoder):
    hypernet = make(host, encoder, target_modules=("down_proj",))
    assert set(hypernet(encoder.encode(DESCRIPTIONS[:1]))) == {"mlp.down_proj"}


def test_save_load_round_trip(tmp_path, host, encoder):
    hypernet = wake(make(host, encoder, "S")).eval()
    hypernet.save(tmp_path / "t2l")
    assert (tmp_path / "t2l" / "t2l_config.json").exists()
    loaded = TextToLoRA.load(tmp_path / "t2l")
    assert loaded.config == hypernet.config and loaded.config.head == "S"
    embeddings = encoder.encode(DESCRIPTIONS)
    for (A, B), (A2, B2) in zip(hypernet(embeddings).values(), loaded(embeddings).values()):
        assert torch.equal(A, A2) and torch.equal(B, B2)


def test_clear_errors(tmp_path, host, encoder):
    with pytest.raises(ModelError, match="not a Text-to-LoRA hypernetwork folder"):
        TextToLoRA.load(tmp_path)
    (tmp_path / "t2l.safetensors").write_bytes(b"\x80\x04 a pickle, not safetensors")
    (tmp_path / "t2l_config.json").write_text(make(host, encoder).config.model_dump_json())
    with pytest.raises(ModelError, match="not a Text-to-LoRA hypernetwork folder"):
        TextToLoRA.load(tmp_path)
    with pytest.raises(ModelError, match=r"embeddings \[batch, 32\]"):
        make(host, encoder)(torch.zeros(1, 16))


def test_delta_norms_without_forming_deltas(host, encoder):
    hypernet = wake(make(host, encoder, "L"))
    factors = hypernet(encoder.encode(DESCRIPTIONS))
    adapters = hypernet.to_adapters(factors, ["a", "b"])
    expected = torch.stack([torch.stack([a.delta(k).pow(2).sum() for k in a.modules]).sum().sqrt() for a in adapters])
    torch.testing.assert_close(delta_norms(factors), expected, rtol=1e-4, atol=1e-6)
    assert delta_norms(make(host, encoder)(encoder.encode(DESCRIPTIONS))).max() < 1e-5
