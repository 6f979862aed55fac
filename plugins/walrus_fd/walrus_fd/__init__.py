"""The FD backend: positional I/O on file descriptors.

Single writes are one ``pwritev`` (header and payload gathered, no copy). Under ``sync_each``
they go through a second descriptor opened with ``O_DSYNC``, so one system call both writes and
syncs, while batches use the plain descriptor and one ``fdatasync`` at the end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
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
    __version__ = version("walrus-fd")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

_IOV_MAX = 1024
if hasattr(os, "sysconf"):
    try:
        _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
    except (ValueError, OSError):
        pass

_datasync = getattr(os, "fdatasync", os.fsync)


def _probe() -> str | None:
    if not hasattr(os, "pwritev") or not hasattr(os, "pread"):
        return f"positional vectored I/O (os.pwritev) is not available on {sys.platform}"
    return None


class FdHandle:
    """Descriptors of one open file."""

    __slots__ = ("fd", "path", "write_fd")

    def __init__(self, path: str, fd: int, write_fd: int) -> None:
        self.path = path
        self.fd = fd
        self.write_fd = write_fd

    def fileno(self) -> int:
        """The plain read/write descriptor (layers such as io_uring submit on it)."""
        return self.fd


@hookimpl
def walrus_backend_info() -> BackendInfo:
    """FD is a base backend for every Unix."""
    return BackendInfo(
        version=__version__,
        platforms=("linux", "darwin", "freebsd", "openbsd", "netbsd", "sunos", "aix"),
        install="pip install walrus-fd",
        description="pread/pwritev on file descriptors; O_DSYNC under sync_each",
        probe=_probe,
        auto_priority=10,
        family="fd",
    )


@hookimpl
def walrus_open(spec: OpenSpec, lower: Storage | None) -> FdHandle:
    """Open the file, extend it sparsely to ``spec.size``, and add an O_DSYNC twin if asked."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    if spec.create:
        flags |= os.O_CREAT
    fd = os.open(spec.path, flags, 0o644)
    try:
        if os.fstat(fd).st_size < spec.size:
            os.ftruncate(fd, spec.size)
        write_fd = fd
        if spec.sync_each:
            dsync = getattr(os, "O_DSYNC", getattr(os, "O_SYNC", 0))
            write_fd = os.open(spec.path, os.O_RDWR | dsync | getattr(os, "O_CLOEXEC", 0))
    except BaseException:
        os.close(fd)
        raise
    return FdHandle(spec.path, fd, write_fd)


def _pwritev_all(fd: int, buffers: Buffers, offset: int, nbytes: int) -> None:
    """Write every byte of ``buffers`` at ``offset``: one pwritev per IOV_MAX buffers."""
    if len(buffers) <= _IOV_MAX:
        done = os.pwritev(fd, buffers, offset)
        if done != nbytes:
            _finish(fd, buffers, offset, done, nbytes)
        return
    # Buffers are bytes or 1-D byte views (the engine casts payloads), so len() is their size.
    for start in range(0, len(buffers), _IOV_MAX):
        chunk = buffers[start : start + _IOV_MAX]
        want = sum(map(len, chunk))
        done = os.pwritev(fd, chunk, offset)
        if done != want:
            _finish(fd, chunk, offset, done, want)
        offset += want


def _finish(fd: int, buffers: Buffers, offset: int, done: int, nbytes: int) -> None:
    """Continue a short pwritev exactly where it stopped (rare: signals, full disks)."""
    views = [memoryview(b).cast("B") for b in buffers]
    index = 0
    skip = done
    while done < nbytes:
        while skip >= views[index].nbytes:
            skip -= views[index].nbytes
            index += 1
        chunk = [views[index][skip:], *views[index + 1 : index + _IOV_MAX]]
        n = os.pwritev(fd, chunk, offset + done)
        if n <= 0:
            raise OSError(5, f"pwritev made no progress at offset {offset + done}")
        done += n
        skip += n


@hookimpl
def walrus_write(handle: FdHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
    """One pwritev (continued if short)."""
    if len(buffers) <= _IOV_MAX:  # the common case, inlined: this runs for every entry
        done = os.pwritev(handle.write_fd, buffers, offset)
        if done != nbytes:
            _finish(handle.write_fd, buffers, offset, done, nbytes)
        return
    _pwritev_all(handle.write_fd, buffers, offset, nbytes)


@hookimpl
def walrus_read(handle: FdHandle, offset: int, size: int) -> bytes:
    """One pread (continued if short, until end of file)."""
    data = os.pread(handle.fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(handle.fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


@hookimpl
def walrus_flush(handle: FdHandle) -> None:
    """fdatasync: file sizes only change at creation, which the engine syncs itself."""
    _datasync(handle.fd)


@hookimpl
def walrus_batch_submit(handle: FdHandle, ops: Sequence[WriteOp], sync: bool) -> None:
    """One pwritev per contiguous run on the plain descriptor, then one fdatasync if asked."""
    for op in ops:
        _pwritev_all(handle.fd, op.buffers, op.offset, op.nbytes)
    if sync:
        _datasync(handle.fd)


@hookimpl
def walrus_discard(handle: FdHandle, offset: int, size: int) -> None:
    """Punch a hole (the range reads as zeros and takes no disk space)."""
    punch_hole(handle.fd, offset, size)


@hookimpl
def walrus_close(handle: FdHandle) -> None:
    """Close both descriptors."""
    if handle.write_fd != handle.fd:
        os.close(handle.write_fd)
    os.close(handle.fd)
