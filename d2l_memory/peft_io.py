"""Convert adapters to and from PEFT adapter folders, the format PEFT, vLLM and SGLang load.

We write every module at one uniform rank (zero-padding smaller ones, which adds nothing to the
delta) with ``lora_alpha == r``, so PEFT's scale ``alpha / r`` is exactly 1 and matches our
convention ``delta_W = B @ A``. Servers that ignore ``rank_pattern`` (vLLM) then load it as is.
Reading accepts any PEFT LoRA folder: rank/alpha patterns and rsLoRA scales are folded into B.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from d2l_memory.adapter import LoRAAdapter, LoRAWeights, ModuleKey
from d2l_memory.errors import AdapterError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_KEY = re.compile(
    r"^base_model\.model\.(?P<layers>.+?)\.(?P<layer>\d+)\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$"
)


def save_peft(
    adapter: LoRAAdapter,
    folder: str | Path,
    *,
    base_model: str,
    layers_path: str = "model.layers",
) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rank = adapter.max_rank
    tensors = {}
    for key, w in adapter.weights.items():
        pad = rank - w.rank
        A = torch.cat([w.A, w.A.new_zeros(pad, w.A.shape[1])], dim=0)  # [rank, d_in]
        B = torch.cat([w.B, w.B.new_zeros(w.B.shape[0], pad)], dim=1)  # [d_out, rank]
        prefix = f"base_model.model.{layers_path}.{key.layer}.{key.module}"
        tensors[f"{prefix}.lora_A.weight"] = A.contiguous()
        tensors[f"{prefix}.lora_B.weight"] = B.contiguous()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "use_rslora": False,
        "bias": "none",
        "target_modules": sorted({key.module.rsplit(".", 1)[-1] for key in adapter.weights}),
        "layers_to_transform": sorted({key.layer for key in adapter.weights}),
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    save_file(tensors, folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return folder


def load_peft(folder: str | Path, *, name: str = "adapter") -> LoRAAdapter:
    """Read a PEFT LoRA folder into our convention (its scale folded into B)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
        tensors = load_file(folder / WEIGHTS_NAME)
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise AdapterError(f"{folder} is not a readable PEFT adapter folder: {err}") from err
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{folder}: only LoRA adapters are supported, not {config.get('peft_type')}")
    factors: dict[ModuleKey, dict[str, torch.Tensor]] = {}
    paths: dict[ModuleKey, str] = {}
    for tensor_name, tensor in tensors.items():
        match = _PEFT_KEY.match(tensor_name)
        if match is None:
            raise AdapterError(f"{folder}: unexpected tensor {tensor_name!r} (only LoRA A/B weights are supported)")
        key = ModuleKey(int(match["layer"]), match["module"])
        factors.setdefault(key, {})[match["factor"]] = tensor
        paths[key] = f"{match['layers']}.{key.layer}.{key.module}"
    weights = {}
    for key, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"{folder}: {key} is missing its lora_{'A' if 'A' not in pair else 'B'} weight")
        scale = _peft_scale(config, paths[key], rank=pair["A"].shape[0])
        weights[key] = LoRAWeights(pair["A"], pair["B"] * scale)
    return LoRAAdapter.single(name, weights)


def _peft_scale(config: dict, module_path: str, *, rank: int) -> float:
    """PEFT's scale for one module: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in config.get("alpha_pattern", {}).items():
        if re.match(rf"(.*\.)?{pattern}$", module_path):
            alpha = value
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
