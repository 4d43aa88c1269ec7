import random

import torch

from d2l_lab.meta_train import (
    DistillExample,
    DistillSettings,
    _encode,
    _unrelated_memories,
    chunk_factors,
    distill_loss,
    train_hypernet,
)
from d2l_memory import AdapterHost
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.testing import tiny_model, tiny_tokenizer


def _examples(rng):
    digits = " ".join(str(rng.randint(0, 9)) for _ in range(4))
    return DistillExample(f"the code of w1 is {digits} . the city is w2 .", [("what is the code of w1 ?", "w7 w8")])


def _messages(document, qas):
    question, answer = qas[0]
    content = f"{document} {question}" if document else question
    return [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]


def test_meta_training_lowers_the_loss_and_resumes(tmp_path):
    torch.manual_seed(0)
    host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=16))
    settings = DistillSettings(
        steps=40, batch_size=4, lr=1e-2, warmup_steps=2, kl_weight=0.0, ce_weight=1.0, max_chunks=2
    )
    losses: list[float] = []
    train_hypernet(
        host, hypernet, _examples, _messages, settings, tmp_path, on_step=lambda _, s: losses.append(s["ce"])
    )
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])  # broken gradients leave it exactly flat
    assert all(not p.requires_grad for p in host.model.parameters())  # the base model stays frozen

    resumed: list[int] = []
    more = settings.model_copy(update={"steps": 42})
    hypernet.config = hypernet.config.model_copy(update={"adapter_scale": 1.25})  # calibrated for the old weights
    train_hypernet(host, hypernet, _examples, _messages, more, tmp_path, on_step=lambda step, _: resumed.append(step))
    assert resumed == [41, 42]
    assert hypernet.config.adapter_scale == 1.0  # the trained weights get a scale of their own


def test_chunks_grouped_by_length_give_the_same_factors():
    """Grouping chunks to cut padding changes no chunk's factors, and keeps their order."""
    torch.manual_seed(0)
    host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=16)).eval()
    for head in hypernet.heads.values():  # a fresh hypernetwork's B is zero
        torch.nn.init.normal_(head.scale_B)
    rng = torch.Generator().manual_seed(1)
    chunks = [torch.randint(5, 60, (n,), generator=rng).tolist() for n in (9, 3, 16, 5, 12, 3, 7)]
    with torch.no_grad():
        together = chunk_factors(host, hypernet, chunks, tokens_per_forward=10_000)  # one padded batch
        grouped = chunk_factors(host, hypernet, chunks, tokens_per_forward=16)  # 5 groups, shortest first
    for module, (A, B) in together.items():
        assert A.shape[0] == len(chunks)
        torch.testing.assert_close(grouped[module][0], A, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grouped[module][1], B, rtol=1e-4, atol=1e-5)


def test_interference_term_keeps_in_context_reading_under_unrelated_memories(tmp_path):
    """Learning facts into adapters disturbs a prompt that holds another document; the
    interference term measurably limits that, and is zero for a fresh (all-zero) hypernetwork."""
    host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    rng = random.Random(5)
    probe = [_encode(host.tokenizer, _examples(rng), 1, _messages) for _ in range(6)]
    measure = DistillSettings(interference_weight=1.0, interference_memories=3)

    def interference_after(weight: float) -> float:
        torch.manual_seed(0)
        hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=16))
        if weight == 0:
            with torch.no_grad():
                assert distill_loss(host, hypernet, probe, measure)[1]["interference_kl"] == 0.0
        settings = DistillSettings(
            steps=30,
            batch_size=4,
            lr=1e-2,
            warmup_steps=2,
            kl_weight=0.0,
            ce_weight=1.0,
            max_chunks=1,
            interference_weight=weight,
            interference_memories=3,
        )
        train_hypernet(host, hypernet, _examples, _messages, settings, tmp_path / str(weight))
        with torch.no_grad():
            return distill_loss(host, hypernet, probe, measure)[1]["interference_kl"]

    without, with_term = interference_after(0.0), interference_after(5.0)
    assert with_term < 0.75 * without  # 0.60 when it works; a term without gradient leaves them equal


def test_unrelated_memories_are_the_other_documents():
    """Row i holds rows i+1 .. i+count (cyclically) along the rank, never its own memory."""
    docs, count = 5, 3
    tag = torch.arange(docs, dtype=torch.float)  # row i's factors are all i
    A = tag[:, None, None, None].expand(docs, 2, 4, 6)  # [docs, L, r, d_in]
    B = tag[:, None, None, None].expand(docs, 2, 7, 4)  # [docs, L, d_out, r]
    A_u, B_u = _unrelated_memories({"mlp.down_proj": (A, B)}, count)["mlp.down_proj"]
    assert A_u.shape == (docs, 2, count * 4, 6) and B_u.shape == (docs, 2, 7, count * 4)
    for i in range(docs):
        expected = [(i + shift) % docs for shift in range(1, count + 1)]
        assert A_u[i, 0, ::4, 0].tolist() == expected and B_u[i, 1, 0, ::4].tolist() == expected
