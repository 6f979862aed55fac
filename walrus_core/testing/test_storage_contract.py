"""The storage hooks, called the way the engine calls them: resolved once through the chain of
the backend under test and invoked directly on the :class:`~walrus_core.storage.Storage`."""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path

import pytest

from walrus_core.plugins import BackendRegistry
from walrus_core.storage import BackendInfo, WriteOp
from walrus_core.testing.guarantee import broken, first_difference
from walrus_core.testing.plugin import StorageOpener

MiB = 1 << 20


def _pattern(n: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) % 251 for i in range(n))


def _expect(got: bytes, expected: bytes, guarantee: str) -> None:
    assert bytes(got) == expected, broken(guarantee, first_difference(bytes(got), expected))


def test_hook_walrus_backend_info_describes_the_backend(
    walrus_base_backend: str, walrus_registry: BackendRegistry, walrus_backend_info: BackendInfo
) -> None:
    """walrus_backend_info returns a BackendInfo whose probe says the backend can run here."""
    info = walrus_backend_info
    assert isinstance(info.version, str) and info.version, broken(
        "walrus_backend_info names a version", repr(info.version)
    )
    reason = info.probe()
    assert reason is None, broken("the probe of a selectable backend passes", str(reason))
    if info.layers_over is not None:
        below = walrus_registry.info(info.layers_over)
        assert isinstance(below, BackendInfo), broken("a layer's lower backend is installed")


def test_hook_walrus_open_creates_the_file_at_its_size(open_storage: StorageOpener) -> None:
    """walrus_open with create makes the file at spec.path, at least spec.size bytes long."""
    storage = open_storage("created", 3 * MiB)
    path = Path(storage.path)
    assert path.exists(), broken("walrus_open creates the file at spec.path", str(path))
    assert path.stat().st_size >= 3 * MiB, broken(
        "walrus_open sizes the file to at least spec.size", f"{path.stat().st_size} bytes"
    )


def test_hook_walrus_open_sizes_sparsely(open_storage: StorageOpener, tmp_path: Path) -> None:
    """walrus_open extends a file sparsely: sizing it writes no zeros."""
    probe = tmp_path / "sparse-probe"
    with open(probe, "wb") as fh:
        fh.truncate(16 * MiB)
    if probe.stat().st_blocks * 512 >= 8 * MiB:
        pytest.skip("this file system does not keep sparse files; nothing to check")
    storage = open_storage("sparse", 16 * MiB)
    allocated = Path(storage.path).stat().st_blocks * 512
    assert allocated < 8 * MiB, broken(
        "walrus_open extends sparsely (ftruncate), never by writing zeros",
        f"{allocated} bytes allocated for a 16 MiB file nobody wrote",
    )


def test_hook_walrus_open_refuses_a_missing_file_without_create(
    open_storage: StorageOpener,
) -> None:
    """walrus_open without create raises OSError (ENOENT) for a file that does not exist."""
    with pytest.raises(OSError) as raised:
        open_storage("missing", MiB, create=False)
    assert raised.value.errno == errno.ENOENT, broken(
        "a missing file without create is OSError(ENOENT)", repr(raised.value)
    )


def test_hook_walrus_open_keeps_bytes_and_never_shrinks(open_storage: StorageOpener) -> None:
    """Reopening a file keeps its bytes; a smaller spec.size never shrinks it, a larger one
    extends it."""
    data = _pattern(5000, 1)
    storage = open_storage("kept", MiB)
    storage.write(MiB - 5000, [data], len(data))
    storage.flush()
    open_storage.close(storage)
    again = open_storage("kept", 4096, create=False)
    _expect(again.read(MiB - 5000, 5000), data, "bytes written stay in the file after a reopen")
    assert Path(again.path).stat().st_size >= MiB, broken("reopening never shrinks the file")
    open_storage.close(again)
    bigger = open_storage("kept", 2 * MiB, create=False)
    assert Path(bigger.path).stat().st_size >= 2 * MiB, broken(
        "reopening with a larger spec.size extends the file"
    )
    _expect(bigger.read(MiB - 5000, 5000), data, "extending a file keeps its bytes")


