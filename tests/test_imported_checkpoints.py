"""Imported published checkpoints give what the published code computes.

The fixtures in ``tests/fixtures/published`` were made by ``make_fixtures.py`` beside them, which
runs the published Doc-to-LoRA and Text-to-LoRA code on tiny random configurations of their
architectures (tiny Gemma-2 and Qwen3 bases) and saves their checkpoints and outputs. Here our
readers import those checkpoints and our code recomputes the outputs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.imported import FIXTURES, max_factor_diff, max_lora_diff, unsafe_pickle_refused
from d2l_memory import AdapterHost, ModuleKey
from d2l_memory.errors import CheckpointError, D2LMemoryError, NotFoundError
from d2l_memory.internalize import Internalizer
from d2l_memory.published_d2l import PublishedDocToLoRA
from d2l_memory.published_import import import_d2l_checkpoint

D2L_KINDS = ("gemma2", "qwen3")


def d2l_fixture(kind: str) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    folder = FIXTURES / f"d2l-{kind}"
    return folder, json.loads((folder / "documents.json").read_text()), load_file(folder / "expected.safetensors")


@pytest.fixture(scope="module", params=D2L_KINDS)
def imported_d2l(request, tmp_path_factory):
    folder, documents, expected = d2l_fixture(request.param)
    out = tmp_path_factory.mktemp(f"imported-{request.param}")
    import_d2l_checkpoint(folder / "pytorch_model.bin", out, published_affix_ids=False)  # the tiny tokenizer's
    host = AdapterHost.from_pretrained(folder / "base", attn_implementation="eager")
    return PublishedDocToLoRA.load(out), host, documents, expected


def test_imported_d2l_internalizes_a_document_as_their_internalize_does(imported_d2l):
    hypernet, host, documents, expected = imported_d2l
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32)
    document = internalizer.chunk(documents["short"])
    assert document.chunks == [expected["short.ids"].tolist()]  # their chat-template wrapping, one chunk
    memory = internalizer.internalize(document)
    assert memory.adapter.max_rank == 2 * hypernet.config.rank  # the chunk's rank, then the bias LoRA's
    diff = max_factor_diff(memory.adapter, expected, "short", hypernet.config)
    assert diff <= 1e-5


def test_imported_d2l_chunks_a_long_document_as_their_chunked_path_does(imported_d2l):
    hypernet, host, documents, expected = imported_d2l
    internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32, chunk_tokens=documents["chunk_tokens"])
    document = internalizer.chunk(documents["long"])
    assert document.chunks == [expected[f"long.chunk{i}"].tolist() for i in range(documents["chunks"])]
    memory = internalizer.internalize(document)
    assert memory.adapter.max_rank == (documents["chunks"] + 1) * hypernet.config.rank
    diff = max_factor_diff(memory.adapter, expected, "long", hypernet.config)
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
    wider = PublishedDocToLoRA(hypernet.config.model_copy(update={"hidden_size": 2 * hypernet.config.hidden_size}))
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


def test_imported_d2l_refuses_a_pickle_that_names_code_and_runs_none_of_it(tmp_path):
    assert unsafe_pickle_refused()  # a pickle that would make a directory: refused, no directory made


def test_imported_d2l_refusal_names_what_the_pickle_names(tmp_path):
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


# --- exported memories -------------------------------------------------------------------------


def test_imported_d2l_memory_loads_in_peft_with_their_scale(imported_d2l, tmp_path):
    """A memory exported to PEFT gives the logits of the base model with their update merged in:
    ``W + alpha * B^T A`` from their own factors (their alpha, not alpha / r)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from d2l_memory import save_peft

    hypernet, host, documents, expected = imported_d2l
    memory = Internalizer(host, hypernet, adapter_dtype=torch.float32).internalize(documents["short"])
    save_peft(memory.adapter, tmp_path / "peft", base_model=hypernet.config.base_model)
    base_dir = FIXTURES / f"d2l-{hypernet.config.base_model_type}" / "base"
    ids = torch.tensor([expected["short.ids"].tolist()[:20]])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "peft").eval()
    merged = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        for target in hypernet.config.targets:
            name = target.module.split(".")[-1]
            for layer in range(hypernet.config.num_layers):
                A, B = expected[f"short.{name}.A"][layer], expected[f"short.{name}.B"][layer]
                linear = merged.model.layers[layer].get_submodule(target.module)
                linear.weight += documents["lora_alpha"] * B.T @ A
        theirs = merged(input_ids=ids).logits
        ours = peft_model(input_ids=ids).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert (ours - merged.__class__.from_pretrained(base_dir)(input_ids=ids).logits).abs().max() > 1e-3


