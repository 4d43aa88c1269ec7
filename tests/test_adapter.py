import pytest
import torch

from d2l_memory import AdapterError, LoRAAdapter, LoRAWeights, ModuleKey, concat, describe_model
from d2l_memory.testing import random_adapter, tiny_model


def test_concat_adds_deltas(llama):
    a = random_adapter(llama, rank=3, modules=("down_proj", "q_proj"), name="a", seed=1)
    b = random_adapter(llama, rank=5, modules=("down_proj",), name="b", seed=2)
    both = concat([a, b])
    assert both.part_names == ["a", "b"]
    for key in both.modules:
        expected = a.delta(key) + (b.delta(key) if key in b.weights else 0)
        torch.testing.assert_close(both.delta(key), expected, rtol=0, atol=1e-6)
    q_key = next(k for k in both.modules if k.module.endswith("q_proj"))
    assert both.weights[q_key].rank == 3  # b has no q_proj: it contributes no rows there


def test_forgetting_a_part_leaves_others_bit_identical(llama):
    parts = [random_adapter(llama, rank=2, name=f"m{i}", seed=i) for i in range(4)]
    forgotten = concat(parts).without("m1")
    assert forgotten.part_names == ["m0", "m2", "m3"]
    expected = concat([parts[0], parts[2], parts[3]])
    for key in expected.modules:
        assert torch.equal(forgotten.weights[key].A, expected.weights[key].A)
        assert torch.equal(forgotten.weights[key].B, expected.weights[key].B)
    only = concat(parts).select(["m2"])
    assert torch.equal(only.weights[only.modules[0]].A, parts[2].weights[only.modules[0]].A)


def test_weighted_scales_each_part(llama):
    a = random_adapter(llama, rank=2, name="a", seed=1)
    b = random_adapter(llama, rank=2, name="b", seed=2)
    mixed = concat([a, b]).weighted({"a": 0.5, "b": -2.0})
    key = mixed.modules[0]
    torch.testing.assert_close(mixed.delta(key), 0.5 * a.delta(key) - 2.0 * b.delta(key), rtol=0, atol=1e-6)
    with pytest.raises(AdapterError, match="no such part"):
        mixed.weighted({"c": 1.0})


def test_duplicate_part_names_refused(llama):
    a = random_adapter(llama, name="same")
    with pytest.raises(AdapterError, match="unique"):
        concat([a, a])


def test_validate_names_the_module():
    model = tiny_model("qwen2")
    shapes = describe_model(model).shapes()
    bad_layer = LoRAAdapter.single(
        "x", {ModuleKey(7, "mlp.down_proj"): LoRAWeights(torch.zeros(2, 128), torch.zeros(64, 2))}
    )
    with pytest.raises(AdapterError, match="layers.7.mlp.down_proj"):
        bad_layer.validate(shapes)
    bad_shape = LoRAAdapter.single(
        "x", {ModuleKey(0, "mlp.down_proj"): LoRAWeights(torch.zeros(2, 64), torch.zeros(64, 2))}
    )
    with pytest.raises(AdapterError, match=r"layers.0.mlp.down_proj: adapter maps 64 -> 64 .* 128 -> 64"):
        bad_shape.validate(shapes)


def test_factor_shapes_checked():
    with pytest.raises(AdapterError, match="A \\[r, d_in\\]"):
        LoRAWeights(torch.zeros(2, 8), torch.zeros(8, 3))


def test_state_dict_round_trip_and_size(llama):
    adapter = concat([random_adapter(llama, rank=2, name="a"), random_adapter(llama, rank=3, name="b", seed=1)])
    tensors, metadata = adapter.state_dict()
    back = LoRAAdapter.from_state_dict(tensors, metadata)
    assert back.part_names == ["a", "b"]
    for key in adapter.modules:
        assert torch.equal(back.weights[key].B, adapter.weights[key].B)
    assert adapter.nbytes == sum(t.nbytes for t in tensors.values())
    half = adapter.to(dtype=torch.float16)
    assert half.dtype == torch.float16 and half.nbytes == adapter.nbytes // 2
