"""Tests of the in-memory backend: through a whole log, and through its hooks."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import walrus_memory

from walrus_core import Walrus
from walrus_core.plugin import OpenSpec, Storage, WriteOp
from walrus_core.plugins import BackendRegistry

# Built from the module itself, so the tests also run from a source tree without installing.
REGISTRY = BackendRegistry({"memory": walrus_memory})
# Small geometry: data files of 1 MiB, so a handful of topics spans several pages and files.
GEOMETRY = {"block_size": 64 * 1024, "blocks_per_file": 16}


@pytest.fixture(autouse=True)
def _empty_store() -> Iterator[None]:
    """Every test starts and ends with an empty store (it is process-wide)."""
    walrus_memory.forget()
    yield
    walrus_memory.forget()


def _wal(path: Path) -> Walrus:
    return Walrus(path, backend="memory", registry=REGISTRY, **GEOMETRY)


def _open(path: Path, size: int = 4096, create: bool = True) -> Storage:
    return REGISTRY.chain("memory").open(OpenSpec(path=str(path), size=size, create=create))


def test_backend_info() -> None:
    """Not durable, never picked by "auto"."""
    info = walrus_memory.walrus_backend_info()
    assert info.durable is False
    assert info.auto_priority == 0
    assert info.layers_over is None
    assert info.family == "memory"
    assert [s.name for s in REGISTRY.statuses() if s.available] == ["memory"]


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Entries and cursors written by one instance are there for the next, in one process."""
    payloads = [bytes([i % 251]) * (i * 37 % 3000) for i in range(200)]
    with _wal(tmp_path / "wal") as wal:
        assert wal.backend_chain == ("memory",)
        for payload in payloads:
            wal.append_for_topic("events", payload)
        wal.batch_append_for_topic("other", [b"a", b"bc"])
        first = wal.read_next("events")
        assert first is not None and first.data == payloads[0]
    with _wal(tmp_path / "wal") as wal:
        assert wal.topic_entry_count("other") == 2
        entry = wal.read_next("events")  # the cursor moved past entry 0 before the close
        assert entry is not None and (entry.offset, entry.data) == (1, payloads[1])
        rest = [wal.read_next("events") for _ in range(len(payloads) - 2)]
        assert [e.data for e in rest if e is not None] == payloads[2:]
        assert wal.read_next("events") is None


def test_files_on_disk_are_sparse(tmp_path: Path) -> None:
    """The data files exist at their full size, and no byte was written to them."""
    with _wal(tmp_path / "wal") as wal:
        wal.append_for_topic("events", b"x" * 10_000)
    data_files = [p for p in (tmp_path / "wal").iterdir() if p.suffix == ".wal"]
    assert data_files
    for path in data_files:
        assert path.stat().st_size >= GEOMETRY["block_size"] * GEOMETRY["blocks_per_file"]
        assert set(path.read_bytes()) == {0}


def test_forget_drops_the_bytes(tmp_path: Path) -> None:
    """After forget(), the files are zeros again: a reopened log has no entries."""
    with _wal(tmp_path / "a") as wal:
        wal.append_for_topic("events", b"kept")
    with _wal(tmp_path / "b") as wal:
        wal.append_for_topic("events", b"dropped")
    walrus_memory.forget(tmp_path / "b")  # a directory: every file under it
    with _wal(tmp_path / "b") as wal:
        assert wal.topics() == []
    with _wal(tmp_path / "a") as wal:  # untouched by forgetting b
        entry = wal.read_next("events")
        assert entry is not None and entry.data == b"kept"
    walrus_memory.forget()
    with _wal(tmp_path / "a") as wal:
        assert wal.topics() == []


def test_forget_one_file(tmp_path: Path) -> None:
    """forget(path) of a single file drops that file only."""
    for name in ("one", "two"):
        storage = _open(tmp_path / name)
        storage.write(0, (name.encode(),), 3)
        storage.close()
    walrus_memory.forget(tmp_path / "one")
    one, two = _open(tmp_path / "one", create=False), _open(tmp_path / "two", create=False)
    assert one.read(0, 3) == bytes(3)
    assert two.read(0, 3) == b"two"
    one.close()
    two.close()


