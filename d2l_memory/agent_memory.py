"""The agent-memory service: namespaced internalization, skills, routing and residency over one host
and one store.

Tools, graph nodes, middleware and chat history all do the same few things (internalize a
document into a namespace, check that ids belong to a namespace, find relevant adapters, make
adapters resident on the host), so they do them through one :class:`AgentMemory` and enforce
the same limits and the same namespace isolation everywhere. It uses no LangChain type, so it
lives below :mod:`integrations`, which wraps it.

Isolation: adapters are looked up in the store by ``(namespace, id)`` and made resident on the
host under a key that includes the namespace (:attr:`~d2l_memory.refs.AdapterRef.key`), so an id
from another user's namespace is simply unknown here, even when the same host serves both users.
An id is looked up in the thread's namespace first, then in its user's shared one
(:func:`~d2l_memory.refs.readable_namespaces`).

Finding adapters is :class:`~d2l_memory.memory_index.MemoryIndex`'s part, keeping them on the
host :class:`~d2l_memory.residency.Residency`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from d2l_memory.errors import ConfigError, D2LMemoryError, NotFoundError, UnsafePathError
from d2l_memory.internalize import GENERATOR, ChunkedDocument, Internalizer, Memory, has_text
from d2l_memory.memory_index import MemoryIndex
from d2l_memory.refs import AdapterRef, new_id, readable_namespaces
from d2l_memory.residency import Residency
from d2l_memory.routing import ChunkFocus, LexicalEncoder, TextEncoder
from d2l_memory.store import AdapterRecord, AdapterStore, Kind

DEFAULT_MAX_DOCUMENT_BYTES = 1_000_000
DEFAULT_MAX_DOCUMENT_TOKENS = 131_072
"""The most tokens one call internalizes: 256 chunks of 512 tokens, tens of seconds on a CPU."""
DEFAULT_MAX_MEMORY_BYTES = 64 * 2**20
"""The most a memory made in one call may take in the store (its chunk adapters' tensor bytes)."""


class DocumentError(D2LMemoryError):
    """A document (or skill description) that cannot be internalized as given."""


@runtime_checkable
class SkillMaker(Protocol):
    """Turns a task description into a stored skill adapter (kind ``"skill"``) in ``namespace``.

    A protocol, not a base class, so any generator plugs in: Text-to-LoRA
    (:class:`integrations.skills.TextToLoRASkills`), a library of trained skills, or your own.
    """

    def create_skill(self, description: str, *, namespace: Sequence[str]) -> tuple[str, str]:
        """Store the skill and return ``(skill_id, one-line receipt)``."""
        ...


def swap(active: Sequence[str], on: Sequence[str] = (), off: Sequence[str] = ()) -> list[str]:
    """The active list after swapping ``on`` in and ``off`` out, oldest first.

    One memory is on at most once: swapping it in, whole or focused, replaces whatever of it was
    on; swapping a memory's id out swaps out its focused chunks too.
    """
    removed = set(off)
    replaced = {AdapterRef.parse(i).id for i in on} | removed
    kept = [i for i in active if i not in removed and AdapterRef.parse(i).id not in replaced]
    return [*kept, *dict.fromkeys(on)]


def check_document(text: str, max_bytes: int) -> None:
    """Refuse what should never reach the hypernetwork: empty, oversized, or not encodable text.

    A cheap first check on the text alone; :meth:`AgentMemory.internalize_many` then limits the
    document's tokens and the size of the memory it would make."""
    if not isinstance(text, str):
        raise DocumentError(f"a document must be text, not {type(text).__name__}")
    if not has_text(text):
        raise DocumentError("the document is empty (nothing but white space or control characters)")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as err:  # lone surrogates, e.g. bytes decoded with surrogateescape
        raise DocumentError(f"the document is not valid UTF-8 text ({err.reason} at character {err.start})") from err
    if size > max_bytes:
        raise DocumentError(
            f"the document is {_size(size)}; at most {_size(max_bytes)} can be internalized at once."
            " Split it and internalize the parts"
        )


def _size(nbytes: int) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


class AgentMemory:
    """Namespaced internalization, skills, routing and residency over one host and one store.

    Every method takes the namespace first, as :class:`~d2l_memory.store.AdapterStore` takes
    ``(namespace, id)``: here it is required and scopes everything the call may read or write.
    :meth:`Internalizer.internalize <d2l_memory.internalize.Internalizer.internalize>` takes it
    last, as a keyword, because there it is optional (``("default",)``) and the text is the point.
    """

    def __init__(
        self,
        internalizer: Internalizer,
        *,
        skills: SkillMaker | None = None,
        encoder: TextEncoder | None = None,
        max_active: int = 4,
        max_resident: int = 256,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        max_document_tokens: int = DEFAULT_MAX_DOCUMENT_TOKENS,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
        files_root: str | Path | None = None,
        focus: ChunkFocus | None = None,
        max_indexed_namespaces: int = 1024,
    ) -> None:
        """``files_root``: the folder whose files agents may internalize by path (none if unset).

        ``focus``: when given, a memory longer than ``focus.chunks`` chunks that a query routes to
        is switched on with only its chunks most relevant to the query (see :class:`ChunkFocus`),
        under a focused id such as ``"3f2a9c01b7de@4"``.

        ``max_active`` caps how many adapters a thread has switched on at once: each one adds
        rank to every forward pass. ``max_resident`` caps how many this memory keeps on the host
        for all threads together: beyond it the least recently used leave the host (never the
        store) and are loaded again when next switched on, so a long-lived server's device
        memory stays bounded. ``max_indexed_namespaces`` does the same for routing: the keys of
        the least recently queried namespaces beyond it leave this process and are read back
        from the store when next needed.

        ``max_document_bytes``, ``max_document_tokens`` and ``max_memory_bytes`` bound what one
        call may internalize: the text, its tokens, and what the memory would take in the store.
        The cost of a memory follows its tokens, not its bytes (a page of one repeated letter is
        thousands of chunks), so all three are checked before the hypernetwork runs.
        """
        if internalizer.store is None:
            raise D2LMemoryError("AgentMemory needs an Internalizer with a store: memories must outlive the run")
        if max_active < 1 or max_resident < max_active:
            raise ConfigError(f"need 1 <= max_active <= max_resident, got {max_active} and {max_resident}")
        if max_indexed_namespaces < 2:  # a thread's query needs its own and its user's shared one
            raise ConfigError(f"max_indexed_namespaces must be at least 2, got {max_indexed_namespaces}")
        self.internalizer = internalizer
        self.host = internalizer.host
        self.store: AdapterStore = internalizer.store
        self.skills = skills
        self.max_active = max_active
        self.max_document_bytes = max_document_bytes
        self.max_document_tokens = max_document_tokens
        self.max_memory_bytes = max_memory_bytes
        self.files_root = Path(files_root).resolve() if files_root is not None else None
        self.focus = focus
        self.index = MemoryIndex(self.store, encoder or LexicalEncoder(), focus, max_indexed_namespaces)
        self.residency = Residency(self.host, self.store, max_resident)

    def close(self) -> None:
        """Close the store (its SQLite connection); the memories stay in its folder, and the host
        no longer loads evicted adapters from it."""
        self.residency.close()
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- creating adapters -------------------------------------------------------------------
    def internalize(
        self,
        text: str,
        *,
        namespace: Sequence[str],
        source: str = "",
        origin: str = "agent",
    ) -> Memory:
        """Internalize ``text`` into ``namespace``; ``origin`` (kept in the record) says what it was."""
        [memory] = self.internalize_many([text], namespace=namespace, sources=[source], origin=origin)
        return memory

    def internalize_many(
        self,
        texts: Sequence[str | ChunkedDocument],
        *,
        namespace: Sequence[str],
        sources: Sequence[str] | None = None,
        origin: str = "agent",
    ) -> list[Memory]:
        """Internalize several documents at once, one memory each (their chunks share batches).

        Every document is checked before any is internalized, so one bad document stores none
        (a caller that wants to skip the bad ones checks each with :meth:`prepare` first and
        passes what it returns). Each memory is stored with its routing and focus keys in one
        store transaction, so no crash leaves a memory that queries cannot reach.
        """
        documents = [self._within_limits(t) if isinstance(t, ChunkedDocument) else self.prepare(t) for t in texts]
        attachments = [  # encodes every line: no lock held
            self.index.keys_of(d.text, lambda d=d: self.internalizer.chunk_texts(d), len(d.chunks)) for d in documents
        ]
        memories = self.internalizer.internalize_many(
            documents,
            namespace=tuple(namespace),
            ids=[new_id() for _ in texts],
            sources=sources,
            extra={"origin": origin},
            attachments=attachments,
        )
        for memory, keys in zip(memories, attachments):
            self.index.restore_memory(namespace, memory.id, keys)
        return memories

    def prepare(self, text: str) -> ChunkedDocument:
        """``text`` checked and cut into chunks (its one tokenizer pass), or :class:`DocumentError`
        if it is not text, is empty, or its bytes, tokens or memory would exceed this memory's limits."""
        check_document(text, self.max_document_bytes)
        return self._within_limits(self.internalizer.chunk(text))

    def _within_limits(self, document: ChunkedDocument) -> ChunkedDocument:
        if document.token_count > self.max_document_tokens:
            raise DocumentError(
                f"the document is {document.token_count:,} tokens; at most {self.max_document_tokens:,} can be"
                " internalized at once. Split it and internalize the parts"
            )
        nbytes = self.internalizer.memory_nbytes(len(document.chunks))
        if nbytes > self.max_memory_bytes:
            raise DocumentError(
                f"the document would make a memory of {_size(nbytes)} ({len(document.chunks):,} chunks); at most"
                f" {_size(self.max_memory_bytes)} can be made at once. Split it and internalize the parts"
            )
        return document

    def internalize_file(self, path: str | Path, *, namespace: Sequence[str]) -> Memory:
        """Internalize a UTF-8 text file lying under ``files_root``."""
        resolved, relative = self._allowed_file(path)
        try:
            size = resolved.stat().st_size
        except OSError as err:  # removed or made unreadable since it was checked
            raise DocumentError(f"cannot read {path}: {err.strerror}") from err
        if size > self.max_document_bytes:
            raise DocumentError(
                f"{path} is {_size(size)}; at most {_size(self.max_document_bytes)} can be internalized"
            )
        try:
            text = resolved.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise DocumentError(f"{path} is not UTF-8 text (invalid byte at offset {err.start})") from err
        except OSError as err:
            raise DocumentError(f"cannot read {path}: {err.strerror}") from err
        return self.internalize(text, namespace=namespace, source=f"file:{relative}", origin="file")

    def create_skill(self, description: str, *, namespace: Sequence[str]) -> tuple[str, str]:
        """A skill adapter from a task description, via the configured :class:`SkillMaker`."""
        if self.skills is None:
            raise D2LMemoryError("no skill maker is configured: pass AgentMemory(..., skills=...)")
        check_document(description, self.max_document_bytes)
        skill_id, receipt = self.skills.create_skill(description, namespace=tuple(namespace))
        self.index.add(namespace, skill_id, description)
        return skill_id, receipt

    # --- finding adapters --------------------------------------------------------------------
    def records(self, namespace: Sequence[str], *, kind: Kind | None = None) -> list[AdapterRecord]:
        """The adapters a thread can use, its own and its user's shared ones, oldest first."""
        records = [r for ns in readable_namespaces(namespace) for r in self.store.list(ns, kind=kind)]
        return sorted(records, key=lambda r: r.created_at)

    def record(self, namespace: Sequence[str], adapter_id: str) -> AdapterRecord:
        """The record of an adapter the thread can use (from its own namespace or its user's shared one)."""
        [(_, record)] = self._held(namespace, [adapter_id])
        return record

    def require(self, namespace: Sequence[str], ids: Sequence[str]) -> None:
        """Raise :class:`NotFoundError` naming every id that ``namespace`` does not hold."""
        self._held(namespace, ids)

    def route(self, namespace: Sequence[str], query: str, *, top_k: int) -> list[str]:
        """The ids of the thread's adapters (its own and its user's shared ones) most relevant to
        ``query``, best first, focused on the query's chunks where this memory has a :class:`ChunkFocus`."""
        return [ref.name for ref in self.index.route(namespace, query, top_k=top_k)]

    # --- forgetting ----------------------------------------------------------------------------
    def forget(self, namespace: Sequence[str], adapter_id: str) -> list[AdapterRecord]:
        """Delete a memory or skill for good and return the records deleted: from the store (with its
        routing keys), the router, the focus index and the host. A focused id forgets the whole
        memory; a shared one is gone for all of the user's threads, which skip it where their
        state still names it (see :meth:`held`). An id in both the thread's and the shared
        namespace (a skill made in each) goes from both, so the thread no longer sees it: two
        records, the thread's first, so a BaseStore mirror can drop both copies."""
        stored_id = AdapterRef.parse(adapter_id).id
        records = []
        for ns in readable_namespaces(namespace):
            try:
                records.append(self.store.record(ns, stored_id))
            except NotFoundError:
                continue
        if not records:
            raise NotFoundError(f"unknown adapter id {adapter_id!r} in this conversation")
        for record in records:
            whole = AdapterRef(stored_id, namespace=tuple(record.namespace))
            self.store.delete(record.namespace, stored_id)
            self.index.forget(whole)
            self.residency.forget(whole)
        return records

    def held(self, namespace: Sequence[str], ids: Sequence[str]) -> list[str]:
        """The ``ids`` that ``namespace`` holds, in order: what is left of an active list once
        some of it has been forgotten."""
        held = []
        for adapter_id in ids:
            try:
                if self._owner(namespace, adapter_id) is not None:
                    held.append(adapter_id)
            except NotFoundError:  # malformed: never held
                pass
        return held

    # --- using adapters ----------------------------------------------------------------------
    def resident_keys(self, namespace: Sequence[str], ids: Sequence[str]) -> list[str]:
        """Host keys for ``ids`` of ``namespace``, loading from the store any not resident yet.

        The key includes the namespace that holds the adapter (the thread's, or its user's shared
        one), so two namespaces never share a resident adapter. A focused id is made resident as
        only the rank rows of its chunks.
        """
        # Looked up before the residency shortcut: keys must not cross namespaces.
        return self.residency.keys(self._held(namespace, ids))

    def swap(self, active: Sequence[str], on: Sequence[str] = (), off: Sequence[str] = ()) -> list[str]:
        """The active list after swapping ``on`` in and ``off`` out (see :func:`swap`); the oldest
        beyond ``max_active`` drop."""
        return swap(active, on, off)[-self.max_active :]

    # --- internals ---------------------------------------------------------------------------
    def _owner(self, namespace: Sequence[str], adapter_id: str) -> tuple[AdapterRef, AdapterRecord] | None:
        """``adapter_id`` in the namespace holding it for a thread in ``namespace``, with its record:
        the thread's own first, then its user's shared one (for a focused id: only a Doc-to-LoRA
        memory with those chunks); None when neither does. :class:`NotFoundError` for a
        malformed focused id; :class:`UnsafePathError` for a name with a namespace or path in it."""
        ref = AdapterRef.parse(adapter_id)
        if ref.namespace is not None:
            raise UnsafePathError(f"adapter id {adapter_id!r} is not allowed: name an adapter id, not a key or a path")
        for ns in readable_namespaces(namespace):
            try:
                record = self.store.record(ns, ref.id)
            except NotFoundError:
                continue
            count = record.extra.get("chunks", 0)
            focusable = (
                record.kind == "memory"
                and record.generator == GENERATOR
                and not record.extra.get("shared_ranks")  # rows beyond its chunks' (a bias LoRA) cannot be cut
                and all(c < count for c in ref.chunks or ())
            )
            return (ref.in_namespace(ns), record) if ref.chunks is None or focusable else None
        return None

    def _held(self, namespace: Sequence[str], ids: Sequence[str]) -> list[tuple[AdapterRef, AdapterRecord]]:
        """Each id's :meth:`_owner`; :class:`NotFoundError` naming every id the thread cannot use."""
        held, unknown, malformed = [], [], []
        for adapter_id in ids:
            try:
                owner = self._owner(namespace, adapter_id)
            except NotFoundError as err:
                malformed.append(str(err))
                continue
            if owner is None:
                unknown.append(adapter_id)
            else:
                held.append(owner)
        if unknown or malformed:
            found = [f"unknown adapter id(s) {unknown} in this conversation"] if unknown else []
            raise NotFoundError("; ".join(found + malformed))
        return held

    def _allowed_file(self, path: str | Path) -> tuple[Path, Path]:
        """``path`` resolved (symlinks too), checked to lie under ``files_root``, and relative to it."""
        if self.files_root is None:
            raise DocumentError("internalizing files is disabled: pass AgentMemory(..., files_root=<folder>)")
        try:
            resolved = (self.files_root / path).resolve()
        except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a symlink loop (RuntimeError before 3.13)
            raise DocumentError(f"{path!r} is not a usable path: {err}") from err
        if not resolved.is_relative_to(self.files_root):
            raise DocumentError(f"{path} lies outside the folder agents may read")
        if not resolved.is_file():
            raise DocumentError(f"{path} is not a file under the folder agents may read")
        return resolved, resolved.relative_to(self.files_root)
