"""The published Doc-to-LoRA hypernetworks (Sakana AI's checkpoints), computed as their code does.

Their architecture differs from :class:`~d2l_memory.hypernet.DocToLoRA` in several places, so it
is a class of its own; an imported checkpoint gives, for the same base model, document and
weights, the adapters their ``ModulatedPretrainedModel`` would (float rounding aside). Their
released checkpoints read documents through a 4-bit copy of the base model; here the host reads
them at its own precision (``quantized_reader`` records which).

Shapes, for ``b`` chunks of ``s`` tokens through a base model of ``L`` layers and width ``h``,
latent width ``d``, ``n`` latents, ``T`` target modules and rank ``r``:

    features [b, L, s, h]   the state entering layers 0..L-2, then the final-normed output of
                            layer L-2 (their reader is the base model without its last layer)
    -> fold layers into batch, gated MLP h -> 4h -> d            [b*L, s, d]
    -> encoder: n latents, each block one cross-attention to the context (keys/values: the
       context only) and optional latent self-attentions; 16 heads of 128, 4 key/value heads,
       RMSNorm before and after attention and MLP                 [b*L, n, d]
    -> decoder: T*r queries cross-attend to the n latents         [b*L, T*r, d]
    -> residual MLP blocks (per-layer weights, or shared), L2-normalised
    -> per-layer head to d_in + d_out, times a learned per-rank scale for A and for B
    -> A [b, L, r, d_in], B [b, L, d_out, r] per target

Their LoRA is applied as ``x A^T B * alpha`` (alpha itself, not alpha / r), so alpha is folded
into B here, as every adapter in this library keeps its scale. Their input-independent bias LoRA
(rank r per target) is appended once to every memory, after its chunk adapters, as theirs is.
Documents are wrapped as their chat templates wrap them (an empty system turn, the document as
the user turn) and long ones cut into near-equal chunks with the template's prefix and suffix
re-added to each (:func:`affix_chunks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from transformers import PreTrainedTokenizerBase

from d2l_memory.adapter import Factors, LoRAAdapter, LoRAWeights, ModuleKey, adapters_from_factors, concat
from d2l_memory.errors import ModelError
from d2l_memory.hypernet import TargetShape
from d2l_memory.weights_io import load_weights, read_module, save_module

CONFIG_NAME = "published_d2l_config.json"
WEIGHTS_NAME = "published_d2l.safetensors"
ROWS_PER_PASS = 4
"""Layer sequences projected and encoded together; a pass over each holds ``4 * s * h`` activations."""


class PublishedD2LConfig(BaseModel):
    """Sizes of a published Doc-to-LoRA hypernetwork and how it reads documents."""

    model_config = ConfigDict(frozen=True)

    base_model: str
    base_model_type: str = Field("", description="its transformers model_type; a host of another is refused")
    hidden_size: int
    num_layers: int
    targets: tuple[TargetShape, ...]  # in the order of their head (sorted by module name)
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0, description="their LoRA scale, applied as is (not alpha / rank)")
    latent_dim: int
    num_latents: int
    num_blocks: int = Field(ge=1)
    self_attention_per_block: int = Field(0, ge=0)
    num_heads: int = 16
    num_kv_heads: int = 4
    head_dim: int = 128
    pre_head_layers: int = Field(1, ge=0)
    per_layer_pre_head: bool = True
    bias_lora: bool = True
    chunk_tokens: int = Field(8192, ge=16, description="most wrapped tokens one chunk adapter reads")
    prefix: str = Field(description="what their chat template puts before a document")
    suffix: str = Field(description="what it puts after one")
    prefix_ids: tuple[int, ...] | None = Field(
        None, description="the ids their chunking re-adds before a piece (None: the prefix tokenized alone)"
    )
    suffix_ids: tuple[int, ...] | None = Field(None, description="the ids it re-adds after one")
    quantized_reader: bool = Field(False, description="their training read documents through a 4-bit copy")
    source: str = ""
    version: str = "published-d2l-1"


def affix_chunks(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    prefix: str,
    suffix: str,
    chunk_tokens: int,
    affix_ids: tuple[Sequence[int], Sequence[int]] | None = None,
) -> tuple[list[list[int]], int]:
    """The document wrapped as ``prefix + text + suffix`` and, when that is longer than
    ``chunk_tokens``, cut into near-equal pieces, the prefix's ids re-added before each piece but
    the first and the suffix's after each but the last; also the document's own token count.
    ``affix_ids``: those ids (default: each affix tokenized alone)."""
    ids = _ids(tokenizer, prefix + text.strip() + suffix)
    before, after = (list(a) for a in affix_ids) if affix_ids else (_ids(tokenizer, prefix), _ids(tokenizer, suffix))
    token_count = max(len(ids) - len(before) - len(after), 0)
    pieces = math.ceil(len(ids) / chunk_tokens)
    if pieces <= 1:
        return [ids], token_count
    step = math.ceil(len(ids) / pieces)
    chunks = [ids[i : i + step] for i in range(0, len(ids), step)]
    last = len(chunks) - 1
    return [(before if i else []) + c + (after if i < last else []) for i, c in enumerate(chunks)], token_count


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class PerceiverLayer(nn.Module):
    """Latents attend to a context (cross) or to themselves; norms before and after each sub-block."""

    def __init__(self, config: PublishedD2LConfig, *, cross: bool) -> None:
        super().__init__()
        d, heads, kv_heads, e = config.latent_dim, config.num_heads, config.num_kv_heads, config.head_dim
        self.cross, self.heads, self.kv_heads = cross, heads, kv_heads
        self.latents_norm = nn.RMSNorm(d, eps=1e-6)
        self.context_norm = nn.RMSNorm(d, eps=1e-6) if cross else nn.Identity()
        self.q = nn.Linear(d, heads * e, bias=False)
        self.k = nn.Linear(d, kv_heads * e, bias=False)
        self.v = nn.Linear(d, kv_heads * e, bias=False)
        self.o = nn.Linear(heads * e, d, bias=False)
        self.attention_norm = nn.RMSNorm(d, eps=1e-6)
        self.mlp_norm = nn.RMSNorm(d, eps=1e-6)
        self.mlp = GatedMLP(d, 4 * d, d)
        self.mlp_out_norm = nn.RMSNorm(d, eps=1e-6)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # latents [B, n, d]; context [B, c, d] with mask [B, c] (True = attend), used when cross
        x = self.latents_norm(latents)
        kv = self.context_norm(context) if self.cross else x
        q = rearrange(self.q(x), "B n (h e) -> B h n e", h=self.heads)
        k, v = (rearrange(p(kv), "B c (g e) -> B g c e", g=self.kv_heads) for p in (self.k, self.v))
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [B, h, c, e]
        attn_mask = mask[:, None, None, :] if self.cross and mask is not None else None
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, h, n, e]
        latents = latents + self.attention_norm(self.o(rearrange(attended, "B h n e -> B n (h e)")))
        return latents + self.mlp_out_norm(self.mlp(self.mlp_norm(latents)))


class Resampler(nn.Module):
    """Learned latents read a context through ``blocks`` cross-attentions, each followed by
    ``self_attention`` latent self-attentions; a final RMSNorm."""

    def __init__(self, config: PublishedD2LConfig, *, latents: int, blocks: int, self_attention: int) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(latents, config.latent_dim))  # [n, d]
        block = [True] + [False] * self_attention
        self.layers = nn.ModuleList(PerceiverLayer(config, cross=cross) for _ in range(blocks) for cross in block)
        self.norm = nn.RMSNorm(config.latent_dim, eps=1e-6)

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        latents = self.latents.expand(context.shape[0], -1, -1)  # [B, n, d]
        for layer in self.layers:
            latents = layer(latents, context, mask)
        return self.norm(latents)


class ResidualMLP(nn.Module):
    """``x + LN(W2 silu(W1 LN(x)))``, with one set of weights per base-model layer or one for all."""

    def __init__(self, num_layers: int, dim: int, *, per_layer: bool) -> None:
        super().__init__()
        self.per_layer = per_layer
        self.norm_in, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim)
        shape = (num_layers,) if per_layer else ()
        self.w1 = nn.Parameter(torch.zeros(*shape, dim, 4 * dim))  # [(L,) d, 4d]
        self.b1 = nn.Parameter(torch.zeros(*shape, 4 * dim))
        self.w2 = nn.Parameter(torch.zeros(*shape, 4 * dim, dim))
        self.b2 = nn.Parameter(torch.zeros(*shape, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [b, L, T, r, d]
        pattern = "blmri,lio->blmro" if self.per_layer else "blmri,io->blmro"
        bias = (lambda b: b[:, None, None, :]) if self.per_layer else (lambda b: b)
        h = F.silu(torch.einsum(pattern, self.norm_in(x), self.w1) + bias(self.b1))
        return x + self.norm_out(torch.einsum(pattern, h, self.w2) + bias(self.b2))


class PublishedDocToLoRA(nn.Module):
    """A published Doc-to-LoRA hypernetwork: chunk features -> a rank-r LoRA per target and layer."""

    def __init__(self, config: PublishedD2LConfig) -> None:
        super().__init__()
        self.config = config
        d, L, T, r = config.latent_dim, config.num_layers, len(config.targets), config.rank
        self.project = GatedMLP(config.hidden_size, 4 * config.hidden_size, d)
        self.encoder = Resampler(
            config,
            latents=config.num_latents,
            blocks=config.num_blocks,
            self_attention=config.self_attention_per_block,
        )
        self.decoder = Resampler(config, latents=T * r, blocks=1, self_attention=0)
        self.pre_head = nn.ModuleList(
            ResidualMLP(L, d, per_layer=config.per_layer_pre_head) for _ in range(config.pre_head_layers)
        )
        widest = max(t.d_in + t.d_out for t in config.targets)
        self.head = nn.Parameter(torch.zeros(L, T, d, widest))  # [L, T, d, max(d_in + d_out)]
        self.scale_A = nn.Parameter(torch.ones(T, L, r))
        self.scale_B = nn.Parameter(torch.zeros(T, L, r))
        self.bias_A = nn.ParameterList(nn.Parameter(torch.zeros(L, r, t.d_in)) for t in config.targets)
        self.bias_B = nn.ParameterList(nn.Parameter(torch.zeros(L, r, t.d_out)) for t in config.targets)

    # --- reading a document -------------------------------------------------------------
    def affix_ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
        """The ids re-added before and after each piece of a chunked document."""
        config = self.config
        before = list(config.prefix_ids) if config.prefix_ids is not None else _ids(tokenizer, config.prefix)
        after = list(config.suffix_ids) if config.suffix_ids is not None else _ids(tokenizer, config.suffix)
        return before, after

    def document_chunks(
        self, tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int
    ) -> tuple[list[list[int]], int]:
        affixes = self.affix_ids(tokenizer)
        return affix_chunks(tokenizer, text, self.config.prefix, self.config.suffix, chunk_tokens, affixes)

    def chunk_texts(self, tokenizer: PreTrainedTokenizerBase, chunks: Sequence[list[int]]) -> list[str]:
        before, after = self.affix_ids(tokenizer)
        texts = []
        for chunk in chunks:
            start = len(before) if chunk[: len(before)] == before else 0
            end = len(chunk) - len(after) if after and chunk[-len(after) :] == after else len(chunk)
            texts.append(tokenizer.decode(chunk[start:end]))
        return texts

    @property
    def layers_read(self) -> int:
        return self.config.num_layers

    def features(self, layer_inputs: torch.Tensor, decoder: nn.Module) -> torch.Tensor:
        """Their reader's features from the inputs of every decoder layer [b, L, s, h]: the same,
        but the last is the base model's final norm of it (the output of layer L-2, normed)."""
        norm = getattr(decoder, "norm", None)
        if norm is None:
            raise ModelError(
                f"{type(decoder).__name__} has no final norm (.norm) to read the last layer's features with"
            )
        return torch.cat([layer_inputs[:, :-1], norm(layer_inputs[:, -1:])], dim=1)

    # --- the hypernetwork ------------------------------------------------------------------
    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> Factors:
        """features [b, L, s, h], mask [b, s] (True = real token) -> {module: (A [b, L, r, d_in], B [b, L, d_out, r])}."""
        config = self.config
        b, L = features.shape[:2]
        rows = rearrange(features, "b L s h -> (b L) s h")
        masks = mask.bool().repeat_interleave(L, dim=0)  # [b*L, s]
        # A few rows at a time: the projection's 4h-wide activations of every layer's sequence at
        # once would not fit (gemma-2-2b, 8 chunks of 8192 tokens: 63 GB in float32).
        latents = torch.cat(
            [
                self.encoder(self.project(part), part_mask)  # [g, s, h] -> [g, s, d] -> [g, n, d]
                for part, part_mask in zip(rows.split(ROWS_PER_PASS), masks.split(ROWS_PER_PASS))
            ]
        )  # [b*L, n, d]
        x = self.decoder(latents, None)  # [b*L, T*r, d]
        x = rearrange(x, "(b L) (T r) d -> b L T r d", b=b, r=config.rank)
        for block in self.pre_head:
            x = block(x)
        rows = torch.einsum("bLTrd,LTdo->bLTro", F.normalize(x, dim=-1), self.head)  # [b, L, T, r, widest]
        factors = {}
        for t, target in enumerate(config.targets):
            A = rows[:, :, t, :, : target.d_in] * self.scale_A[t][None, :, :, None]
            B = rows[:, :, t, :, target.d_in : target.d_in + target.d_out] * self.scale_B[t][None, :, :, None]
            factors[target.module] = (A, config.alpha * B.transpose(-1, -2))
        return factors

    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]:
        return adapters_from_factors(factors, names)

    def bias_adapter(self) -> LoRAAdapter | None:
        """Their input-independent LoRA, added to every memory; None for a checkpoint without it."""
        if not self.config.bias_lora:
            return None
        weights = {
            ModuleKey(layer, target.module): LoRAWeights(A[layer].detach(), self.config.alpha * B[layer].detach().T)
            for target, A, B in zip(self.config.targets, self.bias_A, self.bias_B)
            for layer in range(self.config.num_layers)
        }  # A [r, d_in], B [d_out, r]
        return LoRAAdapter.single("bias", weights)

    def memory(self, chunk_adapters: Sequence[LoRAAdapter]) -> LoRAAdapter:
        """A memory from its chunk adapters, in order: concatenated along the rank, the bias LoRA last."""
        bias = self.bias_adapter()
        if bias is None:
            return concat(chunk_adapters)
        like = chunk_adapters[0]
        return concat([*chunk_adapters, bias.to(like.device, like.dtype)])

    def memory_rank(self, chunk_count: int) -> int:
        return (chunk_count + self.config.bias_lora) * self.config.rank

    # --- saving and loading ------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        return save_module(
            folder, self, self.config, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, dtype=torch.float32
        )

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device = "cpu") -> PublishedDocToLoRA:
        what = "published Doc-to-LoRA hypernetwork"
        config, state = read_module(
            folder, PublishedD2LConfig, weights_name=WEIGHTS_NAME, config_name=CONFIG_NAME, what=what
        )
        model = cls(config)
        load_weights(model, state, folder, what)
        return model.to(device).eval()
