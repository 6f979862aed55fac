"""The open data files: a bounded set of backend handles, reopened on demand.

A log may have any number of data files, but a process may hold only so many descriptors
(``ulimit -n``; backends take one or two per file). :class:`DataFile` stands for one data file
and offers the :class:`~walrus_core.storage.Storage` operations; underneath it opens the file
through the backend chain when an operation needs it, and :class:`OpenFiles` closes the least
recently opened idle file when more than ``capacity`` are open.

An operation pins its file for its duration, so a handle is never closed under a running
operation. The pin is a ``list.append``/``list.pop`` (atomic under the GIL) and eviction
publishes ``storage = None`` before it looks at the pins, so either the operation sees the
handle gone and reopens it, or eviction sees the pin and keeps the handle: no lock on the hot
path. A file is flushed before it is closed (unless the schedule never syncs), and a flush that
meets a file being closed waits for that, so durability does not depend on which files happen
to be open.
"""

from __future__ import annotations

import errno
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence

from walrus_core.storage import Buffers, OpenSpec, Storage, WriteOp

log = logging.getLogger("walrus_core")

#: Fewest files kept open, whatever the descriptor limit.
MIN_OPEN_FILES = 8
#: Most files kept open (beyond this the gain is nil and the kernel's tables grow).
MAX_OPEN_FILES = 1024


