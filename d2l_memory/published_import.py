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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from d2l_memory.errors import CheckpointError, ConfigError
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


@dataclass(frozen=True)
class BaseModelWrapping:
    """How the published code wraps a document for one base model."""

    model_type: str  # transformers' model_type of the base
    prefix: str  # what its chat template puts before a document (an empty system turn, the user turn opened)
    suffix: str  # what it puts after one (the user turn closed, the assistant's opened)
    prefix_ids: tuple[int, ...]  # the ids their chunking re-adds before a piece, from their table
    suffix_ids: tuple[int, ...]  # and after one


PUBLISHED_BASES = {
    "google/gemma-2-2b-it": BaseModelWrapping(
        "gemma2",
        "<bos><start_of_turn>user\n\n\n",
        "<end_of_turn>\n<start_of_turn>model\n",
        (2, 106, 1645, 110),
        (107, 108, 106, 2516, 108),
    ),
    "Qwen/Qwen3-4B-Instruct-2507": BaseModelWrapping(
        "qwen3",
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
        (151644, 8948, 198, 151645, 198, 151644, 872, 198),
        (151645, 198, 151644, 77091, 198),
    ),
    "mistralai/Mistral-7B-Instruct-v0.2": BaseModelWrapping(
        "mistral", "<s> [INST] \n\n", " [/INST] ", (1, 733, 16289, 28793, 28705, 13, 13), (733, 28748, 16289, 28793)
    ),
}
"""The base models the published Doc-to-LoRA code knows how to wrap documents for."""

ATTENTION_HEAD_DIM = 128  # their Perceiver's head width, fixed in their code (16 heads, 4 key/value heads)


def layer_module_path(name: str) -> str:
    """Their short target names as paths inside a decoder layer, as their forward patches them."""
    if name in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"):
        return f"self_attn.{name}"
    if name in ("gate_proj", "up_proj", "down_proj"):
        return f"mlp.{name}"
    raise CheckpointError(f"target module {name!r} is not one their LoRA forward patches")


def base_wrapping(base_model: str, prefix: str | None, suffix: str | None) -> BaseModelWrapping:
    """How documents are wrapped for ``base_model``: as the published code does for the bases it
    knows, else with the ``prefix`` and ``suffix`` given (their ids: each tokenized alone)."""
    if (prefix is None) != (suffix is None):
        raise CheckpointError("pass both prefix and suffix (the text before and after a document), or neither")
    known = PUBLISHED_BASES.get(base_model)
    if prefix is not None:
        return BaseModelWrapping(known.model_type if known else "", prefix, suffix or "", (), ())
    if known is None:
        raise CheckpointError(
            f"the published code wraps documents for {', '.join(PUBLISHED_BASES)}, not {base_model!r}: pass prefix"
            " and suffix (the text its chat template puts before and after a document, --prefix/--suffix)"
        )
    return known


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_d2l_checkpoint(path: str | Path) -> dict[str, Any]:
    """The pickled dict of a published Doc-to-LoRA checkpoint, tensors on the CPU, configs as plain data."""
    state = read_pickled_checkpoint(path, records=PICKLED_CLASSES, enums=PICKLED_ENUMS)
    if not isinstance(state, dict) or not {"hypernet_config", "base_model_name_or_path"} <= set(state):
        raise CheckpointError(f"{path} is not a Doc-to-LoRA checkpoint (no hypernet_config and base model name)")
    compiled = "_orig_mod."  # what torch.compile puts before every name; their loader strips it too
    return {k.removeprefix(compiled): v if isinstance(v, torch.Tensor) else plain(v) for k, v in state.items()}


def _require(
    settings: dict[str, Any], expected: dict[str, Any], where: str, defaults: dict[str, Any] | None = None
) -> None:
    """Refuse settings other than ``expected``; a missing one counts as its value in ``defaults``
    (their code's default), else as the expected one."""
    defaults = defaults or {}
    wrong = {
        k: settings.get(k, defaults.get(k, v)) for k, v in expected.items() if settings.get(k, defaults.get(k, v)) != v
    }
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
    try:
        return _published_config(state, source, chunk_tokens, prefix, suffix)
    except (KeyError, TypeError, AttributeError, ValidationError) as err:
        raise CheckpointError(f"this checkpoint's config is not a published Doc-to-LoRA config: {err!r}") from err


