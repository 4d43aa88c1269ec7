"""The adapter host on a vLLM server: the same host, with generation done by the serving engine.

:class:`VLLMHost` is an :class:`~d2l_memory.host.AdapterHost`, so everything built on a host (the
internalizer, skills, :class:`~d2l_memory.agent_memory.AgentMemory`, the LangChain chat model,
tools, nodes and middleware) runs on it unchanged. What moves to the server is generation:

* The base model stays in this process too: the hypernetworks read its activations over a
  document, and prompts are rendered and tokenized here, so both hosts see the same token ids.
* vLLM applies one LoRA per request, so an active *set* (several memories, a skill with a memory,
  focused chunks) is composed here into one adapter (rank concatenation, the host's usual
  composition), compressed by truncated SVD when its rank exceeds the server's
  ``max_lora_rank``, written as a PEFT folder named by its content, loaded with
  ``/v1/load_lora_adapter`` when first used and chosen per request by the ``model`` field.
* Content names make a reused name never mean other weights (vLLM caches by name and path), and
  composed sets are cached by their members: swapping back to a set costs nothing. At most
  ``max_loaded`` sets stay loaded; the least recently used one no request is using is unloaded
  (then its folder deleted: never before, a loaded adapter's folder must outlive it).
* Removing an adapter from the host (forgetting, residency eviction) unloads every set built
  from it. A server that restarted has lost its adapters: a request that finds its adapter gone
  loads it again from the folder and retries once.
* Requests without adapters use an all-zero rank-1 adapter: a base-model request batched with
  LoRA requests in one engine step would otherwise not be guaranteed the base model's answer.

Start a server with ``d2l-memory serve-vllm`` (the embedded default) or, for a model of your own
on GPUs, ``vllm serve MODEL --enable-lora --max-lora-rank R --max-loras N`` with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (docs/serving.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from d2l_memory.adapter import LoRAAdapter, LoRAWeights
from d2l_memory.compress import compress, relative_error
from d2l_memory.errors import AdapterError, ConfigError, ModelError, ServerError
from d2l_memory.host import AdapterHost, AdapterSelection, Generation, Prompt, ToolSchemas, selection_weights
from d2l_memory.lora_layer import ActiveSet
from d2l_memory.peft_io import save_peft
from d2l_memory.vllm_client import VLLMClient

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank``."""

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9"
"""Tokenized and continued by both the server and this process to check they hold one base model."""


@dataclass(frozen=True)
class ServedAdapter:
    """A composed adapter set as the server serves it."""

    name: str  # the request's ``model`` field: content-addressed
    rank: int  # as loaded (after compression)
    composed_rank: int  # before compression
    relative_error: float  # of the compression (0.0 when none was needed)


@dataclass
class _Loaded:
    served: ServedAdapter
    folder: Path
    members: set[str]  # host ids of every selection it serves
    in_use: int = 0  # requests in flight


