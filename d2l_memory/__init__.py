"""Parametric memory for LLM agents: documents become LoRA adapters, swapped on a hosted model."""

from d2l_memory.adapter import AdapterPart, LoRAAdapter, LoRAWeights, ModuleKey, concat
from d2l_memory.compress import compress, relative_error
from d2l_memory.errors import (
    AdapterError,
    D2LMemoryError,
    ModelError,
    NotFoundError,
    StoreError,
    UnsafePathError,
)
from d2l_memory.host import AdapterHost, Generation
from d2l_memory.introspection import DEFAULT_TARGETS, TARGETABLE, ModelLayout, describe_model
from d2l_memory.peft_io import load_peft, save_peft
from d2l_memory.routing import ChunkFocus, KeyIndex, LexicalEncoder, MemoryRouter, MiniLMEncoder, TextEncoder
from d2l_memory.store import AdapterRecord, AdapterStore, content_sha256

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGETS",
    "TARGETABLE",
    "AdapterError",
    "AdapterHost",
    "AdapterPart",
    "AdapterRecord",
    "AdapterStore",
    "ChunkFocus",
    "D2LMemoryError",
    "Generation",
    "KeyIndex",
    "LexicalEncoder",
    "LoRAAdapter",
    "LoRAWeights",
    "MemoryRouter",
    "MiniLMEncoder",
    "ModelError",
    "ModelLayout",
    "ModuleKey",
    "NotFoundError",
    "StoreError",
    "TextEncoder",
    "UnsafePathError",
    "compress",
    "concat",
    "content_sha256",
    "describe_model",
    "load_peft",
    "relative_error",
    "save_peft",
]