def _published_config(
    state: dict[str, Any], source: str, chunk_tokens: int, prefix: str | None, suffix: str | None
) -> PublishedD2LConfig:
    hyper, ctx = state["hypernet_config"], state.get("ctx_encoder_args")
    if ctx is None:
        raise CheckpointError("this checkpoint records no ctx_encoder_args: how it reads documents is unknown")
    agg, lora = hyper["aggregator_config"], hyper["lora_config"]
    base_model = state["base_model_name_or_path"]
    hyper = {**hyper, "extra_modules": hyper.get("extra_modules") or None}
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
    _require(
        ctx,
        {"ctx_encoder_type": "per_layer_activations", "ctx_encoder_last_layer": None},
        "context encoder",
        defaults={"ctx_encoder_type": "early_exit"},
    )
    if ctx.get("ctx_encoder_model_name_or_path") not in (None, base_model):
        raise CheckpointError(
            f"this checkpoint reads documents through {ctx['ctx_encoder_model_name_or_path']!r}, another model than"
            f" its base {base_model!r}; this reader reads them through the base model"
        )
    names = sorted(lora["target_modules"])
    d_in, d_out = hyper["feature_sizes"]
    q_rows = state["aggregator.perceiver.encoder.layers.0.self_attn.q_proj.weight"].shape[0]
    kv_rows = state["aggregator.perceiver.encoder.layers.0.self_attn.k_proj.weight"].shape[0]
    wrapping = base_wrapping(base_model, prefix, suffix)
    pre_head_layers = hyper.get("num_pre_head_layers")
    pre_head_layers = 4 if pre_head_layers is None else pre_head_layers  # their loader's default
    stored = {int(k.split(".")[1]) for k in state if re.match(r"layers\.\d+\.", k)}
    if stored != set(range(pre_head_layers)):
        raise CheckpointError(
            f"this checkpoint has pre-head blocks {sorted(stored)}, not the {pre_head_layers} its config names"
        )
    return PublishedD2LConfig(
        base_model=base_model,
        base_model_type=wrapping.model_type,
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
        pre_head_layers=pre_head_layers,
        per_layer_pre_head=bool(hyper["per_layer_processing"]),
        bias_lora=hyper.get("use_bias", True) is not False,
        chunk_tokens=chunk_tokens,
        prefix=wrapping.prefix,
        suffix=wrapping.suffix,
        prefix_ids=wrapping.prefix_ids or None,
        suffix_ids=wrapping.suffix_ids or None,
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
    """Their tensors under our names and shapes (see :class:`PublishedDocToLoRA`); refuses a
    tensor this architecture has no place for."""
    names = sorted(t.module.split(".")[-1] for t in config.targets)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k != "hypernet_config"}
    taken: set[str] = set()

    def take(key: str) -> torch.Tensor:
        taken.add(key)
        return tensors[key]

    ours: dict[str, torch.Tensor] = {}
    for key in tensors:
        if key.startswith("aggregator."):
            renamed = key
            for pattern, replacement in _RENAMES:
                renamed = re.sub(pattern, replacement, renamed)
            ours[renamed] = take(key)
    per_layer = config.per_layer_pre_head
    side = 0 if per_layer else 1
    for i in range(config.pre_head_layers):
        for norm in ("norm_in", "norm_out"):
            for p in ("weight", "bias"):
                ours[f"pre_head.{i}.{norm}.{p}"] = take(f"layers.{i}.{_PRE_HEAD[norm][side]}.{p}")
        for n in ("1", "2"):
            weight, bias = (take(f"layers.{i}.{_PRE_HEAD[n][side]}.{p}") for p in ("weight", "bias"))
            ours[f"pre_head.{i}.w{n}"] = weight if per_layer else weight.T  # [(L,) in, out]
            ours[f"pre_head.{i}.b{n}"] = bias.reshape(config.num_layers, -1) if per_layer else bias  # [(L,) out]
    head = take("head.weight")
    ours["head"] = head[:, None] if head.ndim == 3 else head  # [L, T, d, widest]
    L, r = config.num_layers, config.rank
    ours["scale_A"] = torch.stack([take(f"scaler_A.{n}").reshape(L, r) for n in names])
    ours["scale_B"] = torch.stack([take(f"scaler_B.{n}").reshape(L, r) for n in names])
    for t, n in enumerate(names):
        ours[f"bias_A.{t}"], ours[f"bias_B.{t}"] = take(f"bias_A.{n}"), take(f"bias_B.{n}")
    left = sorted(set(tensors) - taken)
    if left:
        raise CheckpointError(
            f"this checkpoint holds tensors this architecture has no place for: {', '.join(left[:5])}"
        )
    return {k: v.float().contiguous() for k, v in ours.items()}


def import_d2l_checkpoint(
    path: str | Path,
    out: str | Path | None = None,
    *,
    chunk_tokens: int = 8192,
    prefix: str | None = None,
    suffix: str | None = None,
    published_affix_ids: bool = True,
) -> PublishedDocToLoRA:
    """A published Doc-to-LoRA checkpoint as our hypernetwork, saved into ``out`` when given
    (JSON config and safetensors, loaded later with :meth:`PublishedDocToLoRA.load`).

    ``chunk_tokens``: the most wrapped tokens one chunk adapter reads (their evaluation used
    8192). ``prefix``/``suffix``: the text their chat template puts around a document, for a
    base model not in :data:`PUBLISHED_BASES`. ``published_affix_ids``: re-add the affix ids of
    their table for a known base (False: each affix tokenized alone, for another tokenizer under
    the same name).
    """
    if chunk_tokens < 16:
        raise ConfigError(f"chunk_tokens must be at least 16, got {chunk_tokens}")
    path = Path(path)
    if path.is_dir():
        path = path / "pytorch_model.bin"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    state = read_d2l_checkpoint(path)
    config = published_config(
        state, source=f"{path.name} sha256:{file_sha256(path)}", chunk_tokens=chunk_tokens, prefix=prefix, suffix=suffix
    )
    if not published_affix_ids:
        config = config.model_copy(update={"prefix_ids": None, "suffix_ids": None})
    if config.quantized_reader:
        warnings.warn(
            "this checkpoint was trained reading documents through a 4-bit copy of its base model; memories are"
            " read here at the host's precision, so they differ from its own by that quantization error",
            stacklevel=2,
        )
    weights = published_weights(state, config)
    model = PublishedDocToLoRA(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its tensors do not fit the architecture its config describes: {err}") from err
    if out is not None:
        model.save(out)
    return model.eval()
