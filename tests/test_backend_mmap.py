"""The mmap backend's own guarantees (the behaviour suite covers the rest with
``--walrus-backend=mmap``): dirty-range msync, ENOSPC instead of SIGBUS, exact reads, sparse
files, thread safety of the dirty-range bookkeeping, and ``disable_fd_backend()``."""

from __future__ import annotations

import array
import errno
import mmap
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from walrus_core import (
    FsyncSchedule,
    StorageError,
    Walrus,
    disable_fd_backend,
    enable_fd_backend,
)
from walrus_core.plugins import BackendRegistry
from walrus_core.storage import OpenSpec, Storage, WriteOp

walrus_mmap = pytest.importorskip(
    "walrus_mmap",
    reason="walrus-mmap is not installed (pip install -e plugins/walrus_mmap)",
)

PAGE = mmap.PAGESIZE
MiB = 1 << 20


class FlushSpy:
    """Stands in for a handle's mmap: records every ``flush(offset, size)``, delegates all."""

    def __init__(self, real: mmap.mmap) -> None:
        self.real = real
        self.calls: list[tuple[int, int]] = []

    def flush(self, offset: int, size: int) -> None:
        self.calls.append((offset, size))
        self.real.flush(offset, size)

    def __getitem__(self, key: Any) -> Any:
        return self.real[key]

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def registry() -> BackendRegistry:
    return BackendRegistry.from_entry_points()


@pytest.fixture
def open_storage(tmp_path: Path, registry: BackendRegistry) -> Iterator[Any]:
    """Factory: a Storage of the mmap chain on a fresh file; closed at teardown."""
    opened: list[Storage] = []

    def factory(size: int = 4 * MiB, name: str = "f.wal", **kw: Any) -> Storage:
        spec = OpenSpec(path=str(tmp_path / name), size=size, create=True, **kw)
        storage = registry.chain("mmap").open(spec)
        opened.append(storage)
        return storage

    yield factory
    for storage in opened:
        storage.close()


def spy_on(storage: Storage) -> FlushSpy:
    handle = storage.handle
    spy = FlushSpy(handle.mm)
    handle.mm = spy
    return spy


