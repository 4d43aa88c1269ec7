"""The hidden state entering each decoder layer, without running what nobody reads.

Hypernetworks read the input of every decoder layer. ``output_hidden_states=True`` runs the
whole model to return them, the last layer included, though no reader needs its output. Here a
forward pre-hook on each layer records the layer's input, and the last layer's hook ends the
forward before that layer runs: one layer of compute saved per document chunk (a sixth of the
embedded default's stack).

The hooks are installed once, with the host, and do nothing unless the running context asked
for a capture. That request lives in a :class:`contextvars.ContextVar`, like the active adapter
set, so for another thread generating on the same model the hooks return at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from d2l_memory.errors import ModelError

_CAPTURE: ContextVar[list[torch.Tensor] | None] = ContextVar("d2l_memory_layer_capture", default=None)
_INSTALLED = "_d2l_memory_capture_installed"


class _EveryLayerRead(Exception):
    """Raised by the last layer's hook to end a capture forward; never leaves this module."""


def install_capture(layers: nn.ModuleList) -> None:
    """Give every decoder layer the capture hook (a second call on the same layers does nothing)."""
    if getattr(layers, _INSTALLED, False):
        return
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(_hook(index == last), with_kwargs=True)
    setattr(layers, _INSTALLED, True)


def _hook(is_last: bool) -> Callable[..., None]:
    def record_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured = _CAPTURE.get()
        if captured is None:
            return
        hidden = args[0] if args else kwargs.get("hidden_states")  # [b, s, h]
        if hidden is None:
            raise ModelError(
                f"{type(module).__name__} got no hidden states to read (not positional, nor hidden_states=)"
            )
        captured.append(hidden)
        if is_last:
            raise _EveryLayerRead

    return record_input


def capture_layer_inputs(decoder: nn.Module, layers: nn.ModuleList, **forward_kwargs: Any) -> torch.Tensor:
    """Run ``decoder`` (whose stack is ``layers``, hooks installed) up to its last layer and return
    each layer's input: [b, L, s, h]."""
    captured: list[torch.Tensor] = []
    token = _CAPTURE.set(captured)
    try:
        decoder(**forward_kwargs)
    except _EveryLayerRead:
        pass
    finally:
        _CAPTURE.reset(token)
    if len(captured) != len(layers):
        raise ModelError(
            f"read {len(captured)} layer inputs from a stack of {len(layers)} decoder layers: the model's"
            " forward does not run each layer once, in order"
        )
    return torch.stack(captured, dim=1)
