"""The io_uring backend (``walrus-uring``): that it really uses io_uring, its linked fdatasync,
its errors and short writes, and the fallback when io_uring is disabled.

Tests that need a working io_uring skip with the probe's reason when the kernel refuses it
(seccomp, ``kernel.io_uring_disabled``), except under ``CI=true``, where a missing io_uring or
liburing fails them: CI must prove that the ring really runs. The fallback tests run wherever
the plugin is installed. The whole behaviour suite runs against uring with
``--walrus-backend=uring``.
"""

from __future__ import annotations

import array
import errno
import gc
import logging
import mmap
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import walrus_core.plugins as plugins
from walrus_core import (
    BackendUnavailableError,
    FsyncSchedule,
    StorageError,
    Walrus,
    available_backends,
)
from walrus_core.storage import OpenSpec, Storage, WriteOp

walrus_uring = pytest.importorskip("walrus_uring", reason="walrus-uring is not installed")

#: Blocks big enough for a 1000-entry batch of 4 KiB entries to fit in one block.
ONE_BLOCK: dict[str, Any] = {"block_size": 8 * 1024 * 1024, "blocks_per_file": 4}
#: Small blocks, many per file: a batch spans several blocks of one file (one storage).
MANY_BLOCKS: dict[str, Any] = {"block_size": 64 * 1024, "blocks_per_file": 64}


def require_uring() -> Any:
    """The liburing module, or skip (printing the probe's reason) when io_uring is refused;
    under CI=true the test fails instead."""
    reason = walrus_uring.probe()
    if reason is not None:
        print(f"io_uring unavailable: {reason}")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"io_uring unavailable under CI: {reason}")
        pytest.skip(f"io_uring unavailable: {reason}")
    import liburing  # type: ignore[import-untyped,import-not-found,unused-ignore]

    return liburing


@pytest.fixture
def liburing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """liburing, with io_uring enabled for this test (skips when the kernel refuses it) and
    every batch, whatever its size, sent to the ring."""
    monkeypatch.delenv(walrus_uring.DISABLE_ENV, raising=False)
    lib = require_uring()
    monkeypatch.setattr(walrus_uring, "RING_MIN", 0)
    monkeypatch.setattr(walrus_uring, "RING_MIN_SYNC", 0)
    return lib


