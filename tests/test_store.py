"""The adapter store against real SQLite and real safetensors files in a temp folder."""

from __future__ import annotations

import hashlib
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import torch

from d2l_memory.adapter import AdapterPart, LoRAAdapter, LoRAWeights, ModuleKey, concat
from d2l_memory.errors import NotFoundError, StoreError, UnsafePathError
from d2l_memory.store import AdapterRecord, AdapterStore, content_sha256

REPO = Path(__file__).resolve().parents[1]
KEY = ModuleKey(0, "mlp.down_proj")
NS = ("user-1", "thread-9")


def make_adapter(name: str = "x", rank: int = 4) -> LoRAAdapter:
    return LoRAAdapter.single(name, {KEY: LoRAWeights(torch.randn(rank, 16), torch.randn(32, rank))})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AdapterStore]:
    with AdapterStore(tmp_path / "store") as s:
        yield s


def files_under(root: Path) -> list[Path]:
    """The store's own files (adapters and temp files) anywhere under its folder."""
    found = (root / "adapters").rglob("*")
    return sorted(p for p in found if p.name.endswith(".safetensors") or p.name.startswith(".tmp-"))


def assert_consistent(root: Path) -> list[AdapterRecord]:
    """Reopen the store: every listed record loads, and every file belongs to a listed record."""
    with AdapterStore(root) as reopened:
        namespaces = {tuple(p.relative_to(root / "adapters").parent.parts) for p in files_under(root)}
        records = [r for ns in namespaces for r in reopened.list(ns)]
        for rec in records:
            loaded = reopened.get(rec.namespace, rec.id)
            assert loaded.part_names == [rec.id]
        assert sorted(reopened.path(r.namespace, r.id) for r in records) == files_under(root)
    with closing(sqlite3.connect(root / "index.sqlite")) as db:  # no row hides in a file-less namespace
        assert db.execute("SELECT count(*) FROM adapters").fetchone()[0] == len(records)
    return records


# --- round trip and metadata ----------------------------------------------------------------
def test_round_trip_is_bit_identical(store: AdapterStore) -> None:
    other = ModuleKey(1, "self_attn.q_proj")
    composed = concat(
        [
            make_adapter("a", rank=4),
            LoRAAdapter.single(
                "b",
                {
                    KEY: LoRAWeights(torch.randn(2, 16), torch.randn(32, 2)),
                    other: LoRAWeights(torch.randn(3, 8), torch.randn(8, 3)),
                },
            ),
        ]
    ).to(dtype=torch.bfloat16)
    rec = store.put(
        composed,
        namespace=NS,
        kind="skill",
        id="sql-expert",
        source="doc.md",
        token_count=512,
        generator="t2l",
        generator_version="0.3",
        base_model="Qwen/Qwen3-0.6B",
        extra={"topic": "sql", "tags": ("a", "b")},
    )
    loaded = store.get(NS, "sql-expert")

    assert set(loaded.weights) == set(composed.weights)
    for key, w in composed.weights.items():
        assert loaded.weights[key].A.dtype == torch.bfloat16
        assert torch.equal(loaded.weights[key].A, w.A) and torch.equal(loaded.weights[key].B, w.B)
    assert loaded.parts == (AdapterPart("sql-expert", {KEY: 6, other: 3}),)  # one part, named by id
    assert rec == store.record(NS, "sql-expert") == store.list(NS)[0]
    assert (rec.kind, rec.source, rec.token_count) == ("skill", "doc.md", 512)
    assert (rec.generator, rec.generator_version, rec.base_model) == ("t2l", "0.3", "Qwen/Qwen3-0.6B")
    assert rec.extra == {"topic": "sql", "tags": ["a", "b"]}  # as JSON keeps it
    assert (rec.rank, rec.nbytes) == (6, composed.nbytes)
    assert rec.content_hash == content_sha256(composed)
    assert abs(rec.created_at - time.time()) < 60


