"""The LoRA adapter value type every part of the library passes around.

Scaling convention, stated once for the whole library: an adapter's update to a Linear weight
``W`` of shape ``[d_out, d_in]`` is exactly ``delta_W = B @ A`` with ``A: [r, d_in]`` and
``B: [d_out, r]``. Any LoRA scale (PEFT's ``alpha / r``, rsLoRA's ``alpha / sqrt(r)``, a
hypernetwork's learned gain) is folded into ``B`` when an adapter is made, so concatenating
adapters along the rank adds their deltas with no rescaling.

An adapter remembers which rank rows came from which *part* (a memory, a skill, one chunk of a
document), so a composed adapter can be weighted part by part and a part can be cut back out
(forgetting one memory) without touching the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from d2l_memory.errors import AdapterError


class ModuleKey(NamedTuple):
    """Where a LoRA sits: decoder layer index and the module path inside that layer."""

    layer: int
    module: str  # e.g. "mlp.down_proj", "self_attn.q_proj"

    def __str__(self) -> str:
        return f"layers.{self.layer}.{self.module}"


@dataclass(frozen=True)
class LoRAWeights:
    """One module's low-rank factors; ``delta_W = B @ A``."""

    A: torch.Tensor  # [r, d_in]
    B: torch.Tensor  # [d_out, r]

    def __post_init__(self) -> None:
        if self.A.ndim != 2 or self.B.ndim != 2 or self.A.shape[0] != self.B.shape[1]:
            raise AdapterError(
                f"LoRA factors must be A [r, d_in] and B [d_out, r]; got A {tuple(self.A.shape)}"
                f" and B {tuple(self.B.shape)}"
            )

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        return self.B @ self.A  # [d_out, d_in]


@dataclass(frozen=True)
class AdapterPart:
    """A named run of rank rows; its rank may differ per module (0 where it has none)."""

    name: str
    ranks: Mapping[ModuleKey, int]


