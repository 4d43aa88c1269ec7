"""Our host and PEFT must agree on what an adapter does (so PEFT, vLLM and SGLang can serve ours)."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from d2l_memory import AdapterError, AdapterHost, LoRAWeights, concat, load_peft, save_peft
from d2l_memory.testing import SUPPORTED_ARCHITECTURES, random_adapter, tiny_model

INPUT_IDS = torch.tensor([[2, 5, 9, 17, 33, 64, 100, 7]])


@pytest.mark.parametrize("architecture", SUPPORTED_ARCHITECTURES)
def test_host_matches_peft_logits(architecture, tmp_path):
    adapter = concat(
        [
            random_adapter(
                tiny_model(architecture), rank=4, modules=("down_proj", "q_proj", "v_proj"), name="a", seed=1
            ),
            random_adapter(tiny_model(architecture), rank=2, modules=("down_proj",), name="b", seed=2),
        ]
    )  # ranks differ per module: exported zero-padded to one uniform rank
    save_peft(adapter, tmp_path / "peft", base_model=f"tiny-{architecture}")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 6

    host = AdapterHost(tiny_model(architecture))
    host.add("mem", adapter)
    ours = host.logits(INPUT_IDS, ["mem"])
    peft_model = PeftModel.from_pretrained(tiny_model(architecture), tmp_path / "peft").eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=INPUT_IDS).logits
    base = host.logits(INPUT_IDS)
    assert (ours - base).abs().max() > 1e-3  # the adapter really does something
    assert (ours - theirs).abs().max() <= 1e-5


def test_zero_b_leaves_base_logits_unchanged(llama):
    adapter = random_adapter(llama, rank=8, modules=("down_proj", "o_proj"))
    zero_b = type(adapter).single(
        "zero", {k: LoRAWeights(w.A, torch.zeros_like(w.B)) for k, w in adapter.weights.items()}
    )
    host = AdapterHost(llama)
    base = host.logits(INPUT_IDS)
    host.add("zero", zero_b)
    assert torch.equal(host.logits(INPUT_IDS, ["zero"]), base)


def test_concatenation_equals_sum_of_deltas_in_logits(llama):
    """Concatenating two adapters = one adapter whose delta is the sum of theirs."""
    a = random_adapter(llama, rank=3, name="a", seed=1)
    b = random_adapter(llama, rank=5, name="b", seed=2)
    summed = type(a).single(
        "sum",
        {k: LoRAWeights(torch.eye(a.delta(k).shape[1]), a.delta(k) + b.delta(k)) for k in a.modules},
    )  # full-rank factorisation of the summed delta: A = I, B = delta_a + delta_b
    host = AdapterHost(llama)
    for name, adapter in {"a": a, "b": b, "sum": summed}.items():
        host.add(name, adapter)
    torch.testing.assert_close(host.logits(INPUT_IDS, ["a", "b"]), host.logits(INPUT_IDS, ["sum"]), rtol=0, atol=1e-5)


def test_reads_peft_adapters_with_rslora_and_alpha(tmp_path, llama):
    """An adapter trained with PEFT (alpha and rsLoRA scaling) reads back to the same outputs."""
    config = LoraConfig(
        r=4, lora_alpha=16, use_rslora=True, target_modules=["down_proj", "k_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(tiny_model("llama"), config).eval()
    peft_model.save_pretrained(tmp_path / "trained")
    with torch.no_grad():
        theirs = peft_model(input_ids=INPUT_IDS).logits
    host = AdapterHost(llama)
    host.add("trained", load_peft(tmp_path / "trained"))
    assert (host.logits(INPUT_IDS, ["trained"]) - theirs).abs().max() <= 1e-5


def test_unreadable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterError, match="not a readable PEFT adapter folder"):
        load_peft(tmp_path)
