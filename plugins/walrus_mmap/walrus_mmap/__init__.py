"""The mmap backend: memory-mapped files.

Each file is mapped whole (``mmap.mmap(fd, size, access=ACCESS_WRITE)``) after it was extended
sparsely with ``ftruncate``. Writes copy every buffer straight into the mapping through a
memoryview slice assignment (one copy, no intermediate bytes), and remember the dirty byte
range; ``walrus_flush`` msyncs only that range, rounded out to whole pages, instead of the whole
map. Reads slice the mapping (one copy into the returned bytes).

Disk full: storing into a sparse page for which the file system cannot allocate a block kills
the process with SIGBUS. Where ``os.posix_fallocate`` exists, the first write into each
:data:`CHUNK`-sized, aligned chunk of a file allocates that chunk first, so a full disk surfaces
as ``OSError(ENOSPC)`` from the write instead. Measured on ext4 here, allocating with
fallocate does not slow the later small writes into those pages (they got slightly faster than
writes into plain sparse pages), and 1 MiB chunks cost the same as no fallocate at all.

Only portable calls run at import (``mmap``, ``os.ftruncate``), so the plugin can serve Windows;
Unix-only functions are looked up with ``getattr``.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from walrus_core.plugin import (
    BackendInfo,
    Buffers,
    OpenSpec,
    Storage,
    WriteOp,
    hookimpl,
    punch_hole,
)

try:
    __version__ = version("walrus-mmap")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: Bytes allocated (posix_fallocate) ahead of the first write into each aligned chunk.
CHUNK_SHIFT = 20
CHUNK = 1 << CHUNK_SHIFT
#: msync works on whole pages: dirty ranges are rounded out to this.
PAGE = mmap.PAGESIZE
#: After this many bytes were copied into or out of a mapping, its pages are dropped from the
#: process (``MADV_DONTNEED``), so resident memory stays bounded however much is written or
#: read. The data stays in the kernel's page cache (the mapping is shared, so nothing is
#: discarded: dirty pages are still written back by the next msync or by the kernel), and a
#: later access faults the page in again.
RELEASE_EVERY = 32 << 20
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)

_fallocate: Callable[[int, int, int], None] | None = getattr(os, "posix_fallocate", None)
#: fallocate errors that mean "not supported here" (the file keeps working without it).
_UNSUPPORTED = frozenset(
    code
    for code in (
        getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENOTSUP", None),
        getattr(errno, "ENOSYS", None),
        errno.EINVAL,
    )
    if code is not None
)
_OPEN_FLAGS = os.O_RDWR | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_NO_DIRTY = 1 << 62
_WINDOWS = sys.platform == "win32"


def _probe() -> str | None:
    if not hasattr(os, "ftruncate"):
        return "os.ftruncate is not available"
    return None


class MmapHandle:
    """One mapped file: the mapping, a view of it, the descriptor and the dirty range."""

    __slots__ = (
        "allocated",
        "closed",
        "dirty_hi",
        "dirty_lo",
        "fd",
        "lock",
        "mm",
        "path",
        "size",
        "sync_each",
        "touched",
        "view",
    )

    def __init__(self, path: str, fd: int, size: int, sync_each: bool) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self.sync_each = sync_each
        # A zero-length file cannot be mapped: it then has no mapping (reads return b"").
        self.mm: mmap.mmap | None = (
            mmap.mmap(fd, size, access=mmap.ACCESS_WRITE) if size > 0 else None
        )
        self.view = memoryview(self.mm) if self.mm is not None else memoryview(b"")
        #: One flag per chunk: 1 once posix_fallocate covered it. None: no fallocate here.
        self.allocated: bytearray | None = (
            bytearray((size + CHUNK - 1) >> CHUNK_SHIFT) if _fallocate is not None else None
        )
        #: Written but not yet msynced: [dirty_lo, dirty_hi); empty when lo >= hi.
        self.dirty_lo = _NO_DIRTY
        self.dirty_hi = 0
        self.lock = threading.Lock()  # guards dirty_lo/dirty_hi only
        self.closed = False
        #: Bytes copied in or out since the mapping's pages were last released (approximate:
        #: updated without a lock, it only decides when to release).
        self.touched = 0

    def fileno(self) -> int:
        """The read/write descriptor."""
        return self.fd

    def __repr__(self) -> str:
        return f"<MmapHandle {self.path!r} size={self.size}>"


@hookimpl
def walrus_backend_info() -> BackendInfo:
    """mmap is a base backend for every platform with ``mmap`` (Windows included)."""
    return BackendInfo(
        version=__version__,
        platforms=(
            "win32",
            "cygwin",
            "linux",
            "darwin",
            "freebsd",
            "openbsd",
            "netbsd",
            "sunos",
            "aix",
        ),
        install="pip install walrus-mmap",
        description="memory-mapped files; msync of the dirty range only",
        probe=_probe,
        auto_priority=5,
        family="mmap",
    )


@hookimpl
def walrus_open(spec: OpenSpec, lower: Storage | None) -> MmapHandle:
    """Open the file, extend it sparsely to ``spec.size`` and map it whole."""
    flags = _OPEN_FLAGS | (os.O_CREAT if spec.create else 0)
    fd = os.open(spec.path, flags, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size < spec.size:
            os.ftruncate(fd, spec.size)
            size = spec.size
        return MmapHandle(spec.path, fd, size, spec.sync_each)
    except BaseException:
        os.close(fd)
        raise


def _allocate(handle: MmapHandle, first: int, last: int) -> None:
    """posix_fallocate every not yet allocated chunk of ``first..last`` (inclusive), coalescing
    neighbours into one call. ENOSPC (or any real error) propagates as OSError."""
    allocated = handle.allocated
    if allocated is None or _fallocate is None:
        return
    chunk = first
    while chunk <= last:
        if allocated[chunk]:
            chunk += 1
            continue
        end = chunk
        while end + 1 <= last and not allocated[end + 1]:
            end += 1
        start = chunk << CHUNK_SHIFT
        stop = min((end + 1) << CHUNK_SHIFT, handle.size)
        try:
            _fallocate(handle.fd, start, stop - start)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            handle.allocated = None  # this file system cannot: write into sparse pages
            return
        allocated[chunk : end + 1] = b"\x01" * (end + 1 - chunk)
        _prefault(handle, start, stop - start)
        chunk = end + 1


#: MADV_POPULATE_WRITE (Linux 5.14+): fault a range in for writing with one system call.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform == "linux" else None)


def _prefault(handle: MmapHandle, start: int, length: int) -> None:
    """Fault a freshly allocated chunk in at once, instead of one page fault per 4 KiB page
    as the copies reach it. Purely an optimisation: any refusal is ignored."""
    mm = handle.mm
    if _MADV_POPULATE_WRITE is None or mm is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(_MADV_POPULATE_WRITE, start, length)
    except (OSError, ValueError):
        pass


def _check_range(handle: MmapHandle, offset: int, nbytes: int) -> None:
    if handle.closed:
        raise OSError(errno.EBADF, f"{handle.path}: write to a closed mapping")
    if offset < 0 or nbytes < 0 or offset + nbytes > handle.size:
        raise OSError(
            errno.EINVAL,
            f"{handle.path}: write of {nbytes} bytes at {offset} is outside the"
            f" {handle.size}-byte mapping",
        )


#: Runs up to this size with many buffers are joined before the copy.
_JOIN_MAX = 8 << 20


def _copy(handle: MmapHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Copy ``buffers`` back to back into the mapping at ``offset`` (raises OSError)."""
    end = offset + nbytes
    if offset < 0 or end > handle.size or handle.closed:
        _check_range(handle, offset, nbytes)
    allocated = handle.allocated
    if allocated is not None and nbytes:
        first = offset >> CHUNK_SHIFT
        last = (end - 1) >> CHUNK_SHIFT
        if last - first > 1 or not (allocated[first] and allocated[last]):
            _allocate(handle, first, last)
    view = handle.view
    pos = offset
    try:
        if len(buffers) > 8 and nbytes <= _JOIN_MAX:
            # Many small buffers (a batch's headers and payloads): one join in C and one
            # copy beat a Python-level slice assignment per buffer.
            joined = b"".join(buffers)
            if len(joined) == nbytes:
                view[offset:end] = joined
                return
        for buf in buffers:
            stop = pos + len(buf)
            view[pos:stop] = buf
            pos = stop
    except (TypeError, ValueError):
        if handle.closed:
            raise OSError(errno.EBADF, f"{handle.path}: write to a closed mapping") from None
        # A buffer whose len() is not its size in bytes (a typed memoryview or array):
        # redo the whole run through byte views.
        pos = offset
        for buf in buffers:
            raw = memoryview(buf).cast("B")
            stop = pos + raw.nbytes
            if stop > end:
                raise ValueError(f"buffers hold more than nbytes={nbytes}") from None
            view[pos:stop] = raw
            pos = stop
    if pos != end:
        raise ValueError(f"buffers hold {pos - offset} bytes, not nbytes={nbytes}")