def test_hook_walrus_write_then_read_returns_the_bytes(open_storage: StorageOpener) -> None:
    """walrus_write puts the buffers back to back at the offset; walrus_read returns them."""
    storage = open_storage()
    buffers = [_pattern(100, 2), bytearray(_pattern(33, 3)), memoryview(_pattern(4000, 4))]
    expected = b"".join(bytes(b) for b in buffers)
    storage.write(12345, buffers, len(expected))
    _expect(storage.read(12345, len(expected)), expected, "a read returns the bytes written")
    _expect(storage.read(12345 + 100, 33), expected[100:133], "a read at an inner offset")


def test_hook_walrus_write_takes_more_buffers_than_iov_max(open_storage: StorageOpener) -> None:
    """walrus_write of thousands of small buffers (more than one pwritev takes) lands them all,
    in order."""
    buffers = [bytes([i % 256]) * (i % 7 + 1) for i in range(3000)]
    expected = b"".join(buffers)
    storage = open_storage()
    storage.write(4096, buffers, len(expected))
    _expect(storage.read(4096, len(expected)), expected, "every buffer lands, in order")


def test_hook_walrus_write_copies_what_it_keeps(open_storage: StorageOpener) -> None:
    """Buffers are valid only during the call: changing one afterwards changes nothing."""
    storage = open_storage()
    buf = bytearray(b"A" * 512)
    storage.write(0, [buf], len(buf))
    buf[:] = b"B" * 512
    _expect(storage.read(0, 512), b"A" * 512, "a write keeps the bytes as they were")


def test_hook_walrus_write_overwrites_exactly_its_range(open_storage: StorageOpener) -> None:
    """A write changes its own range only: bytes on both sides stay."""
    storage = open_storage()
    storage.write(0, [b"x" * 8192], 8192)
    storage.write(4000, [b"yz"], 2)
    expected = b"x" * 4000 + b"yz" + b"x" * 4190
    _expect(storage.read(0, 8192), expected, "a write changes only its own range")


def test_hook_walrus_read_of_unwritten_bytes_is_zeros(open_storage: StorageOpener) -> None:
    """Bytes never written read as zeros."""
    storage = open_storage()
    storage.write(1000, [b"data"], 4)
    _expect(storage.read(0, 1000), bytes(1000), "unwritten bytes read as zeros")
    _expect(storage.read(500_000, 4096), bytes(4096), "unwritten bytes read as zeros")


def test_hook_walrus_read_is_short_only_at_end_of_file(open_storage: StorageOpener) -> None:
    """A read that reaches past the end returns the bytes up to the end, and nothing past it."""
    storage = open_storage("short", MiB)
    size = Path(storage.path).stat().st_size
    tail = _pattern(10, 5)
    storage.write(size - 10, [tail], 10)
    got = bytes(storage.read(size - 10, 100))
    _expect(got, tail, "a read past the end returns the bytes up to the end")
    assert bytes(storage.read(size, 10)) == b"", broken(
        "a read at the end of the file returns nothing"
    )


def test_hook_walrus_flush_makes_writes_durable_and_can_run_any_time(
    open_storage: StorageOpener,
) -> None:
    """walrus_flush returns with nothing written, after writes, and twice in a row; the bytes
    stay readable."""
    storage = open_storage()
    storage.flush()
    storage.write(0, [b"flushed"], 7)
    storage.flush()
    storage.flush()
    _expect(storage.read(0, 7), b"flushed", "a flush keeps the bytes readable")


def test_hook_walrus_batch_submit_writes_every_run(open_storage: StorageOpener) -> None:
    """walrus_batch_submit writes every run at its offset, synced or not."""
    storage = open_storage()
    for sync in (False, True):
        base = 0 if not sync else 512 * 1024
        runs = [
            WriteOp(base + i * 8192 + (i % 3) * 17, [_pattern(300 + i, i), b"|" * i], 300 + 2 * i)
            for i in range(40)
        ]
        storage.batch_submit(runs, sync)
        for op in runs:
            expected = b"".join(bytes(b) for b in op.buffers)
            _expect(
                storage.read(op.offset, op.nbytes),
                expected,
                f"batch_submit(sync={sync}) writes run at {op.offset}",
            )


