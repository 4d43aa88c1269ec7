"""Calibrating a checkpoint's adapter scale: every scale on the same memories, the best written back."""

from __future__ import annotations

import json

import torch

from d2l_lab.calibrate_scale import CALIBRATION_NAME, best_scale, calibrate, write_scale
from d2l_lab.real_docs import real_documents, split
from d2l_memory import AdapterHost
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.testing import tiny_model, tiny_tokenizer


def test_every_scale_is_scored_and_the_chosen_one_is_written_to_the_checkpoint(tmp_path):
    host = AdapterHost(tiny_model("llama"), tiny_tokenizer())
    torch.manual_seed(0)
    hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=64))
    for head in hypernet.heads.values():  # non-zero deltas, as a trained hypernetwork writes
        head.scale_B.data.normal_(0, 1.0)
    documents = split(real_documents())[0]
    figures = calibrate(host, hypernet, documents, (1.0, 2.0), questions=3, seeds=(0,))
    assert set(figures) == {1.0, 2.0}
    assert all(0 <= figure["contains"] <= 1 and 0 <= figure["exact"] <= 1 for figure in figures.values())
    assert host.resident == []  # the scaled copies are gone once scored
    # scales are absolute: a checkpoint already at 2 scores the same at 1 and 2
    hypernet.config = hypernet.config.model_copy(update={"adapter_scale": 2.0})
    assert calibrate(host, hypernet, documents, (1.0, 2.0), questions=3, seeds=(0,)) == figures
    hypernet.save(tmp_path)
    write_scale(tmp_path, hypernet, 2.0, {"adapter_scale": 2.0})
    assert DocToLoRA.load(tmp_path).config.adapter_scale == 2.0
    assert json.loads((tmp_path / CALIBRATION_NAME).read_text()) == {"adapter_scale": 2.0}


def test_the_best_answer_contained_wins_and_a_tie_goes_to_the_scale_nearest_one():
    def figure(contains: float) -> dict[str, float]:
        return {"contains": contains, "exact": 0.0}

    assert best_scale({1.0: figure(0.2), 1.25: figure(0.3), 1.5: figure(0.25)}) == 1.25
    assert best_scale({0.5: figure(0.2), 1.0: figure(0.2), 1.25: figure(0.2)}) == 1.0