def covered(calls: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of msynced [start, stop) ranges, merged."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted((o, o + n) for o, n in calls):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


# --- open ------------------------------------------------------------------------------------


def test_chain_and_info(open_storage: Any, registry: BackendRegistry) -> None:
    storage = open_storage()
    assert storage.chain == ("mmap",)
    info = walrus_mmap.walrus_backend_info()
    assert info.family == "mmap"
    assert info.auto_priority == 5
    assert "win32" in info.platforms
    assert info.install == "pip install walrus-mmap"
    assert info.probe() is None
    statuses = {s.name: s for s in registry.statuses()}
    assert statuses["mmap"].available


def test_open_extends_sparsely_and_keeps_existing_data(tmp_path: Path, open_storage: Any) -> None:
    storage = open_storage(size=64 * MiB)
    st = os.stat(storage.path)
    assert st.st_size == 64 * MiB
    if hasattr(st, "st_blocks"):
        assert st.st_blocks * 512 < MiB  # sized with ftruncate, not by writing zeros
    storage.write(5, (b"keep",), 4)
    storage.close()
    again = open_storage(size=MiB)  # smaller spec: the file is mapped whole, never shrunk
    assert os.path.getsize(again.path) == 64 * MiB
    assert again.read(5, 4) == b"keep"
    assert again.read(64 * MiB - 2, 10) == b"\0\0"


def test_open_without_create_fails_on_missing_file(
    tmp_path: Path, registry: BackendRegistry
) -> None:
    with pytest.raises(FileNotFoundError):
        registry.chain("mmap").open(OpenSpec(path=str(tmp_path / "nope"), size=4096))


# --- reads and writes ------------------------------------------------------------------------


def test_reads_return_exact_bytes(open_storage: Any) -> None:
    storage = open_storage(size=3 * MiB)
    rng = random.Random(7)
    expected = bytearray(3 * MiB)
    # Every buffer kind the engine may pass, at offsets that straddle pages and 1 MiB chunks.
    for offset in (0, 1, PAGE - 3, MiB - 100, 2 * MiB - 1, 3 * MiB - 50):
        head = rng.randbytes(16)
        body = rng.randbytes(min(5000, 3 * MiB - offset - 16))
        parts: list[Any] = [head, bytearray(body[:7]), memoryview(body)[7:]]
        n = len(head) + len(body)
        storage.write(offset, parts, n)
        expected[offset : offset + n] = head + body
    storage.batch_submit(
        [WriteOp(10 * PAGE, (b"x" * 10, memoryview(b"yz")), 12), WriteOp(MiB, (b"abc",), 3)],
        False,
    )
    expected[10 * PAGE : 10 * PAGE + 12] = b"x" * 10 + b"yz"
    expected[MiB : MiB + 3] = b"abc"
    for offset, size in ((0, 3 * MiB), (MiB - 101, 5002), (1, 1), (3 * MiB - 50, 50)):
        got = storage.read(offset, size)
        assert type(got) is bytes
        assert got == bytes(expected[offset : offset + size])


def test_reads_past_the_end_are_short(open_storage: Any) -> None:
    storage = open_storage(size=8192)
    storage.write(8190, (b"ab",), 2)
    assert storage.read(8190, 100) == b"ab"
    assert storage.read(8192, 10) == b""
    assert storage.read(100_000, 10) == b""


def test_typed_buffers_are_written_as_bytes(open_storage: Any) -> None:
    storage = open_storage(size=8192)
    ints = array.array("i", [1, 2, 3])
    storage.write(100, (b"h", memoryview(ints)), 1 + ints.itemsize * 3)
    assert storage.read(100, 1 + ints.itemsize * 3) == b"h" + ints.tobytes()


def test_write_outside_the_mapping_raises_oserror(open_storage: Any) -> None:
    storage = open_storage(size=8192)
    with pytest.raises(OSError):
        storage.write(8190, (b"abc",), 3)
    with pytest.raises(OSError):
        storage.write(-1, (b"a",), 1)
    assert storage.read(8190, 2) == b"\0\0"


def test_close_releases_everything(open_storage: Any) -> None:
    storage = open_storage(size=8192)
    handle = storage.handle
    storage.write(0, (b"data",), 4)
    storage.flush()
    storage.close()
    assert handle.mm is None
    with pytest.raises(OSError):
        os.fstat(handle.fd)
    with pytest.raises(OSError):
        storage.write(0, (b"x",), 1)
    storage.close()  # idempotent (the fixture closes it again)


# --- msync -----------------------------------------------------------------------------------


def test_flush_msyncs_only_the_dirty_range(open_storage: Any) -> None:
    storage = open_storage(size=64 * MiB)
    spy = spy_on(storage)
    storage.write(5 * MiB + 100, (b"a" * 10,), 10)
    storage.write(5 * MiB + PAGE + 7, (b"b" * 10,), 10)
    assert spy.calls == []  # no msync without sync_each
    storage.flush()
    assert spy.calls == [(5 * MiB, 2 * PAGE)]
    storage.flush()  # nothing dirty since: no msync at all
    assert spy.calls == [(5 * MiB, 2 * PAGE)]
    storage.write(64 * MiB - 3, (b"end",), 3)
    storage.flush()
    assert spy.calls[-1] == (64 * MiB - PAGE, PAGE)


def test_batch_submit_syncs_once(open_storage: Any) -> None:
    storage = open_storage(size=8 * MiB)
    spy = spy_on(storage)
    ops = [WriteOp(MiB + i * 1040, (b"h" * 16, b"p" * 1024), 1040) for i in range(100)]
    storage.batch_submit(ops, False)
    assert spy.calls == []
    storage.batch_submit([WriteOp(3 * MiB, (b"z",), 1)], True)
    assert len(spy.calls) == 1  # one msync covering the earlier, unsynced runs too
    start, size = spy.calls[0]
    assert start == MiB and start + size == 3 * MiB + PAGE
    storage.flush()
    assert len(spy.calls) == 1


def test_sync_each_msyncs_every_write(open_storage: Any) -> None:
    storage = open_storage(size=MiB, sync_each=True)
    spy = spy_on(storage)
    storage.write(PAGE + 1, (b"abc",), 3)
    assert spy.calls == [(PAGE, PAGE)]
    storage.write(3 * PAGE - 1, (b"ab",), 2)  # straddles a page boundary
    assert spy.calls[-1] == (2 * PAGE, 2 * PAGE)


def test_walrus_flush_does_not_msync_the_whole_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default geometry (1000 MiB files): a few appends msync a few pages, not the map."""
    calls: list[tuple[int, int]] = []
    real = walrus_mmap._msync

    def record(handle: Any, lo: int, hi: int) -> None:
        calls.append((lo, hi - lo))
        real(handle, lo, hi)

    monkeypatch.setattr(walrus_mmap, "_msync", record)
    with Walrus(data_dir=tmp_path / "wal", backend="mmap", fsync=FsyncSchedule.no_fsync()) as wal:
        for i in range(10):
            wal.append_for_topic("t", b"%d" % i * 100)
        calls.clear()
        wal.flush()
        assert calls, "flush msynced nothing"
        assert max(size for _, size in calls) <= 2 * PAGE
        assert [e.data for e in wal.batch_read_for_topic("t", 1 << 20)] == [
            b"%d" % i * 100 for i in range(10)
        ]


def test_flush_racing_with_writes_loses_no_dirty_range(open_storage: Any) -> None:
    storage = open_storage(size=16 * MiB)
    spy = spy_on(storage)
    stop = threading.Event()
    written: list[list[tuple[int, int]]] = [[] for _ in range(4)]

    def writer(k: int) -> None:
        rng = random.Random(k)
        for _ in range(2000):
            # disjoint ranges: writer k owns the k-th 4 MiB quarter
            offset = k * 4 * MiB + rng.randrange(4 * MiB - 2048)
            n = rng.randrange(1, 2048)
            storage.write(offset, (bytes([k + 1]) * n,), n)
            written[k].append((offset, n))

    def flusher() -> None:
        while not stop.is_set():
            storage.flush()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    background = threading.Thread(target=flusher)
    background.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    background.join()
    storage.flush()  # the engine's final flush: must cover whatever the flusher missed
    ranges = covered(spy.calls)
    for k, runs in enumerate(written):
        for offset, n in runs:
            assert any(lo <= offset and offset + n <= hi for lo, hi in ranges), (offset, n)
            assert storage.read(offset, n) == bytes([k + 1]) * n
    with storage.handle.lock:
        assert storage.handle.dirty_hi <= storage.handle.dirty_lo


def test_concurrent_disjoint_writes_and_reads(open_storage: Any) -> None:
    storage = open_storage(size=4 * MiB)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            base = k * MiB
            for i in range(500):
                record = (b"%08d" % i) * 128  # 1 KiB
                storage.write(base + i * 1024, (record,), 1024)
                assert storage.read(base + i * 1024, 1024) == record
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for k in range(4):
        for i in (0, 250, 499):
            assert storage.read(k * MiB + i * 1024, 8) == b"%08d" % i


# --- disk full -------------------------------------------------------------------------------

needs_fallocate = pytest.mark.skipif(
    walrus_mmap._fallocate is None, reason="no os.posix_fallocate on this platform"
)


@needs_fallocate
def test_fallocate_once_per_chunk(open_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = walrus_mmap._fallocate

    def record(fd: int, offset: int, size: int) -> None:
        calls.append((offset, size))
        real(fd, offset, size)

    monkeypatch.setattr(walrus_mmap, "_fallocate", record)
    chunk = walrus_mmap.CHUNK
    storage = open_storage(size=3 * chunk + 100)
    for i in range(100):
        storage.write(i * 1024, (b"x" * 1024,), 1024)
    assert calls == [(0, chunk)]
    storage.write(chunk - 10, (b"y" * (2 * chunk),), 2 * chunk)  # chunks 1..2 in one call
    assert calls[1:] == [(chunk, 2 * chunk)]
    storage.write(3 * chunk + 50, (b"tail",), 4)  # the last, partial chunk
    assert calls[2:] == [(3 * chunk, 100)]


def _enospc(fd: int, offset: int, size: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@needs_fallocate
def test_enospc_is_an_oserror_not_sigbus(
    open_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = open_storage(size=4 * MiB)
    storage.write(0, (b"first",), 5)
    monkeypatch.setattr(walrus_mmap, "_fallocate", _enospc)
    with pytest.raises(OSError) as info:
        storage.write(2 * MiB, (b"x" * 10,), 10)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        storage.batch_submit([WriteOp(3 * MiB, (b"y",), 1)], True)
    storage.write(100, (b"same chunk",), 10)  # already allocated: still fine
    monkeypatch.undo()
    storage.write(2 * MiB, (b"x" * 10,), 10)
    assert storage.read(0, 5) == b"first"
    assert storage.read(2 * MiB, 10) == b"x" * 10


@needs_fallocate
def test_enospc_surfaces_as_storage_error_and_wal_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "wal"
    geometry: dict[str, Any] = {"block_size": 256 * 1024, "blocks_per_file": 8}  # 2 MiB files
    big = [bytes([i]) * 100_000 for i in range(30)]
    with Walrus(
        data_dir=data_dir, backend="mmap", fsync=FsyncSchedule.no_fsync(), **geometry
    ) as wal:
        assert wal.append_for_topic("t", b"before") == 0
        monkeypatch.setattr(walrus_mmap, "_fallocate", _enospc)
        with pytest.raises(StorageError):
            wal.batch_append_for_topic("t", big)  # needs fresh chunks
        with pytest.raises(StorageError):
            for blob in big:
                wal.append_for_topic("t", blob)
        monkeypatch.undo()
        assert wal.topic_entry_count("t") >= 1
        first_new = wal.append_for_topic("t", b"after")
        r = wal.batch_append_for_topic("t", big[:5])
        got = [e.data for e in wal.batch_read_for_topic("t", 1 << 30, checkpoint=False)]
        assert got[0] == b"before"
        assert got[first_new] == b"after"
        assert got[r.start : r.stop] == big[:5]
        expected = got
    with Walrus(
        data_dir=data_dir, backend="mmap", fsync=FsyncSchedule.no_fsync(), **geometry
    ) as wal:
        again = [e.data for e in wal.batch_read_for_topic("t", 1 << 30, checkpoint=False)]
        assert again == expected


# --- selection -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [None, "auto"])
def test_disable_fd_backend_makes_auto_pick_mmap(
    tmp_path: Path, backend: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WALRUS_BACKEND", raising=False)
    monkeypatch.delenv("WALRUS_PLATFORM", raising=False)
    disable_fd_backend()
    try:
        with Walrus(
            data_dir=tmp_path / "wal", backend=backend, fsync=FsyncSchedule.no_fsync()
        ) as wal:
            assert wal.backend_chain == ("mmap",)
            wal.append_for_topic("t", b"via mmap")
            assert wal.read_next("t").data == b"via mmap"  # type: ignore[union-attr]
    finally:
        enable_fd_backend()


def test_auto_prefers_fd_on_linux_and_mmap_on_windows(registry: BackendRegistry) -> None:
    enable_fd_backend()
    if "fd" in registry.names():  # fd, or a layer over it: mmap only when fd is disabled
        assert registry.select("auto", platform="linux") != "mmap"
    assert registry.select("auto", platform="win32") == "mmap"


# --- resident memory -------------------------------------------------------------------------


def mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total = 0
    inside = False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5:  # a mapping's first line
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[:1] == ["Rss:"]:
                total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")
def test_resident_memory_stays_bounded_and_no_byte_is_lost(
    tmp_path: Path, open_storage: Any
) -> None:
    """Writing and reading four release periods' worth keeps at most about one period's
    pages resident; pages dropped before their msync still reach the file."""
    period = walrus_mmap.RELEASE_EVERY
    size = 4 * period + MiB
    storage = open_storage(size=size, name="big.wal")
    path = tmp_path / "big.wal"
    chunk = 1 << 20
    peak = 0
    for i, offset in enumerate(range(0, 4 * period, chunk)):
        storage.write(offset, (bytes([i % 251]) * chunk,), chunk)
        peak = max(peak, mapped_rss(path))
    assert peak <= period + 2 * walrus_mmap.CHUNK + chunk, peak
    storage.flush()
    with open(path, "rb") as raw:
        for i, offset in enumerate(range(0, 4 * period, chunk)):
            raw.seek(offset)
            assert raw.read(chunk) == bytes([i % 251]) * chunk, offset
    peak = 0
    for i, offset in enumerate(range(0, 4 * period, chunk)):
        assert storage.read(offset, chunk) == bytes([i % 251]) * chunk
        peak = max(peak, mapped_rss(path))
    assert peak <= period + chunk, peak
