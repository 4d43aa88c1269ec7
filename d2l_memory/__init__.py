"""Parametric memory for LLM agents: documents become LoRA adapters, swapped on a hosted model.

:class:`AgentMemory` is the service an agent framework wraps: namespaced internalization,
routing, residency and forgetting over one host and one store, its adapters named by
:class:`AdapterRef`.

Beside the host, the store, routing and the adapter types, the package exports what a
hypernetwork of one's own is built from (Text-to-LoRA in :mod:`t2l_skills` uses these and
nothing else of this package):

* :data:`Factors` and :func:`adapters_from_factors`: a batch of generated LoRA factors, and its
  split into one adapter per batch row;
* :class:`TargetShape` and :func:`target_shapes`: the input and output width of each target module
  of a base model, which fix the shapes a hypernetwork must generate;
* :func:`require_fit`: refuse, with both shapes named, a hypernetwork built for another base model;
* :func:`save_module`, :func:`read_module` and :func:`load_weights`: a hypernetwork on disk as
  safetensors beside a JSON config, never pickle, and loaded into its module with a clear error;
* :func:`read_pickled_checkpoint` and :func:`layer_module_path`: a published checkpoint's pickle
  read without running anything in it, and its short target names as module paths;
* :func:`wrapped_head` and :func:`pad_batch`: a text wrapped as a user turn of the base model's chat
  template (as internalization wraps document chunks), and token lists right-padded into a batch,
  for reading text with the hosted base model itself.
"""

from d2l_memory.adapter import AdapterPart, Factors, LoRAAdapter, LoRAWeights, ModuleKey, adapters_from_factors, concat
from d2l_memory.agent_memory import AgentMemory, DocumentError, SkillMaker, check_document, swap
from d2l_memory.chunking import wrapped_head
from d2l_memory.compress import compress, relative_error
from d2l_memory.errors import (
    AdapterError,
    CheckpointError,
    ConfigError,
    D2LMemoryError,
    ModelError,
    NotFoundError,
    ServerError,
    StoreError,
    UnsafePathError,
)
from d2l_memory.host import AdapterHost, Generation
from d2l_memory.hypernet import TargetShape, require_fit, target_shapes
from d2l_memory.internalize import DocumentHypernet, load_document_hypernet, pad_batch
from d2l_memory.introspection import DEFAULT_TARGETS, TARGETABLE, ModelLayout, describe_model
from d2l_memory.peft_io import load_peft, save_peft
from d2l_memory.published_d2l import PublishedD2LConfig, PublishedDocToLoRA
from d2l_memory.published_import import import_d2l_checkpoint, layer_module_path
from d2l_memory.refs import SHARED_THREAD, AdapterRef, new_id, readable_namespaces, shared_namespace
from d2l_memory.routing import ChunkFocus, KeyIndex, LexicalEncoder, MemoryRouter, MiniLMEncoder, TextEncoder
from d2l_memory.safe_pickle import read_pickled_checkpoint
from d2l_memory.store import AdapterRecord, AdapterStore, content_sha256
from d2l_memory.vllm_host import ServedAdapter, VLLMHost
from d2l_memory.vllm_server import VLLMServer, vllm_environment
from d2l_memory.weights_io import load_weights, read_module, save_module

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TARGETS",
    "SHARED_THREAD",
    "TARGETABLE",
    "AdapterError",
    "AdapterHost",
    "AdapterPart",
    "AdapterRecord",
    "AdapterRef",
    "AdapterStore",
    "AgentMemory",
    "CheckpointError",
    "ChunkFocus",
    "ConfigError",
    "D2LMemoryError",
    "DocumentError",
    "DocumentHypernet",
    "Factors",
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
    "PublishedD2LConfig",
    "PublishedDocToLoRA",
    "ServedAdapter",
    "ServerError",
    "SkillMaker",
    "StoreError",
    "TargetShape",
    "TextEncoder",
    "UnsafePathError",
    "VLLMHost",
    "VLLMServer",
    "adapters_from_factors",
    "check_document",
    "compress",
    "concat",
    "content_sha256",
    "describe_model",
    "import_d2l_checkpoint",
    "layer_module_path",
    "load_document_hypernet",
    "load_peft",
    "load_weights",
    "new_id",
    "pad_batch",
    "read_module",
    "read_pickled_checkpoint",
    "readable_namespaces",
    "relative_error",
    "require_fit",
    "save_module",
    "save_peft",
    "shared_namespace",
    "swap",
    "target_shapes",
    "vllm_environment",
    "wrapped_head",
]
