"""Internalization: a document in, a stored memory adapter out, in one hypernetwork pass.

The hosted base model (its adapters switched off) reads each chunk of the document; the
hypernetwork turns the per-layer activations into one adapter per chunk, and the chunk adapters
are concatenated along the rank. Chunks are processed a batch at a time, so a document of any
length runs in memory bounded by the batch, not the document.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from d2l_memory.adapter import AdapterPart, Factors, LoRAAdapter
from d2l_memory.errors import D2LMemoryError
from d2l_memory.host import AdapterHost
from d2l_memory.hypernet import CONFIG_NAME as D2L_CONFIG_NAME
from d2l_memory.hypernet import DocToLoRA, TargetShape, require_fit
from d2l_memory.layer_capture import capture_layer_inputs
from d2l_memory.published_d2l import CONFIG_NAME as PUBLISHED_CONFIG_NAME
from d2l_memory.published_d2l import PublishedDocToLoRA
from d2l_memory.store import AdapterRecord, AdapterStore, content_sha256

GENERATOR = "d2l"

Attachments = Mapping[str, Mapping[str, torch.Tensor]]
"""Name -> tensors stored with a memory in its transaction (see ``AdapterStore.put``)."""


class DocumentHypernetConfig(Protocol):
    """What the internalizer reads off a document hypernetwork's config."""

    base_model: str
    hidden_size: int
    num_layers: int
    targets: tuple[TargetShape, ...]
    rank: int
    chunk_tokens: int
    version: str


class DocumentHypernet(Protocol):
    """A hypernetwork that turns documents into memories: how it cuts a document, what it reads
    of the base model, and how chunk adapters make one memory. Both
    :class:`~d2l_memory.hypernet.DocToLoRA` and the published checkpoints'
    :class:`~d2l_memory.published_d2l.PublishedDocToLoRA` are one."""

    config: DocumentHypernetConfig

    def document_chunks(
        self, tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int
    ) -> tuple[list[list[int]], int]:
        """Wrapped token chunks of ``text``, each at most about ``chunk_tokens``, and its token count."""
        ...

    def chunk_texts(self, tokenizer: PreTrainedTokenizerBase, chunks: Sequence[list[int]]) -> list[str]:
        """The text each wrapped chunk holds, without the wrapping."""
        ...

    @property
    def layers_read(self) -> int:
        """How many decoder layers, from the first, ``features`` is given the inputs of."""
        ...

    def features(self, layer_inputs: torch.Tensor, decoder: nn.Module) -> torch.Tensor:
        """What it reads, from the state entering each of the first ``layers_read`` decoder layers:
        [b, layers_read, s, h] -> [b, L or 1, s, h]."""
        ...

    def __call__(self, features: torch.Tensor, mask: torch.Tensor) -> Factors: ...

    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]: ...

    def memory(self, chunk_adapters: Sequence[LoRAAdapter]) -> LoRAAdapter:
        """One memory from a document's chunk adapters, in chunk order."""
        ...

    def memory_rank(self, chunk_count: int) -> int:
        """The rank of a memory of ``chunk_count`` chunks, on every target."""
        ...

    def to(self, device: torch.device | str) -> DocumentHypernet: ...

    def eval(self) -> DocumentHypernet: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def load_document_hypernet(folder: str | Path, *, device: str | torch.device = "cpu") -> DocumentHypernet:
    """A Doc-to-LoRA hypernetwork folder of either kind: one of ours (``DocToLoRA.save``) or a
    published checkpoint imported with ``d2l-memory import-checkpoint``."""
    folder = Path(folder)
    if (folder / PUBLISHED_CONFIG_NAME).is_file():
        return PublishedDocToLoRA.load(folder, device=device)
    if not (folder / D2L_CONFIG_NAME).is_file() and any(folder.glob("*.bin")):
        raise D2LMemoryError(
            f"{folder} holds a pickled checkpoint: import it first (d2l-memory import-checkpoint PATH --out DIR)"
        )
    return DocToLoRA.load(folder, device=device)


_VISIBLE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]")


