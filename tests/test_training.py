"""The shared training state: one file that a killed run never leaves half-written."""

import torch

from d2l_memory.training import STATE_NAME, load_state, save_state


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


def test_a_save_cut_short_leaves_the_previous_state(tmp_path):
    module, optimizer = _module_and_optimizer(0)
    save_state(tmp_path, module, optimizer, step=3, elapsed=1.5)
    (tmp_path / (STATE_NAME + ".partial")).write_bytes(b"\x00" * 100)  # what a kill mid-write leaves
    fresh, fresh_optimizer = _module_and_optimizer(1)
    assert load_state(tmp_path, fresh, fresh_optimizer) == (3, 1.5)
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), fresh.parameters()))
    save_state(tmp_path, fresh, fresh_optimizer, step=4, elapsed=2.0)  # the next save writes over the leftover
    assert load_state(tmp_path, *_module_and_optimizer(2)) == (4, 2.0)


def test_no_state_means_a_fresh_start(tmp_path):
    assert load_state(tmp_path, *_module_and_optimizer(0)) == (0, 0.0)
