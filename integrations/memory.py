"""What the LangChain and LangGraph pieces share: one host, one store, and the rules between them.

Tools, graph nodes, middleware and chat history all do the same few things (internalize a
document into a namespace, check that ids belong to a namespace, find relevant adapters, make
adapters resident on the host), so they do them through one :class:`AgentMemory` and enforce
the same limits and the same namespace isolation everywhere.

Isolation: adapters are looked up in the store by ``(namespace, id)`` and made resident on the
host under a key that includes the namespace, so an id from another user's namespace is simply
unknown here, even when the same host serves both users.

Sharing: a thread's namespace is ``(user, thread)``, and it also reads ``(user, "all-threads")``,
where memories and skills kept for all of that user's threads lie (:func:`shared_namespace`;
``namespace_from`` refuses that thread label, so no run is that namespace). An id is looked up
in the thread first, then in the user's shared namespace. Namespaces of other shapes, such as
the ``("default",)`` that bare internalizers write to, read only themselves.

Persistence: the store is the single source of truth. Routing and focus keys are attached to
each adapter in the store when it is made, and a namespace's router is brought in line with
the store before every query, so memories made before a restart, or by another process on the
same store, are routed like this process's own, and forgotten ones never come back.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from d2l_memory.adapter import LoRAAdapter
from d2l_memory.errors import D2LMemoryError, NotFoundError, StoreError
from d2l_memory.internalize import (
    GENERATOR,
    Attachments,
    ChunkedDocument,
    Internalizer,
    Memory,
    has_text,
    memory_chunks,
)
from d2l_memory.routing import ChunkFocus, KeyIndex, LexicalEncoder, MemoryRouter, TextEncoder
from d2l_memory.store import AdapterRecord, AdapterStore, Kind
from integrations.context import SHARED_THREAD

logger = logging.getLogger(__name__)

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

    def create_skill(self, description: str, namespace: Sequence[str]) -> tuple[str, str]:
        """Store the skill and return ``(skill_id, one-line receipt)``."""
        ...


def new_id() -> str:
    """A fresh adapter id: 48 random bits, short because agents read and repeat ids in their prompts.

    Ids only need to be unique within a namespace, and the store refuses a duplicate rather than
    overwriting, so a collision can never clobber a memory.
    """
    return uuid.uuid4().hex[:12]


FOCUS_MARK = "@"
"""Joins a memory id and the chunks of it a query switched on: ``"3f2a9c01b7de@4"``, ``"...@1,2"``.
Store ids never contain it (see ``d2l_memory.store``'s name rule), so a focused id cannot collide
with a stored one."""

_FOCUSED = re.compile(r"([^@]+)@(\d+(?:,\d+)*)")


def focused_id(memory_id: str, chunks: Sequence[int]) -> str:
    return f"{memory_id}{FOCUS_MARK}{','.join(map(str, sorted(set(chunks))))}"


def split_focus(adapter_id: str) -> tuple[str, list[int] | None]:
    """``"id@1,2"`` -> ``("id", [1, 2])``; a plain id -> ``(id, None)``.

    Only the one spelling :func:`focused_id` writes is accepted (ascending, no repeats, no
    leading zeros), so one set of chunks is one resident adapter.
    """
    if FOCUS_MARK not in adapter_id:
        return adapter_id, None
    match = _FOCUSED.fullmatch(adapter_id)
    chunks = [int(c) for c in match.group(2).split(",")] if match else []
    if not match or focused_id(match.group(1), chunks) != adapter_id:
        raise NotFoundError(
            f"unknown adapter id {adapter_id!r}: a focused id is a memory id, {FOCUS_MARK!r}, then ascending"
            " chunk numbers, e.g. 3f2a9c01b7de@4 or 3f2a9c01b7de@1,2"
        )
    return match.group(1), chunks


def switch(active: Sequence[str], add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
    """The active list after switching ``add`` on and ``remove`` off, oldest first.

    One memory is on at most once: adding it, whole or focused, replaces whatever of it was on;
    removing a memory's id switches off its focused chunks too.
    """
    removed = set(remove)
    replaced = {split_focus(i)[0] for i in add} | removed
    kept = [i for i in active if i not in removed and split_focus(i)[0] not in replaced]
    return [*kept, *dict.fromkeys(add)]


def shared_namespace(namespace: Sequence[str]) -> tuple[str, ...]:
    """Where adapters shared by all of a user's threads lie: ``(user, "all-threads")`` for
    ``(user, thread)``; any namespace of another shape shares with nothing (it is its own)."""
    own = tuple(namespace)
    return (own[0], SHARED_THREAD) if len(own) == 2 else own


def readable_namespaces(namespace: Sequence[str]) -> list[tuple[str, ...]]:
    """The namespaces a thread's ids are looked up in, in order: its own, then its user's shared one."""
    own, shared = tuple(namespace), shared_namespace(namespace)
    return [own] if own == shared else [own, shared]


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
    """Namespaced internalization, skills, routing and residency over one host and one store."""

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
            raise ValueError(f"need 1 <= max_active <= max_resident, got {max_active} and {max_resident}")
        if max_indexed_namespaces < 2:  # a thread's query needs its own and its user's shared one
            raise ValueError(f"max_indexed_namespaces must be at least 2, got {max_indexed_namespaces}")
        self.internalizer = internalizer
        self.host = internalizer.host
        self.store: AdapterStore = internalizer.store
        self.skills = skills
        self.max_active = max_active
        self.max_resident = max_resident
        self._resident: OrderedDict[str, None] = OrderedDict()  # host keys this memory added, oldest use first
        self.max_document_bytes = max_document_bytes
        self.max_document_tokens = max_document_tokens
        self.max_memory_bytes = max_memory_bytes
        self._evicted: set[str] = set()  # host keys this memory evicted: the only ones its loader loads
        self.files_root = Path(files_root).resolve() if files_root is not None else None
        self._encoder = encoder or LexicalEncoder()
        self._keys = MemoryRouter(self._encoder)  # encodes a document's router keys, indexes nothing
        self.focus = focus
        self.host.add_loader(self._reload)
        # One router per namespace, synced with the store's attached keys before each query;
        # least recently used first, at most max_indexed_namespaces of them.
        self._routers: OrderedDict[tuple[str, ...], MemoryRouter] = OrderedDict()
        self.max_indexed_namespaces = max_indexed_namespaces
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the store (its SQLite connection); the memories stay in its folder, and the host
        no longer loads evicted adapters from it."""
        self.host.remove_loader(self._reload)
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- creating adapters -------------------------------------------------------------------
    def internalize(
        self,
        namespace: Sequence[str],
        text: str,
        *,
        source: str = "",
        origin: str = "agent",
    ) -> Memory:
        """Internalize ``text`` into ``namespace``; ``origin`` (kept in the record) says what it was."""
        [memory] = self.internalize_many(namespace, [text], sources=[source], origin=origin)
        return memory

    def internalize_many(
        self,
        namespace: Sequence[str],
        texts: Sequence[str],
        *,
        sources: Sequence[str] | None = None,
        origin: str = "agent",
    ) -> list[Memory]:
        """Internalize several documents at once, one memory each (their chunks share batches).

        Every document is checked before any is internalized, so one bad document stores none.
        Each memory is stored with its routing and focus keys in one store transaction, so no
        crash leaves a memory that queries cannot reach.
        """
        for text in texts:
            check_document(text, self.max_document_bytes)
        documents = [self._chunked(text) for text in texts]  # each text tokenized once, here
        attachments = [self._keys_of(document) for document in documents]  # encodes every line: no lock held
        memories = self.internalizer.internalize_many(
            documents,
            namespace=tuple(namespace),
            ids=[new_id() for _ in texts],
            sources=sources,
            extra={"origin": origin},
            attachments=attachments,
        )
        with self._lock:
            router = self._router(namespace)
            for memory, keys in zip(memories, attachments):
                router.restore(memory.id, keys[router.key_name])
                if self.focus is not None and self.focus.key_name in keys:
                    self.focus.restore(_key(namespace, memory.id), keys[self.focus.key_name])
        return memories

    def _chunked(self, text: str) -> ChunkedDocument:
        """``text`` cut into chunks, refused if its tokens or its memory exceed this memory's limits."""
        document = self.internalizer.chunk(text)
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

    def _keys_of(self, document: ChunkedDocument) -> Attachments:
        """What a memory of ``document`` is found by: router keys, and focus keys when it is long."""
        keys = {self._keys.key_name: self._keys.encode(document.text)}
        if self.focus is not None and len(document.chunks) > self.focus.chunks:
            keys[self.focus.key_name] = self.focus.encode(self.internalizer.chunk_texts(document))
        return keys

    def internalize_file(self, namespace: Sequence[str], path: str | Path) -> Memory:
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
        return self.internalize(namespace, text, source=f"file:{relative}", origin="file")

    def create_skill(self, namespace: Sequence[str], description: str) -> tuple[str, str]:
        """A skill adapter from a task description, via the configured :class:`SkillMaker`."""
        if self.skills is None:
            raise D2LMemoryError("no skill maker is configured: pass AgentMemory(..., skills=...)")
        check_document(description, self.max_document_bytes)
        skill_id, receipt = self.skills.create_skill(description, tuple(namespace))
        self._index(namespace, skill_id, description)
        return skill_id, receipt

    # --- finding adapters --------------------------------------------------------------------
    def records(self, namespace: Sequence[str], *, kind: Kind | None = None) -> list[AdapterRecord]:
        """The adapters a thread can use, its own and its user's shared ones, oldest first."""
        records = [r for ns in readable_namespaces(namespace) for r in self.store.list(ns, kind=kind)]
        return sorted(records, key=lambda r: r.created_at)

    def record(self, namespace: Sequence[str], adapter_id: str) -> AdapterRecord:
        """The record of an adapter the thread can use (from its own namespace or its user's shared one)."""
        [owner] = self._owners(namespace, [adapter_id])
        return self.store.record(owner, adapter_id)

    def require(self, namespace: Sequence[str], ids: Sequence[str]) -> None:
        """Raise :class:`NotFoundError` naming every id that ``namespace`` does not hold."""
        self._owners(namespace, ids)

    def route(self, namespace: Sequence[str], query: str, *, top_k: int) -> list[str]:
        """The ids of the thread's adapters (its own and its user's shared ones) most relevant to
        ``query``, best first, focused on the query's chunks where this memory has a :class:`ChunkFocus`."""
        scored: list[tuple[float, tuple[str, ...], str]] = []
        with self._lock:
            for ns in readable_namespaces(namespace):
                scored += [(score, ns, i) for i, score in self._synced_router(ns).route(query, top_k=top_k)]
        best: dict[str, float] = {}
        homes: dict[str, tuple[str, ...]] = {}  # an id in both namespaces is read from the thread's, as _owner does
        for score, ns, i in scored:  # the thread's namespace first
            homes.setdefault(i, ns)
            best[i] = max(best.get(i, score), score)
        picked = [(homes[i], i) for i in sorted(best, key=lambda i: -best[i])[:top_k]]  # stable: ties keep that order
        ids = [i for _, i in picked]
        focus = self.focus
        if focus is None:
            return ids
        keys = {i: _key(ns, i) for ns, i in picked}
        with self._lock:
            for ns in readable_namespaces(namespace):
                missing = [i for owner, i in picked if owner == ns and keys[i] not in focus]
                self._restore(ns, missing, focus, keys.get)
        indexed = {i: key for i, key in keys.items() if key in focus}
        chunks = focus.best(list(indexed.values()), query)
        return [focused_id(i, chunks[indexed[i]]) if i in indexed else i for i in ids]

    # --- forgetting ----------------------------------------------------------------------------
    def forget(self, namespace: Sequence[str], adapter_id: str) -> list[AdapterRecord]:
        """Delete a memory or skill for good and return the records deleted: from the store (with its
        routing keys), the router, the focus index and the host. A focused id forgets the whole
        memory; a shared one is gone for all of the user's threads, which skip it where their
        state still names it (see :meth:`held`). An id in both the thread's and the shared
        namespace (a skill made in each) goes from both, so the thread no longer sees it: two
        records, the thread's first, so a BaseStore mirror can drop both copies."""
        stored_id, _ = split_focus(adapter_id)
        records = []
        for ns in readable_namespaces(namespace):
            try:
                records.append(self.store.record(ns, stored_id))
            except NotFoundError:
                continue
        if not records:
            raise NotFoundError(f"unknown adapter id {adapter_id!r} in this conversation")
        for ns in (tuple(record.namespace) for record in records):
            self.store.delete(ns, stored_id)
            key = _key(ns, stored_id)
            with self._lock:
                router = self._routers.get(ns)
                if router is not None and stored_id in router:
                    router.remove(stored_id)
                if self.focus is not None and key in self.focus:
                    self.focus.remove(key)
                for resident in [k for k in self._resident if split_focus(k)[0] == key]:
                    del self._resident[resident]
                    if resident in self.host:
                        self.host.remove(resident)
                self._evicted -= {k for k in self._evicted if split_focus(k)[0] == key}
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
        owners = self._owners(namespace, ids)  # before the residency shortcut: keys must not cross namespaces
        keys = []
        with self._lock:
            for adapter_id, owner in zip(ids, owners):
                key = _key(owner, adapter_id)
                if key not in self.host:
                    self.host.add(key, self._stored(owner, adapter_id))
                keys.append(key)
                self._used(key)
            self._evict(keep=keys)
        return keys

    def _stored(self, namespace: Sequence[str], adapter_id: str) -> LoRAAdapter:
        """An adapter of the store, or only some chunks of it for a focused id."""
        stored_id, chunks = split_focus(adapter_id)
        adapter = self.store.get(namespace, stored_id)
        if chunks is not None:
            count = self.store.record(namespace, stored_id).extra.get("chunks", 1)
            adapter = memory_chunks(adapter, count, chunks)
        return adapter

    def _reload(self, key: str) -> LoRAAdapter | None:
        """The host's loader: a key this memory evicted, from the store (None for any other key).

        Only evicted keys: a key is made resident by :meth:`resident_keys`, which checks it
        against the caller's namespace, so a name built from another user's id is never loaded.
        """
        with self._lock:
            if key not in self._evicted:
                return None
        *namespace, adapter_id = key.split("/")
        try:
            adapter = self._stored(namespace, adapter_id)
        except StoreError:  # not in this memory's store, or not a name it could hold
            return None
        with self._lock:
            self._used(key)
            self._evict(keep=[key])
        return adapter

    def _used(self, key: str) -> None:
        self._evicted.discard(key)
        self._resident[key] = None
        self._resident.move_to_end(key)

    def _evict(self, keep: Sequence[str]) -> None:
        """Drop the least recently used of this memory's host keys beyond ``max_resident``. Keys
        stay valid: a request that names an evicted one has the host load it again (``_reload``),
        and one already composed holds its factors."""
        for key in [k for k in self._resident if k not in keep][: max(0, len(self._resident) - self.max_resident)]:
            del self._resident[key]
            self._evicted.add(key)
            if key in self.host:
                self.host.remove(key)

    def activate(self, active: Sequence[str], add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        """The active list after switching ``add`` on and ``remove`` off; the oldest beyond ``max_active`` drop."""
        return self.switched(active, add, remove)[-self.max_active :]

    def switched(self, active: Sequence[str], add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        """:meth:`activate` before the ``max_active`` cap (see :func:`switch`)."""
        return switch(active, add, remove)

    # --- internals ---------------------------------------------------------------------------
    def _index(self, namespace: Sequence[str], adapter_id: str, text: str) -> None:
        """Route to the new adapter from now on, in this process and (its keys attached) in any."""
        with self._lock:
            router = self._router(namespace)
            router.add(adapter_id, text)
            keys = router.export(adapter_id)
        self.store.attach(namespace, adapter_id, router.key_name, keys)

    def _synced_router(self, namespace: Sequence[str]) -> MemoryRouter:
        """The namespace's router with the store's adapters and no others (call with the lock held).

        Adapters made by another process, or before a restart, are added from their attached
        keys; adapters forgotten elsewhere are dropped. Adapters without keys (stored by other
        code) cannot be routed to: they are switched on by id.
        """
        router = self._router(namespace)
        stored = self.store.ids(namespace)
        for gone in set(router.ids) - set(stored):
            router.remove(gone)
        self._restore(namespace, [i for i in stored if i not in router], router, lambda i: i)
        return router

    def _router(self, namespace: Sequence[str]) -> MemoryRouter:
        """The namespace's router, made most recently used; the least recently used beyond
        ``max_indexed_namespaces`` are dropped with their focus keys (call with the lock held)."""
        ns = tuple(namespace)
        router = self._routers.setdefault(ns, MemoryRouter(self._encoder))
        self._routers.move_to_end(ns)
        while len(self._routers) > self.max_indexed_namespaces:
            old_ns, old = self._routers.popitem(last=False)
            for adapter_id in old.ids:
                if self.focus is not None and _key(old_ns, adapter_id) in self.focus:
                    self.focus.remove(_key(old_ns, adapter_id))
        return router

    def _restore(
        self, namespace: Sequence[str], ids: Sequence[str], index: KeyIndex, index_key: Callable[[str], str | None]
    ) -> None:
        """Read the keys of ``ids`` back from the store into ``index`` (those that have any).

        Keys that cannot be read (the store skips damaged rows) or do not fit the index are
        skipped with a warning: their adapter can still be switched on by id, and one damaged
        row must not stop routing for the whole namespace.
        """
        if not ids:
            return
        for adapter_id, tensors in self.store.attachments(namespace, index.key_name, ids).items():
            key = index_key(adapter_id)
            if key is None:
                continue
            try:
                index.restore(key, tensors)
            except D2LMemoryError as err:
                logger.warning("cannot route to %s: %s", adapter_id, err)

    def _owner(self, namespace: Sequence[str], adapter_id: str) -> tuple[str, ...] | None:
        """The namespace holding ``adapter_id`` for a thread in ``namespace``, the thread's own
        first, then its user's shared one (for a focused id: only a Doc-to-LoRA memory with those
        chunks); None when neither does. :class:`NotFoundError` for a malformed focused id."""
        stored_id, chunks = split_focus(adapter_id)
        for ns in readable_namespaces(namespace):
            try:
                record = self.store.record(ns, stored_id)
            except NotFoundError:
                continue
            count = record.extra.get("chunks", 0)
            focusable = (
                record.kind == "memory" and record.generator == GENERATOR and all(c < count for c in chunks or ())
            )
            return ns if chunks is None or focusable else None
        return None

    def _owners(self, namespace: Sequence[str], ids: Sequence[str]) -> list[tuple[str, ...]]:
        """Each id's :meth:`_owner`; :class:`NotFoundError` naming every id the thread cannot use."""
        owners, unknown, malformed = [], [], []
        for adapter_id in ids:
            try:
                owner = self._owner(namespace, adapter_id)
            except NotFoundError as err:
                malformed.append(str(err))
                continue
            if owner is None:
                unknown.append(adapter_id)
            else:
                owners.append(owner)
        if unknown or malformed:
            found = [f"unknown adapter id(s) {unknown} in this conversation"] if unknown else []
            raise NotFoundError("; ".join(found + malformed))
        return owners

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


def _key(namespace: Sequence[str], adapter_id: str) -> str:
    """The host key of a namespace's adapter: the namespace is part of it."""
    return "/".join((*namespace, adapter_id))


def is_memory_key(name: str) -> bool:
    """Whether ``name`` has the form of an agent memory's host key (``user/thread/id``): store
    ids and namespace segments never contain ``/``, so a bare adapter id never does."""
    return "/" in name
