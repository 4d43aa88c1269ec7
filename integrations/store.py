"""Adapter metadata in a LangGraph ``BaseStore``, so graph code and LangGraph tooling can read it.

The :class:`~d2l_memory.store.AdapterStore` stays the single source of truth (it holds the
tensors and commits atomically); the BaseStore gets a JSON copy of each record under
``(user, thread, "adapters")``, keyed by adapter id. A copy that lags is harmless: it is
refreshed whenever an adapter is created through this package, and :func:`mirror_namespace`
rebuilds it whole.
"""

from __future__ import annotations

from collections.abc import Sequence

from langgraph.store.base import BaseStore

from d2l_memory.store import AdapterRecord, AdapterStore

ADAPTERS_LABEL = "adapters"
_PAGE = 100


def adapters_namespace(namespace: Sequence[str]) -> tuple[str, ...]:
    """Where a namespace's records live in the BaseStore: ``(*namespace, "adapters")``."""
    return (*namespace, ADAPTERS_LABEL)


def mirror_record(store: BaseStore, record: AdapterRecord) -> None:
    """Copy one record (not embedded for search: its fields are ids, counts and hashes)."""
    store.put(
        adapters_namespace(record.namespace),
        record.id,
        record.model_dump(mode="json"),
        index=False,
    )


def forget_record(store: BaseStore, record: AdapterRecord) -> None:
    """Remove the copy of a record whose adapter was forgotten."""
    store.delete(adapters_namespace(record.namespace), record.id)


def mirror_namespace(store: BaseStore, adapters: AdapterStore, namespace: Sequence[str]) -> int:
    """Make the BaseStore's copy of ``namespace`` equal the AdapterStore's records; returns their count."""
    records = adapters.list(namespace)
    for record in records:
        mirror_record(store, record)
    target = adapters_namespace(namespace)
    live = {record.id for record in records}
    for key in _keys(store, target) - live:
        store.delete(target, key)
    return len(records)


def _keys(store: BaseStore, namespace: tuple[str, ...]) -> set[str]:
    keys: set[str] = set()
    offset = 0
    while True:
        page = store.search(namespace, limit=_PAGE, offset=offset)
        keys.update(item.key for item in page if item.namespace == namespace)
        if len(page) < _PAGE:
            return keys
        offset += _PAGE
