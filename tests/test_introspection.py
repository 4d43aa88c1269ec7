import pytest
from torch import nn

from d2l_memory import ModelError, describe_model
from d2l_memory.testing import SUPPORTED_ARCHITECTURES, tiny_model


@pytest.mark.parametrize("architecture", SUPPORTED_ARCHITECTURES)
def test_finds_layers_and_all_projections(architecture):
    model = tiny_model(architecture, num_layers=3)
    layout = describe_model(model)
    assert layout.layers_path == "model.layers" and layout.num_layers == 3
    leaves = {t.key.module.rsplit(".", 1)[-1] for t in layout.targets}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    down = layout.select(["down_proj"])
    assert [t.key.layer for t in down] == [0, 1, 2]
    assert all((t.d_in, t.d_out) == (128, 64) for t in down)
    assert all(isinstance(model.get_submodule(t.path), nn.Linear) for t in layout.targets)


def test_unknown_target_is_a_clear_error(llama):
    with pytest.raises(ModelError, match="no module"):
        describe_model(llama).select(["c_attn"])


def test_model_without_layers_is_a_clear_error():
    with pytest.raises(ModelError, match="decoder layers"):
        describe_model(nn.Sequential(nn.Linear(2, 2)))
