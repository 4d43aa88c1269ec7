"""Imported published checkpoints give what the published code computes.

The fixtures in ``tests/fixtures/published`` were made by ``make_fixtures.py`` beside them, which
runs the published Doc-to-LoRA and Text-to-LoRA code on tiny random configurations of their
architectures (tiny Gemma-2 and Qwen3 bases) and saves their checkpoints and outputs. Here our
readers import those checkpoints and our code recomputes the outputs.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from d2l_memory import AdapterHost, ModuleKey
from d2l_memory.errors import CheckpointError, D2LMemoryError
from d2l_memory.internalize import Internalizer
from d2l_memory.published_d2l import PublishedDocToLoRA
from d2l_memory.published_import import import_d2l_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "published"
D2L_KINDS = ("gemma2", "qwen3")


def d2l_fixture(kind: str) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    folder = FIXTURES / f"d2l-{kind}"
    return folder, json.loads((folder / "documents.json").read_text()), load_file(folder / "expected.safetensors")


def max_factor_diff(adapter, expected: dict[str, torch.Tensor], label: str, config, alpha: float) -> float:
    """Largest difference between our factors and theirs (their B is [r, d_out], unscaled)."""
    worst = 0.0
    for target in config.targets:
        name = target.module.split(".")[-1]
        A, B = expected[f"{label}.{name}.A"], expected[f"{label}.{name}.B"]  # [L, R, d]
        for layer in range(config.num_layers):
            w = adapter.weights[ModuleKey(layer, target.module)]
            assert w.A.shape == A[layer].shape and w.B.shape == B[layer].T.shape
            worst = max(worst, (w.A - A[layer]).abs().max().item(), (w.B / alpha - B[layer].T).abs().max().item())
    return worst


@pytest.fixture(scope="module", params=D2L_KINDS)
def imported_d2l(request, tmp_path_factory):
    folder, documents, expected = d2l_fixture(request.param)
    out = tmp_path_factory.mktemp(f"imported-{request.param}")
    import_d2l_checkpoint(folder / "pytorch_model.bin", out)
    host = AdapterHost.from_pretrained(folder / "base", attn_implementation="eager")
    return PublishedDocToLoRA.load(out), host, documents, expected


def test_imported_d2l_internalizes_a_document_as_their_internalize_does(imported_d2l):
    hypernet, host, documents, expected = imported_d2l
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32)
    document = internalizer.chunk(documents["short"])
    assert document.chunks == [expected["short.ids"].tolist()]  # their chat-template wrapping, one chunk
    memory = internalizer.internalize(document)
    assert memory.adapter.max_rank == 2 * hypernet.config.rank  # the chunk's rank, then the bias LoRA's
    diff = max_factor_diff(memory.adapter, expected, "short", hypernet.config, documents["lora_alpha"])
    assert diff <= 1e-5


def test_imported_d2l_chunks_a_long_document_as_their_chunked_path_does(imported_d2l):
    hypernet, host, documents, expected = imported_d2l
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32, chunk_tokens=documents["chunk_tokens"])
    document = internalizer.chunk(documents["long"])
    assert document.chunks == [expected[f"long.chunk{i}"].tolist() for i in range(documents["chunks"])]
    memory = internalizer.internalize(document)
    assert memory.adapter.max_rank == (documents["chunks"] + 1) * hypernet.config.rank
    diff = max_factor_diff(memory.adapter, expected, "long", hypernet.config, documents["lora_alpha"])
    assert diff <= 1e-5
    texts = internalizer.chunk_texts(document)
    assert "".join(texts).replace(" ", "") == documents["long"].replace(" ", "")  # the affixes are not text


def test_imported_d2l_batches_chunks_of_different_lengths_as_one_at_a_time(imported_d2l):
    hypernet, host, documents, _ = imported_d2l
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32, chunk_tokens=documents["chunk_tokens"])
    together = internalizer.internalize_many([documents["short"], documents["long"]])
    alone = [internalizer.internalize(documents["short"]), internalizer.internalize(documents["long"])]
    for a, b in zip(together, alone):
        for key, w in a.adapter.weights.items():
            torch.testing.assert_close(w.B @ w.A, b.adapter.delta(key), atol=1e-5, rtol=1e-4)


def test_imported_d2l_refuses_another_base_model(imported_d2l):
    hypernet, host, _, _ = imported_d2l
    other = "qwen3" if hypernet.config.base_model_type == "gemma2" else "gemma2"
    # the two tiny bases have the same shapes: the model type tells them apart
    other_host = AdapterHost.from_pretrained(FIXTURES / f"d2l-{other}" / "base", attn_implementation="eager")
    with pytest.raises(D2LMemoryError, match=f"built for {hypernet.config.base_model}"):
        Internalizer(other_host, hypernet)
    wider = PublishedDocToLoRA(hypernet.config.model_copy(update={"hidden_size": 64}))
    with pytest.raises(D2LMemoryError, match="built for a base model"):
        Internalizer(host, wider)


def _pickle_with(folder: Path, tmp_path: Path, payload: bytes) -> Path:
    """A copy of a fixture checkpoint whose pickle is ``payload``."""
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(folder / "pytorch_model.bin") as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = payload if item.filename.endswith("/data.pkl") else source.read(item)
            target.writestr(item, data)
    return path


class _RunsCode:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-d2l-test",))


def test_imported_d2l_refuses_a_pickle_that_names_code(tmp_path):
    folder, _, _ = d2l_fixture("gemma2")
    tampered = _pickle_with(folder, tmp_path, pickle.dumps({"hypernet_config": _RunsCode()}, protocol=2))
    with pytest.raises(CheckpointError, match=r"shutil\.rmtree.*nothing in the file was run"):
        import_d2l_checkpoint(tampered)


def test_imported_d2l_refuses_unknown_classes_and_files_that_are_not_checkpoints(tmp_path):
    folder, _, _ = d2l_fixture("qwen3")
    with zipfile.ZipFile(folder / "pytorch_model.bin") as source:
        name = next(n for n in source.namelist() if n.endswith("/data.pkl"))
        renamed = source.read(name).replace(
            b"ctx_to_lora.configs\nCtxEncoderArguments", b"ctx_to_lora.configs\nSomethingElse"
        )
    with pytest.raises(CheckpointError, match="ctx_to_lora.configs.SomethingElse"):
        import_d2l_checkpoint(_pickle_with(folder, tmp_path, renamed))
    bare = tmp_path / "bare.bin"
    bare.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a torch.save checkpoint"):
        import_d2l_checkpoint(bare)
    weights_only = tmp_path / "tensors.bin"
    torch.save({"w": torch.zeros(2)}, weights_only)
    with pytest.raises(CheckpointError, match="not a Doc-to-LoRA checkpoint"):
        import_d2l_checkpoint(weights_only)


def test_imported_d2l_reads_tensors_saved_on_a_gpu(tmp_path):
    folder, _, _ = d2l_fixture("gemma2")
    with zipfile.ZipFile(folder / "pytorch_model.bin") as source:
        name = next(n for n in source.namelist() if n.endswith("/data.pkl"))
        saved = source.read(name)
    on_gpu = saved.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")  # each storage's location
    assert on_gpu != saved
    model = import_d2l_checkpoint(_pickle_with(folder, tmp_path, on_gpu))
    assert next(model.parameters()).device.type == "cpu"


def test_imported_d2l_refuses_options_it_does_not_implement(tmp_path):
    from d2l_memory.published_import import published_config, read_d2l_checkpoint

    folder, _, _ = d2l_fixture("gemma2")
    state = read_d2l_checkpoint(folder / "pytorch_model.bin")
    state["hypernet_config"]["use_token_mixing"] = True
    with pytest.raises(CheckpointError, match="use_token_mixing=True"):
        published_config(state)