def default_capacity() -> int:
    """How many data files to keep open: an eighth of the descriptor limit (a backend may take
    two per file, and the application needs its own), within the bounds above."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_NOFILE there
        return 256
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(MIN_OPEN_FILES, min(MAX_OPEN_FILES, soft // 8))


class DataFile:
    """One data file, opened through the backend chain only while it is needed."""

    __slots__ = ("_pins", "_pool", "_storage", "_track_dirty", "deleted", "dirty", "spec")

    def __init__(self, pool: OpenFiles, spec: OpenSpec, storage: Storage | None = None) -> None:
        self._pool = pool
        self.spec = spec
        self._storage = storage
        self._pins: list[None] = []
        # Written since the last flush (set here, cleared by the flusher); not tracked when
        # every write is durable by itself.
        self.dirty = False
        self._track_dirty = pool.track_dirty
        # Reclaimed: the file is (being) deleted, and an operation on it raises ENOENT.
        self.deleted = False

    @property
    def path(self) -> str:
        """The file's path."""
        return self.spec.path

    @property
    def is_open(self) -> bool:
        """Whether a backend handle is open now."""
        return self._storage is not None

    def write(self, offset: int, buffers: Buffers, nbytes: int) -> None:
        """Write ``buffers`` back to back at ``offset`` (raises OSError)."""
        pins = self._pins
        pins.append(None)
        try:
            (self._storage or self._pool.reopen(self)).write(offset, buffers, nbytes)
            if self._track_dirty:
                self.dirty = True  # while pinned: an eviction after this flushes the file
        finally:
            pins.pop()

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (raises OSError)."""
        pins = self._pins
        pins.append(None)
        try:
            return (self._storage or self._pool.reopen(self)).read(offset, size)
        finally:
            pins.pop()

    def batch_submit(self, ops: Sequence[WriteOp], sync: bool) -> None:
        """Write every run, then flush when ``sync`` (raises OSError)."""
        pins = self._pins
        pins.append(None)
        try:
            (self._storage or self._pool.reopen(self)).batch_submit(ops, sync)
            if self._track_dirty and not sync:
                self.dirty = True
        finally:
            pins.pop()

    def discard(self, offset: int, size: int) -> None:
        """Give a range back to the file system (raises OSError; EOPNOTSUPP when the backend
        chain cannot)."""
        pins = self._pins
        pins.append(None)
        try:
            storage = self._storage or self._pool.reopen(self)
            if storage.discard is None:
                raise OSError(errno.EOPNOTSUPP, "the storage backend cannot release space")
            storage.discard(offset, size)
        finally:
            pins.pop()

    def flush(self) -> None:
        """Make completed writes durable. A closed file was flushed when it was closed."""
        pins = self._pins
        pins.append(None)
        try:
            storage = self._storage
            if storage is None:
                # Maybe an eviction is closing it right now: wait for it (it flushes first),
                # or find the handle it kept because of this pin.
                storage = self._pool.current(self)
            if storage is not None:
                storage.flush()
        finally:
            pins.pop()

    def close(self) -> None:
        """Close the handle if it is open (the file can be reopened later)."""
        storage, self._storage = self._storage, None
        if storage is not None:
            self._pool.forget(self)
            storage.close()

    def __repr__(self) -> str:
        return f"<DataFile {self.spec.path!r} {'open' if self.is_open else 'closed'}>"


class OpenFiles:
    """Opens data files on demand and keeps at most ``capacity`` of them open."""

    def __init__(
        self,
        open_storage: Callable[[OpenSpec], Storage],
        *,
        track_dirty: bool,
        flush_before_close: bool,
        capacity: int | None = None,
    ) -> None:
        self._open_storage = open_storage
        self.track_dirty = track_dirty
        self._flush_before_close = flush_before_close
        self.capacity = default_capacity() if capacity is None else max(1, capacity)
        self._lock = threading.Lock()
        self._open: dict[int, DataFile] = {}  # insertion order: least recently opened first

    def open(self, spec: OpenSpec) -> DataFile:
        """Open (or create) a file now and return it (raises OSError)."""
        file = DataFile(self, spec)
        self.reopen(file)
        return file

    def reopen(self, file: DataFile) -> Storage:
        """The open handle of ``file``, opening it (and closing an idle one) if needed."""
        with self._lock:
            storage = file._storage
            if storage is not None:
                return storage
            if file.deleted:
                raise OSError(errno.ENOENT, "the data file was reclaimed", file.path)
            while len(self._open) >= self.capacity and self._evict_one():
                pass
            storage = self._open_storage(file.spec)
            # Only the first open may create the file; later ones find it.
            if file.spec.create:
                file.spec = type(file.spec)(
                    path=file.spec.path,
                    size=file.spec.size,
                    create=False,
                    sync_each=file.spec.sync_each,
                    kind=file.spec.kind,
                )
            file._storage = storage
            self._open[id(file)] = file
            return storage

    def _evict_one(self) -> bool:
        """Close the least recently opened file that no operation is using; False if every
        open file is in use (then one more is opened: correctness over the bound)."""
        for key, file in list(self._open.items()):
            storage = file._storage
            if storage is None:
                del self._open[key]
                continue
            file._storage = None  # published first: a new operation now reopens
            if file._pins:
                file._storage = storage  # in use: keep it
                continue
            try:
                # Always, not only when dirty: a flush that raced with this eviction may have
                # cleared the flag and then found no handle.
                if self._flush_before_close:
                    storage.flush()
                file.dirty = False
            except OSError as exc:
                # Keep it open (the flusher reports the failure); try the next candidate.
                file._storage = storage
                log.warning(
                    "keeping %s open: flushing it before closing failed: %s", file.path, exc
                )
                continue
            del self._open[key]
            try:
                storage.close()
            except OSError as exc:
                log.warning("closing %s failed: %s", file.path, exc)
            return True
        return False

    def retire(self, file: DataFile) -> None:
        """Close ``file`` for good before it is deleted: later operations raise ENOENT, and
        operations running now finish first (nothing of it needs flushing any more)."""
        with self._lock:
            file.deleted = True
            storage, file._storage = file._storage, None
            self._open.pop(id(file), None)
        if storage is None:
            return
        while file._pins:  # an operation that found the handle before it was unpublished
            time.sleep(0.0005)
        file.dirty = False
        try:
            storage.close()
        except OSError as exc:
            log.warning("closing %s failed: %s", file.path, exc)

    def current(self, file: DataFile) -> Storage | None:
        """The handle of ``file`` once no eviction is in progress (None: it is closed)."""
        with self._lock:
            return file._storage

    def forget(self, file: DataFile) -> None:
        """``file`` was closed by its owner."""
        with self._lock:
            self._open.pop(id(file), None)

    def open_count(self) -> int:
        """How many files are open now."""
        return len(self._open)
