"""Reading a published Text-to-LoRA checkpoint into a :class:`PublishedTextToLoRA` folder.

A published checkpoint is a folder: ``hypermod.pt`` (a pickled state dict of tensors),
``args.yaml`` (its training arguments) and ``adapter_config.json`` (the PEFT LoRA it makes).
The state dict is read with the restricted unpickler of :mod:`d2l_memory.safe_pickle` (tensors
only; nothing is run), the YAML with ``yaml.safe_load``; the options are checked against what
this reader implements, and the result is written as our JSON config and safetensors weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from d2l_memory import CheckpointError, TargetShape, layer_module_path, read_pickled_checkpoint
from t2l_skills.published_t2l import PublishedT2LConfig, PublishedTextToLoRA

CHECKPOINT_NAME = "hypermod.pt"


def _head_kind(args: dict[str, Any]) -> str:
    shared, autoreg = bool(args.get("shared_AB_head")), bool(args.get("autoreg_gen"))
    if not autoreg:
        return "M" if shared else "L"
    if shared and args.get("learnable_pos_emb"):
        return "S"
    raise CheckpointError(
        "this checkpoint generates one rank at a time with"
        + (" rotary rank positions" if shared else " a head that is not shared by A and B")
        + "; this reader implements the L, M and S heads (S: shared head, learned rank embedding)"
    )


def read_t2l_checkpoint(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """A published Text-to-LoRA folder's tensors, training arguments and LoRA config."""
    folder = Path(folder)
    path = folder / CHECKPOINT_NAME if folder.is_dir() else folder
    folder = path.parent
    missing = [n for n in ("args.yaml", "adapter_config.json") if not (folder / n).is_file()]
    if missing or not path.is_file():
        raise CheckpointError(
            f"{folder} is not a Text-to-LoRA checkpoint folder: it needs {CHECKPOINT_NAME}, args.yaml and"
            f" adapter_config.json (missing: {', '.join(missing) or path.name})"
        )
    state = read_pickled_checkpoint(path, records=())
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    try:
        args = yaml.safe_load((folder / "args.yaml").read_text())
        lora = json.loads((folder / "adapter_config.json").read_text())
    except (yaml.YAMLError, ValueError) as err:
        raise CheckpointError(f"{folder}: its args.yaml or adapter_config.json does not parse: {err}") from err
    if not isinstance(args, dict) or not isinstance(lora, dict):
        raise CheckpointError(f"{folder}: its args.yaml and adapter_config.json must each hold a mapping")
    return state, args, lora


def published_t2l_config(
    state: dict[str, torch.Tensor],
    args: dict[str, Any],
    lora: dict[str, Any],
    *,
    module_order: Sequence[str] | None = None,
    encoder: str | None = None,
    source: str = "",
) -> PublishedT2LConfig:
    """Our config for a read checkpoint; refuses options this reader does not implement.

    ``module_order``: the order the module embedding numbers the targets in; by default the
    order their training run listed them in (``adapter_config.json``). ``encoder``: the
    :class:`~t2l_skills.encoder.CLSEncoder` spec to read descriptions with, e.g.
    ``"cls:/models/gte-large-en-v1.5"`` for a local copy; by default the hub model it was
    trained with."""
    wrong = {
        k: args.get(k)
        for k, v in {"training_task": "sft", "encoder_type": "linear", "use_one_hot_task_emb": False}.items()
        if args.get(k, v) != v
    }
    if wrong or lora.get("peft_type", "LORA") != "LORA" or lora.get("use_dora"):
        raise CheckpointError(f"this checkpoint uses options this reader does not implement: {wrong or lora}")
    emb_model = args.get("emb_model")
    if not emb_model or "gte" not in emb_model.lower():
        raise CheckpointError(
            f"this checkpoint embeds descriptions with {emb_model or 'the base model'}; this reader implements"
            " the gte (CLS) task encoder"
        )
    order = list(module_order or lora["target_modules"])
    if sorted(order) != sorted(lora["target_modules"]):
        raise CheckpointError(f"module_order {order} is not the checkpoint's targets {lora['target_modules']}")
    targets = tuple(
        TargetShape(
            module=layer_module_path(m),
            d_in=state[f"AB_offset.A.{m}"].shape[-1],
            d_out=state[f"AB_offset.B.{m}"].shape[-2],
        )
        for m in order
    )
    return PublishedT2LConfig(
        base_model=args.get("model_dir", ""),
        encoder=encoder or f"cls:{emb_model}",
        embed_dim=state["task_encoder.mlp.0.weight"].shape[1],
        num_layers=state["layer_depth_encoder.0.weight"].shape[0],
        targets=targets,
        head=_head_kind(args),
        rank=lora["r"],
        alpha=float(lora["lora_alpha"]),
        rslora=bool(lora.get("use_rslora")),
        latent_dim=4 * state["layer_depth_encoder.0.weight"].shape[1],
        head_in=state[f"heads.{order[0]}.weight"].shape[1],
        head_bias=f"heads.{order[0]}.bias" in state,
        source=source,
    )


