"""The Text-to-LoRA hypernetwork: one task-description embedding -> a LoRA for every target module.

Shapes, for a batch of ``b`` description embeddings of width ``e``, a base model of ``L``
layers, ``T`` target modules, rank ``r`` and latent width ``d``:

    embedding [b, e] -> Linear + LayerNorm       task code   [b, d/2]
    + module embedding [T, d/4] + layer embedding [L, d/4]   concatenated: [b, T, L, d]
    head "M": + A/B embedding [2, d]                          [b, T, L, 2, d]
    head "S": + A/B embedding and rank embedding [r, d]       [b, T, L, 2, r, d]
    -> mixer: two residual pre-LN MLP blocks (SiLU, dropout), final LayerNorm
    -> one linear head per target module:
         "L": r * (d_in + d_out) outputs, all of A and B at once
         "M": r * max(d_in, d_out) outputs, A or B as the A/B embedding selects
         "S": max(d_in, d_out) outputs, one rank row of A or B at a time
    -> A [b, L, r, d_in], B [b, L, d_out, r] per target module

"L" has the largest heads, "S" the smallest (its head sees one rank row at a time); all three
share the rest. The heads start at zero weights; A gets a learned bias initialised like PEFT's
LoRA A (one per layer and module) and B none, so a fresh hypernetwork makes B exactly zero: its
adapters change nothing, and training starts from the base model as ordinary LoRA training does.
B is scaled by ``alpha / sqrt(rank)`` (rsLoRA) and the scale is folded into B, as every adapter in
this library keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from d2l_memory import (
    Factors,
    LoRAAdapter,
    ModelError,
    ModelLayout,
    ModuleKey,
    TargetShape,
    TextEncoder,
    adapters_from_factors,
    load_weights,
    read_module,
    save_module,
    target_shapes,
)

CONFIG_NAME = "t2l_config.json"
WEIGHTS_NAME = "t2l.safetensors"
DEFAULT_SKILL_TARGETS = ("q_proj", "v_proj")

HeadKind = Literal["L", "M", "S"]


class T2LConfig(BaseModel):
    """Sizes of a Text-to-LoRA hypernetwork, its task encoder and the base model it was built for."""

    model_config = ConfigDict(frozen=True)

    base_model: str = ""
    encoder: str = Field(description="name of the TextEncoder whose embeddings it reads")
    embed_dim: int = Field(ge=1)
    num_layers: int = Field(ge=1)
    targets: tuple[TargetShape, ...]
    head: HeadKind = "M"
    rank: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0, description="B is scaled by alpha / sqrt(rank) (rsLoRA)")
    latent_dim: int = Field(128, ge=8, multiple_of=4)
    mlp_ratio: int = Field(4, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    version: str = "0.1"

    @property
    def scale(self) -> float:
        return self.alpha / math.sqrt(self.rank)

    @classmethod
    def for_model(
        cls,
        layout: ModelLayout,
        encoder: TextEncoder,
        *,
        base_model: str = "",
        target_modules: tuple[str, ...] = DEFAULT_SKILL_TARGETS,
        **sizes: Any,
    ) -> T2LConfig:
        """Derive target shapes from a base model's layout and the width from the encoder itself."""
        embed_dim = encoder.encode(["probe"]).shape[1]
        return cls(
            base_model=base_model,
            encoder=encoder.name,
            embed_dim=embed_dim,
            num_layers=layout.num_layers,
            targets=target_shapes(layout, target_modules),
            **sizes,
        )