def test_generated_id_and_content_hash(store: AdapterStore) -> None:
    adapter = make_adapter("first")
    rec = store.put(adapter, namespace=NS, kind="memory")
    assert len(rec.id) == 32 and (NS, rec.id) in store
    # The default content hash depends on the factors only, so duplicates can be found.
    assert content_sha256(adapter.renamed("other name")) == rec.content_hash
    assert store.list(NS, where={"content_hash": content_sha256(adapter)}) == [rec]
    assert content_sha256(make_adapter()) != rec.content_hash
    given = store.put(adapter, namespace=NS, kind="memory", content_hash="sha256:of-the-source-text")
    assert given.content_hash == "sha256:of-the-source-text"
    store.get(NS, given.id)  # integrity is checked on the file, not on the caller's hash


def test_existing_id_raises_unless_overwrite(store: AdapterStore) -> None:
    first, second = make_adapter(), make_adapter()
    store.put(first, namespace=NS, kind="memory", id="m")
    with pytest.raises(StoreError, match="already exists"):
        store.put(second, namespace=NS, kind="memory", id="m")
    assert torch.equal(store.get(NS, "m").weights[KEY].A, first.weights[KEY].A)

    store.put(second, namespace=NS, kind="skill", id="m", overwrite=True)
    assert torch.equal(store.get(NS, "m").weights[KEY].A, second.weights[KEY].A)
    assert [r.kind for r in store.list(NS)] == ["skill"]
    assert len(files_under(store.root)) == 1  # the replaced file is gone


def test_list_filters_by_kind_fields_and_extra(store: AdapterStore) -> None:
    store.put(make_adapter(), namespace=NS, kind="memory", id="m1", source="a.md", extra={"day": 1})
    store.put(make_adapter(), namespace=NS, kind="memory", id="m2", source="b.md", extra={"day": 2})
    store.put(make_adapter(rank=2), namespace=NS, kind="skill", id="s1", source="a.md", extra={"day": 1})

    def ids(**kwargs: Any) -> list[str]:
        return [r.id for r in store.list(NS, **kwargs)]

    assert ids() == ["m1", "m2", "s1"]
    assert ids(kind="skill") == ["s1"]
    assert ids(where={"source": "a.md"}) == ["m1", "s1"]
    assert ids(kind="memory", where={"source": "a.md"}) == ["m1"]
    assert ids(where={"day": 1}) == ["m1", "s1"]
    assert ids(where={"day": 1, "rank": 2}) == ["s1"]
    assert ids(where={"no-such-key": 1}) == []
    with pytest.raises(StoreError, match="namespace"):
        store.list(NS, where={"namespace": "x"})
    with pytest.raises(StoreError, match="clash"):
        store.put(make_adapter(), namespace=NS, kind="memory", extra={"source": "shadowed"})
    with pytest.raises(StoreError, match="JSON"):
        store.put(make_adapter(), namespace=NS, kind="memory", extra={"x": object()})
    with pytest.raises(StoreError, match="kind"):
        store.put(make_adapter(), namespace=NS, kind="memo")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="kind"):
        store.list(NS, kind="memo")  # type: ignore[arg-type]


def test_delete(store: AdapterStore) -> None:
    store.put(make_adapter(), namespace=NS, kind="memory", id="keep")
    store.put(make_adapter(), namespace=NS, kind="memory", id="drop")
    path = store.path(NS, "drop")
    store.delete(NS, "drop")
    assert [r.id for r in store.list(NS)] == ["keep"]
    assert not path.exists() and not store.exists(NS, "drop")
    with pytest.raises(NotFoundError):
        store.get(NS, "drop")
    with pytest.raises(NotFoundError):
        store.delete(NS, "drop")


