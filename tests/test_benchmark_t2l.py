import random

import pytest
import torch

from benchmarks.t2l import (
    SHIPPED,
    fewshot_chats,
    headline,
    load_variants,
    markdown,
    multitask_chat,
    random_strings,
    target_rows,
)
from d2l_lab.t2l_evaluate import heldout_queries
from d2l_lab.t2l_testing import task_model, task_tokenizer
from d2l_lab.train_t2l import train_lora
from d2l_lab.world import train_families
from d2l_memory import AdapterHost

FAMILIES = train_families()[:3]


def test_the_multitask_lora_trains_on_training_descriptions_only():
    make = multitask_chat(FAMILIES)
    rng = random.Random(0)
    train = {d for f in FAMILIES for d in f.train_descriptions}
    heldout = {d for f in FAMILIES for d in f.heldout_descriptions}
    for _ in range(50):
        user, assistant = make(rng)
        description = user["content"].split("\n\n")[0]
        assert description in train and description not in heldout
        assert assistant["role"] == "assistant" and assistant["content"]


def test_train_lora_moves_only_its_own_factors():
    tokenizer = task_tokenizer()
    host = AdapterHost(task_model(tokenizer), tokenizer)
    before = {name: p.clone() for name, p in host.model.named_parameters()}
    modules = ["self_attn.q_proj", "self_attn.v_proj"]
    adapter, stats = train_lora(
        host, "mt", multitask_chat(FAMILIES), modules, 4, steps=3, lr=1e-2, batch=4, rng=random.Random(0)
    )
    assert {key.module for key in adapter.weights} == set(modules) and adapter.max_rank == 4
    assert all(w.B.abs().sum() > 0 for w in adapter.weights.values())  # SFT moved B off zero
    assert set(stats) == {"ce", "token_acc"}
    assert all(torch.equal(p, before[name]) for name, p in host.model.named_parameters())


def test_fewshot_chats_show_the_description_and_three_examples():
    probe = heldout_queries(FAMILIES, 2, random.Random(0))
    chats = fewshot_chats(probe, random.Random(1))
    assert len(chats) == len(probe.queries) == 2 * len(probe.descriptions)
    for chat, owner, query in zip(chats, probe.owners, probe.queries):
        text = chat[-1]["content"]
        assert text.startswith(probe.descriptions[owner]) and text.endswith(f"Input: {query}")
        assert text.count("Input:") == 4 and text.count("Output:") == 3


def test_random_strings_are_as_long_as_descriptions_and_are_none():
    descriptions = [d for f in FAMILIES for d in f.heldout_descriptions]
    texts, kinds = random_strings(random.Random(0), descriptions)
    assert [len(t.split()) for t in texts] == [len(d.split()) for d in descriptions]
    assert set(kinds) == {"letters", "words"} and not set(texts) & set(descriptions)


def test_missing_checkpoints_name_the_command_that_trains_them(tmp_path):
    with pytest.raises(SystemExit, match="--mode sft --head S --steps 556"):
        load_variants(tmp_path, ["S_sft"], torch.device("cpu"))


def compared_results() -> dict:
    """What a ``--compare`` run returns, with made-up figures."""
    described = {"base": 0.1, "description_in_prompt": 0.5, "fewshot3_in_prompt": 0.6, "multitask_lora": 0.6}
    return {
        "compare": True,
        "heldout_descriptions": described | {"oracle_lora": 0.9, "t2l_M_sft": 0.8},
        "heldout_tasks": {k: 0.0 for k in described} | {"t2l_M_sft": 0.05},
        "best_t2l": "t2l_M_sft",
        "best_t2l_sft": "t2l_M_sft",
        "training_steps": {"M_sft": 556},
        "random_description": {
            "variant": "t2l_M_sft",
            "accuracy": 0.75,
            "by_kind": {"letters": 0.7, "words": 0.8},
            "real_description_accuracy": 0.8,
            "base_accuracy": 0.1,
        },
        "create_ms": 20.0,
        "create_ms_variant": "t2l_M_sft",
        "create_ms_by_variant": {"t2l_M_sft": 20.0, "shipped": 60.0},
        "create_descriptions": 30,
        "flops_vs_fewshot3": 0.2,
        "flops": {
            "t2l_per_query": 1e8,
            "fewshot3_per_query": 5e8,
            "creation": 3e8,
            "break_even_queries": 1,
            "with_answer": {"ratio": 0.3},
        },
        "multitask_lora": {"id": "mt", "steps": 3, "batch": 4, "lr": 0.003, "token_acc": 0.9, "train_seconds": 2.0},
        "queries": {"per_description": 1, "heldout_descriptions": 140, "heldout_tasks": 120},
        "seed": 0,
        "machine": "test",
        "seconds": 1.0,
    }


def test_targets_are_judged_and_tabled():
    results = compared_results()
    results["targets"] = target_rows(results)
    met = {name: row["met"] for name, row in results["targets"].items()}
    assert list(met.values()) == [True, False, True, True, False, True]  # 0.8 < 0.81; random 0.75 > 0.70
    table = markdown(results)
    assert "| oracle_lora | 0.900 | (none) |" in table and table.count("| missed |") == 2
    assert "Training steps: M_sft 556." in table
    assert "(`python -m benchmarks.t2l --compare`)" in table


def test_the_default_run_tables_the_shipped_checkpoint_without_trained_baselines():
    results = compared_results()
    for split in ("heldout_descriptions", "heldout_tasks"):
        figures = results[split]
        results[split] = {m: v for m, v in figures.items() if m not in ("multitask_lora", "oracle_lora", "t2l_M_sft")}
        results[split][SHIPPED] = figures["t2l_M_sft"]
    results |= {
        "compare": False,
        "best_t2l": SHIPPED,
        "best_t2l_sft": SHIPPED,
        "multitask_lora": None,
        "training_steps": {},
        "create_ms_variant": SHIPPED,
        "create_ms_by_variant": {SHIPPED: 20.0},
    }
    results["random_description"]["variant"] = SHIPPED
    results["targets"] = target_rows(results)
    assert [name for name in results["targets"] if "multi-task" in name or "oracle" in name] == []
    table = markdown(results)
    assert "(`python -m benchmarks.t2l`)" in table and f"| {SHIPPED} | 0.800 | 0.050 |" in table
    assert "Multi-task LoRA (" not in table and "shipped checkpoint)" not in table


def test_a_compared_run_gives_the_readme_its_rows():
    rows = dict(headline(compared_results()))
    assert rows[
        "Text-to-LoRA, held-out descriptions: best skill / description in prompt / multi-task LoRA / oracle LoRA"
    ] == ("0.800 / 0.500 / 0.600 / 0.900")
    assert rows["create a skill (shipped checkpoint)"] == "60.0 ms"