def _release_pages(handle: MmapHandle) -> None:
    """Drop the mapping's pages from the process (see :data:`RELEASE_EVERY`)."""
    handle.touched = 0
    mm = handle.mm
    if _MADV_DONTNEED is None or mm is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(_MADV_DONTNEED)
    except (OSError, ValueError):  # closed meanwhile, or refused: only memory is at stake
        pass


def _msync(handle: MmapHandle, lo: int, hi: int) -> None:
    """msync ``[lo, hi)`` rounded out to whole pages."""
    mm = handle.mm
    if mm is None or hi <= lo:
        return
    start = lo - lo % PAGE
    stop = min(hi + (-hi) % PAGE, handle.size)
    mm.flush(start, stop - start)
    if _WINDOWS:  # FlushViewOfFile only hands the pages to the cache manager
        os.fsync(handle.fd)


def _mark_dirty(handle: MmapHandle, lo: int, hi: int) -> None:
    with handle.lock:
        if lo < handle.dirty_lo:
            handle.dirty_lo = lo
        if hi > handle.dirty_hi:
            handle.dirty_hi = hi


def _flush_dirty(handle: MmapHandle) -> None:
    """msync the dirty range and clear it; on failure put it back (the next flush retries)."""
    with handle.lock:
        lo, hi = handle.dirty_lo, handle.dirty_hi
        handle.dirty_lo, handle.dirty_hi = _NO_DIRTY, 0
    if hi <= lo:
        return
    try:
        _msync(handle, lo, hi)
    except BaseException:
        _mark_dirty(handle, lo, hi)
        raise