def test_hook_walrus_discard_gives_a_range_back(open_storage: StorageOpener) -> None:
    """walrus_discard (when implemented) makes a range read as zeros, keeps the size and the
    bytes around it."""
    storage = open_storage("discard", MiB)
    if storage.discard is None:
        pytest.skip("the chain implements no walrus_discard (optional hook)")
    block = 64 * 1024
    data = _pattern(3 * block, 6)
    storage.write(0, [data], len(data))
    storage.flush()
    size = Path(storage.path).stat().st_size
    try:
        storage.discard(block, block)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            pytest.skip(f"this file system refuses to discard: {exc}")
        raise
    _expect(storage.read(block, block), bytes(block), "a discarded range reads as zeros")
    _expect(storage.read(0, block), data[:block], "bytes before a discarded range stay")
    _expect(storage.read(2 * block, block), data[2 * block :], "bytes after it stay")
    assert Path(storage.path).stat().st_size == size, broken("a discard keeps the file's size")


def test_hook_walrus_close_releases_the_file(open_storage: StorageOpener) -> None:
    """walrus_close releases the handle; the file can be opened again and holds the bytes."""
    storage = open_storage("closed")
    storage.write(0, [b"closing"], 7)
    storage.flush()
    open_storage.close(storage)
    again = open_storage("closed", create=False)
    _expect(again.read(0, 7), b"closing", "a closed file keeps its bytes")


def test_sync_each_storage_reads_back_what_it_writes(open_storage: StorageOpener) -> None:
    """A file opened with sync_each takes single writes and batches like any other."""
    storage = open_storage("synced", sync_each=True)
    storage.write(0, [b"one", b"two"], 6)
    storage.batch_submit([WriteOp(4096, [b"three"], 5)], True)
    _expect(storage.read(0, 6), b"onetwo", "sync_each writes read back")
    _expect(storage.read(4096, 5), b"three", "sync_each batches read back")


def test_reads_run_alongside_writes_on_one_handle(open_storage: StorageOpener) -> None:
    """Reads from several threads, alongside writes and flushes of the same handle, always
    return the bytes of the ranges written before them."""
    storage = open_storage("concurrent", 4 * MiB)
    chunk = 4096
    chunks = 400
    written = 0  # chunks [0, written) are complete
    lock = threading.Lock()
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        nonlocal written
        try:
            for i in range(chunks):
                storage.write(i * chunk, [_pattern(chunk, i)], chunk)
                if i % 50 == 0:
                    storage.flush()
                with lock:
                    written = i + 1
        except BaseException as exc:  # reported by the main thread
            errors.append(f"writer: {exc!r}")
        finally:
            stop.set()

    def reader(seed: int) -> None:
        n = seed
        while not stop.is_set():
            with lock:
                done = written
            if done:
                i = (n * 7919) % done
                got = bytes(storage.read(i * chunk, chunk))
                if got != _pattern(chunk, i):
                    errors.append(f"chunk {i}: {first_difference(got, _pattern(chunk, i))}")
                    return
            n += 1

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(s,)) for s in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, broken("reads alongside writes return the bytes written", errors[0])


def test_hook_walrus_open_reports_a_bad_path_as_oserror(open_storage: StorageOpener) -> None:
    """Creating a file under a path that is not a directory raises OSError (ENOTDIR), not
    another exception."""
    (open_storage.directory / "plain").write_bytes(b"not a directory")
    with pytest.raises(OSError) as raised:
        open_storage("plain/file", MiB)
    assert raised.value.errno in (errno.ENOTDIR, errno.ENOENT), broken(
        "a path that cannot hold the file is OSError with its errno", repr(raised.value)
    )


