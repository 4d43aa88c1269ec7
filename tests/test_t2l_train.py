import json
import random

import pytest
import torch

from d2l_lab.t2l_data import draw_tasks, noop_description
from d2l_lab.t2l_evaluate import evaluate_skills
from d2l_lab.t2l_testing import task_model, task_tokenizer
from d2l_lab.train_t2l import T2LTrainSettings, sft_loss, train_t2l
from d2l_lab.world import train_families
from d2l_memory import AdapterHost, D2LMemoryError, LexicalEncoder
from d2l_memory.store import AdapterStore
from t2l_skills import T2LConfig, TextToLoRA

FAMILIES = train_families()[:3]


@pytest.fixture(scope="module")
def host():
    tokenizer = task_tokenizer()
    return AdapterHost(task_model(tokenizer), tokenizer)


@pytest.fixture
def encoder():
    return LexicalEncoder(dim=32)


def fresh(host, encoder) -> TextToLoRA:
    torch.manual_seed(0)
    return TextToLoRA(T2LConfig.for_model(host.layout, encoder, latent_dim=32, head="M"))


def settings(**changes) -> T2LTrainSettings:
    small = {
        "steps": 12,
        "tasks_per_step": 4,
        "examples_per_task": 2,
        "lr": 1e-2,
        "warmup_steps": 0,
        "noop_share": 0.25,
    }
    return T2LTrainSettings(**(small | changes))


def test_short_sft_run_lowers_the_loss(tmp_path, host, encoder):
    hypernet = fresh(host, encoder)
    draws = draw_tasks(random.Random(123), FAMILIES, 6, 2, noop_share=0.0)  # a fixed batch, never trained on
    embeddings = encoder.encode([d.description for d in draws])
    held = settings(noop_share=0.0)

    def fixed_loss() -> float:
        hypernet.eval()
        with torch.no_grad():
            return sft_loss(host, hypernet, embeddings, draws, held)[0].item()

    before = fixed_loss()
    seen = []
    train_t2l(
        host, hypernet, encoder, FAMILIES, settings(steps=6), tmp_path, on_step=lambda step, stats: seen.append(stats)
    )
    assert len(seen) == 6 and any("noop_kl" in stats for stats in seen)
    after = fixed_loss()
    assert after < before - 0.1
    assert not any(p.requires_grad for p in host.model.parameters())


def test_training_resumes_from_its_checkpoint(tmp_path, host, encoder):
    first = train_t2l(host, fresh(host, encoder), encoder, FAMILIES, settings(steps=3), tmp_path)
    state = json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())
    assert state["step"] == 3 and state["settings"]["steps"] == 3
    steps = []
    resumed = train_t2l(
        host, fresh(host, encoder), encoder, FAMILIES, settings(steps=5), tmp_path, on_step=lambda s, _: steps.append(s)
    )
    assert steps == [4, 5]
    assert not torch.equal(resumed.heads["self_attn__q_proj"].weight, first.heads["self_attn__q_proj"].weight)
    other = TextToLoRA(T2LConfig.for_model(host.layout, encoder, latent_dim=32, head="S"))
    with pytest.raises(D2LMemoryError, match="different hypernetwork"):
        train_t2l(host, other, encoder, FAMILIES, settings(steps=6), tmp_path)


def test_reconstruction_trains_and_caches_oracles(tmp_path, host, encoder):
    recon = settings(mode="recon", steps=4, oracle_steps=3, oracle_batch=4)
    seen = []
    train_t2l(
        host, fresh(host, encoder), encoder, FAMILIES[:2], recon, tmp_path, on_step=lambda _, stats: seen.append(stats)
    )
    assert len(seen) == 4 and all(stats["l1"] > 0 for stats in seen)
    store = AdapterStore(tmp_path / "oracles")
    records = store.list(("oracles",))
    assert sorted(r.id for r in records) == sorted(f.id for f in FAMILIES[:2])
    assert all(r.kind == "skill" and r.generator == "t2l-oracle" for r in records)
    oracle = store.get(("oracles",), FAMILIES[0].id)
    assert all(w.B.abs().sum() > 0 for w in oracle.weights.values())  # SFT moved B off zero


def test_encoder_must_match(tmp_path, host, encoder):
    with pytest.raises(D2LMemoryError, match="embeddings"):
        train_t2l(host, fresh(host, encoder), LexicalEncoder(dim=16), FAMILIES, settings(), tmp_path)


def test_a_hypernetwork_for_another_base_fails_before_training(tmp_path, host, encoder):
    """A warm start (``--init``) from a checkpoint of another shape must say so, not fail in a matmul."""
    tokenizer = host.tokenizer
    deeper = AdapterHost(task_model(tokenizer, num_layers=3), tokenizer)
    with pytest.raises(D2LMemoryError, match="built for a base model with 2 layers"):
        train_t2l(deeper, fresh(host, encoder), encoder, FAMILIES, settings(), tmp_path)
    assert not (tmp_path / "checkpoint").exists()


def test_noop_descriptions_are_not_instructions():
    rng = random.Random(0)
    descriptions = {d for family in train_families() for d in family.descriptions}
    noise = [noop_description(rng) for _ in range(50)]
    assert all(text and text not in descriptions for text in noise)
    assert all(d.noop for d in draw_tasks(rng, FAMILIES, 5, 1, noop_share=1.0))


def test_fresh_skills_answer_exactly_as_the_base_model(host, encoder):
    scores = evaluate_skills(host, fresh(host, encoder), encoder, FAMILIES[:1], queries_per_description=2)
    assert scores["descriptions"] == 5 and scores["queries"] == 10
    assert scores["noop_agreement"] == 1.0 and scores["skill"] == scores["base"]
