"""What an agent memory keeps resident on the host, for all of its threads together.

Every adapter a thread switches on adds rank to each forward pass and device memory to the host,
so a long-lived server keeps at most ``max_resident`` of them: beyond that the least recently
used leave the host (never the store). Their host keys stay valid: the host asks this residency's
loader for a key it no longer holds, and the loader loads it again, but only a key it evicted
itself. A key is first made resident after its namespace was checked against the caller's (see
:meth:`~d2l_memory.agent_memory.AgentMemory.resident_keys`), so a name built from another user's
id is never loaded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from d2l_memory.adapter import LoRAAdapter
from d2l_memory.errors import StoreError
from d2l_memory.host import AdapterHost
from d2l_memory.internalize import memory_chunks
from d2l_memory.refs import AdapterRef
from d2l_memory.store import AdapterRecord, AdapterStore


class Residency:
    """The host keys of one store's adapters that are (or were, until evicted) on the host."""

    def __init__(self, host: AdapterHost, store: AdapterStore, max_resident: int) -> None:
        self.host = host
        self.store = store
        self.max_resident = max_resident
        self._resident: OrderedDict[str, None] = OrderedDict()  # host keys added here, oldest use first
        self._evicted: set[str] = set()  # host keys evicted here: the only ones the loader loads
        self._lock = threading.Lock()
        self.host.add_loader(self._reload)

    def close(self) -> None:
        """Stop loading evicted adapters on the host's request."""
        self.host.remove_loader(self._reload)

    def keys(self, held: Sequence[tuple[AdapterRef, AdapterRecord]]) -> list[str]:
        """Host keys of adapters whose namespace was checked, each with its record, loading any not
        resident yet (only their chunks for a focused reference)."""
        keys = []
        with self._lock:
            for ref, record in held:
                if ref.key not in self.host:
                    self.host.add(ref.key, self._stored(ref, record))
                keys.append(ref.key)
                self._used(ref.key)
            self._evict(keep=keys)
        return keys

    def forget(self, whole: AdapterRef) -> None:
        """Take every key of the adapter ``whole`` names (whole and focused) off the host for good."""
        with self._lock:
            for key in [k for k in self._resident if AdapterRef.parse(k).whole == whole]:
                del self._resident[key]
                if key in self.host:
                    self.host.remove(key)
            self._evicted -= {k for k in self._evicted if AdapterRef.parse(k).whole == whole}

    def _stored(self, ref: AdapterRef, record: AdapterRecord | None) -> LoRAAdapter:
        """The stored adapter ``ref`` names in its namespace, or only some chunks of it for a focused
        reference; ``record``, when the caller has read it, spares reading it again."""
        namespace = ref.namespace or ()
        adapter = self.store.get(namespace, ref.id)
        if ref.chunks is not None:
            record = record or self.store.record(namespace, ref.id)
            adapter = memory_chunks(adapter, record.extra.get("chunks", 1), ref.chunks)
        return adapter

    def _reload(self, key: str) -> LoRAAdapter | None:
        """The host's loader: a key this residency evicted, from the store (None for any other key)."""
        with self._lock:
            if key not in self._evicted:
                return None
        try:
            adapter = self._stored(AdapterRef.parse(key), None)
        except StoreError:  # no longer in the store, or not a name it could hold
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
        """Drop the least recently used of these host keys beyond ``max_resident``. Keys stay valid: a
        request that names an evicted one has the host load it again (:meth:`_reload`), and one
        already composed holds its factors."""
        for key in [k for k in self._resident if k not in keep][: max(0, len(self._resident) - self.max_resident)]:
            del self._resident[key]
            self._evicted.add(key)
            if key in self.host:
                self.host.remove(key)