def has_text(text: str) -> bool:
    """Whether ``text`` has anything to read: a character that is neither white space nor a
    control character (a document of NUL bytes has none)."""
    return _VISIBLE.search(text) is not None


@dataclass(frozen=True)
class ChunkedDocument:
    """A document cut into the wrapped token chunks the hypernetwork reads.

    Tokenizing is the one pass over a document's text: a caller that wants to check its size,
    key its chunks for routing, then internalize it does all three on one of these.
    """

    text: str
    chunks: list[list[int]]  # wrapped token ids, one list per chunk adapter
    token_count: int  # the document's own tokens, without the template's


@dataclass(frozen=True)
class Memory:
    """A document turned into an adapter, with what it cost."""

    id: str
    adapter: LoRAAdapter
    token_count: int
    chunk_count: int
    seconds: float
    record: AdapterRecord | None = None

    def receipt(self) -> str:
        return (
            f"internalized {self.token_count} tokens in {self.chunk_count} chunk(s) as memory {self.id}"
            f" ({self.seconds * 1000:.0f} ms, {self.adapter.nbytes / 1024:.0f} KiB)"
        )


def memory_chunks(adapter: LoRAAdapter, chunk_count: int, keep: Sequence[int]) -> LoRAAdapter:
    """Only some chunks of a memory of ``chunk_count`` chunks, as one adapter.

    Chunk adapters are concatenated along the rank in chunk order, each of the same rank, so a
    stored memory (one part) is re-read as ``chunk_count`` equal parts and the kept ones selected:
    their rows come back unchanged.
    """
    if not keep or any(not 0 <= i < chunk_count for i in keep):
        raise D2LMemoryError(f"chunk indices {list(keep)} do not name chunks of a memory of {chunk_count}")
    ranks = {}
    for key, w in adapter.weights.items():
        if w.rank % chunk_count:
            raise D2LMemoryError(f"{key}: rank {w.rank} is not {chunk_count} chunks of equal rank")
        ranks[key] = w.rank // chunk_count
    chunks = LoRAAdapter(adapter.weights, tuple(AdapterPart(str(i), ranks) for i in range(chunk_count)))
    return chunks.select(str(i) for i in keep).renamed(adapter.part_names[0])


