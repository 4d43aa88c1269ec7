"""The Doc-to-LoRA hypernetwork: base-model activations over a document -> one LoRA per layer.

Shapes, for a batch of ``b`` document chunks of ``s`` tokens through a base model of ``L``
layers and width ``h``, with latent width ``d``, ``n`` latents and rank ``r``:

    activations [b, L, s, h]            hidden state entering each decoder layer
    -> fold layers into batch           [b*L, s, h] -> project -> [b*L, s, d] (+ layer embedding)
    -> n latents cross-attend, N blocks [b*L, n, d]   (keys/values = [context; latents])
    -> r rank queries read the latents  [b*L, r, d]
    -> per-layer head per target module A rows [b, L, r, d_in] and B columns [b, L, d_out, r]

The Perceiver weights are shared across layers (a learned layer embedding tells them apart), so
the hypernetwork's size barely grows with depth; only the last linear map is per layer.

With ``context_layer`` set it reads one state only, the one entering that layer (the published
needle variant read the output of the first quarter of the layers): activations [b, 1, s, h]
are projected once and serve every layer's latents. Reading a document then runs only that
many base-model layers, and the projection runs once instead of L times.
The B scale starts at zero, so a fresh hypernetwork's adapters change nothing. ``adapter_scale``
multiplies the deltas it writes, at inference only: a briefly trained hypernetwork writes deltas a
little too faint, and a scale picked afterwards on training documents makes up part of that
(``d2l_lab.calibrate_scale``).

Differences from the published design, on purpose: no input-independent "bias LoRA" (it would
be added once per memory when memories compose), and a padding mask so a batch of chunks of
different lengths gives the same adapters as one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from transformers import PreTrainedTokenizerBase

from d2l_memory.adapter import Factors, LoRAAdapter, ModuleKey, adapters_from_factors, concat
from d2l_memory.chunking import document_chunks, unwrapped_texts
from d2l_memory.errors import D2LMemoryError
from d2l_memory.introspection import DEFAULT_TARGETS, ModelLayout
from d2l_memory.weights_io import load_weights, read_module, save_module

CONFIG_NAME = "hypernet_config.json"
WEIGHTS_NAME = "hypernet.safetensors"


class TargetShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    module: str  # path inside a decoder layer, e.g. "mlp.down_proj"
    d_in: int
    d_out: int


def target_shapes(layout: ModelLayout, target_modules: Sequence[str]) -> tuple[TargetShape, ...]:
    """The shape of each target module, read off the first layer (every layer gets each target)."""
    first_layer = {t.key.module: t for t in layout.select(target_modules) if t.key.layer == 0}
    return tuple(TargetShape(module=m, d_in=t.d_in, d_out=t.d_out) for m, t in sorted(first_layer.items()))


class BuiltFor(Protocol):
    """What a hypernetwork config records about the base model it was built for."""

    base_model: str
    num_layers: int
    targets: tuple[TargetShape, ...]


def require_fit(layout: ModelLayout, config: BuiltFor, *, hidden_size: int | None = None) -> None:
    """Fail early, with both shapes named, when a hypernetwork was built for another base model
    (its layer count, every target's shape in every layer, and the width it reads, if it reads
    activations): otherwise the mismatch surfaces deep in a matmul, or not at all when widths agree."""
    num_layers, shapes = config.num_layers, layout.shapes()
    missing = [
        t.module
        for t in config.targets
        if any(shapes.get(ModuleKey(layer, t.module)) != (t.d_in, t.d_out) for layer in range(num_layers))
    ]
    wrong_width = hidden_size is not None and hidden_size != layout.hidden_size
    if num_layers != layout.num_layers or wrong_width or missing:
        width = f" of width {hidden_size}" if hidden_size is not None else ""
        raise D2LMemoryError(
            f"this hypernetwork was built for a base model with {num_layers} layers{width}"
            f" ({config.base_model or 'unnamed'}), but the host's model has {layout.num_layers} layers"
            f" of width {layout.hidden_size}" + (f" and no matching {', '.join(missing)}" if missing else "")
        )


class HypernetConfig(BaseModel):
    """Sizes of a Doc-to-LoRA hypernetwork and the base model it was built for."""

    model_config = ConfigDict(frozen=True)

    base_model: str = ""
    hidden_size: int
    num_layers: int
    targets: tuple[TargetShape, ...]
    rank: int = Field(8, ge=1)
    latent_dim: int = Field(128, ge=8)
    num_latents: int = Field(16, ge=1)
    num_blocks: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(4, ge=1)
    chunk_tokens: int = Field(512, ge=16, description="document tokens per chunk adapter")
    context_layer: int | None = Field(
        None, ge=0, description="read only the state entering this decoder layer (None: the input of every layer)"
    )
    adapter_scale: float = Field(
        1.0, gt=0, description="multiplies every memory's delta (set after training by d2l_lab.calibrate_scale)"
    )
    version: str = "0.1"

    @model_validator(mode="after")
    def _context_layer_in_the_stack(self) -> HypernetConfig:
        if self.context_layer is not None and self.context_layer >= self.num_layers:
            raise ValueError(f"context_layer must be below num_layers ({self.num_layers}), got {self.context_layer}")
        return self

    @classmethod
    def for_model(
        cls, layout: ModelLayout, *, base_model: str = "", target_modules=DEFAULT_TARGETS, **sizes
    ) -> HypernetConfig:
        """Derive the target shapes from a base model's layout (every layer gets each target)."""
        return cls(
            base_model=base_model,
            hidden_size=layout.hidden_size,
            num_layers=layout.num_layers,
            targets=target_shapes(layout, target_modules),
            **sizes,
        )


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, out or dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class CrossAttention(nn.Module):
    """Queries attend to a context (optionally the queries too); pre-norm, residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        # queries [B, q, d], context [B, c, d], context_mask [B, c] (True = attend)
        q = rearrange(self.to_q(self.norm_q(queries)), "B q (h e) -> B h q e", h=self.heads)
        k, v = rearrange(self.to_kv(self.norm_kv(context)), "B c (two h e) -> two B h c e", two=2, h=self.heads)
        mask = context_mask[:, None, None, :]  # [B, 1, 1, c]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, h, q, e]
        return queries + self.out(rearrange(attended, "B h q e -> B q (h e)"))


class PerceiverBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attend = CrossAttention(dim, heads)
        self.norm = nn.RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_ratio * dim)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        # Keys/values are the context and the latents themselves, as in the published design.
        both = torch.cat([context, latents], dim=1)  # [B, c + n, d]
        both_mask = F.pad(context_mask, (0, latents.shape[1]), value=True)  # [B, c + n]
        latents = self.attend(latents, both, both_mask)
        return latents + self.mlp(self.norm(latents))


class LoRAHead(nn.Module):
    """Per-layer map from one latent per rank to one row of A and one column of B."""

    def __init__(self, num_layers: int, dim: int, rank: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in = d_in
        self.weight = nn.Parameter(torch.randn(num_layers, dim, d_in + d_out) / dim**0.5)  # [L, d, d_in + d_out]
        self.scale_A = nn.Parameter(torch.ones(num_layers, rank))  # [L, r]
        self.scale_B = nn.Parameter(torch.zeros(num_layers, rank))  # [L, r]: zero delta at init

    def forward(self, rank_latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # rank_latents [b, L, r, d] -> A [b, L, r, d_in], B [b, L, d_out, r]
        rows = torch.einsum("blrd,ldo->blro", F.normalize(rank_latents, dim=-1), self.weight)
        A = rows[..., : self.d_in] * self.scale_A[None, :, :, None]
        B = rows[..., self.d_in :] * self.scale_B[None, :, :, None]
        return A, B.transpose(-1, -2)


class DocToLoRA(nn.Module):
    """Activations of one chunk per batch row -> a rank-r LoRA for every target of every layer."""

    def __init__(self, config: HypernetConfig) -> None:
        super().__init__()
        self.config = config
        d = config.latent_dim
        self.input_norm = nn.RMSNorm(config.hidden_size)
        self.project = SwiGLU(config.hidden_size, 2 * d, d)
        self.layer_embedding = nn.Parameter(torch.randn(config.num_layers, d) * 0.02)  # [L, d]
        self.latents = nn.Parameter(torch.randn(config.num_latents, d) * 0.02)  # [n, d]
        self.rank_queries = nn.Parameter(torch.randn(config.rank, d) * 0.02)  # [r, d]
        self.blocks = nn.ModuleList(
            PerceiverBlock(d, config.num_heads, config.mlp_ratio) for _ in range(config.num_blocks)
        )
        self.read_out = CrossAttention(d, config.num_heads)
        self.head_norm = nn.RMSNorm(d)
        self.head_mlp = SwiGLU(d, config.mlp_ratio * d)
        self.heads = nn.ModuleDict(
            {_head_name(t.module): LoRAHead(config.num_layers, d, config.rank, t.d_in, t.d_out) for t in config.targets}
        )

    def forward(self, activations: torch.Tensor, mask: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """activations [b, L, s, h] (or [b, 1, s, h] with ``context_layer``), mask [b, s] (True = real token)
        -> {module: (A [b, L, r, d_in], B [b, L, d_out, r])}."""
        b, L = activations.shape[0], self.config.num_layers
        context = self.project(self.input_norm(activations))  # [b, L or 1, s, d]
        context = context.expand(b, L, -1, -1) + self.layer_embedding[None, :, None, :]  # [b, L, s, d]
        context = rearrange(context, "b L s d -> (b L) s d")
        context_mask = mask.bool().repeat_interleave(L, dim=0)  # [b*L, s]
        layer_bias = self.layer_embedding.repeat(b, 1)[:, None, :]  # [b*L, 1, d]
        latents = self.latents[None] + layer_bias  # [b*L, n, d]
        for block in self.blocks:
            latents = block(latents, context, context_mask)
        every = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)  # [b*L, n]
        rank_latents = self.read_out(self.rank_queries[None] + layer_bias, latents, every)  # [b*L, r, d]
        rank_latents = rank_latents + self.head_mlp(self.head_norm(rank_latents))
        rank_latents = rearrange(rank_latents, "(b L) r d -> b L r d", b=b)
        return {t.module: self.heads[_head_name(t.module)](rank_latents) for t in self.config.targets}

    # --- documents in, memories out (see internalize.DocumentHypernet) ----------------------
    def document_chunks(
        self, tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int
    ) -> tuple[list[list[int]], int]:
        return document_chunks(tokenizer, text, chunk_tokens)

    def chunk_texts(self, tokenizer: PreTrainedTokenizerBase, chunks: Sequence[list[int]]) -> list[str]:
        return unwrapped_texts(tokenizer, chunks)

    @property
    def layers_read(self) -> int:
        layer = self.config.context_layer
        return self.config.num_layers if layer is None else layer + 1

    def features(self, layer_inputs: torch.Tensor, decoder: nn.Module) -> torch.Tensor:
        """It reads the state entering each decoder layer as it is, [b, L, s, h], or with
        ``context_layer`` the state entering that layer alone, [b, 1, s, h]."""
        layer = self.config.context_layer
        return layer_inputs if layer is None else layer_inputs[:, layer, None]

    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]:
        """Split a batch of generated factors into one adapter per batch row, each delta times
        ``adapter_scale`` (training reads the factors themselves, unscaled)."""
        scale = self.config.adapter_scale
        if scale != 1.0:
            factors = {module: (A, B * scale) for module, (A, B) in factors.items()}
        return adapters_from_factors(factors, names)

    def memory(self, chunk_adapters: Sequence[LoRAAdapter]) -> LoRAAdapter:
        """A memory from its chunk adapters, in order: concatenated along the rank."""
        return concat(chunk_adapters)

    def memory_rank(self, chunk_count: int) -> int:
        return chunk_count * self.config.rank

    # --- saving and loading ------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        return save_module(
            folder, self, self.config, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, dtype=torch.float16
        )

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> DocToLoRA:
        what = "Doc-to-LoRA hypernetwork"
        config, state = read_module(
            folder, HypernetConfig, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, what=what
        )
        model = cls(config)
        load_weights(model, state, folder, what)
        return model.to(device).eval()


def _head_name(module: str) -> str:
    return module.replace(".", "__")  # ModuleDict keys cannot hold dots