_RENAMES = {
    "task_encoder.mlp.0": "task",
    "task_encoder.mlp.1": "task_norm",
    "layer_depth_encoder.0": "layer_embedding",
    "layer_depth_encoder.1": "layer_norm",
    "layer_type_encoder.0": "module_embedding",
    "layer_type_encoder.1": "module_norm",
    "mixer.1": "mix_up",
    "mixer.4": "mix_down",
    "mlp3.0": "to_head_norm",
    "mlp3.1": "to_head_up",
    "mlp3.4": "to_head_down",
    "out_emb_norm": "factor_norm",
    "pos_emb.0": "rank_embedding",
    "pos_emb.1": "rank_norm",
    **{f"mlp{i}.mlp.{j}": f"block{i}.{name}" for i in (1, 2) for j, name in ((0, "norm"), (1, "up"), (4, "down"))},
}


def published_t2l_weights(state: dict[str, torch.Tensor], config: PublishedT2LConfig) -> dict[str, torch.Tensor]:
    """Their tensors under our names and shapes (see :class:`PublishedTextToLoRA`)."""
    ours: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if module in _RENAMES:
            ours[f"{_RENAMES[module]}.{param}"] = tensor
    names = [t.module.split(".")[-1] for t in config.targets]
    for t, m in enumerate(names):
        for param in ("weight", "bias"):
            if f"heads.{m}.{param}" in state:
                ours[f"heads.{t}.{param}"] = state[f"heads.{m}.{param}"]
        ours[f"offset_A.{t}"], ours[f"offset_B.{t}"] = state[f"AB_offset.A.{m}"], state[f"AB_offset.B.{m}"]
    if config.head != "L":
        ours["factor_embedding"] = torch.stack([torch.stack([state[f"out_emb.{m}.{f}"] for f in "AB"]) for m in names])
    return {k: v.float().contiguous() for k, v in ours.items()}


def import_t2l_checkpoint(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    module_order: Sequence[str] | None = None,
    encoder: str | None = None,
) -> PublishedTextToLoRA:
    """A published Text-to-LoRA checkpoint folder (or its ``hypermod.pt``) as our hypernetwork,
    saved into ``out`` when given (loaded later with :meth:`PublishedTextToLoRA.load`);
    ``module_order`` and ``encoder`` as :func:`published_t2l_config` takes them."""
    state, args, lora = read_t2l_checkpoint(folder)
    path = Path(folder) / CHECKPOINT_NAME if Path(folder).is_dir() else Path(folder)
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    source = f"{path.name} sha256:{digest}"
    try:
        config = published_t2l_config(state, args, lora, module_order=module_order, encoder=encoder, source=source)
        weights = published_t2l_weights(state, config)
    except (KeyError, TypeError, AttributeError, ValidationError) as err:
        raise CheckpointError(
            f"{path}: not a published Text-to-LoRA checkpoint this reader implements: {err!r}"
        ) from err
    model = PublishedTextToLoRA(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its tensors do not fit the architecture its arguments describe: {err}") from err
    if out is not None:
        model.save(out)
    return model.eval()
