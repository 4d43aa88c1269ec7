"""The published Text-to-LoRA hypernetworks (Sakana AI's checkpoints), computed as their code does.

Their ``HyperModulator`` differs from :class:`~t2l_skills.hypernet.TextToLoRA` in its mixer and
in how the heads are fed, so it is a class of its own; an imported checkpoint gives, for the same
description embedding and weights, the LoRA their ``gen_lora`` would (float rounding aside).

Shapes, for ``b`` descriptions embedded in ``e`` dims, a base model of ``L`` layers, latent
width ``d`` (the task code takes d/2, the layer and module embeddings d/4 each) and rank ``r``,
one target module at a time:

    unit embedding [b, e] * sqrt(e) -> Linear + LayerNorm            task code [b, d/2]
    concat [task code, layer embedding (LN), module embedding (LN)]  [b, L, d]
    -> mixer MLP (d -> 4d -> d, SiLU after each) -> residual MLP block 1
    head "L": residual block 2, MLP to the head width, one head to r * (d_in + d_out)
    head "M": + the module's A or B embedding (LN), block 2, MLP, head to r * max(d_in, d_out)
    head "S": as M, but a rank embedding (LN, block 2) added per rank, head to max(d_in, d_out)
    -> A [b, L, r, d_in], B [b, L, d_out, r]; plus their fixed A/B offsets

Their LoRA is a PEFT LoRA of ``lora_alpha`` and rank ``r`` (rsLoRA where set), so its scale is
folded into B. The module embedding is numbered in the order the checkpoint's training process
listed its target modules (``adapter_config.json``), which their own loader does not keep.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from d2l_memory import (
    Factors,
    LoRAAdapter,
    ModelError,
    TargetShape,
    adapters_from_factors,
    load_weights,
    read_module,
    save_module,
)

CONFIG_NAME = "published_t2l_config.json"
WEIGHTS_NAME = "published_t2l.safetensors"


class PublishedT2LConfig(BaseModel):
    """Sizes of a published Text-to-LoRA hypernetwork and the base model it was trained for."""

    model_config = ConfigDict(frozen=True)

    base_model: str
    encoder: str = Field(description="name of the TextEncoder whose embeddings it reads")
    embed_dim: int = Field(ge=1)
    num_layers: int = Field(ge=1)
    targets: tuple[TargetShape, ...]  # in the order their module embedding numbers them
    head: Literal["L", "M", "S"]
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    rslora: bool = False
    latent_dim: int = Field(ge=4, multiple_of=4)
    head_in: int = Field(ge=1)
    head_bias: bool = True
    source: str = ""
    version: str = "published-t2l-1"

    @property
    def scale(self) -> float:
        """PEFT's LoRA scale: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


