"""Persistent adapter store: safetensors files indexed by SQLite.

Layout under ``root``::

    index.sqlite                                   one row per adapter (WAL mode), and its attachments
    adapters/<segment>/<segment>/<id>@<token>.safetensors

Why this layout:

* Folders mirror namespaces, so one user's adapters lie physically under that user's folder: it can
  be inspected, backed up or wiped with ordinary tools, and every path the store touches is
  resolved and checked to be exactly the namespace's folder (defense in depth behind the strict
  name check, e.g. against a symlink planted in the store).
* Every write goes to a fresh file name (``<token>`` is a random uuid) and the SQLite row names its
  file, so the row is the single commit point. Writing ``<id>.safetensors`` in place could not be
  atomic: the file would change before the row's hash did.
* ``@`` and a leading ``.`` are not allowed in names, so a data file (``x@…``) or a temp file
  (``.tmp-…``) can never collide with a namespace folder.

Crash safety, without ever deleting a file the store did not write: ``put`` takes SQLite's write
lock (``BEGIN IMMEDIATE``), writes ``.tmp-<token>`` and fsyncs it, inserts the row (naming
``<id>@<token>.safetensors``) with its attachments and commits, then renames the temp file into
place. A file an overwrite or ``delete`` replaces is named in a ``trash`` table in the same
transaction and unlinked after the commit. A writer killed at any point therefore leaves at worst
an uncommitted temp file, a committed row whose temp file is not renamed yet, or trash not yet
emptied; opening the store sweeps the first, rolls the second forward and empties the third,
under the same write lock, so it cannot mistake another process's write in progress for garbage.
Nothing else is ever deleted: a data file no row names (an index restored from an older backup)
is left in place with a warning, and an index that is missing or empty while data files lie in
the folder is an error, not an empty store (:meth:`AdapterStore.rebuild_index` makes a new index
from the files' own metadata).

Attachments are small tensors that describe an adapter without being part of it (the keys a
router matches queries against, say). They live in the index itself, one row per adapter and
name, so they commit, and go, in the same transaction as the adapter's row: forgetting an
adapter forgets what was attached to it, and overwriting it with other content drops them.

Loading parses safetensors only (never pickle, never ``torch.load``) and checks the file's sha256
against the one recorded when it was written.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal, Self, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from d2l_memory.adapter import LoRAAdapter
from d2l_memory.errors import AdapterError, NotFoundError, StoreError, UnsafePathError

logger = logging.getLogger(__name__)

Kind = Literal["memory", "skill"]
Namespace = tuple[str, ...]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIX = ".safetensors"
_TEMP_PREFIX = ".tmp-"
_DATA_FILE = re.compile(r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})@(?P<token>[0-9a-f]{32})\.safetensors")
_TEMP_FILE = re.compile(r"\.tmp-(?P<token>[0-9a-f]{32})")
_RECORD_METADATA = "d2l_memory.record"  # the record (less the file's own hash) inside each data file


class AdapterRecord(BaseModel):
    """What the index knows about one stored adapter (everything but its tensors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    namespace: Namespace
    kind: Kind
    source: str = ""
    token_count: int = Field(default=0, ge=0)
    created_at: float  # seconds since the epoch
    content_hash: str  # the caller's, or by default content_sha256 of the tensors
    generator: str = ""
    generator_version: str = ""
    base_model: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)
    nbytes: int  # tensor bytes, as LoRAAdapter.nbytes
    rank: int  # the largest rank of any module
    file_sha256: str  # of the stored file; checked on every load


