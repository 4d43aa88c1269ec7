"""Find the decoder layers of a Hugging Face causal LM and the Linear modules LoRA can target.

Works from module structure rather than a table of class names, so any Llama-like decoder
(Llama, Qwen2, Qwen3, Mistral, Gemma2, ...) is covered as long as its layers sit in one
``nn.ModuleList`` and its projections use the usual names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from d2l_memory.adapter import ModuleKey
from d2l_memory.errors import ModelError

TARGETABLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ("down_proj",)


@dataclass(frozen=True)
class TargetModule:
    key: ModuleKey
    path: str  # full dotted name inside the model, e.g. "model.layers.3.mlp.down_proj"
    d_in: int
    d_out: int


@dataclass(frozen=True)
class ModelLayout:
    """The decoder layers and the targetable Linears of one model."""

    layers_path: str  # e.g. "model.layers"
    num_layers: int
    hidden_size: int
    targets: tuple[TargetModule, ...]

    def shapes(self) -> dict[ModuleKey, tuple[int, int]]:
        return {t.key: (t.d_in, t.d_out) for t in self.targets}

    def select(self, names: Iterable[str]) -> tuple[TargetModule, ...]:
        """The targets whose leaf name is one of ``names`` (e.g. ``("down_proj",)``)."""
        wanted = set(names)
        unknown = wanted - {t.key.module.rsplit(".", 1)[-1] for t in self.targets}
        if unknown:
            raise ModelError(f"the model has no module(s) named {sorted(unknown)}; targetable: {TARGETABLE}")
        return tuple(t for t in self.targets if t.key.module.rsplit(".", 1)[-1] in wanted)


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList holding the decoder layers: the outermost one as long as the config says."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (expected is None or len(module) == expected)
    ]
    if not candidates:
        raise ModelError(
            f"could not find the decoder layers of {type(model).__name__}: no ModuleList of {expected} layers"
        )
    # The outermost match is the decoder stack ("model.layers"), not a list inside a layer.
    return min(candidates, key=lambda item: item[0].count("."))


def describe_model(model: nn.Module) -> ModelLayout:
    layers_path, layers = find_decoder_layers(model)
    targets = []
    for index, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in TARGETABLE:
                targets.append(
                    TargetModule(
                        ModuleKey(index, name),
                        f"{layers_path}.{index}.{name}",
                        module.in_features,
                        module.out_features,
                    )
                )
    if not targets:
        raise ModelError(f"{type(model).__name__} has no Linear modules named any of {TARGETABLE}")
    hidden = getattr(model.config, "hidden_size", None) or targets[0].d_in
    return ModelLayout(layers_path, len(layers), hidden, tuple(targets))
