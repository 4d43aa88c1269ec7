"""One exception family for the whole library.

Callers (and agent tool wrappers) catch :class:`D2LMemoryError` to turn any failure of ours into
a clear message; the subclasses say which part of the system refused and why.
"""

from __future__ import annotations


class D2LMemoryError(Exception):
    """Base class of every error this library raises on purpose."""


class AdapterError(D2LMemoryError):
    """An adapter is malformed or does not fit the model it is applied to."""


class ModelError(D2LMemoryError):
    """A base model could not be loaded or its layers could not be found."""


class StoreError(D2LMemoryError):
    """The adapter store refused an operation (unknown id, bad name, corrupt file)."""


class UnsafePathError(StoreError):
    """An id or namespace would escape the store's folder or is not a plain name."""


class NotFoundError(StoreError):
    """No adapter with that id exists in the namespace asked for."""


class CheckpointError(ModelError):
    """A checkpoint file was refused: not what it claims to be, or it names code to run."""


class ConfigError(D2LMemoryError, ValueError, TypeError):
    """A setting or an argument that cannot work: out of range, inconsistent with another, or not
    one the call takes. Also a ``ValueError`` and a ``TypeError``, what Python code expects of a bad
    value or a bad keyword, so callers catching those keep working."""


class ServerError(D2LMemoryError):
    """A serving engine refused a request or could not be reached (``status`` None: no answer)."""

    def __init__(self, status: int | None, message: str, url: str) -> None:
        self.status, self.message, self.url = status, message, url
        super().__init__(message if status is None else f"{url} answered {status}: {message}")
