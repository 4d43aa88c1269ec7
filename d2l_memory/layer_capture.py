"""The hidden state entering each decoder layer, without running what nobody reads.

Hypernetworks read the input of every decoder layer, or of the first few. ``output_hidden_states=True``
runs the whole model to return them, the last layer included, though no reader needs its output. Here a
forward pre-hook on each layer records the layer's input, and the hook of the last layer read ends
the forward before that layer runs: one layer of compute saved per document chunk for a reader of
every layer (a sixth of the embedded default's stack), three quarters of the stack for one that reads
the state after the first quarter.

The hooks are installed once, with the host, and do nothing unless the running context asked
for a capture. That request lives in a :class:`contextvars.ContextVar`, like the active adapter
set, so for another thread generating on the same model the hooks return at once.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from d2l_memory.errors import ModelError

_CAPTURE: ContextVar[tuple[list[torch.Tensor], int] | None] = ContextVar("d2l_memory_layer_capture", default=None)
"""The inputs read so far and how many layers' inputs the running capture wants."""
_INSTALLED = "_d2l_memory_capture_installed"


class _CaptureDone(Exception):
    """Raised by the hook of the last layer read to end a capture forward; never leaves this module."""


def install_capture(layers: nn.ModuleList) -> None:
    """Give every decoder layer the capture hook (a second call on the same layers does nothing)."""
    if getattr(layers, _INSTALLED, False):
        return
    for layer in layers:
        layer.register_forward_pre_hook(_record_input, with_kwargs=True)
    setattr(layers, _INSTALLED, True)


def _record_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    capture = _CAPTURE.get()
    if capture is None:
        return
    captured, wanted = capture
    hidden = args[0] if args else kwargs.get("hidden_states")  # [b, s, h]
    if hidden is None:
        raise ModelError(f"{type(module).__name__} got no hidden states to read (not positional, nor hidden_states=)")
    captured.append(hidden)
    if len(captured) == wanted:
        raise _CaptureDone


def capture_layer_inputs(
    decoder: nn.Module, layers: nn.ModuleList, count: int | None = None, **forward_kwargs: Any
) -> torch.Tensor:
    """Run ``decoder`` (whose stack is ``layers``, hooks installed) and return the input of each of
    its first ``count`` layers (default: all), stopping before layer ``count - 1`` runs: [b, count, s, h]."""
    wanted = len(layers) if count is None else count
    if not 1 <= wanted <= len(layers):
        raise ModelError(f"cannot read the inputs of {wanted} layers of a stack of {len(layers)}")
    captured: list[torch.Tensor] = []
    token = _CAPTURE.set((captured, wanted))
    try:
        decoder(**forward_kwargs)
    except _CaptureDone:
        pass
    finally:
        _CAPTURE.reset(token)
    if len(captured) != wanted:
        raise ModelError(
            f"read {len(captured)} of {wanted} layer inputs from a stack of {len(layers)} decoder layers: the model's"
            " forward does not run each layer once, in order"
        )
    return torch.stack(captured, dim=1)