# --- attachments ----------------------------------------------------------------------------
def test_attachments_round_trip_and_go_with_their_adapter(store: AdapterStore) -> None:
    keys = {"keys": torch.randn(3, 8), "owners": torch.tensor([0, 0, 1])}
    store.put(make_adapter(), namespace=NS, kind="memory", id="a")
    store.put(make_adapter(), namespace=NS, kind="memory", id="b")
    store.attach(NS, "a", "router/x", keys)
    store.attach(NS, "b", "router/x", {"keys": torch.ones(1, 8)})
    store.attach(NS, "a", "focus/x", {"keys": torch.zeros(2, 8)})
    found = store.attachments(NS, "router/x")
    assert sorted(found) == ["a", "b"] and all(torch.equal(found["a"][k], keys[k]) for k in keys)
    assert list(store.attachments(NS, "router/x", ids=["b", "nope"])) == ["b"]
    assert store.attachments(NS, "router/x", ids=[]) == {}
    assert store.attachments(("other",), "router/x") == {}
    assert store.ids(NS) == ["a", "b"]

    store.delete(NS, "a")  # its attachments go in the same transaction
    assert list(store.attachments(NS, "router/x")) == ["b"] and store.attachments(NS, "focus/x") == {}
    store.put(make_adapter(), namespace=NS, kind="memory", id="a")
    assert list(store.attachments(NS, "router/x")) == ["b"]  # a new adapter under an old id starts bare
    with pytest.raises(NotFoundError, match="to attach"):
        store.attach(NS, "gone", "router/x", keys)
    with pytest.raises(StoreError, match="name"):
        store.attach(NS, "b", "", keys)


def test_overwriting_drops_attachments_only_when_the_content_changes(store: AdapterStore) -> None:
    adapter = make_adapter()
    store.put(adapter, namespace=NS, kind="skill", id="s")
    store.attach(NS, "s", "router/x", {"keys": torch.ones(1, 4)})
    store.put(adapter, namespace=NS, kind="skill", id="s", overwrite=True)  # the same skill, made again
    assert list(store.attachments(NS, "router/x")) == ["s"]
    store.put(adapter.scaled(2.0), namespace=NS, kind="skill", id="s", overwrite=True)
    assert store.attachments(NS, "router/x") == {}


# --- isolation and path safety --------------------------------------------------------------
def test_namespaces_are_isolated(store: AdapterStore) -> None:
    a, b = make_adapter(), make_adapter()
    store.put(a, namespace=("user-1",), kind="memory", id="same")
    store.put(b, namespace=("user-10",), kind="memory", id="same")
    store.put(b, namespace=("user-1", "thread-9"), kind="memory", id="deep")
    store.put(b, namespace=("user-2",), kind="memory", id="secret")

    assert torch.equal(store.get(("user-1",), "same").weights[KEY].A, a.weights[KEY].A)
    assert [r.id for r in store.list(("user-1",))] == ["same"]
    with pytest.raises(NotFoundError):
        store.get(("user-1",), "secret")
    with pytest.raises(NotFoundError):
        store.delete(("user-1",), "secret")
    assert (("user-1",), "secret") not in store
    # A prefix listing reaches sub-namespaces, never siblings whose name merely starts the same.
    listed = {(r.namespace, r.id) for r in store.list(("user-1",), prefix=True)}
    assert listed == {(("user-1",), "same"), (("user-1", "thread-9"), "deep")}
    assert store.list(("user-1", "thread-9"), prefix=True)[0].id == "deep"
    assert store.list(("user",), prefix=True) == []