def test_hook_walrus_discard_of_one_small_block_spares_its_neighbours(
    open_storage: StorageOpener,
) -> None:
    """walrus_discard of a 4 KiB range (the smallest block the engine uses) zeroes exactly
    that range: the blocks on both sides keep every byte."""
    storage = open_storage("discard-small", MiB)
    if storage.discard is None:
        pytest.skip("the chain implements no walrus_discard (optional hook)")
    block = 4096
    data = _pattern(6 * block, 9)
    storage.write(0, [data], len(data))
    storage.flush()
    try:
        storage.discard(2 * block, block)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            pytest.skip(f"this file system refuses to discard: {exc}")
        raise
    _expect(storage.read(2 * block, block), bytes(block), "a discarded block reads as zeros")
    _expect(storage.read(0, 2 * block), data[: 2 * block], "a discard spares the bytes before")
    _expect(
        storage.read(3 * block, 3 * block), data[3 * block :], "a discard spares the bytes after"
    )


def test_hook_walrus_read_across_large_boundaries_is_whole(open_storage: StorageOpener) -> None:
    """A read is whole wherever it starts and ends: across 4 KiB pages, 64 KiB chunks and
    1 MiB, and for sizes of a few MiB."""
    storage = open_storage("boundaries", 8 * MiB)
    data = _pattern(5 * MiB, 10)
    storage.write(0, [data], len(data))
    for offset, size in [(65_536 - 3, 10), (4093, 70_000), (MiB - 1, 2), (17, 3 * MiB + 5)]:
        _expect(
            storage.read(offset, size),
            data[offset : offset + size],
            f"a read returns the bytes written (offset {offset}, {size} bytes)",
        )


def test_hook_walrus_read_returns_bytes_that_stay(open_storage: StorageOpener) -> None:
    """What walrus_read returned stays as it was while the file changes and other reads run:
    the engine keeps returned bytes (read-ahead, cursors) without copying them."""
    storage = open_storage("kept")
    storage.write(0, [b"A" * 8192], 8192)
    first = storage.read(0, 4096)
    storage.write(0, [b"B" * 8192], 8192)
    storage.read(0, 8192)
    storage.read(4096, 4096)
    assert bytes(first) == b"A" * 4096, broken(
        "bytes returned by a read do not change afterwards",
        first_difference(bytes(first), b"A" * 4096),
    )


def test_concurrent_writes_of_disjoint_ranges_all_land(open_storage: StorageOpener) -> None:
    """Writes from several threads at once to disjoint ranges of one handle (topics sharing a
    data file) all land whole, with nothing of one in another's range."""
    storage = open_storage("parallel", 8 * MiB)
    threads_n, writes_n, chunk = 4, 200, 1000
    errors: list[str] = []
    start = threading.Barrier(threads_n)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(writes_n):
                offset = (i * threads_n + t) * chunk
                parts = [_pattern(chunk // 2, t * 7 + i), _pattern(chunk - chunk // 2, i)]
                storage.write(offset, parts, chunk)
        except BaseException as exc:  # reported by the main thread
            errors.append(f"writer {t}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[0]
    for t in range(threads_n):
        for i in range(writes_n):
            offset = (i * threads_n + t) * chunk
            expected = _pattern(chunk // 2, t * 7 + i) + _pattern(chunk - chunk // 2, i)
            got = bytes(storage.read(offset, chunk))
            assert got == expected, broken(
                "concurrent writes to disjoint ranges all land whole",
                f"thread {t}, write {i} at {offset}: {first_difference(got, expected)}",
            )


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts descriptors through /proc/self/fd"
)
def test_hook_walrus_close_leaves_no_descriptor_open(open_storage: StorageOpener) -> None:
    """Opening and closing a file many times leaves no descriptor behind (a log reopens its
    files on demand for as long as it runs)."""
    before = len(os.listdir("/proc/self/fd"))
    for i in range(50):
        storage = open_storage(f"cycle-{i % 3}", MiB, sync_each=bool(i % 2))
        storage.write(0, [b"x"], 1)
        open_storage.close(storage)
    after = len(os.listdir("/proc/self/fd"))
    assert after <= before, broken(
        "walrus_close releases what walrus_open took", f"{after - before} descriptors more"
    )
