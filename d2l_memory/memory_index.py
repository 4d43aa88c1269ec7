"""What an agent memory's adapters are found by: one router per namespace and one chunk-focus index.

The store is the single source of truth. Routing and focus keys are attached to each adapter in
the store when it is made, and a namespace's router is brought in line with the store before
every query, so memories made before a restart, or by another process on the same store, are
routed like this process's own, and forgotten ones never come back. The routers of the least
recently queried namespaces beyond ``max_indexed_namespaces`` leave the process (with their focus
keys) and are read back from the store when next needed.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from d2l_memory.errors import D2LMemoryError
from d2l_memory.internalize import Attachments
from d2l_memory.refs import AdapterRef, readable_namespaces
from d2l_memory.routing import ChunkFocus, KeyIndex, MemoryRouter, TextEncoder
from d2l_memory.store import AdapterStore

logger = logging.getLogger(__name__)


class MemoryIndex:
    """Per-namespace routers synced with the store, and the focus keys of long memories."""

    def __init__(
        self, store: AdapterStore, encoder: TextEncoder, focus: ChunkFocus | None, max_indexed_namespaces: int
    ) -> None:
        self.store = store
        self.focus = focus
        self.max_indexed_namespaces = max_indexed_namespaces
        self._encoder = encoder
        self._keys = MemoryRouter(encoder)  # encodes a document's router keys, indexes nothing
        # Least recently used first, at most max_indexed_namespaces of them.
        self._routers: OrderedDict[tuple[str, ...], MemoryRouter] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def router_key_name(self) -> str:
        """The name under which the store holds each adapter's routing keys."""
        return self._keys.key_name

    def keys_of(self, text: str, chunk_texts: Callable[[], list[str]], chunk_count: int) -> Attachments:
        """What a memory of ``text`` is found by: router keys, and focus keys when it has more than
        ``focus.chunks`` chunks (``chunk_texts`` gives their texts, read only then)."""
        keys = {self._keys.key_name: self._keys.encode(text)}
        if self.focus is not None and chunk_count > self.focus.chunks:
            keys[self.focus.key_name] = self.focus.encode(chunk_texts())
        return keys

    def restore_memory(self, namespace: Sequence[str], memory_id: str, keys: Attachments) -> None:
        """Route to a memory just stored with ``keys`` (from :meth:`keys_of`) attached."""
        with self._lock:
            router = self._router(namespace)
            router.restore(memory_id, keys[router.key_name])
            if self.focus is not None and self.focus.key_name in keys:
                self.focus.restore(AdapterRef(memory_id, namespace=tuple(namespace)).key, keys[self.focus.key_name])

    def add(self, namespace: Sequence[str], adapter_id: str, text: str) -> None:
        """Route to a new adapter from now on, in this process and (its keys attached) in any."""
        with self._lock:
            router = self._router(namespace)
            router.add(adapter_id, text)
            keys = router.export(adapter_id)
        self.store.attach(namespace, adapter_id, router.key_name, keys)

    def route(self, namespace: Sequence[str], query: str, *, top_k: int) -> list[AdapterRef]:
        """The thread's adapters (its own and its user's shared ones) most relevant to ``query``, best
        first, each in the namespace holding it, focused on the query's chunks where there is a focus."""
        scored: list[tuple[float, tuple[str, ...], str]] = []
        with self._lock:
            for ns in readable_namespaces(namespace):
                scored += [(score, ns, i) for i, score in self._synced_router(ns).route(query, top_k=top_k)]
        best: dict[str, float] = {}
        homes: dict[str, tuple[str, ...]] = {}  # an id in both namespaces is read from the thread's, as lookups are
        for score, ns, i in scored:  # the thread's namespace first
            homes.setdefault(i, ns)
            best[i] = max(best.get(i, score), score)
        picked = [AdapterRef(i, namespace=homes[i]) for i in sorted(best, key=lambda i: -best[i])[:top_k]]  # stable
        focus = self.focus
        if focus is None:
            return picked
        with self._lock:
            for ns in readable_namespaces(namespace):
                missing = {ref.id: ref.key for ref in picked if ref.namespace == ns and ref.key not in focus}
                self._restore(ns, list(missing), focus, missing.get)
        indexed = [ref.key for ref in picked if ref.key in focus]
        chunks = focus.best(indexed, query)
        return [
            AdapterRef(ref.id, tuple(chunks[ref.key]), ref.namespace) if ref.key in chunks else ref for ref in picked
        ]

    def forget(self, whole: AdapterRef) -> None:
        """Stop routing to the adapter ``whole`` names (in its namespace), and drop its focus keys."""
        namespace = whole.namespace or ()
        with self._lock:
            router = self._routers.get(namespace)
            if router is not None and whole.id in router:
                router.remove(whole.id)
            if self.focus is not None and whole.key in self.focus:
                self.focus.remove(whole.key)

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
                key = AdapterRef(adapter_id, namespace=old_ns).key
                if self.focus is not None and key in self.focus:
                    self.focus.remove(key)
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
