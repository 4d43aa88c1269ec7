import pytest
import torch

from d2l_lab.distill_baseline import distill_adapter
from d2l_lab.meta_train import (
    distill_terms,
    encode_pair,
    forward_logits,
    pad_chats,
    teacher_top_k,
)
from d2l_memory import AdapterError, AdapterHost
from d2l_memory.testing import tiny_model, tiny_tokenizer

DOCUMENT = "the code of w1 is 4 7 2 9 . the city of w2 is w5 ."
QUESTIONS = [("what is the code of w1 ?", "4 7 2 9"), ("what is the city of w2 ?", "w5")]


def _chat(document: str | None) -> list[dict[str, str]]:
    """All questions as successive turns; the teacher's first turn also carries the document."""
    messages = []
    for turn, (question, answer) in enumerate(QUESTIONS):
        content = f"{document} {question}" if document and turn == 0 else question
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages


@pytest.fixture
def host():
    return AdapterHost(tiny_model("llama"), tiny_tokenizer())


def test_distillation_lowers_the_kl_and_the_adapter_applies_on_the_host(host):
    vocab = host.model.config.vocab_size  # top-k over the whole vocabulary: the exact KL, >= 0
    adapter, stats = distill_adapter(host, _chat(DOCUMENT), _chat(None), rank=4, steps=30, lr=1e-2, top_k=vocab)
    assert stats["steps"] == 30 and stats["seconds"] > 0
    assert 0 <= stats["final_kl"] < 0.2 * stats["initial_kl"]
    assert adapter.part_names == ["distilled"] and adapter.max_rank == 4
    assert len(adapter.modules) == host.layout.num_layers  # down_proj of every layer
    assert all(p.grad is None and p.requires_grad for p in host.model.parameters())  # the base model is untouched

    # Hosted like any memory, the adapter reproduces the KL that training reported.
    host.add("doc", adapter)
    pad = host.pad_token_id
    teacher_chat, student_chat = encode_pair(host.tokenizer, _chat(DOCUMENT), _chat(None))
    teacher = teacher_top_k(host, *pad_chats([teacher_chat], pad), vocab)
    ids, attention, answer = pad_chats([student_chat], pad)
    with torch.no_grad():
        hosted = distill_terms(teacher, forward_logits(host, host.compose(["doc"]), ids, attention, answer))
    assert hosted["kl"].item() == pytest.approx(stats["final_kl"], rel=1e-4, abs=1e-6)


def test_zero_steps_change_nothing(host):
    adapter, stats = distill_adapter(host, _chat(DOCUMENT), _chat(None), steps=0)
    assert stats["final_loss"] == stats["initial_loss"]
    host.add("untrained", adapter)
    ids = host.encode_prompt(_chat(None)[:1])
    torch.testing.assert_close(host.logits(ids, ["untrained"]), host.logits(ids), rtol=0, atol=0)


def test_same_seed_same_adapter_and_bad_arguments(host):
    first, _ = distill_adapter(host, _chat(DOCUMENT), _chat(None), rank=2, steps=3, lr=1e-2, seed=7)
    second, _ = distill_adapter(host, _chat(DOCUMENT), _chat(None), rank=2, steps=3, lr=1e-2, seed=7)
    for key in first.modules:
        torch.testing.assert_close(first.delta(key), second.delta(key))
    with pytest.raises(AdapterError):
        distill_adapter(host, _chat(DOCUMENT), _chat(None), rank=0)
    with pytest.raises(ValueError, match="answers"):
        distill_adapter(host, _chat(DOCUMENT), _chat(None)[:2])  # the student lacks the second answer
