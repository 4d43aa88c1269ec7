"""The adapter host: one resident base model, many resident adapters, any set active per request.

The host is what an agent talks to. It owns the base model (loaded once, on the device and
dtype you choose), keeps adapters resident on that device, and runs generation with whichever
*set* of them a request names. A set is the rank concatenation of its members, optionally
weighted per member; building it costs a few small ``torch.cat`` calls and never touches the
base weights, so swapping memories between agent steps is cheap and requests from several
threads can each use their own set at the same time.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from d2l_memory.adapter import LoRAAdapter, ModuleKey
from d2l_memory.errors import AdapterError, ModelError
from d2l_memory.introspection import ModelLayout, describe_model
from d2l_memory.layer_capture import install_capture
from d2l_memory.lora_layer import ActiveSet, install, use_active_set
from d2l_memory.models import load_pretrained

AdapterSelection = Sequence[str] | Mapping[str, float] | ActiveSet | None
"""Which adapters to apply: ids, ids with weights, a prepared set, or None for the base model."""

ResidentFactors = dict[ModuleKey, tuple[torch.Tensor, torch.Tensor]]
"""A resident adapter: module -> (A [r, d_in], B^T [r, d_out]) on the model's device and dtype."""

AdapterLoader = Callable[[str], LoRAAdapter | None]
"""Given an id that is not resident, the adapter it names, or None when the id is not the loader's."""

Prompt = str | Sequence[Mapping[str, Any]]
"""A raw prompt string, or chat messages (``{"role": ..., "content": ...}``, and ``tool_calls`` or
``tool_call_id`` where a template renders them) for the chat template."""

ToolSchemas = Sequence[Mapping[str, Any]]
"""Tools the model may call, as JSON schemas in the OpenAI function format (what Hugging Face
chat templates take as ``tools``)."""


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    stopped_by: str | None = None  # the stop string that ended generation, if any


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, refused up front where this torch cannot reach it.

    Moving a model to CUDA on a CPU build of torch ends in a bare ``AssertionError`` deep in torch;
    this says what is missing instead, before anything is loaded.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise ModelError(
                f"device {str(device)!r} needs CUDA, but this torch ({torch.__version__}) was built without it:"
                " install a CUDA build of torch (on Linux the default `pip install torch` is one; other builds at"
                " https://pytorch.org/get-started/locally/), or use device='cpu'"
            )
        raise ModelError(
            f"device {str(device)!r}: torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no GPU"
            " (check the driver and CUDA_VISIBLE_DEVICES), or use device='cpu'"
        )
    return resolved


