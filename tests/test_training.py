"""The shared training state: one file that a killed run never leaves half-written."""

import pytest
import torch

from d2l_lab import training
from d2l_lab.training import load_state, save_state
from d2l_memory import D2LMemoryError
from d2l_memory.testing import tiny_model


def _module_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        module(torch.randn(5, 4)).square().mean().backward()
        optimizer.step()
    return module, optimizer


def test_state_round_trips_weights_moments_and_step(tmp_path):
    module, optimizer = _module_and_optimizer(0)
    save_state(tmp_path, module, optimizer, step=3, elapsed=1.5, record={"settings": {"lr": 0.01}})
    fresh, fresh_optimizer = _module_and_optimizer(1)
    assert load_state(tmp_path, fresh, fresh_optimizer) == (3, 1.5)
    for a, b in zip(module.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    for p, q in zip(module.parameters(), fresh.parameters()):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(optimizer.state[p][name], fresh_optimizer.state[q][name])


def test_a_save_cut_short_leaves_the_previous_state(tmp_path, monkeypatch):
    module, optimizer = _module_and_optimizer(0)
    save_state(tmp_path, module, optimizer, step=3, elapsed=1.5)
    newer, newer_optimizer = _module_and_optimizer(1)

    def killed(*args: object) -> None:  # the process dies after writing, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(training.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_state(tmp_path, newer, newer_optimizer, step=4, elapsed=2.0)
    monkeypatch.undo()
    fresh, fresh_optimizer = _module_and_optimizer(2)
    assert load_state(tmp_path, fresh, fresh_optimizer) == (3, 1.5)
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), fresh.parameters()))
    save_state(tmp_path, newer, newer_optimizer, step=4, elapsed=2.0)  # the next save writes over the leftover
    assert load_state(tmp_path, *_module_and_optimizer(2)) == (4, 2.0)


def test_tied_weights_save_and_come_back_tied(tmp_path):
    model = tiny_model("llama")  # its output layer is its embedding
    model.config.tie_word_embeddings = True
    model.tie_weights()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    save_state(tmp_path, model, optimizer, step=1, elapsed=0.1)
    fresh = tiny_model("llama", seed=1)
    fresh.config.tie_word_embeddings = True
    fresh.tie_weights()
    load_state(tmp_path, fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-3))
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    assert fresh.lm_head.weight.data_ptr() == fresh.get_input_embeddings().weight.data_ptr()


def test_state_of_an_earlier_version_is_refused_not_silently_restarted(tmp_path):
    (tmp_path / "train_weights.safetensors").write_bytes(b"old")
    with pytest.raises(D2LMemoryError, match="earlier version"):
        load_state(tmp_path, *_module_and_optimizer(0))


def test_no_state_means_a_fresh_start(tmp_path):
    assert load_state(tmp_path, *_module_and_optimizer(0)) == (0, 0.0)


def test_mixed_precision_computes_in_bf16_only_where_the_device_has_it(monkeypatch):
    layer = torch.nn.Linear(4, 4)
    with training.mixed_precision("cpu"):
        dtype = layer(torch.randn(2, 4)).dtype
    assert dtype == (torch.bfloat16 if training.native_bf16("cpu") else torch.float32)
    assert layer.weight.dtype == torch.float32  # the weights the optimizer steps stay float32

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not training.native_bf16("cpu")  # an emulated bf16 would be slower than float32
    with training.mixed_precision("cpu"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    assert training.native_bf16("cuda") and not training.native_bf16("meta")