def pad_batch(chunks: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: ids [b, s] and mask [b, s] (True = real token)."""
    longest = max(len(c) for c in chunks)
    ids = torch.full((len(chunks), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunks), longest), dtype=torch.bool)
    for row, chunk in enumerate(chunks):
        ids[row, : len(chunk)] = torch.tensor(chunk)
        mask[row, : len(chunk)] = True
    return ids, mask


@torch.no_grad()
def layer_inputs(host: AdapterHost, ids: torch.Tensor, mask: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """The hidden state entering each of the first ``count`` decoder layers (default: all):
    ids [b, s] -> [b, count, s, h].

    Runs the decoder stack up to the last layer read (not through it, nor the LM head) with every
    adapter switched off, so memories never colour how new documents are read.
    """
    with host.active(None):
        return capture_layer_inputs(
            host.model.get_decoder(),
            host.model.get_submodule(host.layout.layers_path),
            count,
            input_ids=ids.to(host.device),
            attention_mask=mask.to(host.device).long(),
            use_cache=False,  # a KV cache would only be built to be thrown away
        )


def hypernet_factors(host: AdapterHost, hypernet: DocumentHypernet, chunks: Sequence[list[int]]) -> Factors:
    """The hypernetwork's factors for a batch of chunks, padded together:
    {module: (A [b, L, r, d_in], B [b, L, d_out, r])}."""
    ids, mask = pad_batch(chunks, host.pad_token_id)
    with torch.no_grad():
        inputs = layer_inputs(host, ids, mask, hypernet.layers_read)  # [b, layers_read, s, h]
        features = hypernet.features(inputs, host.model.get_decoder())  # [b, L or 1, s, h]
    return hypernet(features.to(next(hypernet.parameters()).dtype), mask.to(host.device))


class Internalizer:
    """Turns documents into memory adapters on a host, and keeps them in a store if given one."""

    def __init__(
        self,
        host: AdapterHost,
        hypernet: DocumentHypernet,
        *,
        store: AdapterStore | None = None,
        chunk_batch: int = 8,
        chunk_tokens: int | None = None,
        adapter_dtype: torch.dtype | None = torch.float16,
    ) -> None:
        """``chunk_tokens``: the most tokens one chunk adapter reads; by default the hypernetwork's
        own chunk length (the length it was trained on; for an imported published checkpoint, the
        wrapped length set at import). How a document is cut is the hypernetwork's: ours cuts at
        sentence ends, so smaller chunks give each fact more rank, and a
        :class:`~d2l_memory.routing.ChunkFocus` can then switch on only the sentences a query is
        about (see BENCHMARKS.md); a published one cuts near-equal pieces, as its code does. Each
        chunk makes the stored memory larger by one rank-r adapter.

        ``adapter_dtype``: what memories are kept and stored in (None: the host's). Half
        precision halves what a memory costs on disk and in the store for a rounding error of
        about 2e-4 of the factors (the hypernetwork's own weights ship in half precision); the
        host computes in its own dtype whatever the adapter's."""
        trained = hypernet.config.chunk_tokens
        if chunk_tokens is not None and not 1 <= chunk_tokens <= trained:
            raise D2LMemoryError(
                f"chunk_tokens must be between 1 and {trained} (this hypernetwork's chunk length), got {chunk_tokens}"
            )
        self.host = host
        self.hypernet = hypernet.to(host.device).eval()
        self.store = store
        self.chunk_batch = chunk_batch
        self.chunk_tokens = chunk_tokens or trained
        self.adapter_dtype = adapter_dtype or host.dtype
        require_fit(host.layout, hypernet.config, hidden_size=hypernet.config.hidden_size)
        built_for = getattr(hypernet.config, "base_model_type", "")
        serving = getattr(host.model.config, "model_type", "")
        if built_for and serving != built_for:
            raise D2LMemoryError(
                f"this hypernetwork was built for {hypernet.config.base_model} (a {built_for} model), but the"
                f" host serves a {serving or 'different'} model"
            )

    def chunk(self, text: str) -> ChunkedDocument:
        """Cut ``text`` as internalization will (one tokenizer pass); refuses what is not text."""
        if not isinstance(text, str):
            raise D2LMemoryError(f"a document must be text (str), not {type(text).__name__}")
        if not has_text(text):
            raise D2LMemoryError("cannot internalize an empty document (nothing but white space or control characters)")
        chunks, tokens = self.hypernet.document_chunks(self.host.tokenizer, text, self.chunk_tokens)
        return ChunkedDocument(text, chunks, tokens)

    def chunk_texts(self, document: ChunkedDocument) -> list[str]:
        """The text each chunk adapter of ``document`` is made from, in chunk order."""
        return self.hypernet.chunk_texts(self.host.tokenizer, document.chunks)

    def memory_nbytes(self, chunk_count: int) -> int:
        """What a memory of ``chunk_count`` chunks takes in the store (tensor bytes, as ``LoRAAdapter.nbytes``)."""
        config = self.hypernet.config
        per_rank = sum(config.num_layers * (t.d_in + t.d_out) for t in config.targets)
        return self.hypernet.memory_rank(chunk_count) * per_rank * self.adapter_dtype.itemsize

    @torch.no_grad()
    def chunk_adapters(self, chunks: Sequence[list[int]], *, progress: bool = False) -> Iterator[LoRAAdapter]:
        """One adapter per wrapped chunk, computed ``chunk_batch`` chunks at a time."""
        batches = range(0, len(chunks), self.chunk_batch)
        for start in tqdm(batches, desc="internalizing", unit="batch", disable=not progress):
            batch = chunks[start : start + self.chunk_batch]
            factors = hypernet_factors(self.host, self.hypernet, batch)
            names = [f"chunk{start + i}" for i in range(len(batch))]
            yield from (a.to(dtype=self.adapter_dtype) for a in self.hypernet.to_adapters(factors, names))

    def internalize(
        self,
        text: str | ChunkedDocument,
        *,
        namespace: Sequence[str] = ("default",),
        source: str = "",
        id: str | None = None,
        progress: bool | None = None,
        extra: dict | None = None,
        attachments: Attachments | None = None,
    ) -> Memory:
        """Turn one document into a memory adapter (stored if this internalizer has a store)."""
        [memory] = self.internalize_many(
            [text],
            namespace=namespace,
            sources=[source],
            ids=[id],
            progress=progress,
            extra=extra,
            attachments=None if attachments is None else [attachments],
        )
        return memory

    def internalize_many(
        self,
        texts: Sequence[str | ChunkedDocument],
        *,
        namespace: Sequence[str] = ("default",),
        sources: Sequence[str] | None = None,
        ids: Sequence[str | None] | None = None,
        progress: bool | None = None,
        extra: dict | None = None,
        attachments: Sequence[Attachments] | None = None,
    ) -> list[Memory]:
        """Many documents, one memory each, with their chunks sharing batches.

        Short documents (tool outputs, notes) fill a batch together instead of taking a forward
        pass each, which pays most on a GPU. Chunks are batched longest first, so a batch pads
        little; each memory is the same as :meth:`internalize` would make (up to float rounding).
        A memory's ``seconds`` is its share of the whole run, by tokens. Each memory is stored
        with its ``attachments`` (routing keys, say) in one store transaction.
        """
        sources = [""] * len(texts) if sources is None else list(sources)
        ids = [None] * len(texts) if ids is None else list(ids)
        attached = [{}] * len(texts) if attachments is None else list(attachments)
        if not len(sources) == len(ids) == len(attached) == len(texts):
            raise D2LMemoryError(
                f"{len(texts)} texts need as many sources, ids and attachments,"
                f" got {len(sources)}, {len(ids)} and {len(attached)}"
            )
        start = time.perf_counter()
        documents = [text if isinstance(text, ChunkedDocument) else self.chunk(text) for text in texts]
        chunks = [chunk for document in documents for chunk in document.chunks]
        longest_first = sorted(range(len(chunks)), key=lambda i: -len(chunks[i]))
        show = progress if progress is not None else len(chunks) > 4 * self.chunk_batch
        made = self.chunk_adapters([chunks[i] for i in longest_first], progress=show)  # parts named uniquely
        by_chunk = dict(zip(longest_first, made))
        adapters = [by_chunk[i] for i in range(len(chunks))]  # back in document and chunk order
        seconds = time.perf_counter() - start
        total_tokens = sum(document.token_count for document in documents)
        memories, first = [], 0
        for document, source, memory_id, keys in zip(documents, sources, ids, attached):
            count, tokens = len(document.chunks), document.token_count
            adapter = self.hypernet.memory(adapters[first : first + count])  # in chunk order
            first += count
            share = seconds * tokens / max(total_tokens, 1)
            memories.append(self._keep(adapter, tokens, count, share, namespace, source, memory_id, extra, keys))
        return memories

    def _keep(
        self,
        adapter: LoRAAdapter,
        token_count: int,
        chunk_count: int,
        seconds: float,
        namespace: Sequence[str],
        source: str,
        id: str | None,
        extra: dict | None,
        attachments: Attachments,
    ) -> Memory:
        """A memory of the chunk adapters, stored if this internalizer has a store."""
        record = None
        if self.store is not None:
            record = self.store.put(
                adapter,
                namespace=tuple(namespace),
                kind="memory",
                id=id,
                source=source,
                token_count=token_count,
                generator=GENERATOR,
                generator_version=self.hypernet.config.version,
                base_model=self.host.model_id,
                extra={
                    **(extra or {}),
                    "chunks": chunk_count,
                    "shared_ranks": self.hypernet.memory_rank(chunk_count) - chunk_count * self.hypernet.config.rank,
                    "chunk_tokens": self.chunk_tokens,
                    "adapter_scale": getattr(self.hypernet.config, "adapter_scale", 1.0),
                    "seconds": round(seconds, 4),
                },
                attachments=attachments,
            )
            id = record.id
        memory_id = id or f"memory-{content_sha256(adapter)[:12]}"
        return Memory(memory_id, adapter.renamed(memory_id), token_count, chunk_count, seconds, record)