@hookimpl
def walrus_write(handle: MmapHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Copy into the mapping; under ``sync_each`` msync the written pages before returning."""
    _copy(handle, offset, buffers, nbytes)
    if handle.sync_each:
        _msync(handle, offset, offset + nbytes)
    else:
        _mark_dirty(handle, offset, offset + nbytes)
    handle.touched += nbytes
    if handle.touched >= RELEASE_EVERY:
        _release_pages(handle)


@hookimpl
def walrus_read(handle: MmapHandle, offset: int, size: int) -> bytes:
    """``size`` bytes of the mapping from ``offset`` (fewer only past the end)."""
    mm = handle.mm
    if offset < 0 or size < 0:
        raise OSError(errno.EINVAL, f"{handle.path}: read of {size} bytes at {offset}")
    if mm is None:
        if handle.closed:
            raise OSError(errno.EBADF, f"{handle.path}: read from a closed mapping")
        return b""
    try:
        data = mm[offset : offset + size]
    except ValueError as exc:  # closed concurrently
        raise OSError(errno.EBADF, f"{handle.path}: {exc}") from exc
    handle.touched += len(data)
    if handle.touched >= RELEASE_EVERY:
        _release_pages(handle)
    return data


@hookimpl
def walrus_flush(handle: MmapHandle) -> None:
    """msync only the dirty range (whole pages), then forget it."""
    _flush_dirty(handle)


@hookimpl
def walrus_batch_submit(handle: MmapHandle, ops: Sequence[WriteOp], sync: bool) -> None:
    """Copy every run into the mapping, then one msync of the dirty range if ``sync``."""
    lo = _NO_DIRTY
    hi = 0
    for op in ops:
        offset = op.offset
        nbytes = op.nbytes
        _copy(handle, offset, op.buffers, nbytes)
        if offset < lo:
            lo = offset
        if offset + nbytes > hi:
            hi = offset + nbytes
    if hi > lo:
        _mark_dirty(handle, lo, hi)
    if sync:
        _flush_dirty(handle)
    handle.touched += hi - lo if hi > lo else 0
    if handle.touched >= RELEASE_EVERY:
        _release_pages(handle)


@hookimpl
def walrus_discard(handle: MmapHandle, offset: int, size: int) -> None:
    """Punch a hole under the mapping (its pages then read as zeros). Chunks wholly inside
    the hole are no longer known to be allocated, so a later write there allocates again."""
    punch_hole(handle.fd, offset, size)
    allocated = handle.allocated
    if allocated is not None:
        first = (offset + CHUNK - 1) >> CHUNK_SHIFT
        last = (offset + size) >> CHUNK_SHIFT
        for chunk in range(first, min(last, len(allocated))):
            allocated[chunk] = 0


@hookimpl
def walrus_close(handle: MmapHandle) -> None:
    """Release the view, unmap and close the descriptor (exports must go before the map)."""
    if handle.closed:
        return
    handle.closed = True
    mm = handle.mm
    handle.mm = None
    errors: list[BaseException] = []
    try:
        handle.view.release()
        if mm is not None:
            mm.close()
    except BufferError as exc:  # someone still holds a view of the mapping
        errors.append(exc)
    finally:
        os.close(handle.fd)
    if errors:
        raise OSError(errno.EBUSY, f"{handle.path}: mapping still in use: {errors[0]}")


__all__: list[str] = [
    "CHUNK",
    "RELEASE_EVERY",
    "MmapHandle",
    "walrus_backend_info",
    "walrus_batch_submit",
    "walrus_close",
    "walrus_discard",
    "walrus_flush",
    "walrus_open",
    "walrus_read",
    "walrus_write",
]