def lora_init_A(rank: int, d_in: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """PEFT's LoRA A initialisation, uniform in ±1/sqrt(d_in): [rank, d_in]."""
    return (torch.rand(rank, d_in, generator=generator) * 2 - 1) / math.sqrt(d_in)


class MixerBlock(nn.Module):
    """Pre-LayerNorm residual MLP: ``x + dropout(W2 silu(W1 norm(x))))``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., dim]
        return x + self.dropout(self.down(F.silu(self.up(self.norm(x)))))


class TextToLoRA(nn.Module):
    """Description embeddings [b, e] -> a rank-r LoRA for every target module of every layer."""

    def __init__(self, config: T2LConfig) -> None:
        super().__init__()
        self.config = config
        d, r = config.latent_dim, config.rank
        self.task = nn.Sequential(nn.Linear(config.embed_dim, d // 2), nn.LayerNorm(d // 2))
        self.module_embedding = nn.Embedding(len(config.targets), d // 4)
        self.layer_embedding = nn.Embedding(config.num_layers, d // 4)
        if config.head != "L":
            self.factor_embedding = nn.Embedding(2, d)  # row 0 asks for A, row 1 for B
        if config.head == "S":
            self.rank_embedding = nn.Embedding(r, d)
        hidden = config.mlp_ratio * d
        self.mixer = nn.Sequential(
            MixerBlock(d, hidden, config.dropout), MixerBlock(d, hidden, config.dropout), nn.LayerNorm(d)
        )
        self.heads = nn.ModuleDict({_key(t.module): _zero_linear(d, self._head_outputs(t)) for t in config.targets})
        self.A_bias = nn.ParameterDict(
            {
                _key(t.module): nn.Parameter(torch.stack([lora_init_A(r, t.d_in) for _ in range(config.num_layers)]))
                for t in config.targets
            }
        )  # each [L, r, d_in]

    def _head_outputs(self, target: TargetShape) -> int:
        r, widest = self.config.rank, max(target.d_in, target.d_out)
        return {"L": r * (target.d_in + target.d_out), "M": r * widest, "S": widest}[self.config.head]

    def forward(self, embeddings: torch.Tensor) -> Factors:
        """embeddings [b, e] -> {module: (A [b, L, r, d_in], B [b, L, d_out, r])}."""
        config = self.config
        if embeddings.ndim != 2 or embeddings.shape[1] != config.embed_dim:
            raise ModelError(
                f"expected description embeddings [batch, {config.embed_dim}] from encoder {config.encoder!r};"
                f" got {tuple(embeddings.shape)}"
            )
        b, T, L = embeddings.shape[0], len(config.targets), config.num_layers
        task = self.task(embeddings)  # [b, d/2]
        z = torch.cat(
            [
                task[:, None, None, :].expand(b, T, L, -1),
                self.module_embedding.weight[None, :, None, :].expand(b, T, L, -1),
                self.layer_embedding.weight[None, None, :, :].expand(b, T, L, -1),
            ],
            dim=-1,
        )  # [b, T, L, d]
        if config.head != "L":
            z = z[..., None, :] + self.factor_embedding.weight  # [b, T, L, 2, d]
        if config.head == "S":
            z = z[..., None, :] + self.rank_embedding.weight  # [b, T, L, 2, r, d]
        z = self.mixer(z)
        factors = {}
        for index, target in enumerate(config.targets):
            A, B_rows = self._split(
                self.heads[_key(target.module)](z[:, index]), target
            )  # [b, L, r, d_in], [b, L, r, d_out]
            A = A + self.A_bias[_key(target.module)]
            factors[target.module] = (A, B_rows.transpose(-1, -2) * config.scale)
        return factors

    def _split(self, out: torch.Tensor, target: TargetShape) -> tuple[torch.Tensor, torch.Tensor]:
        """A head's outputs -> A rows [b, L, r, d_in] and B rows [b, L, r, d_out] (before scaling)."""
        r, d_in, d_out = self.config.rank, target.d_in, target.d_out
        if self.config.head == "L":  # out [b, L, r * (d_in + d_out)]
            return out[..., : r * d_in].unflatten(-1, (r, d_in)), out[..., r * d_in :].unflatten(-1, (r, d_out))
        if self.config.head == "M":  # out [b, L, 2, r * widest]
            out = out.unflatten(-1, (r, -1))
        # out [b, L, 2, r, widest]: slot 0 holds A's rows, slot 1 B's, each cut to its width
        return out[:, :, 0, :, :d_in], out[:, :, 1, :, :d_out]

    # --- adapters, saving and loading -------------------------------------------------------
    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]:
        """Split a batch of generated factors into one single-part adapter per batch row."""
        return adapters_from_factors(factors, names)

    def save(self, folder: str | Path) -> Path:
        """Weights as float32 safetensors (a few MB), config as JSON: a load gives identical adapters."""
        return save_module(
            folder, self, self.config, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, dtype=torch.float32
        )

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> TextToLoRA:
        what = "Text-to-LoRA hypernetwork"
        config, state = read_module(folder, T2LConfig, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, what=what)
        model = cls(config)
        load_weights(model, state, folder, what)
        return model.to(device).eval()


def stack_adapters(adapters: Sequence[LoRAAdapter], modules: Sequence[str], num_layers: int) -> Factors:
    """The inverse of :meth:`TextToLoRA.to_adapters`: same-rank adapters (on ``modules`` of every
    layer) stacked as generated factors, one per row: module -> (A [n, L, r, d_in], B [n, L, d_out, r])."""
    stacked = {}
    for module in modules:
        per_adapter = [[a.weights[ModuleKey(layer, module)] for layer in range(num_layers)] for a in adapters]
        stacked[module] = (
            torch.stack([torch.stack([w.A for w in layers]) for layers in per_adapter]),  # [n, L, r, d_in]
            torch.stack([torch.stack([w.B for w in layers]) for layers in per_adapter]),  # [n, L, d_out, r]
        )
    return stacked


def delta_norms(factors: Factors) -> torch.Tensor:
    """Frobenius norm of each row's whole delta (every module of every layer): [b].

    Uses ``||B A||^2 = sum((B^T B) * (A A^T))``, so only [r, r] matrices are formed, never a delta.
    """
    squares = [
        ((B.transpose(-1, -2) @ B) * (A @ A.transpose(-1, -2))).sum(dim=(-1, -2, -3))  # [b, L, r, r] -> [b]
        for A, B in factors.values()
    ]
    return (torch.stack(squares).sum(0).clamp(min=0) + 1e-12).sqrt()  # + eps: a finite gradient at a zero delta


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    head = nn.Linear(d_in, d_out, bias=False)
    nn.init.zeros_(head.weight)
    return head


def _key(module: str) -> str:
    return module.replace(".", "__")  # ModuleDict and ParameterDict keys cannot hold dots