# --- Text-to-LoRA --------------------------------------------------------------------------------


def t2l_fixture(head: str) -> tuple[Path, dict[str, torch.Tensor], list[str]]:
    folder = FIXTURES / f"t2l-{head}"
    order = json.loads((folder / "order.json").read_text())["module_order"]
    return folder, load_file(folder / "expected.safetensors"), order


@pytest.mark.parametrize("head", ["L", "M", "S"])
def test_imported_t2l_makes_the_lora_their_gen_lora_makes(head, tmp_path):
    from t2l_skills import PublishedTextToLoRA, import_t2l_checkpoint

    folder, expected, order = t2l_fixture(head)
    import_t2l_checkpoint(folder, tmp_path / "t2l")
    model = PublishedTextToLoRA.load(tmp_path / "t2l")
    assert model.config.head == head and [t.module.split(".")[-1] for t in model.config.targets] == order
    with torch.no_grad():
        factors = model(expected["embedding"])
    assert max_lora_diff(factors, expected, model.config) <= 1e-5
    # their module embedding is numbered in their training run's order; another order is another LoRA
    reordered = import_t2l_checkpoint(folder, module_order=order[::-1])
    with torch.no_grad():
        assert max_lora_diff(reordered(expected["embedding"]), expected, model.config) > 1e-3


def test_imported_t2l_encoder_embeds_descriptions_as_theirs_does():
    from t2l_skills import CLSEncoder

    folder = FIXTURES / "t2l-encoder"
    descriptions = json.loads((folder / "descriptions.json").read_text())
    theirs = load_file(folder / "expected.safetensors")["embeddings"]  # normalised, times sqrt(dim)
    ours = CLSEncoder(folder).encode(descriptions)
    torch.testing.assert_close(ours * theirs.shape[1] ** 0.5, theirs, atol=1e-5, rtol=0)
    assert CLSEncoder(folder).encode([""]).abs().sum() == 0  # nothing to read: a zero row


def test_imported_t2l_skill_from_a_description_is_their_skill(tmp_path):
    """The whole path: description -> CLS embedding -> hypernetwork -> a resident skill adapter."""
    from d2l_memory import AdapterStore
    from t2l_skills import CLSEncoder, SkillLibrary, import_t2l_checkpoint

    folder, expected, _ = t2l_fixture("M")
    description = json.loads((FIXTURES / "t2l-encoder" / "descriptions.json").read_text())[0]
    host = AdapterHost.from_pretrained(FIXTURES / "d2l-gemma2" / "base", attn_implementation="eager")
    encoder = CLSEncoder(FIXTURES / "t2l-encoder")
    model = import_t2l_checkpoint(folder, encoder=encoder.name)
    library = SkillLibrary(host, model, encoder, AdapterStore(tmp_path / "store"))
    skill = library.create_skill(description)
    factors = {
        t.module: (
            torch.stack([skill.adapter.weights[ModuleKey(i, t.module)].A for i in range(3)])[None],
            torch.stack([skill.adapter.weights[ModuleKey(i, t.module)].B for i in range(3)])[None],
        )
        for t in model.config.targets
    }
    assert max_lora_diff(factors, expected, model.config, prefix="described.") <= 1e-5
    assert skill.id in host


def test_imported_t2l_refuses_what_it_does_not_implement(tmp_path):
    import yaml

    from t2l_skills import import_t2l_checkpoint

    folder, _, _ = t2l_fixture("L")
    copy = tmp_path / "t2l"
    shutil.copytree(folder, copy)
    args = yaml.safe_load((copy / "args.yaml").read_text())
    (copy / "args.yaml").write_text(yaml.safe_dump({**args, "training_task": "recon"}))
    with pytest.raises(CheckpointError, match="recon"):
        import_t2l_checkpoint(copy)
    (copy / "args.yaml").write_text(yaml.safe_dump({**args, "autoreg_gen": True}))
    with pytest.raises(CheckpointError, match="one rank at a time"):
        import_t2l_checkpoint(copy)
    (copy / "args.yaml").unlink()
    with pytest.raises(CheckpointError, match="args.yaml"):
        import_t2l_checkpoint(copy)
    torch.save({"x": torch.zeros(1), "code": _RunsCode()}, copy / "hypermod.pt")
    (copy / "args.yaml").write_text(yaml.safe_dump(args))
    with pytest.raises(CheckpointError, match="nothing in the file was run"):
        import_t2l_checkpoint(copy)


