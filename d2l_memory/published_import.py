"""Reading a published Doc-to-LoRA checkpoint into a :class:`PublishedDocToLoRA` folder.

Their ``pytorch_model.bin`` is a pickled dict: the hypernetwork's tensors, the base model's hub
name, and three config objects of their code (``HypernetConfig`` holding a PEFT ``LoraConfig``,
``AggregatorConfig``, ``CtxEncoderArguments``). It is read with the restricted unpickler of
:mod:`d2l_memory.safe_pickle` (their classes come back as plain fields, nothing is run), checked
for the options this reader implements, and written as our JSON config and safetensors weights.
Once imported, nothing reads the pickle again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from d2l_memory.errors import CheckpointError
from d2l_memory.hypernet import TargetShape
from d2l_memory.published_d2l import PublishedD2LConfig, PublishedDocToLoRA
from d2l_memory.safe_pickle import plain, read_pickled_checkpoint

PICKLED_CLASSES = (
    "ctx_to_lora.modeling.hypernet.HypernetConfig",
    "ctx_to_lora.modeling.aggregator.AggregatorConfig",
    "ctx_to_lora.configs.CtxEncoderArguments",
    "peft.tuners.lora.config.LoraConfig",
    "peft.tuners.lora.config.LoraRuntimeConfig",
)
PICKLED_ENUMS = ("peft.utils.peft_types.PeftType", "peft.utils.peft_types.TaskType")

BASE_FAMILIES = {
    "gemma-2": ("gemma2", "<bos><start_of_turn>user\n\n\n", "<end_of_turn>\n<start_of_turn>model\n"),
    "qwen3": ("qwen3", "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
    "mistral": ("mistral", "<s> [INST] \n\n", " [/INST] "),
}
"""By what a base model's name contains: its transformers ``model_type``, and the text their chat
templates put before and after a document (an empty system turn, the document as the user turn,
the assistant's turn opened)."""

ATTENTION_HEAD_DIM = 128  # their Perceiver's head width, fixed in their code (16 heads, 4 key/value heads)


def layer_module_path(name: str) -> str:
    """Their short target names as paths inside a decoder layer, as their forward patches them."""
    if name in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"):
        return f"self_attn.{name}"
    if name in ("gate_proj", "up_proj", "down_proj"):
        return f"mlp.{name}"
    raise CheckpointError(f"target module {name!r} is not one their LoRA forward patches")


def base_family(base_model: str) -> tuple[str, str, str]:
    """The ``model_type``, document prefix and suffix of a base model named ``base_model``."""
    lowered = base_model.lower()
    for family, known in BASE_FAMILIES.items():
        if family in lowered:
            return known
    raise CheckpointError(
        f"no chat-template wrapping is known for base model {base_model!r} (known: {', '.join(BASE_FAMILIES)});"
        " pass prefix= and suffix= (the text before and after a document)"
    )


def read_d2l_checkpoint(path: str | Path) -> dict[str, Any]:
    """The pickled dict of a published Doc-to-LoRA checkpoint, tensors on the CPU, configs as plain data."""
    state = read_pickled_checkpoint(path, records=PICKLED_CLASSES, enums=PICKLED_ENUMS)
    if not isinstance(state, dict) or not {"hypernet_config", "base_model_name_or_path"} <= set(state):
        raise CheckpointError(f"{path} is not a Doc-to-LoRA checkpoint (no hypernet_config and base model name)")
    return {k: v if isinstance(v, torch.Tensor) else plain(v) for k, v in state.items()}


def _require(settings: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    wrong = {k: settings.get(k) for k, v in expected.items() if settings.get(k, v) != v}
    if wrong:
        asked = ", ".join(f"{k}={v!r} (this reader implements {expected[k]!r})" for k, v in wrong.items())
        raise CheckpointError(f"this checkpoint's {where} uses options this reader does not implement: {asked}")


def published_config(
    state: dict[str, Any],
    *,
    source: str = "",
    chunk_tokens: int = 8192,
    prefix: str | None = None,
    suffix: str | None = None,
) -> PublishedD2LConfig:
    """Our config for a checkpoint read by :func:`read_d2l_checkpoint`; refuses options not implemented."""
    hyper, ctx = state["hypernet_config"], state.get("ctx_encoder_args") or {}
    agg, lora = hyper["aggregator_config"], hyper["lora_config"]
    base_model = state["base_model_name_or_path"]
    _require(
        hyper,
        {
            "per_rank_gen": True,
            "use_light_weight_lora": False,
            "use_token_mixing": False,
            "use_per_rank_bias": False,
            "extra_modules": None,
        },
        "hypernetwork",
    )
    _require(
        agg, {"aggregator_type": "perceiver", "layer_to_layer_ctx_encoder": True, "num_extra_modules": 0}, "aggregator"
    )
    _require(ctx, {"ctx_encoder_type": "per_layer_activations", "ctx_encoder_last_layer": None}, "context encoder")
    _require(lora, {"use_dora": False, "use_rslora": False}, "LoRA config")
    if ctx.get("ctx_encoder_model_name_or_path") not in (None, base_model):
        raise CheckpointError(
            f"this checkpoint reads documents through {ctx['ctx_encoder_model_name_or_path']!r}, another model than"
            f" its base {base_model!r}; this reader reads them through the base model"
        )
    names = sorted(lora["target_modules"])
    d_in, d_out = hyper["feature_sizes"]
    q_rows = state["aggregator.perceiver.encoder.layers.0.self_attn.q_proj.weight"].shape[0]
    kv_rows = state["aggregator.perceiver.encoder.layers.0.self_attn.k_proj.weight"].shape[0]
    if prefix is not None and suffix is not None:
        model_type = ""
    else:
        model_type, prefix, suffix = base_family(base_model)
    return PublishedD2LConfig(
        base_model=base_model,
        base_model_type=model_type,
        hidden_size=agg["feature_size"],
        num_layers=agg["num_layers"],
        targets=tuple(TargetShape(module=layer_module_path(n), d_in=d_in[n], d_out=d_out[n]) for n in names),
        rank=lora["r"],
        alpha=float(lora["lora_alpha"]),
        latent_dim=agg["output_size"],
        num_latents=agg["n_latent_queries"],
        num_blocks=agg["num_blocks"],
        self_attention_per_block=agg["num_self_attn_per_block"],
        num_heads=q_rows // ATTENTION_HEAD_DIM,
        num_kv_heads=kv_rows // ATTENTION_HEAD_DIM,
        head_dim=ATTENTION_HEAD_DIM,
        pre_head_layers=hyper.get("num_pre_head_layers") or 0,
        per_layer_pre_head=bool(hyper["per_layer_processing"]),
        bias_lora=hyper.get("use_bias", True) is not False,
        chunk_tokens=chunk_tokens,
        prefix=prefix,
        suffix=suffix,
        quantized_reader=bool(ctx.get("quantize_ctx_encoder", False)),
        source=source,
    )


_RENAMES = [
    (r"^aggregator\.perceiver\.modality_projection\.(gate|up|down)_proj\.", r"project.\1."),
    (r"^aggregator\.perceiver\.(encoder|decoder)\.latents_q$", r"\1.latents"),
    (r"^aggregator\.perceiver\.(encoder|decoder)\.layernorm\.", r"\1.norm."),
    (r"^aggregator\.perceiver\.(encoder|decoder)\.layers\.", r"\1.layers."),
    (r"\.input_latents_layernorm\.", ".latents_norm."),
    (r"\.input_context_layernorm\.", ".context_norm."),
    (r"\.self_attn\.([qkvo])_proj\.", r".\1."),
    (r"\.post_attention_layernorm\.", ".attention_norm."),
    (r"\.pre_ff_layernorm\.", ".mlp_norm."),
    (r"\.post_ff_layernorm\.", ".mlp_out_norm."),
    (r"\.mlp\.(gate|up|down)_proj\.", r".mlp.\1."),
]
_PRE_HEAD = {  # their pre-head blocks: (per-layer Sequential index, shared Sequential index) -> ours
    "norm_in": ("layers.0", "mlp.0"),
    "1": ("layers.1", "mlp.2"),
    "2": ("layers.3", "mlp.5"),
    "norm_out": ("layers.4", "mlp.6"),
}


def published_weights(state: dict[str, Any], config: PublishedD2LConfig) -> dict[str, torch.Tensor]:
    """Their tensors under our names and shapes (see :class:`PublishedDocToLoRA`)."""
    names = sorted(t.module.split(".")[-1] for t in config.targets)
    ours: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("aggregator."):
            for pattern, replacement in _RENAMES:
                key = re.sub(pattern, replacement, key)
            ours[key] = tensor
    per_layer = config.per_layer_pre_head
    for i in range(config.pre_head_layers):
        side = 0 if per_layer else 1
        for norm in ("norm_in", "norm_out"):
            for p in ("weight", "bias"):
                ours[f"pre_head.{i}.{norm}.{p}"] = state[f"layers.{i}.{_PRE_HEAD[norm][side]}.{p}"]
        for n in ("1", "2"):
            weight, bias = (state[f"layers.{i}.{_PRE_HEAD[n][side]}.{p}"] for p in ("weight", "bias"))
            ours[f"pre_head.{i}.w{n}"] = weight if per_layer else weight.T  # [(L,) in, out]
            ours[f"pre_head.{i}.b{n}"] = bias.reshape(config.num_layers, -1) if per_layer else bias  # [(L,) out]
    head = state["head.weight"]
    ours["head"] = head[:, None] if head.ndim == 3 else head  # [L, T, d, widest]
    ours["scale_A"] = torch.stack([state[f"scaler_A.{n}"].reshape(config.num_layers, config.rank) for n in names])
    ours["scale_B"] = torch.stack([state[f"scaler_B.{n}"].reshape(config.num_layers, config.rank) for n in names])
    for t, n in enumerate(names):
        ours[f"bias_A.{t}"], ours[f"bias_B.{t}"] = state[f"bias_A.{n}"], state[f"bias_B.{n}"]
    return {k: v.float().contiguous() for k, v in ours.items()}


def import_d2l_checkpoint(
    path: str | Path,
    out: str | Path | None = None,
    *,
    chunk_tokens: int = 8192,
    prefix: str | None = None,
    suffix: str | None = None,
) -> PublishedDocToLoRA:
    """A published Doc-to-LoRA checkpoint as our hypernetwork, saved into ``out`` when given
    (JSON config and safetensors, loaded later with :meth:`PublishedDocToLoRA.load`).

    ``chunk_tokens``: the most wrapped tokens one chunk adapter reads (their evaluation used
    8192). ``prefix``/``suffix``: the text their chat template puts around a document, for a
    base model whose family is not in :data:`BASE_FAMILIES`.
    """
    path = Path(path)
    state = read_d2l_checkpoint(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    config = published_config(
        state, source=f"{path.name} sha256:{digest}", chunk_tokens=chunk_tokens, prefix=prefix, suffix=suffix
    )
    model = PublishedDocToLoRA(config)
    weights = published_weights(state, config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its tensors do not fit the architecture its config describes: {err}") from err
    if out is not None:
        model.save(out)
    return model.eval()