def default_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's built-in size thresholds (whatever WALRUS_URING_RING_MIN* say)."""
    monkeypatch.setattr(walrus_uring, "RING_MIN", walrus_uring.DEFAULT_RING_MIN)
    monkeypatch.setattr(walrus_uring, "RING_MIN_SYNC", walrus_uring.DEFAULT_RING_MIN_SYNC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def wal_factory(data_dir: Path) -> Iterator[Callable[..., Walrus]]:
    """``wal_factory(**overrides)``: a uring Walrus on ``data_dir``, closed at teardown."""
    opened: list[Walrus] = []

    def factory(**kw: Any) -> Walrus:
        args: dict[str, Any] = {
            "data_dir": data_dir,
            "backend": "uring",
            "fsync": FsyncSchedule.no_fsync(),
            **ONE_BLOCK,
        }
        args.update(kw)
        wal = Walrus(**args)
        opened.append(wal)
        return wal

    yield factory
    for wal in opened:
        wal.close()


class Spy:
    """Stands in for a liburing function: records every call, then calls the real one (or
    ``replace`` when given)."""

    def __init__(self, fn: Callable[..., Any], replace: Callable[..., Any] | None = None) -> None:
        self.fn = fn
        self.replace = replace
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if self.replace is not None:
            return self.replace(self.fn, *args)
        return self.fn(*args)


def spy(
    monkeypatch: pytest.MonkeyPatch,
    lib: Any,
    name: str,
    replace: Callable[..., Any] | None = None,
) -> Spy:
    wrapper = Spy(getattr(lib, name), replace)
    monkeypatch.setattr(lib, name, wrapper)
    return wrapper


def payload(i: int, size: int = 1024) -> bytes:
    return (i.to_bytes(4, "little") * (size // 4 + 1))[:size]


def read_all(wal: Walrus, topic: str, consumer: str | None = None) -> list[bytes]:
    out: list[bytes] = []
    while (entry := wal.read_next(topic, consumer=consumer)) is not None:
        out.append(entry.data)
    return out


def count_datasyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors uring syncs with a separate fdatasync system call (not via the ring)."""
    calls: list[int] = []
    real = walrus_uring._datasync

    def datasync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(walrus_uring, "_datasync", datasync)
    return calls


def open_storage(path: Path, size: int = 8 << 20) -> Storage:
    """A file opened through the installed uring chain, as the engine opens its files."""
    return plugins.default_registry().chain("uring").open(OpenSpec(str(path), size, create=True))


def thread_ring_is_io_uring() -> bool:
    """The calling thread's ring descriptor is a kernel io_uring instance."""
    ring = walrus_uring._local.__dict__.get("ring")
    return ring is not None and os.readlink(f"/proc/self/fd/{ring.ring.ring_fd}") == (
        "anon_inode:[io_uring]"
    )


def ring_is_clean() -> bool:
    """The calling thread's ring has nothing in flight and no completion left unseen."""
    ring = walrus_uring._local.__dict__.get("ring")
    if ring is None:
        return True
    return bool(ring.inflight == 0 and ring.lib.io_uring_cq_ready(ring.ring) == 0)


# --- it really is io_uring ---------------------------------------------------------------------


def test_large_durable_batch_is_one_ring_submission(
    liburing: Any, wal_factory: Callable[..., Walrus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the installed thresholds: 1000 x 4 KiB in one block under sync_each is one
    submission: the run's pieces, their writeback-ahead and one linked fdatasync."""
    default_thresholds(monkeypatch)
    wal = wal_factory(fsync=FsyncSchedule.sync_each())
    assert wal.backend_chain == ("uring", "fd")
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    fsyncs = spy(monkeypatch, liburing, "io_uring_prep_fsync")
    writev = spy(monkeypatch, liburing, "io_uring_prep_writev")
    datasyncs = count_datasyncs(monkeypatch)
    data = [payload(i, 4096) for i in range(1000)]
    assert wal.batch_append_for_topic("t", data) == range(1000)
    assert len(submits.calls) == 1
    assert len(fsyncs.calls) == 1
    assert len(writev.calls) >= 3  # 4 MiB in pieces of about WRITEBACK_AHEAD
    assert datasyncs == []
    assert thread_ring_is_io_uring()
    assert read_all(wal, "t") == data
    assert ring_is_clean()


def test_small_batches_use_system_calls(
    liburing: Any, wal_factory: Callable[..., Walrus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the installed thresholds, small durable batches and (by default) batches without
    sync are written with pwritev (+ fdatasync): the ring would only add its hand-off."""
    default_thresholds(monkeypatch)
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    for fsync in (FsyncSchedule.sync_each(), FsyncSchedule.no_fsync()):
        wal = wal_factory(fsync=fsync)
        data = [payload(i) for i in range(1000)]
        wal.batch_append_for_topic("t", data)
        assert read_all(wal, "t") == data
        wal.close()
    assert submits.calls == []


def test_batch_is_one_ring_submission(
    liburing: Any, wal_factory: Callable[..., Walrus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without sync, on the ring: 1000 x 1 KiB in one block = one submission of one SQE."""
    wal = wal_factory()
    assert wal.backend_chain == ("uring", "fd")
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    writev = spy(monkeypatch, liburing, "io_uring_prep_writev")
    data = [payload(i) for i in range(1000)]
    assert wal.batch_append_for_topic("t", data) == range(1000)
    assert len(submits.calls) == 1
    assert len(writev.calls) == 1  # one block: one run, one SQE
    assert read_all(wal, "t") == data
    assert ring_is_clean()


def test_batch_over_several_blocks_is_still_one_submission(
    liburing: Any,
    wal_factory: Callable[..., Walrus],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wal = wal_factory(**MANY_BLOCKS)
    wal.append_for_topic("t", b"first")
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    writev = spy(monkeypatch, liburing, "io_uring_prep_writev")
    data = [payload(i, 3000) for i in range(100)]  # ~300 KiB: five blocks of one file
    wal.batch_append_for_topic("t", data)
    assert len(submits.calls) == 1
    assert len(writev.calls) >= 5  # a run per block, and the seal records
    assert read_all(wal, "t") == [b"first", *data]
    wal.close()
    with Walrus(
        data_dir=data_dir, backend="uring", fsync=FsyncSchedule.no_fsync(), **MANY_BLOCKS
    ) as again:
        assert read_all(again, "t", consumer="fresh") == [b"first", *data]


def test_runs_of_more_than_iov_max_buffers_are_split(
    liburing: Any,
    wal_factory: Callable[..., Walrus],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1000 entries = 2000 buffers: above JOIN_MAX they go as writev SQEs of RING_IOV_MAX
    buffers at most (liburing's iovec takes no more), contiguous, still in one submission."""
    monkeypatch.setattr(walrus_uring, "JOIN_MAX", 0)
    wal = wal_factory()
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    writev = spy(monkeypatch, liburing, "io_uring_prep_writev")
    data = [payload(i, 100 + i % 50) for i in range(1000)]
    wal.batch_append_for_topic("t", data)
    assert len(submits.calls) == 1
    counts = [len(call[2]) for call in writev.calls]
    assert counts == [walrus_uring.RING_IOV_MAX] * 33 + [2000 - 33 * walrus_uring.RING_IOV_MAX]
    assert [call[3] for call in writev.calls] == counts  # nr_vecs: every buffer is written
    offsets = [call[4] for call in writev.calls]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert read_all(wal, "t") == data
    wal.close()
    with Walrus(data_dir=data_dir, backend="fd", **ONE_BLOCK) as again:
        assert read_all(again, "t", consumer="fresh") == data


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "syscalls"])
def test_memoryview_and_odd_buffers(
    liburing: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ring: bool
) -> None:
    """Views, bytearrays, arrays, mmaps and non-contiguous views are written exactly, all on the
    ring (as flat byte views; a non-contiguous one as a copy), and no buffer stays exported
    afterwards."""
    if not ring:
        monkeypatch.setattr(walrus_uring, "RING_MIN_SYNC", 1 << 62)
    writev = spy(monkeypatch, liburing, "io_uring_prep_writev")
    storage = open_storage(tmp_path / "f")
    try:
        ba = bytearray(b"B" * 100)
        whole = memoryview(bytearray(b"W" * 50))
        part = memoryview(b"0123456789")[2:7]
        arr = array.array("i", [1, 2, 3])
        mm = mmap.mmap(-1, 4096)
        mm.write(b"M" * 64)
        strided = memoryview(b"abcdefgh")[::2]
        ops = [
            WriteOp(0, [b"h" * 10, ba, whole], 160),
            WriteOp(1000, (part, memoryview(arr)), 5 + arr.itemsize * 3),
            WriteOp(2000, [memoryview(mm)[:64], strided], 68),
        ]
        storage.batch_submit(ops, True)
        assert storage.read(0, 160) == b"h" * 10 + bytes(ba) + bytes(whole)
        assert storage.read(1000, 17) == b"23456" + arr.tobytes()
        assert storage.read(2000, 68) == b"M" * 64 + b"aceg"
        assert [call[4] for call in writev.calls] == ([0, 1000, 2000] if ring else [])
        writev.calls.clear()  # the spy's record holds the iovecs, and so the views
        del ops
        gc.collect()
        ba.extend(b"resizable again")  # no export left behind
        whole.release()
        mm.close()
        assert ring_is_clean()
    finally:
        storage.close()


def test_single_operations_stay_with_fd(liburing: Any, tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "f")
    try:
        fd_plugin = plugins.default_registry()._backends["fd"].plugin
        assert storage.chain == ("uring", "fd")
        assert storage.write.__func__ is fd_plugin.walrus_write  # type: ignore[attr-defined]
        assert storage.read.__func__ is fd_plugin.walrus_read  # type: ignore[attr-defined]
        assert storage.flush.__func__ is fd_plugin.walrus_flush  # type: ignore[attr-defined]
        submit = storage.batch_submit.__func__  # type: ignore[attr-defined]
        assert submit is walrus_uring.walrus_batch_submit
        # fd's hooks get fd's own handle (the chain rule); uring's handle wraps the fd storage.
        assert storage.write.__self__ is storage.handle.lower.handle  # type: ignore[attr-defined]
        assert storage.handle.fileno() == storage.handle.lower.handle.fileno()
    finally:
        storage.close()


def test_empty_and_zero_length_ops(liburing: Any, tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "f")
    try:
        storage.batch_submit([], False)
        storage.batch_submit([], True)
        storage.batch_submit([WriteOp(0, [], 0), WriteOp(10, [b""], 0)], True)
        storage.batch_submit([WriteOp(0, [b""], 0), WriteOp(10, [b"xyz"], 3)], False)
        assert storage.read(10, 3) == b"xyz"
        assert ring_is_clean()
    finally:
        storage.close()


# --- sync_each: the linked fdatasync ---------------------------------------------------------


def test_sync_each_batch_links_an_fdatasync(
    liburing: Any, wal_factory: Callable[..., Walrus], monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = wal_factory(fsync=FsyncSchedule.sync_each())
    wal.append_for_topic("t", b"before")  # single appends go to fd (O_DSYNC)
    submits = spy(monkeypatch, liburing, "io_uring_submit")
    fsyncs = spy(monkeypatch, liburing, "io_uring_prep_fsync")
    flags = spy(monkeypatch, liburing, "io_uring_sqe_set_flags")
    datasyncs: list[int] = []
    monkeypatch.setattr(walrus_uring, "_datasync", datasyncs.append)
    data = [payload(i) for i in range(500)]
    wal.batch_append_for_topic("t", data)
    assert len(submits.calls) == 1
    assert len(fsyncs.calls) == 1
    assert fsyncs.calls[0][2] == walrus_uring.IORING_FSYNC_DATASYNC
    # the write SQE is linked to the fdatasync SQE that follows it
    assert [call[1] for call in flags.calls] == [walrus_uring.IOSQE_IO_LINK]
    assert datasyncs == []  # no separate fdatasync system call
    assert read_all(wal, "t") == [b"before", *data]


def test_sync_each_starts_writeback_of_large_runs(
    liburing: Any, wal_factory: Callable[..., Walrus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a multi-run durable batch, each large run but the last is followed (hard-linked, so
    a refusal cannot cancel the chain) by a sync_file_range that starts its writeback."""
    monkeypatch.setattr(walrus_uring, "WRITEBACK_AHEAD", 32 * 1024)
    wal = wal_factory(fsync=FsyncSchedule.sync_each(), **MANY_BLOCKS)
    sfr = spy(monkeypatch, liburing, "io_uring_prep_sync_file_range")
    fsyncs = spy(monkeypatch, liburing, "io_uring_prep_fsync")
    flags = spy(monkeypatch, liburing, "io_uring_sqe_set_flags")
    data = [payload(i, 4000) for i in range(60)]  # ~240 KiB: four blocks
    wal.batch_append_for_topic("t", data)
    assert len(sfr.calls) >= 2
    assert all(call[4] == walrus_uring.SYNC_FILE_RANGE_WRITE for call in sfr.calls)
    assert len(fsyncs.calls) == 1
    used = [call[1] for call in flags.calls]
    assert used.count(walrus_uring.IOSQE_IO_HARDLINK) == len(sfr.calls)
    assert set(used) == {walrus_uring.IOSQE_IO_LINK, walrus_uring.IOSQE_IO_HARDLINK}
    assert read_all(wal, "t") == data


def test_refused_writeback_does_not_fail_the_batch(
    liburing: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses sync_file_range: the batch still succeeds, fully synced, and
    the file stops asking for it."""
    monkeypatch.setattr(walrus_uring, "WRITEBACK_AHEAD", 1)

    def bad_range(real: Callable[..., Any], sqe: Any, fd: int, *rest: Any) -> Any:
        return real(sqe, -1, *rest)  # EBADF, like a refusal

    sfr = spy(monkeypatch, liburing, "io_uring_prep_sync_file_range", bad_range)
    datasyncs = count_datasyncs(monkeypatch)
    storage = open_storage(tmp_path / "f")
    try:
        ops = [WriteOp(0, [b"a" * 100], 100), WriteOp(4096, [b"b" * 100], 100)]
        storage.batch_submit(ops, True)
        assert len(sfr.calls) == 1
        assert storage.handle.writeback is False
        assert datasyncs == []  # the linked fdatasync still ran: hard links do not sever
        storage.batch_submit(ops, True)
        assert len(sfr.calls) == 1
        assert storage.read(0, 100) == b"a" * 100 and storage.read(4096, 100) == b"b" * 100
        assert ring_is_clean()
    finally:
        storage.close()


# --- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["no_fsync", "sync_each"])
def test_failed_completion_is_a_storage_error_and_the_wal_survives(
    liburing: Any,
    wal_factory: Callable[..., Walrus],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    schedule: str,
) -> None:
    """A writev whose completion is negative (EBADF: a read-only descriptor swapped in by a spy)
    surfaces as StorageError from batch_append_for_topic; the CQE is reaped and marked seen,
    nothing earlier is lost and the WAL keeps working."""
    fsync = getattr(FsyncSchedule, schedule)()
    wal = wal_factory(fsync=fsync, **MANY_BLOCKS)
    before = [payload(i, 500) for i in range(50)]
    wal.batch_append_for_topic("t", before)
    wal.append_for_topic("t", b"single")
    (tmp_path / "ro").write_bytes(b"x")
    ro = os.open(tmp_path / "ro", os.O_RDONLY)

    def to_readonly(real: Callable[..., Any], sqe: Any, fd: int, *rest: Any) -> Any:
        return real(sqe, ro, *rest)

    try:
        with monkeypatch.context() as patch:
            spy(patch, liburing, "io_uring_prep_writev", to_readonly)
            with pytest.raises(StorageError) as info:
                wal.batch_append_for_topic("t", [payload(i, 700) for i in range(40)])
        assert info.value.errno == errno.EBADF
        assert ring_is_clean()
    finally:
        os.close(ro)
    after = [payload(i, 600) for i in range(100, 130)]
    wal.batch_append_for_topic("t", after)
    wal.append_for_topic("t", b"last")
    expected = [*before, b"single", *after, b"last"]
    assert read_all(wal, "t") == expected
    wal.close()
    with Walrus(data_dir=data_dir, backend="uring", **MANY_BLOCKS) as again:
        assert read_all(again, "t", consumer="fresh") == expected


def test_negative_result_raises_oserror_with_its_errno(liburing: Any, tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "f")
    handle = storage.handle
    real_fd = handle.fd
    try:
        handle.fd = 1_000_000  # not an open descriptor
        for sync in (False, True):
            with pytest.raises(OSError) as info:
                storage.batch_submit([WriteOp(0, [b"data"], 4)], sync)
            assert info.value.errno == errno.EBADF
            assert ring_is_clean()
        handle.fd = real_fd
        storage.batch_submit([WriteOp(0, [b"data"], 4)], True)
        assert storage.read(0, 4) == b"data"
    finally:
        handle.fd = real_fd
        storage.close()


@pytest.mark.parametrize("sync", [False, True])
def test_short_writes_are_completed(
    liburing: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """A writev that writes less than asked (here: an iovec missing its last buffer) is
    completed with pwritev; under sync the chain it cut is re-synced with fdatasync."""

    def short(real: Callable[..., Any], items: list[Any]) -> Any:
        return real(items[:-1] if len(items) > 1 else items)

    monkeypatch.setattr(walrus_uring, "JOIN_MAX", 0)
    spy(monkeypatch, liburing, "iovec", short)
    datasyncs = count_datasyncs(monkeypatch)
    completed: list[tuple[int, int]] = []
    real_from = walrus_uring._pwritev_from

    def pwritev_from(fd: int, buffers: Any, offset: int, nbytes: int, done: int) -> None:
        completed.append((offset, done))
        real_from(fd, buffers, offset, nbytes, done)

    monkeypatch.setattr(walrus_uring, "_pwritev_from", pwritev_from)
    storage = open_storage(tmp_path / "f")
    try:
        many = [payload(i, 10) for i in range(1500)]  # split over two SQEs, both short
        ops = [
            WriteOp(0, [b"abc", b"defg", b"hij"], 10),
            WriteOp(100, many, 15000),
            WriteOp(20000, [b"only"], 4),
        ]
        storage.batch_submit(ops, sync)
        assert storage.read(0, 10) == b"abcdefghij"
        assert storage.read(100, 15000) == b"".join(many)
        assert storage.read(20000, 4) == b"only"
        # the single-SQE run continues after its 7 bytes; the split run is rewritten whole
        assert sorted(completed) == [(0, 7), (100, 0)]
        assert len(datasyncs) == (1 if sync else 0)
        assert ring_is_clean()
    finally:
        storage.close()


# --- rings --------------------------------------------------------------------------------------


def test_rings_are_per_thread_and_grow(liburing: Any, tmp_path: Path) -> None:
    storage = open_storage(tmp_path / "f", 64 << 20)
    rings: dict[int, Any] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for round_ in range(20):
                base = (n * 20 + round_) * 65536
                ops = [
                    WriteOp(base + k * 1024, [payload(n * 1000 + k, 1000)], 1000) for k in range(40)
                ]
                storage.batch_submit(ops, round_ % 5 == 0)
                for k in (0, 39):
                    assert storage.read(base + k * 1024, 1000) == payload(n * 1000 + k, 1000)
            rings[n] = walrus_uring._local.ring
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len({id(r) for r in rings.values()}) == 4
        assert all(r.entries >= 41 for r in rings.values())
        # a batch bigger than the ring: the ring grows (powers of two) to hold it
        ops = [WriteOp(k * 16, [b"x" * 16], 16) for k in range(300)]
        storage.batch_submit(ops, True)
        assert walrus_uring._local.ring.entries >= 301
        too_many = [WriteOp(k * 8, [b"y" * 8], 8) for k in range(walrus_uring.MAX_RING + 10)]
        storage.batch_submit(too_many, True)  # in several submissions, in order
        assert storage.read(0, 8 * len(too_many)) == b"y" * 8 * len(too_many)
        biggest = walrus_uring._local.ring
        assert biggest.entries == walrus_uring.MAX_RING
        storage.batch_submit(too_many, False)
        assert walrus_uring._local.ring is biggest  # kept, not rebuilt for every big batch
    finally:
        storage.close()
    rings.clear()
    gc.collect()


# --- probe and fallback --------------------------------------------------------------------------


@pytest.fixture
def disabled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """io_uring disabled by the environment switch; probe cache and fallback log reset."""
    monkeypatch.setenv(walrus_uring.DISABLE_ENV, "1")
    monkeypatch.delenv("WALRUS_BACKEND", raising=False)
    monkeypatch.delenv("WALRUS_PLATFORM", raising=False)
    monkeypatch.setattr(plugins, "_logged_fallbacks", set())
    walrus_uring.clear_probe_cache()
    yield
    walrus_uring.clear_probe_cache()


def fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "walrus_core.plugins" and r.levelno == logging.INFO
    ]


def test_probe_reason_when_disabled(disabled: None) -> None:
    assert walrus_uring.probe() == "disabled by WALRUS_DISABLE_IO_URING"
    status = {s.name: s for s in available_backends()}["uring"]
    assert status.available is False
    assert status.reason is not None and "disabled by WALRUS_DISABLE_IO_URING" in status.reason
    assert status.layers_over == "fd"


def test_explicit_uring_raises_when_disabled(disabled: None, data_dir: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="disabled by WALRUS_DISABLE_IO_URING"):
        Walrus(data_dir=data_dir, backend="uring", **ONE_BLOCK)


@pytest.mark.parametrize("backend", ["uring,fd", "auto"])
def test_fallback_to_fd_logs_why_once(
    disabled: None, data_dir: Path, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    caplog.set_level(logging.INFO, logger="walrus_core.plugins")
    with Walrus(data_dir=data_dir, backend=backend, **ONE_BLOCK) as wal:
        assert wal.backend_chain == ("fd",)
        wal.batch_append_for_topic("t", [b"a", b"b"])
        assert read_all(wal, "t") == [b"a", b"b"]
    lines = fallback_lines(caplog)
    assert len(lines) == 1
    assert "'fd'" in lines[0] and "disabled by WALRUS_DISABLE_IO_URING" in lines[0]
    with Walrus(data_dir=data_dir, backend=backend, **ONE_BLOCK) as wal:
        assert wal.backend_chain == ("fd",)
    assert len(fallback_lines(caplog)) == 1  # one line per process and reason


def test_auto_prefers_uring_when_it_works(
    liburing: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WALRUS_BACKEND", raising=False)
    monkeypatch.delenv("WALRUS_PLATFORM", raising=False)
    with Walrus(data_dir=data_dir, backend="auto", **ONE_BLOCK) as wal:
        assert wal.backend_chain == ("uring", "fd")
    monkeypatch.setenv("WALRUS_PLATFORM", "darwin")
    with Walrus(data_dir=data_dir, backend="auto", **ONE_BLOCK) as wal:
        assert wal.backend_chain == ("fd",)


def test_probe_runs_the_kernel_check_once(liburing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once per process: one probe child, then one ring setup here."""
    walrus_uring.clear_probe_cache()
    inits = spy(monkeypatch, liburing, "io_uring_queue_init")
    children = spy(monkeypatch, walrus_uring, "_child_command")
    for _ in range(3):
        assert walrus_uring.probe() is None
    assert len(children.calls) == 1
    assert len(inits.calls) == 1


def test_probe_reports_a_refused_ring(liburing: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(real: Callable[..., Any], *args: Any) -> Any:
        raise OSError(errno.EPERM, "Operation not permitted")

    walrus_uring.clear_probe_cache()
    try:
        with monkeypatch.context() as patch:
            spy(patch, liburing, "io_uring_queue_init", refuse)
            reason = walrus_uring.probe()
        assert reason is not None and "io_uring_setup failed" in reason
    finally:
        walrus_uring.clear_probe_cache()
    assert walrus_uring.probe() is None


# --- a liburing that cannot run here ------------------------------------------------------------


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """io_uring not disabled by the environment, the probe cache and fallback log reset."""
    monkeypatch.delenv(walrus_uring.DISABLE_ENV, raising=False)
    monkeypatch.delenv("WALRUS_BACKEND", raising=False)
    monkeypatch.delenv("WALRUS_PLATFORM", raising=False)
    monkeypatch.setattr(plugins, "_logged_fallbacks", set())
    walrus_uring.clear_probe_cache()
    yield
    walrus_uring.clear_probe_cache()


def no_child(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) any attempt to start the probe child."""
    started: list[Any] = []

    def command(sysctl: int | None) -> list[str]:
        started.append(sysctl)
        raise AssertionError("the probe child must not start")

    monkeypatch.setattr(walrus_uring, "_child_command", command)
    return started


def test_probe_refuses_another_liburing_release_without_loading_it(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other release (the 2026.x wheels die with SIGILL on CPUs without AVX-512) is refused
    from its metadata alone: no child, no import."""
    monkeypatch.setattr(walrus_uring, "_installed_liburing", lambda: "2026.3.30")
    started = no_child(monkeypatch)
    reason = walrus_uring.probe()
    assert reason is not None
    assert "liburing 2026.3.30 is installed" in reason
    assert f"liburing=={walrus_uring.LIBURING_VERSION}" in reason
    assert started == []


def test_probe_names_the_liburing_to_install(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walrus_uring, "_installed_liburing", lambda: None)
    started = no_child(monkeypatch)
    reason = walrus_uring.probe()
    assert reason is not None
    assert f"pip install liburing=={walrus_uring.LIBURING_VERSION}" in reason
    assert started == []


def test_installed_liburing_is_the_pinned_release(liburing: Any) -> None:
    assert walrus_uring._installed_liburing() == walrus_uring.LIBURING_VERSION
    assert liburing.__version__ == walrus_uring.LIBURING_VERSION


def test_a_liburing_that_kills_its_process_only_kills_the_probe_child(
    fresh_probe: None,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A binary that dies with SIGILL (built for CPUs with AVX-512, say) kills only the probe's
    child: the probe says so, "uring" alone raises with that reason, "uring,fd" falls back to
    fd with one log line."""
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    monkeypatch.setattr(walrus_uring, "_child_command", lambda sysctl: crash)
    reason = walrus_uring.probe()
    assert reason is not None
    assert "killed the io_uring probe process with SIGILL" in reason
    assert "illegal instruction" in reason
    with pytest.raises(BackendUnavailableError, match="SIGILL"):
        Walrus(data_dir=data_dir, backend="uring", **ONE_BLOCK)
    caplog.set_level(logging.INFO, logger="walrus_core.plugins")
    with Walrus(data_dir=data_dir, backend="uring,fd", **ONE_BLOCK) as wal:
        assert wal.backend_chain == ("fd",)
        wal.batch_append_for_topic("t", [b"a", b"b"])
        assert read_all(wal, "t") == [b"a", b"b"]
    lines = fallback_lines(caplog)
    assert len(lines) == 1 and "SIGILL" in lines[0]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("import sys; sys.exit(3)", "the io_uring probe process failed (exit 3)"),
        ("print('not json')", "the io_uring probe process failed (exit 0)"),
        ("import os; os.kill(os.getpid(), 9)", "with SIGKILL"),
        ('print(\'{"reason": "no ring for you"}\')', "no ring for you"),
    ],
    ids=["exit", "garbage", "killed", "refused"],
)
def test_probe_child_failures_are_reasons(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch, script: str, expected: str
) -> None:
    monkeypatch.setattr(
        walrus_uring, "_child_command", lambda sysctl: [sys.executable, "-c", script]
    )
    reason = walrus_uring.probe()
    assert reason is not None and expected in reason


def test_probe_child_checks_this_interpreters_liburing(liburing: Any) -> None:
    """The real probe child: it loads the liburing of this sys.path and passes here."""
    command = walrus_uring._child_command(walrus_uring._read_sysctl())
    assert command[:2] == [sys.executable, "-I"]
    assert walrus_uring._probe_in_child(walrus_uring.LIBURING_VERSION, None) is None


def test_kernel_flags_match_liburing_where_it_exposes_them(liburing: Any) -> None:
    """The kernel ABI values spelled out in the plugin, against liburing's own enums (which its
    2024.5.3 modules hold, whether or not the Cython it was built with exports them)."""
    import liburing.common as common  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import liburing.file as file  # type: ignore[import-untyped,import-not-found,unused-ignore]
    import liburing.queue as queue  # type: ignore[import-untyped,import-not-found,unused-ignore]

    expected = {
        "IOSQE_IO_LINK": (queue, "__queue_define__"),
        "IOSQE_IO_HARDLINK": (queue, "__queue_define__"),
        "IORING_FSYNC_DATASYNC": (common, "__common_define__"),
        "SYNC_FILE_RANGE_WRITE": (file, "__file_define__"),
    }
    for name, (module, enum_name) in expected.items():
        value = getattr(liburing, name, None)
        if value is None:
            value = getattr(getattr(module, enum_name), name)
        assert int(value) == getattr(walrus_uring, name), name
    iov_max = common.__common_define__.SC_IOV_MAX
    assert int(iov_max) == walrus_uring.RING_IOV_MAX
    with pytest.raises(OverflowError):
        liburing.iovec([b"x"] * (walrus_uring.RING_IOV_MAX + 1))