def test_fresh_file_after_unlink_starts_from_zeros(tmp_path: Path) -> None:
    """A deleted and recreated file does not inherit the old bytes, whatever its inode."""
    path = tmp_path / "data-0000000001.wal"
    for _ in range(3):  # several rounds: file systems hand the freed inode number out again
        storage = _open(path)
        assert storage.read(0, 4096) == bytes(4096)
        storage.write(0, (b"old bytes",), 9)
        storage.close()
        reopened = _open(path)  # create=True on an existing file: the same bytes
        assert reopened.read(0, 9) == b"old bytes"
        reopened.close()
        os.unlink(path)


def test_missing_file_without_create(tmp_path: Path) -> None:
    """ENOENT, and no file is created."""
    with pytest.raises(FileNotFoundError) as info:
        _open(tmp_path / "missing", create=False)
    assert info.value.errno == errno.ENOENT
    assert not (tmp_path / "missing").exists()


def test_read_write_discard_semantics(tmp_path: Path) -> None:
    """Gathered writes across page boundaries, short reads only at the end, zeros where
    nothing was written or after a discard, sizes kept: checked against a bytearray."""
    page = walrus_memory.PAGE_SIZE
    size = 3 * page
    model = bytearray(size)
    storage = _open(tmp_path / "f", size=size)
    assert os.path.getsize(tmp_path / "f") == size
    assert storage.read(0, size) == model  # never written: zeros

    chunks = [b"a" * 10, bytearray(b"b" * page), memoryview(b"c" * 7)]
    joined = b"".join(bytes(c) for c in chunks)
    storage.write(page - 5, chunks, len(joined))
    model[page - 5 : page - 5 + len(joined)] = joined
    storage.batch_submit([WriteOp(0, (b"head",), 4), WriteOp(2 * page + 100, (b"x",), 1)], True)
    model[0:4] = b"head"
    model[2 * page + 100] = ord("x")
    assert storage.read(0, size) == model
    assert storage.read(size - 4, 100) == model[-4:]  # short only at the end of the file
    assert storage.read(size, 10) == b""

    assert storage.discard is not None
    storage.discard(2, 2 * page - 2)  # part of page 0, page 1 whole, nothing of page 2
    model[2 : 2 * page] = bytes(2 * page - 2)
    assert storage.read(0, size) == model
    assert os.path.getsize(tmp_path / "f") == size
    storage.flush()  # nothing to do, and nothing fails
    storage.close()


def test_write_past_the_end_grows_the_file(tmp_path: Path) -> None:
    """As a real file would: the size on disk follows, reads see the new end."""
    storage = _open(tmp_path / "f", size=100)
    storage.write(95, (b"0123456789",), 10)
    assert os.path.getsize(tmp_path / "f") == 105
    assert storage.read(90, 100) == bytes(5) + b"0123456789"
    storage.close()


def test_reopening_larger_keeps_the_bytes(tmp_path: Path) -> None:
    """Two handles of one file share its bytes (the engine grows the cursors file so)."""
    small = _open(tmp_path / "f", size=100)
    small.write(0, (b"abc",), 3)
    large = _open(tmp_path / "f", size=10_000, create=False)
    assert large.read(0, 3) == b"abc"
    large.write(5000, (b"z",), 1)
    assert small.read(5000, 1) == b"z"
    small.close()
    large.close()


def test_reads_alongside_writes(tmp_path: Path) -> None:
    """A read sees a whole write or none of it, while another thread writes."""
    storage = _open(tmp_path / "f", size=4 * walrus_memory.PAGE_SIZE)
    n = 3 * walrus_memory.PAGE_SIZE  # spans pages: all of them change under one lock
    stop = threading.Event()
    seen: set[bytes] = set()

    def reader() -> None:
        while not stop.is_set():
            data = storage.read(0, n)
            seen.add(bytes(set(data)))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, 60):
            storage.write(0, (bytes([i]) * n,), n)
    finally:
        stop.set()
        thread.join()
    storage.close()
    assert all(len(values) == 1 for values in seen), "a read saw part of a write"