def selection_weights(selection: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """The ids of a selection with their weights (1.0 for a list of ids)."""
    if isinstance(selection, str):
        raise AdapterError(
            f"pass adapters as a list of ids (e.g. [{selection!r}]) or an id -> weight mapping, not a string"
        )
    return dict(selection) if isinstance(selection, Mapping) else dict.fromkeys(selection, 1.0)


class AdapterHost:
    """A base causal LM with resident LoRA adapters that can be combined per request."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        model_id: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.layout: ModelLayout = describe_model(model)
        self._shapes = self.layout.shapes()
        for target in self.layout.targets:  # every targetable Linear can take any active set
            install(model.get_submodule(target.path), target.path, target.key)
        install_capture(model.get_submodule(self.layout.layers_path))  # before any thread runs a forward
        self._adapters: dict[str, ResidentFactors] = {}
        self._loaders: list[AdapterLoader] = []
        self._lock = threading.Lock()  # guards the resident table, not inference

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        **load_kwargs: Any,
    ) -> AdapterHost:
        """Load a model and its tokenizer onto ``device``: a hub id, a local folder, a ``.gguf`` file
        (dequantized) or the short name of an installed one (``"smollm2"``; see :mod:`d2l_memory.models`)."""
        target = resolve_device(device)
        model, tokenizer, name = load_pretrained(model_id, dtype=resolve_dtype(dtype), **load_kwargs)
        return cls(model.to(target), tokenizer, model_id=name)

    # --- resident adapters ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def pad_token_id(self) -> int:
        """Padding id for batches (models without a tokenizer or pad token pad with 0; masked anyway)."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else pad

    @property
    def resident(self) -> list[str]:
        return list(self._adapters)

    def add(self, adapter_id: str, adapter: LoRAAdapter) -> None:
        """Make an adapter resident (validated, moved to the model's device and dtype)."""
        self._store(adapter_id, adapter)

    def add_loader(self, loader: AdapterLoader) -> None:
        """Ask ``loader`` for any adapter a request names that is not resident (None: not its
        adapter). An owner that evicts adapters to bound memory registers one, so an id it
        handed out stays usable after eviction: the next request that names it loads it again."""
        self._loaders.append(loader)

    def remove_loader(self, loader: AdapterLoader) -> None:
        """Stop asking ``loader`` (its owner is closing)."""
        self._loaders.remove(loader)

    def _store(self, adapter_id: str, adapter: LoRAAdapter) -> ResidentFactors:
        adapter.validate(self._shapes)
        moved = adapter.to(self.device, self.dtype)
        # Kept as (A [r, d_in], B^T [r, d_out]): composing a set is then two contiguous
        # row-wise concatenations per module, the cheapest copy there is.
        factors = {key: (w.A.contiguous(), w.B.T.contiguous()) for key, w in moved.weights.items()}
        with self._lock:
            self._adapters[adapter_id] = factors
        return factors

    def _resident_or_loaded(self, adapter_id: str) -> ResidentFactors | None:
        with self._lock:
            factors = self._adapters.get(adapter_id)
        if factors is not None:
            return factors
        for loader in self._loaders:
            adapter = loader(adapter_id)  # outside the lock: a loader may read a store
            if adapter is not None:
                return self._store(adapter_id, adapter)
        return None

    def remove(self, adapter_id: str) -> None:
        with self._lock:
            if self._adapters.pop(adapter_id, None) is None:
                raise AdapterError(f"adapter {adapter_id!r} is not resident; resident: {self.resident}")

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self._adapters

    def compose(self, selection: AdapterSelection) -> ActiveSet | None:
        """Build the active set: the rank concatenation of the members, each B scaled by its weight.

        None or an empty selection means the base model.
        """
        if selection is None or isinstance(selection, ActiveSet):
            return selection
        weights = selection_weights(selection)
        if not weights:
            return None
        found = {i: self._resident_or_loaded(i) for i in weights}  # held from here on, even if evicted
        missing = [i for i, factors in found.items() if factors is None]
        if missing:
            raise AdapterError(f"adapter(s) {missing} are not resident; resident: {self.resident}")
        members = [(found[i], w) for i, w in weights.items()]
        keys = dict.fromkeys(key for factors, _ in members for key in factors)
        combined = {}
        for key in keys:
            present = [(factors[key], w) for factors, w in members if key in factors]
            if len(present) == 1:  # one member: its own factors, no copy
                (A, B_t), w = present[0]
                B_t = B_t if w == 1.0 else B_t * w
            else:
                A = torch.cat([a for (a, _), _ in present])  # [sum r, d_in]
                B_t = torch.cat([b_t if w == 1.0 else b_t * w for (_, b_t), w in present])  # [sum r, d_out]
            combined[key] = (A, B_t.T)  # B as a [d_out, r] view: F.linear then reads B^T contiguously
        return ActiveSet(tuple(weights), combined)

    def compose_rows(self, selections: Sequence[AdapterSelection]) -> ActiveSet | None:
        """One adapter set per batch row, for mixed batches (row i of a batch uses ``selections[i]``).

        Each row's set is composed as usual, then stacked with zero-padding to the largest rank:
        A [rows, R, d_in], B [rows, d_out, R]; a row with no adapters gets zero factors.
        """
        rows = [self.compose(selection) for selection in selections]
        keys = dict.fromkeys(key for row in rows if row is not None for key in row.factors)
        if not keys:
            return None
        stacked = {}
        for key in keys:
            present = [row.factors[key] for row in rows if row is not None and key in row.factors]
            rank = max(A.shape[0] for A, _ in present)
            d_in, d_out = present[0][0].shape[1], present[0][1].shape[0]
            A_rows = torch.zeros(len(rows), rank, d_in, device=self.device, dtype=self.dtype)  # [rows, R, d_in]
            B_rows = torch.zeros(len(rows), d_out, rank, device=self.device, dtype=self.dtype)  # [rows, d_out, R]
            for i, row in enumerate(rows):
                if row is not None and key in row.factors:
                    A, B = row.factors[key]
                    A_rows[i, : A.shape[0]] = A
                    B_rows[i, :, : B.shape[1]] = B
            stacked[key] = (A_rows, B_rows)
        return ActiveSet(tuple(name for row in rows if row is not None for name in row.names), stacked)

    @contextmanager
    def active(self, selection: AdapterSelection) -> Iterator[ActiveSet | None]:
        """Apply a set of adapters to every forward run inside the block, in this context only."""
        with use_active_set(self.compose(selection)) as active_set:
            yield active_set

    @contextmanager
    def active_rows(self, selections: Sequence[AdapterSelection]) -> Iterator[ActiveSet | None]:
        """:meth:`active` for a mixed batch: row i of every forward run inside the block uses
        ``selections[i]`` (see :meth:`compose_rows`)."""
        with use_active_set(self.compose_rows(selections)) as active_set:
            yield active_set

    # --- inference --------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor, adapters: AdapterSelection = None) -> torch.Tensor:
        """Next-token logits for a batch: input_ids [batch, seq] -> [batch, seq, vocab]."""
        with self.active(adapters):
            return self.model(input_ids=input_ids.to(self.device)).logits

    def encode_prompt(self, prompt: Prompt, tools: ToolSchemas | None = None) -> torch.Tensor:
        """Token ids [1, seq] for a prompt; chat messages go through the model's chat template,
        with ``tools`` rendered by it. A template that never reads ``tools`` would drop them
        silently, and the model would answer as if it had none: that is refused instead."""
        tokenizer = self._require_tokenizer()
        tools = list(tools) if tools else None
        if tools:
            _require_tool_template(tokenizer, prompt, tools, self.model_id)
        if isinstance(prompt, str):
            ids = tokenizer(prompt, return_tensors="pt").input_ids
        else:
            ids = tokenizer.apply_chat_template(
                list(prompt),
                tools=tools,
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            ).input_ids
        return ids.to(self.device)

    def count_tokens(self, text: str) -> int:
        return len(self._require_tokenizer()(text).input_ids)

    @torch.inference_mode()
    def generate(
        self,
        prompt: Prompt,
        *,
        adapters: AdapterSelection = None,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int | None = None,
        tools: ToolSchemas | None = None,
    ) -> Generation:
        """Generate a completion with the given adapter set active (greedy when temperature is 0),
        the model told of ``tools`` through its chat template. The text is returned as generated:
        reading tool calls out of it is the caller's."""
        input_ids = self.encode_prompt(prompt, tools)
        kwargs = self._generation_kwargs(input_ids, max_new_tokens, stop, temperature, seed)
        with self.active(adapters):
            output = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new_tokens = output[0, input_ids.shape[1] :]
        text = self._require_tokenizer().decode(new_tokens, skip_special_tokens=True)
        text, stopped_by = _cut_at_stop(text, stop)
        return Generation(text, int(input_ids.shape[1]), int(new_tokens.shape[0]), stopped_by)

    def stream(
        self,
        prompt: Prompt,
        *,
        adapters: AdapterSelection = None,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; stops early at any stop string.

        The pieces join to exactly what :meth:`generate` returns: the last ``len(stop) - 1``
        characters so far (for the longest stop string) always wait for the next piece, since
        they may begin a stop string. An error in generation is raised here, in the caller's thread.
        """
        tokenizer = self._require_tokenizer()
        input_ids = self.encode_prompt(prompt)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._generation_kwargs(input_ids, max_new_tokens, stop, temperature, seed)
        active_set = self.compose(adapters)
        failures: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode(), use_active_set(active_set):
                    self.model.generate(
                        input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs
                    )
            except BaseException as error:  # noqa: BLE001 - raised again in the caller below
                failures.append(error)
                streamer.end()  # otherwise the caller waits for text forever

        # The worker copies this context so it sees the caller's context, then its own set.
        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        worker.start()
        hold = max((len(s) for s in stop if s), default=1) - 1
        text, emitted = "", 0  # all text so far (cut at a stop string), and how much of it went out
        for piece in streamer:
            text, stopped_by = _cut_at_stop(text + piece, stop)
            if stopped_by is not None:
                break
            if len(text) - hold > emitted:
                yield text[emitted : len(text) - hold]
                emitted = len(text) - hold
        worker.join()
        if failures:
            raise failures[0]
        if text[emitted:]:
            yield text[emitted:]

    def _generation_kwargs(
        self, input_ids: torch.Tensor, max_new_tokens: int, stop: Sequence[str], temperature: float, seed: int | None
    ) -> dict[str, Any]:
        tokenizer = self._require_tokenizer()
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
            if seed is not None:
                torch.manual_seed(seed)
        if stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnText(tokenizer, stop, input_ids.shape[1])])
        return kwargs

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise ModelError("this host has no tokenizer; pass one to AdapterHost(model, tokenizer)")
        return self.tokenizer


class _StopOnText(StoppingCriteria):
    """Stop once the decoded completion contains a stop string.

    Decoding the text (rather than matching token ids, as transformers' stop_strings does) works
    for every tokenizer, word-level ones included.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str], prompt_length: int) -> None:
        super().__init__()
        self.tokenizer, self.stop, self.prompt_length = tokenizer, [s for s in stop if s], prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(s in text for s in self.stop) for text in texts], device=input_ids.device)


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut text at the earliest stop string it contains."""
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return text, None
    index, which = min(hits)
    return text[:index], which


def _require_tool_template(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, tools: list, model_id: str) -> None:
    """Refuse tools that would be dropped: a raw prompt has no place for them, and a chat template
    that never reads ``tools`` renders none, so the model would answer as if it had no tools.
    (The template is the one transformers picks for tools: some models ship a separate one.)"""
    if isinstance(prompt, str):
        raise ModelError(f"{model_id} cannot be given tools with a raw string prompt: pass chat messages")
    try:
        template = tokenizer.get_chat_template(None, tools)
    except ValueError:  # no chat template at all
        template = ""
    if "tools" not in template:
        raise ModelError(
            f"{model_id} cannot be given tools: its chat template does not render tool schemas (use a"
            " tool-calling model, e.g. a Qwen or Llama 3.1+ instruct model)"
        )
