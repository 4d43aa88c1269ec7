"""How an agent's adapters are named: ids, the namespaces they live in, and the one reference type.

One adapter is spelled three ways, and :class:`AdapterRef` is the only code that writes or reads
any of them:

* its store id, as agents see it: ``3f2a9c01b7de``;
* focused on some of its chunks (what a :class:`~d2l_memory.routing.ChunkFocus` switches on):
  ``3f2a9c01b7de@1,2``;
* as a host key, with the namespace that holds it: ``user/thread/3f2a9c01b7de@4``. Store ids and
  namespace segments never contain ``/`` or ``@`` (see ``d2l_memory.store``'s name rule), so a
  key cannot collide with an id, nor a focused id with a stored one.

Sharing: a thread's namespace is ``(user, thread)``, and it also reads ``(user, "all-threads")``,
where memories and skills kept for all of that user's threads lie (:func:`shared_namespace`).
Namespaces of other shapes, such as the ``("default",)`` that bare internalizers write to, read
only themselves.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Self

from d2l_memory.errors import NotFoundError

SHARED_THREAD = "all-threads"
"""The thread label of the namespace a user's threads share; no run may name its thread so."""

FOCUS_MARK = "@"
"""Joins a memory id and the chunks of it a query switched on: ``"3f2a9c01b7de@4"``, ``"...@1,2"``."""

NAMESPACE_MARK = "/"
"""Joins a host key's namespace segments and the adapter's name: ``"user/thread/3f2a9c01b7de"``."""

_FOCUSED = re.compile(r"([^@]+)@(\d+(?:,\d+)*)")


def new_id() -> str:
    """A fresh adapter id: 48 random bits, short because agents read and repeat ids in their prompts.

    Ids only need to be unique within a namespace, and the store refuses a duplicate rather than
    overwriting, so a collision can never clobber a memory.
    """
    return uuid.uuid4().hex[:12]


def shared_namespace(namespace: Sequence[str]) -> tuple[str, ...]:
    """Where adapters shared by all of a user's threads lie: ``(user, "all-threads")`` for
    ``(user, thread)``; any namespace of another shape shares with nothing (it is its own)."""
    own = tuple(namespace)
    return (own[0], SHARED_THREAD) if len(own) == 2 else own


def readable_namespaces(namespace: Sequence[str]) -> list[tuple[str, ...]]:
    """The namespaces a thread's ids are looked up in, in order: its own, then its user's shared one."""
    own, shared = tuple(namespace), shared_namespace(namespace)
    return [own] if own == shared else [own, shared]


@dataclass(frozen=True)
class AdapterRef:
    """One adapter, whole or focused on some of its chunks, optionally in the namespace that holds it.

    ``chunks`` are kept ascending and without repeats, so one set of chunks is one spelling and
    one resident adapter.
    """

    id: str
    chunks: tuple[int, ...] | None = None
    namespace: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.chunks is not None:
            object.__setattr__(self, "chunks", tuple(sorted(set(self.chunks))))
        if self.namespace is not None:
            object.__setattr__(self, "namespace", tuple(self.namespace))

    @classmethod
    def parse(cls, text: str) -> Self:
        """A reference from one of the spellings :attr:`name` and :attr:`key` write, and only those.

        :class:`NotFoundError` for a focused id in any other spelling (descending, repeated,
        leading zeros, empty), since no adapter is named so.
        """
        *namespace, name = text.split(NAMESPACE_MARK)
        if FOCUS_MARK not in name:
            return cls(name, None, tuple(namespace) or None)
        match = _FOCUSED.fullmatch(name)
        chunks = tuple(int(c) for c in match.group(2).split(",")) if match else ()
        if not match or cls(match.group(1), chunks).name != name:
            raise NotFoundError(
                f"unknown adapter id {name!r}: a focused id is a memory id, {FOCUS_MARK!r}, then ascending"
                " chunk numbers, e.g. 3f2a9c01b7de@4 or 3f2a9c01b7de@1,2"
            )
        return cls(match.group(1), chunks, tuple(namespace) or None)

    @property
    def name(self) -> str:
        """What agents see and name: the id, or the id and its chunks (``"3f2a9c01b7de@1,2"``)."""
        if self.chunks is None:
            return self.id
        return f"{self.id}{FOCUS_MARK}{','.join(map(str, self.chunks))}"

    @property
    def key(self) -> str:
        """The host key: the namespace is part of it, so two namespaces never share a resident adapter."""
        if self.namespace is None:
            raise NotFoundError(f"adapter {self.name!r} has no namespace, so it has no host key")
        return NAMESPACE_MARK.join((*self.namespace, self.name))

    @property
    def whole(self) -> Self:
        """The whole adapter this one is (a part of)."""
        return replace(self, chunks=None)

    def in_namespace(self, namespace: Iterable[str]) -> Self:
        """This adapter as held by ``namespace``."""
        return replace(self, namespace=tuple(namespace))