@dataclass(frozen=True)
class LoRAAdapter:
    """A set of per-module LoRA factors plus the record of the parts they were built from."""

    weights: Mapping[ModuleKey, LoRAWeights]
    parts: tuple[AdapterPart, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.weights:
            raise AdapterError("an adapter needs at least one module")
        if not self.parts:  # a freshly made adapter is a single part
            only = AdapterPart("adapter", {key: w.rank for key, w in self.weights.items()})
            object.__setattr__(self, "parts", (only,))
        for key, w in self.weights.items():
            total = sum(part.ranks.get(key, 0) for part in self.parts)
            if total != w.rank:
                raise AdapterError(f"{key}: parts cover rank {total} but the factors have {w.rank}")

    @classmethod
    def single(cls, name: str, weights: Mapping[ModuleKey, LoRAWeights]) -> LoRAAdapter:
        """An adapter that is one named part (a memory chunk, a skill)."""
        return cls(dict(weights), (AdapterPart(name, {k: w.rank for k, w in weights.items()}),))

    # --- inspection -------------------------------------------------------------------------
    @property
    def modules(self) -> list[ModuleKey]:
        return sorted(self.weights)

    @property
    def part_names(self) -> list[str]:
        return [part.name for part in self.parts]

    @property
    def max_rank(self) -> int:
        return max(w.rank for w in self.weights.values())

    @property
    def nbytes(self) -> int:
        return sum(w.A.nbytes + w.B.nbytes for w in self.weights.values())

    @property
    def num_parameters(self) -> int:
        return sum(w.A.numel() + w.B.numel() for w in self.weights.values())

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.weights.values())).A.dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).A.device

    def delta(self, key: ModuleKey) -> torch.Tensor:
        return self.weights[key].delta()

    # --- transformations (each returns a new adapter) ---------------------------------------
    def renamed(self, name: str) -> LoRAAdapter:
        """The same factors as one part called ``name`` (a stored memory's id, say)."""
        return LoRAAdapter.single(name, self.weights)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LoRAAdapter:
        moved = {
            key: LoRAWeights(w.A.to(device=device, dtype=dtype), w.B.to(device=device, dtype=dtype))
            for key, w in self.weights.items()
        }
        return LoRAAdapter(moved, self.parts)

    def scaled(self, factor: float) -> LoRAAdapter:
        """Multiply every delta by ``factor`` (applied to B, so A stays shareable)."""
        return self.weighted({part.name: factor for part in self.parts})

    def weighted(self, factors: Mapping[str, float]) -> LoRAAdapter:
        """Scale each part's delta by ``factors[part name]`` (missing parts keep weight 1)."""
        unknown = set(factors) - set(self.part_names)
        if unknown:
            raise AdapterError(f"no such part(s) {sorted(unknown)}; parts are {self.part_names}")
        scaled = {}
        for key, w in self.weights.items():
            column_scale = torch.cat(
                [torch.full((part.ranks.get(key, 0),), float(factors.get(part.name, 1.0))) for part in self.parts]
            ).to(device=w.B.device, dtype=w.B.dtype)  # [r]
            scaled[key] = LoRAWeights(w.A, w.B * column_scale)
        return LoRAAdapter(scaled, self.parts)

    def select(self, names: Iterable[str]) -> LoRAAdapter:
        """Keep only the named parts, in this adapter's order (the inverse of concatenation)."""
        keep = set(names)
        unknown = keep - set(self.part_names)
        if unknown:
            raise AdapterError(f"no such part(s) {sorted(unknown)}; parts are {self.part_names}")
        kept_parts = tuple(part for part in self.parts if part.name in keep)
        weights = {}
        for key, w in self.weights.items():
            rows = [idx for part, idx in self._part_rows(key) if part.name in keep]
            if not rows or sum(len(r) for r in rows) == 0:
                continue
            index = torch.cat([torch.as_tensor(r, dtype=torch.long) for r in rows]).to(w.A.device)
            weights[key] = LoRAWeights(w.A.index_select(0, index), w.B.index_select(1, index))
        return LoRAAdapter(weights, kept_parts)

    def without(self, name: str) -> LoRAAdapter:
        """Forget one part; the others' factors come back bit-identical."""
        return self.select(n for n in self.part_names if n != name)

    def _part_rows(self, key: ModuleKey) -> Iterator[tuple[AdapterPart, range]]:
        start = 0
        for part in self.parts:
            r = part.ranks.get(key, 0)
            yield part, range(start, start + r)
            start += r

    # --- validation against a model ---------------------------------------------------------
    def validate(self, shapes: Mapping[ModuleKey, tuple[int, int]]) -> None:
        """Check every module exists in the model with matching (d_in, d_out)."""
        for key, w in sorted(self.weights.items()):
            if key not in shapes:
                known = sorted({k.module for k in shapes})
                raise AdapterError(
                    f"adapter targets {key}, which the model does not have"
                    f" (layers 0..{max(k.layer for k in shapes)}, modules {known})"
                )
            d_in, d_out = shapes[key]
            if w.A.shape[1] != d_in or w.B.shape[0] != d_out:
                raise AdapterError(
                    f"{key}: adapter maps {w.A.shape[1]} -> {w.B.shape[0]} features but the"
                    f" model's module maps {d_in} -> {d_out}"
                )

    # --- serialisation (safetensors-friendly: flat tensors + string metadata) -----------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors: dict[str, torch.Tensor] = {}
        for key, w in self.weights.items():
            tensors[f"{key}.lora_A"] = w.A.contiguous()
            tensors[f"{key}.lora_B"] = w.B.contiguous()
        parts = [{"name": p.name, "ranks": {str(k): r for k, r in p.ranks.items()}} for p in self.parts]
        return tensors, {"parts": json.dumps(parts)}

    @classmethod
    def from_state_dict(cls, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> LoRAAdapter:
        weights: dict[ModuleKey, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            key, factor = _parse_key(name)
            weights.setdefault(key, {})[factor] = tensor
        try:
            factors = {k: LoRAWeights(f["lora_A"], f["lora_B"]) for k, f in weights.items()}
            parts = tuple(
                AdapterPart(p["name"], {_parse_module(m): int(r) for m, r in p["ranks"].items()})
                for p in json.loads(metadata.get("parts", "[]"))
            )
        except (KeyError, ValueError, TypeError) as err:
            raise AdapterError(f"malformed adapter state: {err}") from err
        return cls(factors, parts)


def concat(adapters: Iterable[LoRAAdapter]) -> LoRAAdapter:
    """Stack adapters along the rank: the result's delta is the sum of theirs.

    Part names must be unique across the inputs, so each stays addressable for weighting and
    forgetting.
    """
    adapters = list(adapters)
    if not adapters:
        raise AdapterError("nothing to concatenate")
    if len(adapters) == 1:
        return adapters[0]
    parts = tuple(part for adapter in adapters for part in adapter.parts)
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise AdapterError(f"part names must be unique when concatenating; repeated: {dupes}")
    keys = sorted({key for adapter in adapters for key in adapter.weights})
    weights = {}
    for key in keys:
        present = [a.weights[key] for a in adapters if key in a.weights]
        weights[key] = LoRAWeights(
            torch.cat([w.A for w in present], dim=0),  # [sum r, d_in]
            torch.cat([w.B for w in present], dim=1),  # [d_out, sum r]
        )
    return LoRAAdapter(weights, parts)


def _parse_module(text: str) -> ModuleKey:
    prefix, layer, module = text.split(".", 2)
    if prefix != "layers":
        raise ValueError(f"bad module key {text!r}")
    return ModuleKey(int(layer), module)


def _parse_key(name: str) -> tuple[ModuleKey, str]:
    module, _, factor = name.rpartition(".")
    if factor not in ("lora_A", "lora_B"):
        raise AdapterError(f"unexpected tensor {name!r} in adapter state")
    try:
        return _parse_module(module), factor
    except ValueError as err:
        raise AdapterError(f"unexpected tensor {name!r} in adapter state") from err


Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Generated LoRA factors: target module -> (A [b, L, r, d_in], B [b, L, d_out, r]), one adapter
per batch row, for every layer. What hypernetworks emit, before they are split into adapters."""


def adapters_from_factors(factors: Factors, names: list[str]) -> list[LoRAAdapter]:
    """Split a batch of generated factors into one single-part adapter per batch row."""
    return [
        LoRAAdapter.single(
            name,
            {
                ModuleKey(layer, module): LoRAWeights(A[row, layer], B[row, layer])
                for module, (A, B) in factors.items()
                for layer in range(A.shape[1])
            },
        )
        for row, name in enumerate(names)
    ]
