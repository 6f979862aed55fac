"""An in-memory base backend for Walrus, for tests: nothing survives the process.

The smallest complete backend, and the walk-through example of the plugin guide. It keeps the
bytes of every file in a process-wide store, so closing and reopening a log in the same
process sees what was written, while the files on disk stay empty and sparse: they exist only
because the engine lists data files in the directory and takes their sizes from the file
system. Tools that read the files themselves (``WalrusReader``, ``walrus verify``) therefore
see zeros, and ``walrus_flush`` has nothing to make durable (``BackendInfo.durable`` is False,
so the conformance suite skips its crash tests).

The bytes of a file are kept in 64 KiB pages, created when first written: data files are
sparse and large (1 GiB with the default geometry), so one bytearray the size of the file
would cost its whole size in memory for a few entries. Pages never written read as zeros.

:func:`forget` drops stored bytes (one file, a directory's files, or everything) for tests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version

from walrus_core.plugin import BackendInfo, Buffers, OpenSpec, Storage, WriteOp, hookimpl

__all__ = ["PAGE_SIZE", "MemoryHandle", "forget"]

try:
    __version__ = version("walrus-memory")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: Granularity of the store: memory is taken a page at a time, where bytes are written.
PAGE_SIZE = 64 * 1024


class _File:
    """The bytes of one file (one inode): pages by index, and the file's size.

    ``lock`` guards ``pages`` and ``size``: reads run alongside writes from other threads, and
    two handles of one file may be open at once (the engine reopens a file with a larger size
    before closing the old handle), so the lock belongs to the file, not to a handle.
    """

    __slots__ = ("identity", "lock", "pages", "size")

    def __init__(self, identity: tuple[int, int]) -> None:
        self.identity = identity  # (st_dev, st_ino) of the file these bytes belong to
        self.lock = threading.Lock()
        self.pages: dict[int, bytearray] = {}
        self.size = 0


# realpath -> bytes of the file there. Keyed by real path so that two spellings of one path
# (symlinked directories, "a/../a") share their bytes, as they would on disk.
_store: dict[str, _File] = {}
_store_lock = threading.Lock()


def forget(path: str | os.PathLike[str] | None = None) -> None:
    """Drop the stored bytes of the file ``path``, of every file under the directory ``path``,
    or of every file (``path`` None). A later open of such a file reads zeros.

    Call it while the files are closed: a handle open now keeps writing to the bytes it had.
    """
    with _store_lock:
        if path is None:
            _store.clear()
            return
        real = os.path.realpath(path)
        for key in [k for k in _store if k == real or k.startswith(real + os.sep)]:
            del _store[key]


def _pieces(offset: int, size: int) -> Iterator[tuple[int, int, int, int]]:
    """Split ``size`` bytes at ``offset`` at page boundaries: (page index, start in the page,
    length, position in the range) for each piece."""
    done = 0
    while done < size:
        index, start = divmod(offset + done, PAGE_SIZE)
        take = min(PAGE_SIZE - start, size - done)
        yield index, start, take, done
        done += take


class MemoryHandle:
    """One open file: the descriptor that keeps its inode, and its stored bytes."""

    __slots__ = ("fd", "file", "path")

    def __init__(self, path: str, fd: int, file: _File) -> None:
        self.path = path
        self.fd = fd
        self.file = file


@hookimpl
def walrus_backend_info() -> BackendInfo:
    """A base backend for any platform, never chosen by ``"auto"``, and not durable."""
    return BackendInfo(
        version=__version__,
        layers_over=None,
        platforms=("*",),
        install="pip install ./examples/walrus_memory",
        description="in-memory, for tests: nothing survives the process",
        auto_priority=0,
        family="memory",
        durable=False,
    )


def _open_fd(spec: OpenSpec) -> tuple[int, bool]:
    """Open the file on disk; (descriptor, whether this call created it)."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    if spec.create:
        # O_EXCL tells a new file from an old one for certain: after the engine deletes a data
        # file, a new file at the same path may well get the same inode number back.
        try:
            return os.open(spec.path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            flags |= os.O_CREAT  # deleted since: create it (the inode check below sees that)
    return os.open(spec.path, flags), False  # FileNotFoundError (ENOENT) when missing


@hookimpl
def walrus_open(spec: OpenSpec, lower: Storage | None) -> MemoryHandle:
    """Create or open the file on disk, extend it sparsely to ``spec.size``, and find its
    stored bytes (a new or replaced file starts from zeros)."""
    fd, created = _open_fd(spec)
    try:
        st = os.fstat(fd)
        if st.st_size < spec.size:
            os.ftruncate(fd, spec.size)  # sparse: the engine reads sizes from the file system
        identity = (st.st_dev, st.st_ino)
        key = os.path.realpath(spec.path)
        with _store_lock:
            file = _store.get(key)
            if file is None or created or file.identity != identity:
                # A file this process has not written, or one deleted and made anew: whatever
                # was stored for the path belonged to another file.
                file = _store[key] = _File(identity)
        with file.lock:
            file.size = max(file.size, st.st_size, spec.size)
    except BaseException:
        os.close(fd)
        raise
    return MemoryHandle(spec.path, fd, file)


def _write(handle: MemoryHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Copy ``buffers`` into the pages at ``offset`` (the caller holds the file's lock)."""
    file = handle.file
    end = offset + nbytes
    if end > file.size:
        # Past the end a real file grows; so does the one on disk, whose size the engine reads.
        os.ftruncate(handle.fd, end)
        file.size = end
    pages = file.pages
    for buf in buffers:
        # Buffers are only valid during the call: slice assignment copies their bytes.
        view = memoryview(buf).cast("B")
        for index, start, take, at in _pieces(offset, view.nbytes):
            page = pages.get(index)
            if page is None:
                page = pages[index] = bytearray(PAGE_SIZE)
            page[start : start + take] = view[at : at + take]
        offset += view.nbytes


@hookimpl
def walrus_write(handle: MemoryHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Gather ``buffers`` into the stored bytes, all under the lock (a read sees all or none)."""
    with handle.file.lock:
        _write(handle, offset, buffers, nbytes)


@hookimpl
def walrus_read(handle: MemoryHandle, offset: int, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the file); unwritten bytes are zeros."""
    file = handle.file
    with file.lock:
        size = max(0, min(size, file.size - offset))
        parts = []
        for index, start, take, _ in _pieces(offset, size):
            page = file.pages.get(index)
            parts.append(bytes(take) if page is None else bytes(page[start : start + take]))
    return parts[0] if len(parts) == 1 else b"".join(parts)


@hookimpl
def walrus_flush(handle: MemoryHandle) -> None:
    """Nothing to do: a completed write is already visible to every reader of the process, and
    nothing can make it outlive the process (this backend says ``durable=False``)."""


@hookimpl
def walrus_batch_submit(handle: MemoryHandle, ops: Sequence[WriteOp], sync: bool) -> None:
    """Write each run; ``sync`` changes nothing, as for :func:`walrus_flush`."""
    with handle.file.lock:
        for op in ops:
            _write(handle, op.offset, op.buffers, op.nbytes)


@hookimpl
def walrus_discard(handle: MemoryHandle, offset: int, size: int) -> None:
    """Zero the range and keep the size: drop whole pages (their memory goes back), clear the
    covered part of the others."""
    file = handle.file
    with file.lock:
        size = max(0, min(size, file.size - offset))
        for index, start, take, _ in _pieces(offset, size):
            if take == PAGE_SIZE:
                file.pages.pop(index, None)
            elif (page := file.pages.get(index)) is not None:
                page[start : start + take] = bytes(take)


@hookimpl
def walrus_close(handle: MemoryHandle) -> None:
    """Close the descriptor; the bytes stay in the store for the next open of the file."""
    os.close(handle.fd)