_FIELDS = tuple(AdapterRecord.model_fields)
# Fields `list(where=...)` compares in SQL; any other key is looked up in `extra`.
_FILTERABLE = frozenset(_FIELDS) - {"namespace", "extra"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapters (
    namespace TEXT NOT NULL,  -- segments joined by '/', which names cannot contain
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    content_hash TEXT NOT NULL,
    generator TEXT NOT NULL,
    generator_version TEXT NOT NULL,
    base_model TEXT NOT NULL,
    extra TEXT NOT NULL,  -- a JSON object
    nbytes INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    file_sha256 TEXT NOT NULL,
    file TEXT NOT NULL,  -- the file's name inside the namespace's folder
    PRIMARY KEY (namespace, id)
);
CREATE TABLE IF NOT EXISTS attachments (
    namespace TEXT NOT NULL,
    id TEXT NOT NULL,  -- the adapter's, in `adapters`
    name TEXT NOT NULL,  -- what the tensors are, e.g. 'router/all-MiniLM-L6-v2/64/16'
    data BLOB NOT NULL,  -- a safetensors file
    PRIMARY KEY (namespace, id, name)
);
CREATE TABLE IF NOT EXISTS trash (  -- files a committed overwrite or delete left behind, to unlink
    namespace TEXT NOT NULL,
    file TEXT NOT NULL,
    PRIMARY KEY (namespace, file)
)
"""
_ID_BATCH = 500  # ids per `IN (...)` query, well under SQLite's limit on parameters


def content_sha256(adapter: LoRAAdapter) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes: equal for equal factors, whatever the
    part names, so callers can ask the store whether it already holds an adapter."""
    return _tensor_sha256(adapter.state_dict()[0])


def _tensor_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class AdapterStore:
    """Adapters in namespaces (tuples of names, as in LangGraph), persisted under ``root``.

    Safe to share between threads (one connection behind a lock) and to open from several
    processes at once (WAL mode, busy timeout, and writes serialised by SQLite's write lock);
    WAL needs the folder on a local file system, not a network share.
    """

    def __init__(self, root: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.root = Path(root)
        self._adapters = self.root / "adapters"
        self._adapters.mkdir(parents=True, exist_ok=True)
        self._adapters_resolved = self._adapters.resolve()
        self._lock = threading.RLock()
        try:
            # Autocommit mode: transactions are begun explicitly, so writes can take the lock early.
            self._conn = sqlite3.connect(
                self.root / "index.sqlite", timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is durable before `put` deletes the file an overwrite replaced.
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction() as conn:
                for statement in _SCHEMA.split(";"):
                    conn.execute(statement)
                self._reconcile(conn)
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(
                f"the index {self.root / 'index.sqlite'} is not a readable SQLite database ({err}): restore it"
                f" from a backup, or move it aside and rebuild it with AdapterStore.rebuild_index({str(self.root)!r})"
            ) from err
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"AdapterStore({str(self.root)!r})"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def rebuild_index(cls, root: str | Path) -> builtins.list[AdapterRecord]:
        """Make a new index for the adapter files under ``root`` (after ``index.sqlite`` was lost)
        from the record each file carries, and return the records; the store can then be opened.

        Refused while an index with adapters exists. Attachments (routing keys) live only in the
        index, so rebuilt memories are switched on by id until they are internalized again.
        Files that do not parse, or whose record does not match their place, are skipped with a
        warning and left where they are.
        """
        root = Path(root)
        index = root / "index.sqlite"
        if index.exists() and index.stat().st_size > 0:
            try:
                with closing(sqlite3.connect(index)) as conn:
                    has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'adapters'").fetchone()
                    count = conn.execute("SELECT count(*) FROM adapters").fetchone()[0] if has_table else 0
            except sqlite3.DatabaseError:
                count = None  # unreadable: it may hold what a backup lacks, so it is not ours to replace
            if count != 0:
                raise StoreError(f"{index} exists and is not empty: move it aside before rebuilding the index")
            index.unlink()
        for wal in (root / "index.sqlite-wal", root / "index.sqlite-shm"):
            wal.unlink(missing_ok=True)
        adapters, rows = root / "adapters", []
        if not adapters.is_dir():
            raise StoreError(f"{root} holds no adapter folder ({adapters}) to rebuild an index from")
        for path in sorted(adapters.rglob("*.safetensors")):
            match = _DATA_FILE.fullmatch(path.name)
            if match is None or path.is_symlink():
                continue
            try:
                ns = _check_namespace(path.parent.relative_to(adapters).parts)
                rows.append(_row_from_file(path, ns, match["id"]))
            except StoreError as err:
                logger.warning("not indexed: %s", err)
        with closing(sqlite3.connect(index, isolation_level=None)) as conn:
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            conn.execute("BEGIN IMMEDIATE")
            for row in rows:
                columns, marks = ", ".join(row), ", ".join("?" * len(row))
                conn.execute(f"INSERT INTO adapters ({columns}) VALUES ({marks})", [*row.values()])
            conn.execute("COMMIT")
        return [_to_record(row) for row in rows]

    # --- writing ----------------------------------------------------------------------------
    def put(
        self,
        adapter: LoRAAdapter,
        *,
        namespace: Sequence[str],
        kind: Kind,
        id: str | None = None,
        source: str = "",
        token_count: int = 0,
        content_hash: str | None = None,
        generator: str = "",
        generator_version: str = "",
        base_model: str = "",
        extra: Mapping[str, Any] | None = None,
        attachments: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        overwrite: bool = False,
    ) -> AdapterRecord:
        """Store ``adapter`` and return its record; ``id`` defaults to a fresh uuid4 hex.

        ``attachments`` (name -> tensors, as :meth:`attach` takes) commit with the adapter in one
        transaction, so an adapter is never stored without, say, the keys a router finds it by.
        An id already in the namespace raises :class:`StoreError` unless ``overwrite`` is true, in
        which case the new adapter replaces the old atomically: readers see one or the other.
        Refusing by default protects a memory from being clobbered by an id collision.
        """
        ns = _check_namespace(namespace)
        id = uuid.uuid4().hex if id is None else _check_name(id, "id")
        extra = dict(extra or {})
        clashing = sorted(set(extra) & set(_FIELDS))
        if clashing:
            raise StoreError(f"extra keys {clashing} clash with record fields; rename them")
        try:
            extra_json = json.dumps(extra, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise StoreError(f"extra must be JSON-serialisable: {err}") from err
        attached = {name: _attachment_bytes(name, tensors) for name, tensors in (attachments or {}).items()}

        tensors, metadata = adapter.state_dict()
        try:
            described = AdapterRecord(
                id=id,
                namespace=ns,
                kind=kind,
                source=source,
                token_count=token_count,
                created_at=time.time(),
                content_hash=_tensor_sha256(tensors) if content_hash is None else content_hash,
                generator=generator,
                generator_version=generator_version,
                base_model=base_model,
                extra=json.loads(extra_json),  # what `list` will return, e.g. tuples become lists
                nbytes=adapter.nbytes,
                rank=adapter.max_rank,
                file_sha256="",  # the file's hash, known once the file (which holds this record) is made
            )
        except ValidationError as err:
            raise StoreError(f"invalid metadata for {_label(ns, id)}: {err}") from err
        metadata = {**metadata, _RECORD_METADATA: described.model_dump_json(exclude={"file_sha256"})}
        # Fresh CPU copies: safetensors refuses tensors that share storage (views of one buffer).
        data = save_safetensors({k: t.detach().to("cpu", copy=True) for k, t in tensors.items()}, metadata)
        record = described.model_copy(update={"file_sha256": hashlib.sha256(data).hexdigest()})
        token = uuid.uuid4().hex
        file = f"{id}@{token}{_SUFFIX}"

        with self._transaction() as conn:
            old = conn.execute(
                "SELECT file, content_hash FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id)
            ).fetchone()
            if old is not None and not overwrite:
                raise StoreError(f"{_label(ns, id)} already exists; pass overwrite=True to replace it")
            if old is not None and old["content_hash"] != record.content_hash:  # they described the old content
                conn.execute("DELETE FROM attachments WHERE namespace = ? AND id = ?", (_ns_key(ns), id))
            if old is not None:
                conn.execute("INSERT OR IGNORE INTO trash (namespace, file) VALUES (?, ?)", (_ns_key(ns), old["file"]))
            directory = self._namespace_dir(ns)
            self._make_dirs(directory)
            temp = directory / f"{_TEMP_PREFIX}{token}"
            _write_durably(temp, data)
            row = record.model_dump()
            row.update(namespace=_ns_key(ns), extra=extra_json, file=file)
            try:
                columns, marks = ", ".join(row), ", ".join("?" * len(row))
                conn.execute(f"INSERT OR REPLACE INTO adapters ({columns}) VALUES ({marks})", [*row.values()])
                conn.executemany(
                    "INSERT OR REPLACE INTO attachments (namespace, id, name, data) VALUES (?, ?, ?, ?)",
                    [(_ns_key(ns), id, name, blob) for name, blob in attached.items()],
                )
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        _move_into_place(temp, directory / file)
        if old is not None:
            self._file_path(ns, old["file"]).unlink(missing_ok=True)
        return record

    def delete(self, namespace: Sequence[str], id: str) -> None:
        """Remove an adapter and its attachments; :class:`NotFoundError` if the namespace has no such id."""
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        with self._transaction() as conn:
            row = conn.execute("SELECT file FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id)).fetchone()
            if row is None:
                raise NotFoundError(f"no adapter {_label(ns, id)}")
            conn.execute("DELETE FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id))
            conn.execute("DELETE FROM attachments WHERE namespace = ? AND id = ?", (_ns_key(ns), id))
            conn.execute("INSERT OR IGNORE INTO trash (namespace, file) VALUES (?, ?)", (_ns_key(ns), row["file"]))
        self._file_path(ns, row["file"]).unlink(missing_ok=True)

    def attach(self, namespace: Sequence[str], id: str, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keep ``tensors`` beside an adapter under ``name``, replacing what was attached under it.

        For small tensors that describe the adapter (routing keys): they are read back with
        :meth:`attachments` and deleted with the adapter. :class:`NotFoundError` if the namespace
        has no such adapter. To store an adapter with its attachments, pass them to :meth:`put`.
        """
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        data = _attachment_bytes(name, tensors)
        with self._transaction() as conn:
            if (
                conn.execute("SELECT 1 FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id)).fetchone()
                is None
            ):
                raise NotFoundError(f"no adapter {_label(ns, id)} to attach {name!r} to")
            conn.execute(
                "INSERT OR REPLACE INTO attachments (namespace, id, name, data) VALUES (?, ?, ?, ?)",
                (_ns_key(ns), id, name, data),
            )

    def attachments(
        self, namespace: Sequence[str], name: str, ids: Sequence[str] | None = None
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Adapter id -> the tensors attached to it under ``name``, for the namespace's adapters
        (only ``ids``, when given) that have them. A damaged attachment is skipped with a warning
        naming it: one bad row must not hide the others."""
        ns = _check_namespace(namespace)
        sql = "SELECT id, data FROM attachments WHERE namespace = ? AND name = ?"
        queries: list[tuple[str, list[Any]]] = [(sql, [_ns_key(ns), name])]
        if ids is not None:
            wanted = [_check_name(i, "id") for i in dict.fromkeys(ids)]
            batches = [wanted[start : start + _ID_BATCH] for start in range(0, len(wanted), _ID_BATCH)]
            queries = [(f"{sql} AND id IN ({', '.join('?' * len(b))})", [_ns_key(ns), name, *b]) for b in batches]
        found: dict[str, dict[str, torch.Tensor]] = {}
        for query, params in queries:
            for row in self._read(query, params):
                try:
                    tensors = load_safetensors(row["data"])
                    _check_tensors(tensors)
                except Exception as err:  # noqa: BLE001 - whatever fails to parse in stored bytes means the same thing
                    logger.warning("skipped attachment %r of %s: it is damaged (%s)", name, _label(ns, row["id"]), err)
                    continue
                found[row["id"]] = tensors
        return found

    # --- reading ----------------------------------------------------------------------------
    def get(self, namespace: Sequence[str], id: str) -> LoRAAdapter:
        """Load an adapter, as a single part named ``id`` so a composed set is addressable by id.

        Raises :class:`NotFoundError` for an unknown id and :class:`StoreError` for a file that is
        not safetensors (a pickle, say), whose bytes differ from what was written, or whose
        tensors are not finite floating-point factors.
        """
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        for _ in range(3):
            row = self._row(ns, id)
            path = self._file_path(ns, row["file"])
            data = _read_committed(path)  # one read: the bytes parsed are the bytes hashed
            if data is not None:
                break
            # another process replaced or deleted it after our query: look again
        else:
            raise StoreError(f"the file of {_label(ns, id)} is missing ({path}); restore it from a backup")

        try:
            tensors = load_safetensors(data)  # parses safetensors only; nothing is unpickled
        except Exception as err:  # whatever fails to parse in untrusted bytes means the same thing
            raise StoreError(f"{path} is not a valid safetensors file ({err}); the store loads nothing else") from err
        if hashlib.sha256(data).hexdigest() != row["file_sha256"]:
            raise StoreError(f"{path} was modified or corrupted: its sha256 differs from the one recorded")
        try:
            _check_tensors(tensors)
            # The file's part layout is not needed: the adapter comes back as one part, its id.
            return LoRAAdapter.from_state_dict(tensors, {}).renamed(id)
        except (AdapterError, StoreError) as err:
            raise StoreError(f"{path} does not hold a LoRA adapter: {err}") from err

    def record(self, namespace: Sequence[str], id: str) -> AdapterRecord:
        """The metadata of one adapter, without loading its tensors."""
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        return _to_record(self._row(ns, id))

    def exists(self, namespace: Sequence[str], id: str) -> bool:
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        return bool(self._read("SELECT 1 FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id)))

    def ids(self, namespace: Sequence[str]) -> builtins.list[str]:
        """The ids of the namespace's adapters, oldest first: :meth:`list` without building records."""
        ns = _check_namespace(namespace)
        rows = self._read("SELECT id FROM adapters WHERE namespace = ? ORDER BY created_at, id", (_ns_key(ns),))
        return [row["id"] for row in rows]

    def __contains__(self, key: tuple[Sequence[str], str]) -> bool:
        """``(namespace, id) in store``."""
        namespace, id = key
        return self.exists(namespace, id)

    def list(
        self,
        namespace: Sequence[str],
        *,
        kind: Kind | None = None,
        where: Mapping[str, Any] | None = None,
        prefix: bool = False,
    ) -> builtins.list[AdapterRecord]:
        """Records in ``namespace`` (and, with ``prefix``, in namespaces below it), oldest first.

        ``where`` keeps records whose fields equal the given values; a key that is not a record
        field is looked up in ``extra`` (``put`` forbids extra keys named like fields, so a key
        always means one thing). Nothing outside ``namespace`` is ever returned: ``("user-1",)``
        with ``prefix`` matches ``("user-1", "t9")`` but not ``("user-10",)``. A damaged row
        (say, ``extra`` that is not JSON) is skipped with a warning naming it.
        """
        ns = _check_namespace(namespace)
        where = dict(where or {})
        if kind is not None:
            if kind not in get_args(Kind):
                raise StoreError(f"kind must be one of {get_args(Kind)}; got {kind!r}")
            where["kind"] = kind
        misplaced = sorted({"namespace", "extra"} & set(where))
        if misplaced:
            raise StoreError(f"cannot filter on {misplaced}: use the namespace argument or bare extra keys")
        fields = {k: v for k, v in where.items() if k in _FILTERABLE}
        extras = {k: v for k, v in where.items() if k not in _FILTERABLE}

        key = _ns_key(ns)
        sql = "SELECT * FROM adapters WHERE (namespace = ?"
        params: list[Any] = [key]
        if prefix:  # exact string prefix "a/b/": no LIKE, whose '_' wildcard names may contain
            sql += " OR substr(namespace, 1, ?) = ?"
            params += [len(key) + 1, key + "/"]
        sql += ")"
        for name, value in fields.items():  # names come from _FILTERABLE, never from the caller
            sql += f" AND {name} = ?"
            params.append(value)
        sql += " ORDER BY created_at, namespace, id"
        records = []
        for row in self._read(sql, params):
            try:
                records.append(_to_record(row))
            except StoreError as err:
                logger.warning("skipped %s", err)
        return [r for r in records if all(k in r.extra and r.extra[k] == v for k, v in extras.items())]

    def path(self, namespace: Sequence[str], id: str) -> Path:
        """Where an adapter's file lies (for inspection and backups; read it with ``get``)."""
        ns, id = _check_namespace(namespace), _check_name(id, "id")
        return self._file_path(ns, self._row(ns, id)["file"])

    # --- internals --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (other writers wait)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as err:  # "database is locked" after the busy timeout
                raise StoreError(f"the store {self.root} is busy or unwritable: {err}") from err
            try:
                yield self._conn
            except sqlite3.DatabaseError as err:
                self._rollback()
                raise StoreError(f"the index of {self.root} refused a write: {err}") from err
            except BaseException:
                self._rollback()
                raise
            self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _read(self, sql: str, params: Sequence[Any]) -> builtins.list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as err:
                raise StoreError(f"cannot read the index of {self.root}: {err}") from err

    def _row(self, ns: Namespace, id: str) -> sqlite3.Row:
        rows = self._read("SELECT * FROM adapters WHERE namespace = ? AND id = ?", (_ns_key(ns), id))
        if not rows:
            raise NotFoundError(f"no adapter {_label(ns, id)}")
        return rows[0]

    def _namespace_dir(self, ns: Namespace) -> Path:
        """The namespace's folder, refused if resolving it (through symlinks) lands elsewhere."""
        directory = self._adapters.joinpath(*ns)
        if directory.resolve() != self._adapters_resolved.joinpath(*ns):
            raise UnsafePathError(f"namespace {ns!r} resolves outside its folder {directory}")
        return directory

    def _file_path(self, ns: Namespace, file: str) -> Path:
        path = self._namespace_dir(ns) / file
        if path.resolve().parent != self._adapters_resolved.joinpath(*ns):
            raise UnsafePathError(f"file {file!r} of namespace {ns!r} resolves outside its folder")
        return path

    def _make_dirs(self, directory: Path) -> None:
        """``mkdir -p`` that fsyncs each changed parent, so a new namespace survives power loss."""
        if directory.is_dir():
            return
        self._make_dirs(directory.parent)
        try:
            directory.mkdir()
            _fsync_dir(directory.parent)
        except OSError as err:  # e.g. a path too long for the file system
            raise StoreError(f"cannot create the namespace folder {directory}: {err}") from err

    def _reconcile(self, conn: sqlite3.Connection) -> None:
        """Finish what writers killed mid-way left (see the module docstring): unlink the trash,
        rename committed temp files into place, and sweep uncommitted temp files. Nothing else
        is deleted; an empty index beside data files is refused."""
        for key, file in conn.execute("SELECT namespace, file FROM trash").fetchall():
            try:
                self._file_path(tuple(key.split("/")), file).unlink(missing_ok=True)
            except UnsafePathError as err:
                logger.warning("left a replaced file in place: %s", err)
        conn.execute("DELETE FROM trash")

        named: dict[str, str] = {}  # token of every file a row names -> the row's label
        for key, id, file in conn.execute("SELECT namespace, id, file FROM adapters").fetchall():
            ns = tuple(key.split("/"))
            match = _DATA_FILE.fullmatch(file)
            if match is not None:
                named[match["token"]] = file
            try:
                path = self._file_path(ns, file)
            except UnsafePathError as err:
                logger.warning("adapter %s: %s", _label(ns, id), err)
                continue
            temp = path.with_name(f"{_TEMP_PREFIX}{match['token']}") if match else None
            if not path.is_file() and temp is not None and temp.is_file():
                _move_into_place(temp, path)  # committed, then killed before the rename
            elif not path.is_file():
                logger.warning(
                    "adapter %s has no file (%s): restore it from a backup or delete it", _label(ns, id), path
                )

        unnamed = []
        for dirpath, _, filenames in os.walk(self._adapters):
            for name in filenames:
                temp, data = _TEMP_FILE.fullmatch(name), _DATA_FILE.fullmatch(name)
                if temp is not None and temp["token"] not in named:  # a write that never committed
                    Path(dirpath, name).unlink(missing_ok=True)
                elif data is not None and data["token"] not in named:
                    unnamed.append(Path(dirpath, name))
        if unnamed and not named:
            raise StoreError(
                f"the index {self.root / 'index.sqlite'} is missing or empty, but {len(unnamed)} adapter file(s)"
                f" lie under {self._adapters} (e.g. {unnamed[0]}): restore index.sqlite from a backup, or"
                f" rebuild it from the files with AdapterStore.rebuild_index({str(self.root)!r})"
            )
        if unnamed:
            logger.warning(
                "%d adapter file(s) under %s are in no index row (e.g. %s); left in place",
                len(unnamed),
                self._adapters,
                unnamed[0],
            )


def _check_name(value: object, what: str) -> str:
    """Ids and namespace segments are plain file names: no separators, no '..', no NUL."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise UnsafePathError(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit, without '..'"
        )
    return value


def _check_namespace(namespace: object) -> Namespace:
    if isinstance(namespace, str) or not isinstance(namespace, (tuple, list)) or not namespace:
        raise StoreError(f"a namespace is a non-empty tuple of names like ('user-1',); got {namespace!r}")
    return tuple(_check_name(segment, "namespace segment") for segment in namespace)


def _check_tensors(tensors: Mapping[str, torch.Tensor]) -> None:
    """Stored factors and keys are finite floating-point tensors (a NaN key would rank first)."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() and name != "owners":
            raise StoreError(f"tensor {name!r} is {tensor.dtype}, not floating point")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StoreError(f"tensor {name!r} holds NaN or infinite values")


def _attachment_bytes(name: object, tensors: Mapping[str, torch.Tensor]) -> bytes:
    if not isinstance(name, str) or not name:
        raise StoreError(f"an attachment name is a non-empty string, not {name!r}")
    try:
        return save_safetensors({k: t.detach().to("cpu", copy=True) for k, t in tensors.items()})
    except (TypeError, ValueError, AttributeError) as err:
        raise StoreError(f"attachment {name!r} must map names to tensors: {err}") from err


def _ns_key(ns: Namespace) -> str:
    """The index's form of a namespace; unambiguous because names never contain '/'."""
    return "/".join(ns)


def _label(ns: Namespace, id: str) -> str:
    return f"{id!r} in namespace {ns!r}"


def _to_record(row: Mapping[str, Any]) -> AdapterRecord:
    values = {name: row[name] for name in _FIELDS}
    values["namespace"] = tuple(values["namespace"].split("/"))
    try:
        values["extra"] = json.loads(values["extra"])
        return AdapterRecord(**values)
    except (ValueError, ValidationError) as err:  # JSONDecodeError is a ValueError
        raise StoreError(
            f"the index row of {_label(values['namespace'], values['id'])} is damaged: {_first_line(err)}"
        ) from err


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0]


def _row_from_file(path: Path, ns: Namespace, id: str) -> dict[str, Any]:
    """An index row for a data file, from the record the store wrote into its metadata."""
    data = path.read_bytes()
    try:
        with safe_open(path, framework="pt") as file:
            described = json.loads((file.metadata() or {})[_RECORD_METADATA])
        record = AdapterRecord(**{**described, "file_sha256": hashlib.sha256(data).hexdigest()})
    except Exception as err:  # not ours, or written before records were kept in files
        raise StoreError(f"{path} carries no adapter record the store wrote ({_first_line(err)})") from err
    if record.namespace != ns or record.id != id:
        raise StoreError(f"{path} holds the record of {_label(record.namespace, record.id)}, not of its folder")
    row = record.model_dump()
    row.update(namespace=_ns_key(ns), extra=json.dumps(record.extra, sort_keys=True), file=path.name)
    return row


def _read_committed(path: Path) -> bytes | None:
    """A data file's bytes; between a write's commit and its rename they are still in its temp
    file. None when neither exists (replaced or deleted since the row was read)."""
    match = _DATA_FILE.fullmatch(path.name)
    candidates = [path] + ([path.with_name(f"{_TEMP_PREFIX}{match['token']}")] if match else [])
    for candidate in candidates:
        try:
            return candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise StoreError(f"cannot read {candidate}: {err}") from err
    return None


def _write_durably(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (a temp file, renamed into place once its row commits)."""
    try:
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {err}") from err


def _move_into_place(temp: Path, path: Path) -> None:
    """Rename a committed write's temp file to its name and fsync the folder. Another process
    opening the store may have done it first (see ``_reconcile``): then the file is there."""
    try:
        os.replace(temp, path)
    except FileNotFoundError:
        if not path.is_file():
            raise StoreError(f"the file of a committed write vanished: {path}") from None
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or new entry in ``directory`` durable (POSIX only; Windows cannot)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
