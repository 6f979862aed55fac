"""The public facade: :class:`Walrus`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from types import TracebackType
from typing import Any, NoReturn, SupportsIndex

from walrus_core import lifecycle
from walrus_core.background import Flusher, flush_dirty
from walrus_core.config import FsyncSchedule, Geometry, Limits, ReadConsistency
from walrus_core.cursors import Cursor
from walrus_core.directory import DirectoryLock, prepare_root
from walrus_core.entry import Entry
from walrus_core.errors import (
    BatchTooLargeError,
    EntryTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
    WalrusClosedError,
    WalrusError,
    WalrusValueError,
)
from walrus_core.index import Topic
from walrus_core.names import encode_name, namespace_dir
from walrus_core.opening import open_directory
from walrus_core.plugins import AUTO, BackendRegistry, default_registry
from walrus_core.storage import Flushable
from walrus_core.writer import Writer

log = logging.getLogger("walrus_core")

DEFAULT_DATA_DIR = "wal_files"
_DEFAULT_GEOMETRY = Geometry()


def _as_payload(data: Any) -> tuple[Any, int]:
    """A writable view of ``data`` and its length in bytes (TypeError if not bytes-like)."""
    if type(data) is bytes:
        return data, len(data)
    if isinstance(data, str):
        raise TypeError("payload must be bytes-like (bytes, bytearray, memoryview, ...), not str")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"payload must support the buffer protocol, not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    elif view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view, view.nbytes


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


class Walrus:
    """An open write-ahead log directory: topics of byte entries with durable cursors.

    See the README for the semantics. Every method is thread-safe. One instance per directory:
    a second one, in this process or another, raises :class:`DirectoryLockedError`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        key: str | None = None,
        backend: str | None = None,
        consistency: ReadConsistency | None = None,
        fsync: FsyncSchedule | None = None,
        block_size: int | None = None,
        blocks_per_file: int | None = None,
        *,
        limits: Limits | None = None,
        registry: BackendRegistry | None = None,
    ) -> None:
        self._closed = True  # until fully open, so that close() stays harmless
        self._forked = False
        # Tracked before the directory lock is taken: a child forked by another thread while
        # this one is opening must not keep the lock either.
        lifecycle.track(self)
        self._bg_error: OSError | None = None
        # Calls that do I/O without holding a topic or cursor lock register here, so that
        # close() waits for them before closing files under them.
        self._in_flight = 0
        self._in_flight_done = threading.Condition()
        consistency = ReadConsistency.strictly_at_once() if consistency is None else consistency
        fsync = FsyncSchedule.milliseconds(200) if fsync is None else fsync
        limits = Limits() if limits is None else limits
        if not isinstance(consistency, ReadConsistency):
            raise TypeError(
                f"consistency must be a ReadConsistency, not {type(consistency).__name__}"
            )
        if not isinstance(fsync, FsyncSchedule):
            raise TypeError(f"fsync must be an FsyncSchedule, not {type(fsync).__name__}")
        if not isinstance(limits, Limits):
            raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
        if data_dir is None:
            data_dir = os.environ.get("WALRUS_DATA_DIR") or DEFAULT_DATA_DIR
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir must be a str or os.PathLike, not {type(data_dir).__name__}")
        if key is None:
            key = os.environ.get("WALRUS_INSTANCE_KEY") or None
        if backend is None:
            backend = os.environ.get("WALRUS_BACKEND") or AUTO
        requested = Geometry(
            block_size=_DEFAULT_GEOMETRY.block_size if block_size is None else block_size,
            blocks_per_file=(
                _DEFAULT_GEOMETRY.blocks_per_file if blocks_per_file is None else blocks_per_file
            ),
        )
        self.consistency = consistency
        self.fsync = fsync
        self.limits = limits
        self.root = namespace_dir(data_dir, key)
        chain = (registry if registry is not None else default_registry()).chain(backend)
        self._chain = chain
        prepare_root(self.root)
        self._lock = DirectoryLock(self.root)
        try:
            opened = open_directory(
                self.root,
                requested,
                {"block_size": block_size, "blocks_per_file": blocks_per_file},
                chain.open,
                fsync,
                consistency,
            )
        except BaseException:
            self._lock.release()
            raise
        self.geometry = opened.geometry
        self._allocator = opened.allocator
        self._topics: dict[str, Topic] = opened.topics
        self._cursor_store = opened.cursor_store
        self._cursors = opened.cursors
        self._reader = opened.reader
        self._registry_lock = threading.Lock()
        sync_each = fsync.is_sync_each
        self._writer = Writer(
            self._allocator,
            self.geometry,
            mark_dirty=not sync_each,
            sync_each=sync_each,
            sync_failures=not fsync.is_none,
        )
        self._flusher: Flusher | None = None
        if fsync.is_periodic:
            self._flusher = Flusher(fsync.interval_ms, self._all_storages, self._bg_failed)
            self._flusher.start()
        self._closed = False

    def _all_storages(self) -> list[Flushable]:
        return [*list(self._allocator.files.values()), *self._cursor_store.storages()]

    def _bg_failed(self, exc: OSError) -> None:
        self._bg_error = exc

    # -- state checks -----------------------------------------------------------------------
    def _enter(self) -> None:
        with self._in_flight_done:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            self._in_flight += 1

    def _leave(self) -> None:
        with self._in_flight_done:
            self._in_flight -= 1
            if not self._in_flight:
                self._in_flight_done.notify_all()

    def _check_slow(self) -> None:
        if self._forked:
            raise lifecycle.forked_error(self.root)
        if self._closed:
            raise WalrusClosedError("this Walrus instance is closed")
        err, self._bg_error = self._bg_error, None
        if err is not None:
            raise StorageError(f"a background fsync failed: {err}") from err

    @property
    def backend_chain(self) -> tuple[str, ...]:
        """The storage backends in use, top first, e.g. ``("fd",)``."""
        return self._chain.names

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called, and in a child process for an instance inherited
        through ``fork()``."""
        return self._closed

    # -- topics and cursors -----------------------------------------------------------------
    def _topic_for_write(self, topic: Any) -> Topic:
        raw = encode_name(topic)
        with self._registry_lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            existing = self._topics.get(topic)
            if existing is not None:
                return existing
            created = Topic(topic, raw)
            self._topics[topic] = created
            return created

    def _existing_topic(self, topic: Any, consumer: Any = None) -> Topic | None:
        found = self._topics.get(topic) if type(topic) is str else None
        if found is None:
            encode_name(topic)
            if consumer is not None:
                encode_name(consumer, "consumer")
        return found

    # -- writing ----------------------------------------------------------------------------
    def append_for_topic(self, topic: str, data: Any) -> int:
        """Append one entry; returns its offset in the topic (0, 1, 2, ...).

        ``data`` is any bytes-like object. Raises :class:`EntryTooLargeError` beyond
        ``limits.max_entry_bytes`` and :class:`StorageError` when the disk fails (the entry is
        then absent and the log stays usable).
        """
        if self._closed or self._bg_error is not None:
            self._check_slow()
        t = self._topics.get(topic) if type(topic) is str else None
        if t is None:
            t = self._topic_for_write(topic)
        if type(data) is bytes:
            payload, length = data, len(data)
        else:
            payload, length = _as_payload(data)
        if length > self.limits.max_entry_bytes:
            raise EntryTooLargeError(
                f"entry of {length} bytes exceeds the limit of {self.limits.max_entry_bytes}"
            )
        with t.lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            return self._writer.append(t, payload, length)

    def batch_append_for_topic(self, topic: str, entries: Iterable[Any]) -> range:
        """Append ``entries`` atomically: after any crash they are all present or all absent,
        and readers never see part of them. Returns the offsets assigned. An empty batch is a
        no-op returning an empty range. A batch waits for other writers of the topic."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        if isinstance(entries, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"entries must be an iterable of payloads, not a single {type(entries).__name__}"
            )
        try:
            iterator: Iterator[Any] = iter(entries)
        except TypeError:
            raise TypeError(
                f"entries must be an iterable of payloads, not {type(entries).__name__}"
            ) from None
        limits = self.limits
        items = list(islice(iterator, limits.max_batch_entries + 1))
        if len(items) > limits.max_batch_entries:
            raise BatchTooLargeError(
                f"batch exceeds the limit of {limits.max_batch_entries} entries"
            )
        payloads = [
            (item, len(item)) if type(item) is bytes else _as_payload(item) for item in items
        ]
        total = sum([length for _payload, length in payloads])
        max_entry = limits.max_entry_bytes
        if payloads and max(length for _payload, length in payloads) > max_entry:
            raise EntryTooLargeError(f"an entry of the batch exceeds the limit of {max_entry}")
        if total > limits.max_batch_bytes:
            raise BatchTooLargeError(
                f"batch of {total} bytes exceeds the limit of {limits.max_batch_bytes} bytes"
            )
        t = self._topics.get(topic) if type(topic) is str else None
        if t is None:
            if not payloads:
                encode_name(topic)
                return range(0, 0)
            t = self._topic_for_write(topic)
        with t.lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            return self._writer.append_batch(t, payloads)

    # -- reading ----------------------------------------------------------------------------
    def read_next(
        self, topic: str, checkpoint: bool = True, *, consumer: str | None = None
    ) -> Entry | None:
        """The next entry for ``consumer`` (the topic's default cursor when None), or None.

        With ``checkpoint=True`` the entry is consumed (the cursor moves and is persisted as the
        read consistency says); with ``checkpoint=False`` it is a peek and nothing changes.
        Raises :class:`CorruptionError` if the entry at the cursor is damaged.
        """
        if self._closed or self._bg_error is not None:
            self._check_slow()
        t = self._existing_topic(topic, consumer)
        if t is None:
            return None
        cursor = t.cursors.get(consumer)
        if cursor is None:
            cursor = self._cursors.cursor(t, consumer)
        with cursor.lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            offset = cursor.offset
            if offset >= t.end:
                return None
            entry, block, pos = self._reader.read_one(cursor, offset)
            if checkpoint:
                self._cursors.advance(cursor, offset + 1, block, pos, 1)
            return entry

    def batch_read_for_topic(
        self,
        topic: str,
        max_bytes: int,
        checkpoint: bool = True,
        start_offset: int | None = None,
        *,
        consumer: str | None = None,
    ) -> list[Entry]:
        """Entries in order: at most ``limits.max_batch_entries``, stopping before the payload
        total would exceed ``max_bytes``, but at least one when any is available.

        ``start_offset=N`` reads from entry N without touching any cursor.
        """
        if self._closed or self._bg_error is not None:
            self._check_slow()
        _check_int("max_bytes", max_bytes)
        if max_bytes < 1:
            raise WalrusValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if start_offset is not None:
            _check_int("start_offset", start_offset)
            if start_offset < 0:
                raise OffsetOutOfRangeError(f"start_offset must be >= 0, got {start_offset}")
        t = self._existing_topic(topic, consumer)
        max_entries = self.limits.max_batch_entries
        if start_offset is not None:
            end = 0 if t is None else t.end
            if start_offset > end:
                raise OffsetOutOfRangeError(
                    f"start_offset {start_offset} is past the end of topic {topic!r} ({end})"
                )
            if t is None or start_offset == end:
                return []
            offset = max(start_offset, t.start)
            self._enter()
            try:
                block, pos = self._reader.locate(t, offset)
                scratch = Cursor(t, None, b"")  # a throw-away read-ahead buffer
                entries, _block, _pos = self._reader.read_batch(
                    scratch, offset, block, pos, end, max_entries, max_bytes
                )
            finally:
                self._leave()
            return entries
        if t is None:
            return []
        cursor = t.cursors.get(consumer)
        if cursor is None:
            cursor = self._cursors.cursor(t, consumer)
        with cursor.lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            offset = cursor.offset
            stop = t.end
            if offset >= stop:
                return []
            block, pos = self._cursors.position(cursor)
            entries, block, pos = self._reader.read_batch(
                cursor, offset, block, pos, stop, max_entries, max_bytes
            )
            if checkpoint and entries:
                self._cursors.advance(cursor, offset + len(entries), block, pos, len(entries))
            return entries

    def topic_entry_count(self, topic: str, *, consumer: str | None = None) -> int:
        """Entries of ``topic`` not yet consumed by ``consumer``."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        t = self._existing_topic(topic, consumer)
        if t is None:
            return 0
        cursor = self._cursors.cursor(t, consumer)
        return max(0, t.end - cursor.offset)

    def topic_entry_counts(self) -> dict[str, int]:
        """:meth:`topic_entry_count` of the default consumer, for every topic."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        return {
            name: max(0, t.end - self._cursors.cursor(t, None).offset)
            for name, t in list(self._topics.items())
            if t.end > 0
        }

    def topics(self) -> list[str]:
        """Topics with at least one entry ever written, sorted."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        return sorted(name for name, t in list(self._topics.items()) if t.end > 0)

    def seek(self, topic: str, offset: int, *, consumer: str | None = None) -> None:
        """Move ``consumer``'s durable cursor to ``offset`` (0..end): replay, or skip past a
        damaged entry. Persisted at once."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        _check_int("offset", offset)
        t = self._existing_topic(topic, consumer)
        end = 0 if t is None else t.end
        start = 0 if t is None else t.start
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside topic {topic!r} (entries {start}..{end})"
            )
        if t is None:
            return
        cursor = self._cursors.cursor(t, consumer)
        with cursor.lock:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            self._cursors.seek(cursor, offset)

    # -- durability -------------------------------------------------------------------------
    def flush(self) -> None:
        """Make everything appended and checkpointed so far durable now."""
        if self._closed:
            self._check_slow()
        self._enter()
        try:
            pending, self._bg_error = self._bg_error, None
            self._cursors.persist_pending(self._topics)
            try:
                flush_dirty(self._all_storages(), force=True)
            except OSError as exc:
                raise StorageError(f"flush failed: {exc}") from exc
        finally:
            self._leave()
        if pending is not None:
            raise StorageError(f"a background fsync failed: {pending}") from pending

    def close(self) -> None:
        """Persist every cursor, make data durable (unless ``no_fsync``), release the directory.

        Idempotent; every later call raises :class:`WalrusClosedError`. In a child process, for
        an instance inherited through ``fork()``, it does nothing: the files are the parent's.
        """
        if self._forked:
            return
        with self._in_flight_done:
            if self._closed:
                return
            self._closed = True
            self._in_flight_done.wait_for(lambda: not self._in_flight)
        if self._flusher is not None:
            self._flusher.stop()
        errors: list[BaseException] = []
        for t in list(self._topics.values()):
            with t.lock:  # waits for an in-flight append or batch
                try:
                    self._writer.close_topic(t)
                except OSError as exc:
                    errors.append(exc)
        try:
            self._cursors.persist_pending(self._topics)
        except WalrusError as exc:
            errors.append(exc)
        try:
            if not self.fsync.is_none:
                flush_dirty(self._all_storages())
        except OSError as exc:
            errors.append(exc)
        for closer in (self._cursor_store.close, self._allocator.close):
            try:
                closer()
            except OSError as exc:
                errors.append(exc)
        self._lock.release()
        if errors:
            first = errors[0]
            if isinstance(first, WalrusError):
                raise first
            raise StorageError(f"close failed: {first}") from first

    def __enter__(self) -> Walrus:
        if self._forked:
            raise lifecycle.forked_error(self.root)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "inherited through fork" if self._forked else "closed" if self._closed else "open"
        return f"<Walrus {self.root!r} {state} via {'/'.join(self._chain.names)}>"

    # -- lifetime: fork, garbage collection, copies -----------------------------------------
    def _after_fork_in_child(self) -> None:
        """Disown the instance in a forked child (called by :mod:`walrus_core.lifecycle`).

        The parent keeps appending, so the child's copy must never write (a clean-close seal
        would make recovery drop what the parent acknowledged later) and must take no lock (one
        may be held by a thread that does not exist in the child). Releasing the directory lock
        here only closes the child's copy of the descriptor: the parent's flock stays.
        """
        self._forked = True
        self._closed = True
        lock: DirectoryLock | None = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def __del__(self) -> None:
        # Like an unclosed file: without it the directory stays locked while the process lives.
        if not getattr(self, "_closed", True):
            lifecycle.close_unreachable(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        lifecycle.refuse_copy("pickled")

    def __copy__(self) -> NoReturn:
        lifecycle.refuse_copy("copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        lifecycle.refuse_copy("deep-copied")