class Residual(nn.Module):
    """``x + silu(W2 silu(W1 LN(x)))`` (their residual block; dropout is off at inference)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(self.down(F.silu(self.up(self.norm(x)))))


class PublishedTextToLoRA(nn.Module):
    """Unit description embeddings [b, e] -> a rank-r LoRA for every target of every layer."""

    def __init__(self, config: PublishedT2LConfig) -> None:
        super().__init__()
        self.config = config
        d, L, T, r = config.latent_dim, config.num_layers, len(config.targets), config.rank
        self.task = nn.Linear(config.embed_dim, d // 2)
        self.task_norm = nn.LayerNorm(d // 2)
        self.layer_embedding = nn.Embedding(L, d // 4)
        self.layer_norm = nn.LayerNorm(d // 4)
        self.module_embedding = nn.Embedding(T, d // 4)
        self.module_norm = nn.LayerNorm(d // 4)
        self.mix_up, self.mix_down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.block1, self.block2 = Residual(d), Residual(d)
        self.to_head_norm = nn.LayerNorm(d)
        self.to_head_up, self.to_head_down = nn.Linear(d, 4 * d), nn.Linear(4 * d, config.head_in)
        if config.head != "L":
            self.factor_embedding = nn.Parameter(torch.zeros(T, 2, d))  # [T, (A, B), d]
            self.factor_norm = nn.LayerNorm(d)
        if config.head == "S":
            self.rank_embedding = nn.Embedding(r, d)
            self.rank_norm = nn.LayerNorm(d)
        self.heads = nn.ModuleList(
            nn.Linear(config.head_in, self._head_width(t), bias=config.head_bias) for t in config.targets
        )
        self.offset_A = nn.ParameterList(nn.Parameter(torch.zeros(L, r, t.d_in)) for t in config.targets)
        self.offset_B = nn.ParameterList(nn.Parameter(torch.zeros(L, t.d_out, r)) for t in config.targets)

    def _head_width(self, target: TargetShape) -> int:
        r, widest = self.config.rank, max(target.d_in, target.d_out)
        return {"L": r * (target.d_in + target.d_out), "M": r * widest, "S": widest}[self.config.head]

    def _to_head(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.to_head_down(F.silu(self.to_head_up(self.to_head_norm(x)))))

    def forward(self, embeddings: torch.Tensor) -> Factors:
        """embeddings [b, e] (unit rows) -> {module: (A [b, L, r, d_in], B [b, L, d_out, r])}."""
        config = self.config
        if embeddings.ndim != 2 or embeddings.shape[1] != config.embed_dim:
            raise ModelError(
                f"expected description embeddings [batch, {config.embed_dim}] from encoder {config.encoder!r};"
                f" got {tuple(embeddings.shape)}"
            )
        b, L, r = embeddings.shape[0], config.num_layers, config.rank
        task = self.task_norm(self.task(embeddings * math.sqrt(config.embed_dim)))  # [b, d/2]
        layers = self.layer_norm(self.layer_embedding.weight)  # [L, d/4]
        factors = {}
        for t, target in enumerate(config.targets):
            module = self.module_norm(self.module_embedding.weight[t])  # [d/4]
            z = torch.cat(
                [task[:, None].expand(b, L, -1), layers.expand(b, L, -1), module.expand(b, L, -1)], dim=-1
            )  # [b, L, d]
            z = self.block1(F.silu(self.mix_down(F.silu(self.mix_up(z)))))
            head = self.heads[t]
            if config.head == "L":
                out = head(self._to_head(self.block2(z)))  # [b, L, r * (d_in + d_out)]
                A = out[..., : r * target.d_in].unflatten(-1, (r, target.d_in))
                B = out[..., r * target.d_in :].unflatten(-1, (r, target.d_out))
            else:
                A, B = (self._factor(z, t, which, width) for which, width in ((0, target.d_in), (1, target.d_out)))
            A = A + self.offset_A[t]
            B = B.transpose(-1, -2) + self.offset_B[t]  # [b, L, d_out, r]
            factors[target.module] = (A, config.scale * B)
        return factors

    def _factor(self, z: torch.Tensor, t: int, which: int, width: int) -> torch.Tensor:
        """Heads M and S: the rows of A (``which`` 0) or B (1) of target ``t``: [b, L, r, width]."""
        r = self.config.rank
        h = self.block2(z + self.factor_norm(self.factor_embedding[t, which]))  # [b, L, d]
        if self.config.head == "M":
            return self.heads[t](self._to_head(h)).unflatten(-1, (r, -1))[..., :width]
        ranks = self.block2(self.rank_norm(self.rank_embedding.weight))  # [r, d]
        return self.heads[t](self._to_head(h[..., None, :] + ranks))[..., :width]  # [b, L, r, width]

    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]:
        return adapters_from_factors(factors, names)

    def save(self, folder: str | Path) -> Path:
        return save_module(
            folder, self, self.config, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, dtype=torch.float32
        )

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> PublishedTextToLoRA:
        what = "published Text-to-LoRA hypernetwork"
        config, state = read_module(
            folder, PublishedT2LConfig, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, what=what
        )
        model = cls(config)
        load_weights(model, state, folder, what)
        return model.to(device).eval()
