"""Wiring an :class:`~d2l_memory.agent_memory.AgentMemory` from checkpoints: the embedded default in
one call, or your own base model with hypernetworks trained for it."""

from __future__ import annotations

from pathlib import Path

from d2l_memory import AdapterHost, AdapterStore
from d2l_memory.agent_memory import AgentMemory
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, load_host
from d2l_memory.hypernet import DocToLoRA
from d2l_memory.internalize import Internalizer
from d2l_memory.routing import ChunkFocus
from integrations.skills import TextToLoRASkills
from t2l_skills import DEFAULT_CHECKPOINT_DIR, SkillLibrary, TextToLoRA, load_encoder


def agent_memory(
    host: AdapterHost,
    store_dir: str | Path,
    d2l_checkpoint: str | Path,
    t2l_checkpoint: str | Path | None = None,
    *,
    encoder: str = "minilm",
    focus_chunks: int | None = 1,
    chunk_tokens: int | None = None,
    max_active: int = 4,
    max_resident: int = 256,
) -> AgentMemory:
    """Memories from ``d2l_checkpoint`` and, given ``t2l_checkpoint``, skills from it, all kept in
    one store under ``store_dir``.

    ``encoder`` ('minilm', 'base' or a sentence-transformers folder) embeds skill descriptions
    and the lines that :class:`ChunkFocus` matches queries against; ``focus_chunks`` is how many
    chunks of a long memory a query switches on (None: the whole memory). ``chunk_tokens``
    (default: the checkpoint's training length) cuts documents into smaller chunks, at sentence
    ends: with a focus, a question then switches on only the sentence or two that answer it,
    which BENCHMARKS.md measures well above reading the whole document, at the price of one
    adapter per chunk (at 16 tokens a chunk, more bytes than a KV cache). A memory switched on
    whole by id is then many small chunks at once, which long documents answer poorly from.
    """
    store = AdapterStore(store_dir)
    internalizer = Internalizer(host, DocToLoRA.load(d2l_checkpoint), store=store, chunk_tokens=chunk_tokens)
    text_encoder = load_encoder(encoder, host) if t2l_checkpoint is not None or focus_chunks else None
    skills = None
    if t2l_checkpoint is not None:
        library = SkillLibrary(host, TextToLoRA.load(t2l_checkpoint), text_encoder, store, max_cached=max_resident)
        skills = TextToLoRASkills(library)
    focus = ChunkFocus(text_encoder, chunks=focus_chunks) if focus_chunks else None
    return AgentMemory(internalizer, skills=skills, max_active=max_active, max_resident=max_resident, focus=focus)


def default_agent_memory(store_dir: str | Path, *, max_active: int = 4, max_resident: int = 256) -> AgentMemory:
    """The embedded default model on CPU with the shipped Doc-to-LoRA and Text-to-LoRA checkpoints."""
    return agent_memory(
        load_host(),
        store_dir,
        D2L_CHECKPOINT_DIR,
        DEFAULT_CHECKPOINT_DIR,
        max_active=max_active,
        max_resident=max_resident,
    )