BAD_NAMES = ["../x", "/abs", "a/b", "a\\b", "a\x00b", "..", ".", "", ".hidden", "a..b", "x" * 129, "a@b", 7]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_ids_and_namespaces_are_refused(store: AdapterStore, bad: object) -> None:
    adapter = make_adapter()
    calls: list[Callable[[], object]] = [
        lambda: store.put(adapter, namespace=NS, kind="memory", id=bad),  # type: ignore[arg-type]
        lambda: store.put(adapter, namespace=("ok", bad), kind="memory"),  # type: ignore[arg-type]
        lambda: store.get(NS, bad),  # type: ignore[arg-type]
        lambda: store.get((bad,), "ok"),  # type: ignore[arg-type]
        lambda: store.delete(NS, bad),  # type: ignore[arg-type]
        lambda: store.list((bad,), prefix=True),  # type: ignore[arg-type]
        lambda: store.exists((bad,), "ok"),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(UnsafePathError) as info:
            call()
        assert repr(bad) in str(info.value)
    assert files_under(store.root) == []


def test_namespace_must_be_a_tuple(store: AdapterStore) -> None:
    for bad in ["user-1", (), None]:
        with pytest.raises(StoreError, match="namespace"):
            store.list(bad)  # type: ignore[arg-type]


def test_symlinked_namespace_folder_is_refused(store: AdapterStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "adapters" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside"):
        store.put(make_adapter(), namespace=("evil",), kind="memory")
    assert list(outside.iterdir()) == []


# --- loading only what we wrote -------------------------------------------------------------
class _Exploit:
    """Unpickling this would create ``marker``: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[Path], None], tuple[Path]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_renamed_to_safetensors_is_refused(store: AdapterStore, tmp_path: Path, writer: str) -> None:
    store.put(make_adapter(), namespace=NS, kind="memory", id="m")
    path = store.path(NS, "m")
    marker = tmp_path / "pwned"
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_Exploit(armed)))
    assert armed.exists()  # the payload does run under pickle
    payload = {"layers.0.mlp.down_proj.lora_A": torch.randn(4, 16), "x": _Exploit(marker)}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    with pytest.raises(StoreError, match="not a valid safetensors file"):
        store.get(NS, "m")
    assert not marker.exists()


def test_tampered_file_is_detected(store: AdapterStore) -> None:
    store.put(make_adapter(), namespace=NS, kind="memory", id="m")
    path = store.path(NS, "m")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor: still valid safetensors
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="modified or corrupted"):
        store.get(NS, "m")


# --- crashes and concurrency ----------------------------------------------------------------
def test_reopen_finishes_what_a_crash_left_and_deletes_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with AdapterStore(root) as s:
        s.put(make_adapter(), namespace=NS, kind="memory", id="alive")
        s.put(make_adapter(), namespace=NS, kind="memory", id="lost")
        s.put(make_adapter(), namespace=NS, kind="memory", id="unrenamed")
        s.attach(NS, "alive", "router/x", {"keys": torch.ones(1, 4)})
        s.path(NS, "lost").unlink()  # row without file (e.g. a file restored from an older backup)
        alive, unrenamed = s.path(NS, "alive"), s.path(NS, "unrenamed")
        folder = alive.parent
    token = unrenamed.name.split("@")[1].removesuffix(".safetensors")
    unrenamed.rename(folder / f".tmp-{token}")  # committed, then killed before the rename
    (folder / f".tmp-{'0' * 32}").write_bytes(b"half a file")  # killed before the commit
    unnamed = folder / f"kept@{'1' * 32}.safetensors"
    unnamed.write_bytes(b"x")  # a data file no row names (an index restored from an older backup)
    (root / "adapters" / "empty" / "ns").mkdir(parents=True)
    (folder / "notes.txt").write_text("not ours: left alone")

    with AdapterStore(root) as reopened:
        assert reopened.ids(NS) == ["alive", "lost", "unrenamed"]  # a row is never dropped
        assert reopened.get(NS, "unrenamed").part_names == ["unrenamed"]
        with pytest.raises(StoreError, match="missing"):
            reopened.get(NS, "lost")
        assert list(reopened.attachments(NS, "router/x")) == ["alive"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, unrenamed.name, unnamed.name, "notes.txt"])
    assert (root / "adapters" / "empty" / "ns").is_dir()


def test_replaced_and_deleted_files_are_unlinked_after_a_crash(tmp_path: Path) -> None:
    """A write killed after its commit but before unlinking what it replaced leaves trash, which
    the next open empties."""
    root = tmp_path / "store"
    with AdapterStore(root) as s:
        s.put(make_adapter(), namespace=NS, kind="memory", id="a")
        s.put(make_adapter(), namespace=NS, kind="memory", id="b")
        old, gone = s.path(NS, "a"), s.path(NS, "b")
        kept = old.read_bytes(), gone.read_bytes()
        s.put(make_adapter(), namespace=NS, kind="memory", id="a", overwrite=True)
        s.delete(NS, "b")
    old.write_bytes(kept[0])  # as if the unlinks after the commits had never run
    gone.write_bytes(kept[1])
    records = assert_consistent(root)
    assert [r.id for r in records] == ["a"]


def test_a_lost_index_is_an_error_and_the_files_rebuild_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with AdapterStore(root) as s:
        originals = {}
        for i in range(3):
            adapter = make_adapter()
            s.put(
                adapter,
                namespace=("user-1", f"t{i}"),
                kind="skill" if i else "memory",
                id=f"m{i}",
                source=f"doc {i}",
                extra={"chunks": i + 1},
            )
            originals[f"m{i}"] = (adapter, s.record(("user-1", f"t{i}"), f"m{i}"))
    files = files_under(root)
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (root / name).unlink(missing_ok=True)
    with pytest.raises(StoreError, match="rebuild_index"):
        AdapterStore(root)
    (root / "index.sqlite").write_bytes(b"")  # a zero-length index is a lost one too
    with pytest.raises(StoreError, match="3 adapter file"):
        AdapterStore(root)
    assert files_under(root) == files

    rebuilt = AdapterStore.rebuild_index(root)
    assert sorted(r.id for r in rebuilt) == ["m0", "m1", "m2"]
    with AdapterStore(root) as reopened:
        for id, (adapter, record) in originals.items():
            assert reopened.record(record.namespace, id) == record
            loaded = reopened.get(record.namespace, id)
            for key, w in adapter.weights.items():
                assert torch.equal(loaded.weights[key].A, w.A) and torch.equal(loaded.weights[key].B, w.B)
    with pytest.raises(StoreError, match="not empty"):
        AdapterStore.rebuild_index(root)


def test_files_the_store_did_not_write_are_never_deleted(tmp_path: Path) -> None:
    from d2l_memory.peft_io import save_peft
    from d2l_memory.testing import random_adapter, tiny_model

    root = tmp_path / "p"
    save_peft(random_adapter(tiny_model("llama"), seed=0), root / "adapters" / "paper", base_model="x")
    before = sorted(p.name for p in (root / "adapters" / "paper").iterdir())
    with AdapterStore(root) as s:
        s.put(make_adapter(), namespace=NS, kind="memory", id="m")
    AdapterStore(root).close()
    assert sorted(p.name for p in (root / "adapters" / "paper").iterdir()) == before
    assert "adapter_model.safetensors" in before


def test_a_corrupt_index_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite database"):
        AdapterStore(root)


def test_damaged_rows_are_skipped_by_list_and_refused_by_record(
    store: AdapterStore, caplog: pytest.LogCaptureFixture
) -> None:
    for id in ("good", "bad-extra", "bad-kind"):
        store.put(make_adapter(), namespace=NS, kind="memory", id=id)
    with closing(sqlite3.connect(store.root / "index.sqlite")) as db:
        db.execute("UPDATE adapters SET extra = '{not json' WHERE id = 'bad-extra'")
        db.execute("UPDATE adapters SET kind = 'virus' WHERE id = 'bad-kind'")
        db.commit()
    assert [r.id for r in store.list(NS)] == ["good"]
    assert "bad-extra" in caplog.text and "bad-kind" in caplog.text
    with pytest.raises(StoreError, match="damaged"):
        store.record(NS, "bad-extra")


@pytest.mark.parametrize("poison", ["nan", "int"])
def test_loaded_factors_must_be_finite_floats(store: AdapterStore, poison: str) -> None:
    from safetensors.torch import save

    store.put(make_adapter(), namespace=NS, kind="memory", id="m")
    path = store.path(NS, "m")
    tensors = {"0.mlp.down_proj.lora_A": torch.randn(4, 16), "0.mlp.down_proj.lora_B": torch.randn(32, 4)}
    tensors["0.mlp.down_proj.lora_A"][0, 0] = float("nan")
    if poison == "int":
        tensors["0.mlp.down_proj.lora_A"] = torch.ones(4, 16, dtype=torch.int64)
    data = save(tensors)
    path.write_bytes(data)
    with closing(sqlite3.connect(store.root / "index.sqlite")) as db:  # the tamperer fixes the hash too
        db.execute("UPDATE adapters SET file_sha256 = ?", (hashlib.sha256(data).hexdigest(),))
        db.commit()
    with pytest.raises(StoreError, match="NaN|floating point"):
        store.get(NS, "m")


def test_put_commits_attachments_with_the_adapter(store: AdapterStore) -> None:
    store.put(make_adapter(), namespace=NS, kind="memory", id="m", attachments={"router/x": {"keys": torch.ones(2, 4)}})
    assert torch.equal(store.attachments(NS, "router/x")["m"]["keys"], torch.ones(2, 4))
    with pytest.raises(StoreError, match="must map names to tensors"):
        store.put(make_adapter(), namespace=NS, kind="memory", id="n", attachments={"router/x": {"keys": 3}})
    assert not store.exists(NS, "n")


CRASH_WRITER = """
import sys, time, types, torch

# Import the store without the package's __init__, which pulls in transformers (seconds per writer).
package = types.ModuleType("d2l_memory")
package.__path__ = [sys.argv[3]]
sys.modules["d2l_memory"] = package
from d2l_memory.adapter import LoRAAdapter, LoRAWeights, ModuleKey
from d2l_memory.store import AdapterStore

store, run = AdapterStore(sys.argv[1]), sys.argv[2]
torch.manual_seed(int(run))
i = 0
while True:
    weights = LoRAWeights(torch.randn(4, 256), torch.randn(512, 4))
    adapter = LoRAAdapter.single("x", {ModuleKey(0, "mlp.down_proj"): weights})
    ns = ("user-1", f"thread-{i % 3}")
    store.put(adapter, namespace=ns, kind="memory", id=f"r{run}-m{i}")
    print("put", "/".join(ns), f"r{run}-m{i}", flush=True)
    if i % 4 == 3:
        store.put(adapter.scaled(2.0), namespace=ns, kind="skill", id=f"r{run}-m{i}", overwrite=True)
    if i % 5 == 4:
        old = ("user-1", f"thread-{(i - 3) % 3}")
        store.delete(old, f"r{run}-m{i - 3}")
        print("del", "/".join(old), f"r{run}-m{i - 3}", flush=True)
    i += 1
    time.sleep(0.005)  # SQLite's lock is not fair: a writer in a tight loop would starve the other
"""


def _acknowledged(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_writers_killed_mid_way_leave_a_consistent_store(tmp_path: Path) -> None:
    """Two writer processes share the store (the second opens, and sweeps, while the first
    writes); each is SIGKILLed mid-loop. Reopening must show every acknowledged write and
    nothing else but the operations in flight, with every record loadable and no stray file."""
    root = tmp_path / "store"
    logs = [tmp_path / f"writer{run}.log" for run in range(2)]
    procs = []
    for run, log in enumerate(logs):
        with open(log, "w") as out:
            command = [sys.executable, "-c", CRASH_WRITER, str(root), str(run), str(REPO / "d2l_memory")]
            procs.append(subprocess.Popen(command, stdout=out))
    try:
        deadline = time.monotonic() + 60
        for proc, log in zip(procs, logs):
            target = len(_acknowledged(log)) + 25
            while len(_acknowledged(log)) < target:
                assert proc.poll() is None, "a writer died on its own"
                assert time.monotonic() < deadline, "the writers are too slow"
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        for proc in procs:
            proc.kill()

    acked: set[tuple[str, str]] = set()
    for log in logs:
        for line in _acknowledged(log):
            op, ns, id = line.split()
            (acked.add if op == "put" else acked.discard)((ns, id))
    records = assert_consistent(root)
    present = {("/".join(r.namespace), r.id) for r in records}
    assert len(acked) > 30
    assert len(acked ^ present) <= 2  # each writer's operation in flight may have gone either way


def test_threads_share_one_store(store: AdapterStore) -> None:
    adapters = [make_adapter() for _ in range(8)]

    def writer(t: int) -> None:
        for i, adapter in enumerate(adapters):
            store.put(adapter, namespace=(f"t{t}",), kind="memory", id=f"m{i}")
            store.get((f"t{t}",), f"m{i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(store.list((f"t{t}",))) == 8 for t in range(4))


def test_two_stores_on_one_folder_see_each_other(tmp_path: Path) -> None:
    with AdapterStore(tmp_path / "s") as first, AdapterStore(tmp_path / "s") as second:
        first.put(make_adapter(), namespace=NS, kind="memory", id="a")
        with AdapterStore(tmp_path / "s") as third:  # opening sweeps, but must keep live files
            assert third.exists(NS, "a")
        second.put(make_adapter(), namespace=NS, kind="memory", id="b")
        assert [r.id for r in first.list(NS)] == ["a", "b"]
        first.delete(NS, "b")
        assert not second.exists(NS, "b")
        second.get(NS, "a")
