"""Wiring an :class:`~integrations.memory.AgentMemory` from checkpoints: the embedded default in
one call, or your own base model with hypernetworks trained for it."""

from __future__ import annotations

from pathlib import Path

from d2l_memory import AdapterHost, AdapterStore
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, load_host
from d2l_memory.hypernet import DocToLoRA
from d2l_memory.internalize import Internalizer
from integrations.memory import AgentMemory
from integrations.skills import TextToLoRASkills
from t2l_skills import DEFAULT_CHECKPOINT_DIR, SkillLibrary, TextToLoRA, load_encoder


def agent_memory(
    host: AdapterHost,
    store_dir: str | Path,
    d2l_checkpoint: str | Path,
    t2l_checkpoint: str | Path | None = None,
    *,
    encoder: str = "minilm",
    max_active: int = 4,
) -> AgentMemory:
    """Memories from ``d2l_checkpoint`` and, given ``t2l_checkpoint``, skills from it (whose task
    encoder ``encoder`` names: 'minilm', 'base' or a sentence-transformers folder), all kept in
    one store under ``store_dir``."""
    store = AdapterStore(store_dir)
    internalizer = Internalizer(host, DocToLoRA.load(d2l_checkpoint), store=store)
    skills = None
    if t2l_checkpoint is not None:
        library = SkillLibrary(
            host,
            TextToLoRA.load(t2l_checkpoint),
            load_encoder(encoder, host),
            store=store,
        )
        skills = TextToLoRASkills(library)
    return AgentMemory(internalizer, skills=skills, max_active=max_active)


def default_agent_memory(store_dir: str | Path, *, max_active: int = 4) -> AgentMemory:
    """The embedded default model on CPU with the shipped Doc-to-LoRA and Text-to-LoRA checkpoints."""
    return agent_memory(
        load_host(),
        store_dir,
        D2L_CHECKPOINT_DIR,
        DEFAULT_CHECKPOINT_DIR,
        max_active=max_active,
    )
