"""The layer math: a base Linear plus the LoRA delta of whichever adapter set is active.

The active set lives in a :class:`contextvars.ContextVar`, not on the module. That is what lets
one resident copy of the base weights serve many requests at once: every thread (and every
asyncio task) sees its own active set, and swapping sets is a pointer assignment, never a
weight copy or merge.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from d2l_memory.adapter import ModuleKey
from d2l_memory.errors import ModelError


@dataclass(frozen=True)
class ActiveSet:
    """Ready-to-apply factors for each module: already concatenated, on the model's device/dtype."""

    names: tuple[str, ...]
    # key -> (A [r, d_in], B [d_out, r]) shared by the batch, or (A [batch, r, d_in],
    # B [batch, d_out, r]) with one adapter per batch row (meta-training, mixed batches).
    factors: Mapping[ModuleKey, tuple[torch.Tensor, torch.Tensor]]


def per_row_active_set(name: str, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> ActiveSet:
    """Generated factors (module -> A [b, L, r, d_in], B [b, L, d_out, r]) as an active set that
    gives batch row i the adapter of row i; the factors keep their autograd graph, so a loss on
    the forward reaches the hypernetwork that made them (training, evaluation)."""
    return ActiveSet(
        (name,),
        {
            ModuleKey(layer, module): (A[:, layer], B[:, layer])  # [b, r, d_in], [b, d_out, r]
            for module, (A, B) in factors.items()
            for layer in range(A.shape[1])
        },
    )


_ACTIVE: ContextVar[ActiveSet | None] = ContextVar("d2l_memory_active_adapters", default=None)


@contextmanager
def use_active_set(active: ActiveSet | None) -> Iterator[ActiveSet | None]:
    """Make ``active`` the adapter set for forwards run in this context (None: base model)."""
    token = _ACTIVE.set(active)
    try:
        yield active
    finally:
        _ACTIVE.reset(token)


class HostedLinear(nn.Linear):
    """An ``nn.Linear`` that adds the active set's delta for its own :class:`ModuleKey`.

    Installed by swapping the class of an existing Linear in place (see :func:`install`), so
    parameters, state-dict keys and ``isinstance(m, nn.Linear)`` stay exactly as they were and
    PEFT, ``save_pretrained`` and our own introspection keep working on the hosted model.
    """

    lora_key: ModuleKey

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., d_in]
        out = F.linear(x, self.weight, self.bias)  # [..., d_out]
        active = _ACTIVE.get()
        if active is None:
            return out
        factors = active.factors.get(self.lora_key)
        if factors is None:
            return out
        A, B = factors
        if A.ndim == 3:  # one adapter per row: x [batch, seq, d_in]
            return out + (x @ A.transpose(1, 2)) @ B.transpose(1, 2)  # [batch, seq, r] -> [batch, seq, d_out]
        return out + F.linear(F.linear(x, A), B)  # [..., r] -> [..., d_out]


def install(linear: nn.Linear, path: str, key: ModuleKey) -> None:
    """Turn a plain Linear into a :class:`HostedLinear` without copying its weights."""
    if type(linear) is not nn.Linear and not isinstance(linear, HostedLinear):
        raise ModelError(
            f"{path} is a {type(linear).__name__}; adapters can be hosted on plain nn.Linear layers only"
            " (quantized layers are not supported yet)"
        )
    linear.__class__ = HostedLinear
    linear.lora_key = key