class VLLMHost(AdapterHost):
    """An adapter host whose generation runs on the vLLM server at ``url``.

    ``adapter_dir`` is where composed sets are written as PEFT folders (a temporary folder by
    default, removed by :meth:`close`); ``server_adapter_dir`` is the same folder as the server
    sees it, when the server runs elsewhere (a container, another machine on a shared volume).
    ``served_model`` is the name the server serves the base model under (default: the one it
    serves); ``max_lora_rank`` must not exceed the server's ``--max-lora-rank``; ``max_loaded`` is
    how many composed sets stay loaded on the server.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        url: str,
        model_id: str | None = None,
        adapter_dir: str | Path | None = None,
        server_adapter_dir: str | Path | None = None,
        served_model: str | None = None,
        max_lora_rank: int = 64,
        max_loaded: int = 16,
        timeout: float = 120.0,
        api_key: str | None = None,
    ) -> None:
        if max_lora_rank not in VLLM_LORA_RANKS:
            raise ConfigError(f"max_lora_rank must be one of vLLM's {VLLM_LORA_RANKS}, got {max_lora_rank}")
        if max_loaded < 2:
            raise ConfigError(f"max_loaded must be at least 2 (the base adapter and one set), got {max_loaded}")
        super().__init__(model, tokenizer, model_id=model_id)
        self.max_lora_rank, self.max_loaded = max_lora_rank, max_loaded
        self._own_dir = adapter_dir is None
        self.adapter_dir = Path(adapter_dir or tempfile.mkdtemp(prefix="d2l-vllm-")).resolve()
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        self.server_adapter_dir = Path(server_adapter_dir) if server_adapter_dir else self.adapter_dir
        self.client = VLLMClient(url, timeout=timeout, api_key=api_key)
        self._serving = threading.Lock()  # guards the tables below and every load and unload
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()  # by served name, oldest use first
        self._by_selection: dict[tuple[tuple[str, float], ...], str] = {}  # members -> served name
        self.served_model, self.max_model_len = self._check_server(served_model)
        self._base = self._zero_adapter()

    @classmethod
    def over(cls, host: AdapterHost, url: str, **options: Any) -> VLLMHost:
        """A vLLM host over the model of an in-process ``host`` (which should no longer be used)."""
        return cls(host.model, host.tokenizer, url=url, model_id=host.model_id, **options)

    @classmethod
    def from_pretrained(  # type: ignore[override]  # the server's address is required
        cls,
        model_id: str | Path,
        *,
        url: str,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        **options: Any,
    ) -> VLLMHost:
        """Load the base model here (for the hypernetworks and the tokenizer) and talk to the
        server at ``url`` serving the same model; ``options`` as for :class:`VLLMHost`."""
        return cls.over(AdapterHost.from_pretrained(model_id, device=device, dtype=dtype), url, **options)

    def close(self) -> None:
        """Unload every set this host loaded and remove the folders it wrote."""
        with self._serving:
            for name in list(self._loaded):
                self._unload(name)
        self.client.close()
        if self._own_dir:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- resident adapters: a change drops the sets built from the old weights -----------------
    def add(self, adapter_id: str, adapter: LoRAAdapter) -> None:
        replaced = adapter_id in self
        super().add(adapter_id, adapter)
        if replaced:
            self._drop_sets_of(adapter_id)

    def remove(self, adapter_id: str) -> None:
        super().remove(adapter_id)
        self._drop_sets_of(adapter_id)

    # --- serving sets ----------------------------------------------------------------------------
    def serve(self, selection: AdapterSelection) -> ServedAdapter:
        """Load ``selection`` on the server as one adapter (if it is not loaded) and return it."""
        with self._acquired(selection) as served:
            return served

    @property
    def loaded(self) -> list[str]:
        """Served names of the sets loaded on the server now, oldest use first."""
        return list(self._loaded)

    @contextmanager
    def _acquired(self, selection: AdapterSelection) -> Iterator[ServedAdapter]:
        """The served set for ``selection``, kept loaded while the block runs."""
        key = _selection_key(selection)
        with self._serving:
            name = self._by_selection.get(key) if key is not None else None
            if name is None or name not in self._loaded:
                name = self._load(selection, key)
            entry = self._loaded[name]
            self._loaded.move_to_end(name)
            entry.in_use += 1
            self._evict()
        try:
            yield entry.served
        finally:
            with self._serving:
                entry.in_use -= 1

    def _load(self, selection: AdapterSelection, key: tuple[tuple[str, float], ...] | None) -> str:
        if key == ():
            adapter, members = self._base, set()
        else:
            active = self.compose(selection)
            assert active is not None  # an empty selection has the key ()
            adapter, members = _as_adapter(active), set(active.names)
        composed_rank = adapter.max_rank
        error = 0.0
        if composed_rank > self.max_lora_rank:
            compressed = compress(adapter, self.max_lora_rank, name="served")
            error, adapter = relative_error(adapter, compressed), compressed
        name = _content_name(adapter)
        if name not in self._loaded:
            folder = self.adapter_dir / name
            if not folder.is_dir():
                scratch = self.adapter_dir / f".{name}.tmp"
                shutil.rmtree(scratch, ignore_errors=True)
                save_peft(adapter, scratch, base_model=self.served_model, layers_path=self.layout.layers_path)
                os.replace(scratch, folder)
            try:
                self.client.load_adapter(name, str(self.server_adapter_dir / name))
            except ServerError as err:
                if err.status is None:  # no answer: not a refusal
                    raise
                raise AdapterError(
                    f"the vLLM server refused adapter {name} (rank {adapter.max_rank}, modules"
                    f" {sorted({k.module for k in adapter.weights})}): {err.message}. Its --max-lora-rank must be"
                    f" at least this host's max_lora_rank ({self.max_lora_rank}), and it must support these modules"
                ) from err
            served = ServedAdapter(name, adapter.max_rank, composed_rank, error)
            self._loaded[name] = _Loaded(served, folder, set())
        self._loaded[name].members |= members  # another set of the same weights: removing any member unloads it
        if key is not None:
            self._by_selection[key] = name
        return name

    def _evict(self) -> None:
        """Unload the least recently used sets no request is using, beyond ``max_loaded``."""
        idle = [n for n, e in self._loaded.items() if e.in_use == 0 and e.members]  # the base set stays
        for name in idle[: max(0, len(self._loaded) - self.max_loaded)]:
            self._unload(name)

    def _unload(self, name: str) -> None:
        entry = self._loaded.pop(name)
        for key in [k for k, n in self._by_selection.items() if n == name]:
            del self._by_selection[key]
        try:
            self.client.unload_adapter(name)
        except ServerError:
            return  # unreachable: the folder stays, in case the server still serves it
        shutil.rmtree(entry.folder, ignore_errors=True)

    def _drop_sets_of(self, adapter_id: str) -> None:
        with self._serving:
            for name in [n for n, e in self._loaded.items() if adapter_id in e.members]:
                if self._loaded[name].in_use:  # a request still generates with it: unused from now on
                    for key in [k for k, n in self._by_selection.items() if n == name]:
                        del self._by_selection[key]
                else:
                    self._unload(name)

    def _zero_adapter(self) -> LoRAAdapter:
        target = self.layout.targets[0]
        zeros = LoRAWeights(
            torch.zeros(1, target.d_in, dtype=self.dtype), torch.zeros(target.d_out, 1, dtype=self.dtype)
        )
        return LoRAAdapter.single("base", {target.key: zeros})

    # --- the server --------------------------------------------------------------------------------
    def _check_server(self, served_model: str | None) -> tuple[str, int]:
        """The served base model's name and context length, refused unless it is this process's model."""
        models = self.client.models()
        bases = [m for m in models if not m.get("parent")]
        names = [m["id"] for m in bases]
        if served_model is not None and served_model not in names:
            raise ModelError(f"the vLLM server at {self.client.url} serves {names}, not {served_model!r}")
        base = next(m for m in bases if served_model in (None, m["id"]))
        tokenizer = self._require_tokenizer()
        local_ids = tokenizer(PROBE_TEXT).input_ids
        if self.client.tokenize(base["id"], PROBE_TEXT) != local_ids:
            raise ModelError(
                f"the vLLM server at {self.client.url} serves {base['id']!r}, whose tokenizer differs from that of"
                f" {self.model_id!r}, the base model here: the hypernetworks' adapters fit only the model they were"
                " made for. Serve the same model"
            )
        reply = self.client.complete(
            base["id"], local_ids, max_tokens=1, temperature=0.0, logprobs=3, return_tokens_as_token_ids=True
        )
        server_top = [int(t.removeprefix("token_id:")) for t in reply["logprobs"]["top_logprobs"][0]]
        local_top = self.logits(torch.tensor([local_ids]))[0, -1].topk(3).indices.tolist()
        if local_top[0] not in server_top or server_top[0] not in local_top:
            raise ModelError(
                f"the vLLM server at {self.client.url} serves {base['id']!r}, which continues a probe text otherwise"
                f" than {self.model_id!r}, the base model here (top tokens {server_top} there, {local_top} here):"
                " serve the same weights"
            )
        return base["id"], int(base.get("max_model_len") or 0)

    # --- inference -------------------------------------------------------------------------------
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
        """:meth:`AdapterHost.generate` on the server: greedy when temperature is 0."""
        ids = self._prompt_ids(prompt, tools, max_new_tokens)
        sampling = _sampling(max_new_tokens, stop, temperature, seed)
        for retry in (False, True):
            with self._acquired(adapters) as served:
                try:
                    choice = self.client.complete(served.name, ids, **sampling)
                except ServerError as err:
                    if retry or not self._lost(err, served.name):
                        raise
                    continue
            usage = choice["usage"]
            stopped_by = choice.get("stop_reason") if isinstance(choice.get("stop_reason"), str) else None
            return Generation(choice["text"], usage["prompt_tokens"], usage["completion_tokens"], stopped_by)
        raise AssertionError("unreachable")

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
        """:meth:`AdapterHost.stream` on the server: the pieces join to what :meth:`generate` returns."""
        ids = self._prompt_ids(prompt, None, max_new_tokens)
        sampling = _sampling(max_new_tokens, stop, temperature, seed)
        for retry in (False, True):
            with self._acquired(adapters) as served:
                chunks = self.client.stream(served.name, ids, **sampling)
                try:
                    first = next(chunks, None)  # the server refuses (or has lost the adapter) before any text
                except ServerError as err:
                    if retry or not self._lost(err, served.name):
                        raise
                    continue
                if first is not None:
                    yield from _texts(first)
                for chunk in chunks:
                    yield from _texts(chunk)
                return

    def _prompt_ids(self, prompt: Prompt, tools: ToolSchemas | None, max_new_tokens: int) -> list[int]:
        ids = self.encode_prompt(prompt, tools)[0].tolist()
        if self.max_model_len and len(ids) + max_new_tokens > self.max_model_len:
            raise ModelError(
                f"a prompt of {len(ids):,} tokens and {max_new_tokens} new ones exceed the {self.max_model_len:,}"
                f" tokens the vLLM server's {self.served_model!r} takes (its --max-model-len)"
            )
        return ids

    def _lost(self, err: ServerError, name: str) -> bool:
        """Whether the server no longer knows ``name`` (it restarted): forgotten here, so it loads again."""
        if err.status != 404 or name not in err.message:
            return False
        with self._serving:
            self._loaded.pop(name, None)
        return True


def _selection_key(selection: AdapterSelection) -> tuple[tuple[str, float], ...] | None:
    """The members of a selection with their weights, in a canonical order (None for a prepared set)."""
    if selection is None:
        return ()
    if isinstance(selection, ActiveSet):
        return None
    return tuple(sorted((name, float(w)) for name, w in selection_weights(selection).items()))


def _as_adapter(active: ActiveSet) -> LoRAAdapter:
    """A composed set as one adapter on the CPU."""
    if any(A.ndim != 2 for A, _ in active.factors.values()):
        raise AdapterError("a set with one adapter per batch row cannot be served: vLLM applies one per request")
    weights = {
        key: LoRAWeights(A.detach().cpu(), B.detach().cpu().contiguous()) for key, (A, B) in active.factors.items()
    }
    return LoRAAdapter.single("served", weights)


def _content_name(adapter: LoRAAdapter) -> str:
    digest = hashlib.sha256()
    for key in adapter.modules:
        w = adapter.weights[key]
        digest.update(str(key).encode())
        for tensor in (w.A, w.B):
            digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return "d2l-" + digest.hexdigest()[:20]


def _sampling(max_new_tokens: int, stop: Sequence[str], temperature: float, seed: int | None) -> dict[str, Any]:
    sampling: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature, "skip_special_tokens": True}
    if stop := [s for s in stop if s]:
        sampling["stop"] = stop
    if seed is not None:
        sampling["seed"] = seed
    return sampling


def _texts(chunk: Mapping[str, Any]) -> Iterator[str]:
    for choice in chunk.get("choices", ()):
        if choice.get("text"):
            yield choice["text"]


__all__ = ["VLLM_LORA_RANKS", "ServedAdapter", "VLLMHost"]