# --- in the plugin -------------------------------------------------------------------------------


def test_agent_memory_runs_on_imported_checkpoints(tmp_path):
    """agent_memory() on a base model named by path with both imported hypernetworks: a memory,
    a skill, an answer with both switched on, and the memory forgotten again."""
    from integrations.defaults import agent_memory
    from t2l_skills import import_t2l_checkpoint

    import_d2l_checkpoint(FIXTURES / "d2l-gemma2" / "pytorch_model.bin", tmp_path / "d2l", published_affix_ids=False)
    stand_in = f"cls:{FIXTURES / 't2l-encoder'}"  # a tiny stand-in for gte-large-en-v1.5
    import_t2l_checkpoint(FIXTURES / "t2l-M", tmp_path / "t2l", encoder=stand_in)
    memory = agent_memory(FIXTURES / "d2l-gemma2" / "base", tmp_path / "store", tmp_path / "d2l", tmp_path / "t2l")
    _, documents, _ = d2l_fixture("gemma2")
    stored = memory.internalize(documents["short"], namespace=("user",))
    assert stored.adapter.max_rank == 2 * 4  # the document's rank and the bias LoRA's
    skill_id, _ = memory.create_skill("Answer in one word.", namespace=("user",))
    with pytest.raises(NotFoundError):  # its bias rows cannot be cut from its chunk's: no focused ids
        memory.resident_keys(("user",), [f"{stored.id}@0"])
    keys = memory.resident_keys(("user",), [stored.id, skill_id])
    reply = memory.host.generate("Who kept the log?", adapters=keys, max_new_tokens=4)
    assert isinstance(reply.text, str)
    memory.forget(("user",), stored.id)
    assert keys[0] not in memory.host and memory.records(("user",), kind="memory") == []


@pytest.mark.skipif(os.environ.get("D2L_VLLM_TESTS") == "0", reason="D2L_VLLM_TESTS=0")
@pytest.mark.parametrize("kind", D2L_KINDS)
def test_imported_d2l_memory_answers_on_vllm_as_in_process(kind, tmp_path):
    """A published-checkpoint memory served by a real vLLM server on the tiny base: the same greedy
    tokens as the in-process host (vLLM holds back a trailing partial UTF-8 character)."""
    from d2l_memory import VLLMHost, VLLMServer, vllm_environment

    folder, documents, _ = d2l_fixture(kind)
    local = AdapterHost.from_pretrained(folder / "base")
    memory = Internalizer(local, import_d2l_checkpoint(folder / "pytorch_model.bin")).internalize(documents["short"])
    python = vllm_environment(Path(__file__).resolve().parents[1] / ".venv-vllm")
    with (
        VLLMServer(
            folder / "base", python=python, max_lora_rank=16, max_loras=2, log_path=tmp_path / "vllm.log"
        ) as server,
        VLLMHost(
            AdapterHost.from_pretrained(folder / "base").model, local.tokenizer, url=server.url, max_lora_rank=16
        ) as remote,
    ):
        local.add(memory.id, memory.adapter)
        remote.add(memory.id, memory.adapter)
        for prompt in ("Who kept the log?", "When was the lighthouse built?", "Entry 3: the tide"):
            ours = local.generate(prompt, adapters=[memory.id], max_new_tokens=8)
            served = remote.generate(prompt, adapters=[memory.id], max_new_tokens=8)
            assert served.completion_tokens == ours.completion_tokens
            assert served.text == ours.text.rstrip("\ufffd")
            assert ours.text != local.generate(prompt, max_new_tokens=8).text  # the memory changes the answer


def test_imported_d2l_accounts_for_every_tensor():
    from d2l_memory.published_import import published_config, published_weights, read_d2l_checkpoint

    folder, _, _ = d2l_fixture("gemma2")
    state = read_d2l_checkpoint(folder / "pytorch_model.bin")
    unset = {**state, "hypernet_config": {**state["hypernet_config"], "num_pre_head_layers": None}}
    with pytest.raises(CheckpointError, match="not the 4 its config names"):  # their loader's default is 4
        published_config(unset)
    extra = {**state, "extra_head.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match="no place for: extra_head.weight"):
        published_weights(extra, published_config(extra))
