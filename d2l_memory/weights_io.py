"""A hypernetwork on disk: its weights as safetensors beside its config as JSON (never pickle).

Both hypernetworks (Doc-to-LoRA and Text-to-LoRA) are saved and read this way, so a checkpoint
folder can be inspected with ordinary tools and loaded without running any stored code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from pydantic import BaseModel, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from d2l_memory.errors import ModelError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def save_module(
    folder: str | Path, module: nn.Module, config: BaseModel, *, weights_name: str, config_name: str, dtype: torch.dtype
) -> Path:
    """Write ``module``'s weights (as ``dtype``) and ``config`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(device="cpu", dtype=dtype).contiguous() for k, v in module.state_dict().items()}
    save_file(state, folder / weights_name)
    (folder / config_name).write_text(config.model_dump_json(indent=2))
    return folder


def read_module(
    folder: str | Path, config_class: type[ConfigT], *, weights_name: str, config_name: str, what: str
) -> tuple[ConfigT, dict[str, torch.Tensor]]:
    """The config and the float32 weights saved by :func:`save_module`; a clear error otherwise."""
    folder = Path(folder)
    try:
        config = config_class.model_validate_json((folder / config_name).read_text())
        state = {k: v.float() for k, v in load_file(folder / weights_name).items()}
    except (OSError, ValueError, ValidationError, SafetensorError) as err:
        raise ModelError(f"{folder} is not a {what} folder: {err}") from err
    return config, state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], folder: str | Path, what: str) -> None:
    """Load weights read by :func:`read_module` into ``module``, built from the config read with
    them; :class:`ModelError` when they do not fit it (missing, extra or reshaped tensors)."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"{folder} is not a {what} folder: {err}") from err
