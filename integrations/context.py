"""Which namespace a run works in: (user, thread), read from the run's context or config, never from the model.

Memories are private to a user: to one thread of theirs, or shared by all of them under
``(user, SHARED_THREAD)``. The namespace therefore comes from what the application passes when
it starts a run (LangGraph's ``context`` or ``config["configurable"]``), never from tool
arguments a model could fill in with someone else's id.

LangGraph keys a thread's checkpoints by ``thread_id`` alone, so thread ids must be unique
across users (a uuid per conversation): a run that reuses another user's thread id would load
that user's messages. The first run whose nodes or tools use memory records its namespace in
the thread's state (``memory_owner``), and :func:`thread_namespace` refuses every later run of
that thread from another namespace, so such a run can neither read the thread's memories nor
fold its tool outputs into its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from d2l_memory.errors import D2LMemoryError
from d2l_memory.refs import SHARED_THREAD

OWNER_KEY = "memory_owner"
"""Graph-state key: the namespace (``user/thread``) the thread's checkpoints belong to."""

USER_KEY = "user_id"
THREAD_KEY = "thread_id"

Namespace = tuple[str, str]

# A segment must name a folder in the AdapterStore and a label in a LangGraph BaseStore; the
# latter forbids '.', the former '/', '@' and leading punctuation. This is both rules at once,
# checked up front so a bad id fails clearly before anything is written.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class ScopeError(D2LMemoryError):
    """The run names no user or thread, or names them in a form that cannot be a namespace."""


def namespace_from(config: RunnableConfig | None, context: Any = None) -> Namespace:
    """The run's ``(user_id, thread_id)``.

    Each key is looked up in ``context`` (a LangGraph run context: a mapping or an object with
    attributes) and in ``config["configurable"]``; when both give one they must agree, so a
    misconfigured caller cannot silently read another user's memories.
    """
    configurable = (config or {}).get("configurable") or {}
    user, thread = (_lookup(key, context, configurable) for key in (USER_KEY, THREAD_KEY))
    if thread == SHARED_THREAD:
        raise ScopeError(f"thread_id {SHARED_THREAD!r} is reserved for the memories shared by all of a user's threads")
    return user, thread


def thread_namespace(state: Mapping[str, Any], config: RunnableConfig | None, context: Any = None) -> Namespace:
    """The run's namespace, checked against the one the thread's state was recorded under.

    :class:`ScopeError` when the thread belongs to another namespace: its thread id was reused
    by another user (or for another user's run). Return updates with :func:`owner_update`.
    """
    namespace = namespace_from(config, context)
    owner = state.get(OWNER_KEY)
    if owner and owner != "/".join(namespace):
        raise ScopeError(
            f"thread {namespace[1]!r} holds another user's conversation: LangGraph keys checkpoints by"
            " thread_id alone, so thread ids must be unique across users (use a uuid per conversation)"
        )
    return namespace


def owner_update(namespace: Namespace) -> dict[str, str]:
    """The state update that records whose thread this is (kept once set: see :func:`keep_owner`)."""
    return {OWNER_KEY: "/".join(namespace)}


def keep_owner(current: str | None, update: str | None) -> str | None:
    """Reducer for ``memory_owner``: the namespace recorded first stays (LangGraph starts the
    channel at ``""``, its type's default)."""
    return current or update


def _lookup(key: str, context: Any, configurable: Mapping[str, Any]) -> str:
    from_context = context.get(key) if isinstance(context, Mapping) else getattr(context, key, None)
    from_config = configurable.get(key)
    if from_context is not None and from_config is not None and str(from_context) != str(from_config):
        raise ScopeError(f"{key} is {from_context!r} in the run context but {from_config!r} in the config")
    value = from_context if from_context is not None else from_config
    if value is None:
        raise ScopeError(
            f"the run has no {key}: pass it in config={{'configurable': {{'{key}': ...}}}} or in the run context"
        )
    value = str(value)
    if not _SEGMENT.fullmatch(value):
        raise ScopeError(
            f"{key} {value!r} cannot name a namespace: use 1-128 letters, digits, '_' or '-',"
            " starting with a letter or digit (e.g. a uuid, or a hash of an email address)"
        )
    return value
