"""The embedded default model: a small Llama pretrained on the synthetic world.

No pretrained model or hub is reachable, so the library ships its own base
model (trained by ``python -m d2l_lab.pretrain``). It reads a
document in its prompt and answers questions about it, which makes it the
Doc-to-LoRA teacher, and it follows task descriptions and examples, which makes
it the Text-to-LoRA base.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from d2l_memory.errors import ModelError
from d2l_memory.host import AdapterHost, resolve_device, resolve_dtype

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "checkpoint"
"""The shipped embedded default: a 5.4M-parameter Llama and its tokenizer (``save_pretrained``
output, 11 MB in fp16), pretrained on the synthetic world. It answers questions about a document
in its prompt, which makes it the Doc-to-LoRA teacher, and performs a task from its description
and examples, which makes it the Text-to-LoRA base; it knows nothing outside that world.
BENCHMARKS.md measures it (``benchmarks.base_model``); docs/checkpoints.md gives the commands
that made it."""

D2L_CHECKPOINT_DIR = Path(__file__).resolve().parent / "d2l_checkpoint"
"""The shipped Doc-to-LoRA hypernetwork for the embedded default (3.2M parameters, fp16): a
document in, one rank-8 LoRA per 512-token chunk out, in one forward pass. It reads the base
model's activations, so it fits this base only: a base changed in any weight needs it retrained
(``python -m d2l_lab.train_d2l --init`` this folder). BENCHMARKS.md measures it
(``benchmarks.d2l``); docs/checkpoints.md gives the commands that made it."""

SMOLLM2_D2L_DIR = Path(__file__).resolve().parent / "smollm2_d2l_checkpoint"
"""A shipped Doc-to-LoRA hypernetwork for SmolLM2-135M-Instruct (the ``smollm2`` short name,
``pip install 'd2l-memory[smollm2]'``): 11.8M parameters in fp16, one rank-8 LoRA on every
layer's ``down_proj`` per 512-token chunk, read from the state entering layer 7 (so reading a
document runs 7 of the 30 layers). It was trained on world documents and this kind of machine's
real text (package records, package metadata, pydoc), and fits that base only. BENCHMARKS.md
measures it on held-out real documents (``benchmarks.real_model``); docs/real-model.md gives
the recipe and where it falls short of reading the document in the prompt."""

EMBEDDED_MODEL_ID = "d2l-memory/embedded-default"
"""The name adapters made on the embedded default record as their base model."""


def default_model_available() -> bool:
    """Whether the shipped checkpoint is present (it is absent in a fresh source checkout)."""
    return _is_checkpoint(DEFAULT_MODEL_DIR)


def load_default(device: str = "cpu", dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the shipped model (in eval mode, on ``device``, as ``dtype``) and its tokenizer."""
    if not default_model_available():
        raise ModelError(
            f"the embedded default model is not installed: no checkpoint in {DEFAULT_MODEL_DIR}. "
            "Train one with `python -m d2l_lab.pretrain --out DIR` and copy DIR/final there, "
            "or pass your own model."
        )
    return load_model(DEFAULT_MODEL_DIR, device, dtype)


def load_model(
    directory: str | Path, device: str = "cpu", dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a checkpoint written by the pretraining script (its ``final/`` folder)."""
    if not _is_checkpoint(Path(directory)):
        raise ModelError(f"{directory} is not a model checkpoint: it needs config.json and tokenizer.json")
    target = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=resolve_dtype(dtype))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    return model.to(target).eval(), tokenizer


def load_host(directory: str | Path = DEFAULT_MODEL_DIR, device: str = "cpu") -> AdapterHost:
    """An :class:`AdapterHost` over a checkpoint of the pretraining script (the shipped one by
    default), named :data:`EMBEDDED_MODEL_ID` when it is the shipped one and by its folder otherwise;
    any other model (a hub id, a ``.gguf`` file, ``"smollm2"``) as :meth:`AdapterHost.from_pretrained` loads it."""
    shipped = Path(directory) == DEFAULT_MODEL_DIR
    if not shipped and not _is_checkpoint(Path(directory)):
        return AdapterHost.from_pretrained(directory, device=device)
    model, tokenizer = load_default(device) if shipped else load_model(directory, device)
    return AdapterHost(model, tokenizer, model_id=EMBEDDED_MODEL_ID if shipped else str(directory))


def _is_checkpoint(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "tokenizer.json").is_file()


__all__ = [
    "D2L_CHECKPOINT_DIR",
    "DEFAULT_MODEL_DIR",
    "EMBEDDED_MODEL_ID",
    "SMOLLM2_D2L_DIR",
    "default_model_available",
    "load_default",
    "load_host",
    "load_model",
]
