"""The public facade: :class:`Walrus`."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex

from walrus_core import lifecycle
from walrus_core.accel import accel
from walrus_core.background import Flusher, flush_dirty
from walrus_core.config import FsyncSchedule, Geometry, Limits, ReadConsistency, log_settings
from walrus_core.cursors import Cursor
from walrus_core.directory import DirectoryLock, prepare_root
from walrus_core.entry import Entry, Payload
from walrus_core.errors import (
    BatchTooLargeError,
    CorruptionError,
    EntryTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
    UnknownTopicError,
    WalrusClosedError,
    WalrusError,
    WalrusValueError,
)
from walrus_core.format import FORMAT_VERSION
from walrus_core.groupcommit import GroupCommit
from walrus_core.index import StartMark, Topic
from walrus_core.info import (
    ConsumerInfo,
    LogInfo,
    ReclaimResult,
    Retention,
    Stats,
    TopicInfo,
)
from walrus_core.names import encode_name, namespace_dir
from walrus_core.opening import open_directory
from walrus_core.plugins import AUTO, BackendRegistry, default_registry
from walrus_core.reader import read_groups
from walrus_core.reclaim import Reclaimer, allocated_bytes, block_bytes
from walrus_core.stats import LatencyRecorder, ReadCounter
from walrus_core.storage import Flushable
from walrus_core.writer import Writer

if TYPE_CHECKING:
    from walrus_core.readonly import WalrusReader

log = logging.getLogger("walrus_core")

DEFAULT_DATA_DIR = "wal_files"
#: How often the background thread hands the stats to ``walrus_stats_report`` plugins.
STATS_REPORT_S = 10.0
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


def _check_read_arguments(max_bytes: Any, start_offset: Any) -> None:
    """The checks a batch read makes of its budget and of a ``start_offset`` it is given."""
    _check_int("max_bytes", max_bytes)
    if max_bytes < 1:
        raise WalrusValueError(f"max_bytes must be >= 1, got {max_bytes}")
    if start_offset is not None:
        _check_int("start_offset", start_offset)
        if start_offset < 0:
            raise OffsetOutOfRangeError(f"start_offset must be >= 0, got {start_offset}")


class Walrus:
    """An open write-ahead log directory: topics of byte entries with durable cursors.

    Every method is thread-safe. One instance per directory: a second one, in this process or
    another, raises :class:`~walrus_core.DirectoryLockedError`; other processes can still look
    inside with :meth:`open_readonly`. Use it as a context manager, or call :meth:`close`.

    Parameters:
        data_dir: the directory of the log, created if missing (default ``$WALRUS_DATA_DIR``,
            else ``./wal_files``).
        key: a namespace: the log lives in a subdirectory of ``data_dir`` derived from the key
            (default ``$WALRUS_INSTANCE_KEY``, else none: ``data_dir`` itself).
        backend: the storage backend: ``"auto"`` (the default, or ``$WALRUS_BACKEND``), a name
            such as ``"fd"``, or a comma-separated preference list such as ``"uring,fd"``.
        consistency: when a checkpointing read makes its cursor durable:
            ``ReadConsistency.strictly_at_once()`` (the default) or
            ``ReadConsistency.at_least_once(persist_every=N)``.
        fsync: when data reaches stable storage: ``FsyncSchedule.milliseconds(200)`` (the
            default), ``FsyncSchedule.sync_each()`` or ``FsyncSchedule.no_fsync()``.
        block_size: bytes per block, a multiple of 4 KiB (default 10 MiB); recorded when the
            directory is created, and the recorded value wins on reopen.
        blocks_per_file: blocks per data file (default 100); recorded like ``block_size``.
        limits: caps on batches and entries (:class:`~walrus_core.Limits`).
        registry: the backends to choose from (default: the installed ones,
            ``walrus_core.plugin.default_registry()``); for in-process plugins and tests.
        retention: bounds for every topic (:class:`~walrus_core.Retention`; its
            ``max_bytes`` also bounds all topics together). Default: keep everything.
        topic_retention: per-topic bounds, replacing ``retention`` for those topics.
        auto_reclaim: give the space of consumed and expired blocks back from a background
            thread about once a second (default True); :meth:`reclaim` does it at once.

    Attributes:
        root: the directory holding this log's files (``data_dir``, plus the key's
            subdirectory).
        geometry: the :class:`~walrus_core.Geometry` in force (the recorded one on reopen).
        consistency: the :class:`~walrus_core.ReadConsistency` in force.
        fsync: the :class:`~walrus_core.FsyncSchedule` in force.
        limits: the :class:`~walrus_core.Limits` in force.
        backend_chain: the backends in use, top first, e.g. ``("uring", "fd")``.
        closed: whether :meth:`close` was called (or the instance was inherited by fork).

    Raises:
        InvalidConfigError: a setting that cannot work (a ``ValueError``).
        StorageError: the directory cannot be created, written or read (``errno`` says why).
        DirectoryLockedError: another instance holds the directory.
        BackendUnavailableError: the backend asked for is not installed or cannot run here.
    """

    #: The directory holding this log's files.
    root: str
    #: The geometry in force (the recorded one on reopen).
    geometry: Geometry
    #: When a checkpointing read makes its cursor durable.
    consistency: ReadConsistency
    #: When data reaches stable storage.
    fsync: FsyncSchedule
    #: Caps on batches and entries.
    limits: Limits

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
        retention: Retention | None = None,
        topic_retention: Mapping[str, Retention] | None = None,
        auto_reclaim: bool = True,
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
        consistency, fsync, limits = log_settings(consistency, fsync, limits)
        retention = Retention() if retention is None else retention
        if not isinstance(retention, Retention):
            raise TypeError(f"retention must be a Retention, not {type(retention).__name__}")
        per_topic = dict(topic_retention or {})
        for name, value in per_topic.items():
            encode_name(name)
            if not isinstance(value, Retention):
                raise TypeError(
                    f"topic_retention[{name!r}] must be a Retention, not {type(value).__name__}"
                )
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
        self._registry = registry if registry is not None else default_registry()
        chain = self._registry.chain(backend)
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
            sync_each=sync_each,
            sync_failures=not fsync.is_none,
        )
        # Concurrent sync_each appends share device flushes; other schedules do not flush
        # per append, so there is nothing to share.
        self._group_commit = GroupCommit(self._writer, limits) if sync_each else None
        self._reclaimer = Reclaimer(
            self.root,
            self._allocator,
            self._topics,
            self._cursors,
            self._writer,
            retention=retention,
            topic_retention=per_topic,
            sync=not fsync.is_none,
        )
        self._fsync_latency = LatencyRecorder()
        self._stats_reported = time.monotonic()
        self._unlocked_reads = ReadCounter()
        self._flusher: Flusher | None = None
        if fsync.is_periodic or auto_reclaim:
            self._flusher = Flusher(
                fsync.interval_ms if fsync.is_periodic else 1000,
                self._all_storages,
                self._bg_failed,
                flush=fsync.is_periodic,
                housekeeping=self._housekeeping if auto_reclaim else None,
                latency=self._fsync_latency,
            )
            self._flusher.start()
        self._closed = False

    def _all_storages(self) -> list[Flushable]:
        return [*list(self._allocator.files.values()), *self._cursor_store.storages()]

    def _bg_failed(self, exc: OSError) -> None:
        self._bg_error = exc

    def _housekeeping(self) -> None:
        try:
            self._enter()
        except WalrusClosedError:
            return
        try:
            self._reclaimer.run()
        except StorageError as exc:
            log.error("reclaiming space in %s failed: %s", self.root, exc)
        finally:
            self._leave()
        now = time.monotonic()
        if now - self._stats_reported >= STATS_REPORT_S:
            self._stats_reported = now
            self._registry.report_stats(self.root, self._collect_stats())

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
            mark = self._cursors.marks.get(topic)
            if mark is not None:  # the name was used before: it continues where it stopped
                created.start = created.end = mark.offset
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
    def append_for_topic(self, topic: str, data: Payload) -> int:
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
        if self._group_commit is not None:
            offset = self._group_commit.append(t, payload, length, self._is_closed)
            if offset >= 0:
                return offset
            return self._append_again(topic, payload, length)
        with t.lock:
            if not (self._closed or t.deleted):
                offset = self._writer.append(t, payload, length)
                t.appends += 1
                t.bytes_appended += length
                return offset
        return self._append_again(topic, payload, length)

    def _is_closed(self) -> bool:
        return self._closed

    def _append_again(self, topic: str, payload: Any, length: int) -> int:
        """An append that found the instance closed, or its topic deleted under it."""
        while True:
            if self._closed:
                raise WalrusClosedError("this Walrus instance is closed")
            t = self._topic_for_write(topic)
            with t.lock:
                if not (self._closed or t.deleted):
                    offset = self._writer.append(t, payload, length)
                    t.appends += 1
                    t.bytes_appended += length
                    if self._group_commit is not None:
                        t.sync_groups += 1  # a group of one
                    return offset

    def batch_append_for_topic(self, topic: str, entries: Iterable[Payload]) -> range:
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
        if accel is not None:
            payloads, total, longest = accel.measure(items, _as_payload)
        else:
            payloads = [
                (item, len(item)) if type(item) is bytes else _as_payload(item) for item in items
            ]
            total = sum([length for _payload, length in payloads])
            longest = max([length for _payload, length in payloads], default=0)
        max_entry = limits.max_entry_bytes
        if longest > max_entry:
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
        while True:
            with t.lock:
                if self._closed:
                    raise WalrusClosedError("this Walrus instance is closed")
                if not t.deleted:
                    offsets = self._writer.append_batch(t, payloads)
                    t.batches += 1
                    t.batch_entries += len(payloads)
                    t.bytes_appended += total
                    return offsets
            t = self._topic_for_write(topic)

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
        t = self._topics.get(topic) if type(topic) is str else None
        if t is None:
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
            if offset >= t.end or cursor.deleted:
                return None
            entry, block, pos = self._reader.read_one(cursor, offset)
            if checkpoint:
                self._cursors.advance(cursor, offset + 1, block, pos, 1)
            cursor.reads += 1
            cursor.bytes_read += len(entry.data)
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
        _check_read_arguments(max_bytes, start_offset)
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
            return self._read_from(t, start_offset, end, max_entries, max_bytes)
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
            if offset >= stop or cursor.deleted:
                return []
            block, pos = self._cursors.position(cursor)
            entries, block, pos, nbytes = self._reader.read_batch(
                cursor, offset, block, pos, stop, max_entries, max_bytes
            )
            if checkpoint and entries:
                self._cursors.advance(cursor, offset + len(entries), block, pos, len(entries))
            cursor.reads += len(entries)
            cursor.bytes_read += nbytes
            return entries

    def _read_from(
        self, t: Topic, start_offset: int, end: int, max_entries: int, max_bytes: int
    ) -> list[Entry]:
        """A stateless read. Entries below the topic's start are gone, so it begins at the
        start; a read that reclamation overtook (its block punched or its file deleted under
        it) begins again at the new start."""
        self._enter()
        try:
            while True:
                offset = max(start_offset, t.start)
                if offset >= end:
                    return []
                try:
                    scratch = Cursor(t, None, b"")  # a throw-away read-ahead buffer
                    block, pos = self._reader.locate(t, offset, scratch)
                    entries, _block, _pos, nbytes = self._reader.read_batch(
                        scratch, offset, block, pos, end, max_entries, max_bytes
                    )
                except (CorruptionError, StorageError):
                    if offset >= t.start:
                        raise
                    continue  # reclaimed under this read
                self._unlocked_reads.add(len(entries), nbytes)
                return entries
        finally:
            self._leave()

    def read_batches(self, topic: str, start_offset: int, max_bytes: int) -> list[list[Entry]]:
        """Entries from ``start_offset`` grouped as they were appended, touching no cursor.

        Each inner list is what one call wrote: a single append is a list of one entry, a
        batch append the batch's entries in order. Groups are whole: they are added while the
        payload total stays within ``max_bytes`` and the entry count within
        ``limits.max_batch_entries``, and the first group is returned whole even when it is
        larger. This is how a copy of the log elsewhere can keep every batch atomic.

        Entries below the topic's oldest retained one are gone, so the first group can begin
        after ``start_offset``: compare its offset. Raises :class:`OffsetOutOfRangeError` when
        ``start_offset`` is past the end or inside a batch.
        """
        if self._closed or self._bg_error is not None:
            self._check_slow()
        _check_int("start_offset", start_offset)
        _check_read_arguments(max_bytes, start_offset)
        t = self._existing_topic(topic)
        end = 0 if t is None else t.end
        if start_offset > end:
            raise OffsetOutOfRangeError(
                f"start_offset {start_offset} is past the end of topic {topic!r} ({end})"
            )
        if t is None or start_offset == end:
            return []
        self._enter()
        try:
            while True:
                offset = max(start_offset, t.start)
                if offset >= end:
                    return []
                try:
                    # The entry before ends a group unless it is an open batch entry.
                    if (
                        offset == start_offset
                        and offset > t.start
                        and not read_groups(self._reader, t, offset - 1, offset, 1, 1)
                    ):
                        raise OffsetOutOfRangeError(
                            f"start_offset {start_offset} of topic {topic!r} is inside a batch"
                        )
                    return read_groups(
                        self._reader, t, offset, end, self.limits.max_batch_entries, max_bytes
                    )
                except (CorruptionError, StorageError):
                    if offset >= t.start:
                        raise
                    # reclaimed under this read: begin again at the new start
        finally:
            self._leave()

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
            if t.end > t.hidden_until
        }

    def topics(self) -> list[str]:
        """Topics with at least one entry ever written (and not deleted since), sorted."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        return sorted(name for name, t in list(self._topics.items()) if t.end > t.hidden_until)

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
            if offset < t.start:  # reclaimed since the check above
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside topic {topic!r} (entries {t.start}..{t.end})"
                )
            self._cursors.seek(cursor, offset)

    # -- operations: space, retention, consumers, topics, reports ------------------------
    def reclaim(self) -> ReclaimResult:
        """Give the space of consumed blocks (read past by every consumer of their topic) and
        of blocks past retention back to the file system now: delete data files with nothing
        live left, punch holes where a file must stay. The background thread does the same
        about once a second unless ``auto_reclaim=False``."""
        self._check_slow()
        self._enter()
        try:
            return self._reclaimer.run()
        finally:
            self._leave()

    def consumers(self, topic: str) -> list[ConsumerInfo]:
        """Every consumer of ``topic`` with its position, lag and skipped entries; the default
        consumer (``name=None``) first, then the named ones sorted."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        t = self._existing_topic(topic)
        if t is None:
            return []
        return [
            ConsumerInfo(name=name, offset=offset, lag=max(0, t.end - offset), skipped=skipped)
            for name, offset, skipped in self._cursors.consumers(t)
        ]

    def delete_consumer(self, topic: str, consumer: str | None) -> bool:
        """Forget ``consumer`` of ``topic`` (None: the default cursor), durably: it stops
        holding back reclamation, and the name, used again, starts at the oldest retained
        entry. Returns False if it had no cursor."""
        self._check_slow()
        t = self._existing_topic(topic, consumer)
        if t is None:
            return False
        existed = self._cursors.delete(t, consumer)
        if existed and not self.fsync.is_none:
            try:
                self._cursor_store.flush()
            except OSError as exc:
                raise StorageError(f"syncing the consumer deletion failed: {exc}") from exc
        return existed

    def delete_topic(self, topic: str) -> bool:
        """Delete ``topic``: its entries and consumers go, its blocks become garbage (their
        space comes back at once). The name can be used again; it continues at the offset
        where it stopped, so an offset never names two different entries. Returns False if
        there was nothing to delete."""
        self._check_slow()
        t = self._existing_topic(topic)
        if t is None:
            return False
        self._enter()
        try:
            with self._reclaimer.lock, t.lock:
                if t.deleted or self._closed or (t.end <= t.hidden_until and not t.blocks):
                    return False
                end = t.end
                mark = StartMark(end, self._allocator.next_seq, deleted=True)
                failure: OSError | None = None
                try:
                    self._cursors.write_mark(t, mark)
                    if not self.fsync.is_none:
                        self._cursor_store.flush()
                except OSError as exc:
                    failure = exc
                try:
                    self._cursors.delete_all(t)
                    if not self.fsync.is_none:
                        self._cursor_store.flush()
                except (OSError, WalrusError) as exc:
                    log.warning("deleting the consumers of topic %r: %s", topic, exc)
                # Whether or not the mark reached the disk, the name goes on in a new
                # generation: its blocks are numbered past the mark, so appends made after
                # this call survive either way (with the old entries before them when the
                # deletion did not become durable).
                fresh = Topic(t.name, t.raw)
                fresh.start = fresh.end = fresh.hidden_until = end
                # The counters go on (stats never go back).
                fresh.appends, fresh.batches = t.appends, t.batches
                fresh.batch_entries, fresh.bytes_appended = t.batch_entries, t.bytes_appended
                with self._registry_lock:
                    self._topics[t.name] = fresh
                t.deleted = True
                t.start = end
                dropped = t.drop_front(len(t.blocks)) + t.pending_dead
                t.pending_dead = []
            if failure is not None:
                # The old blocks stay on disk: the deletion may not be durable, and then they
                # are still the topic's entries at the next open.
                raise StorageError(f"deleting topic {topic!r} failed: {failure}") from failure
            for block in dropped:
                self._allocator.release(block)
            self._reclaimer.run()
        finally:
            self._leave()
        return True

    def topic_info(self, topic: str) -> TopicInfo:
        """``topic``'s retained range, blocks, bytes, consumers and retention (raises
        :class:`UnknownTopicError` for a topic without entries)."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        t = self._existing_topic(topic)
        if t is None or t.end <= t.hidden_until:
            raise UnknownTopicError(f"no topic named {topic!r}")
        return self._topic_info(t)

    def _topic_info(self, t: Topic) -> TopicInfo:
        blocks = list(t.blocks)
        return TopicInfo(
            name=t.name,
            first_offset=t.start,
            end_offset=t.end,
            entries=t.end - t.start,
            blocks=len(blocks),
            bytes_on_disk=sum(block_bytes(b) for b in blocks),
            consumers=tuple(self.consumers(t.name)),
            retention=self._reclaimer.retention_for(t.name),
        )

    def info(self) -> LogInfo:
        """The whole directory: geometry, files, allocated bytes, retention, every topic."""
        if self._closed or self._bg_error is not None:
            self._check_slow()
        names = self.topics()
        on_disk = 0
        try:
            for name in os.listdir(self.root):
                on_disk += allocated_bytes(os.path.join(self.root, name))
        except OSError as exc:
            raise StorageError(f"listing {self.root!r} failed: {exc}") from exc
        return LogInfo(
            data_dir=self.root,
            format_version=FORMAT_VERSION,
            block_size=self.geometry.block_size,
            blocks_per_file=self.geometry.blocks_per_file,
            backend_chain=self.backend_chain,
            files=len(self._allocator.files),
            bytes_on_disk=on_disk,
            retention=self._reclaimer.retention,
            read_only=False,
            topics=tuple(self._topic_info(self._topics[name]) for name in names),
        )

    def stats(self) -> Stats:
        """Counters since this instance opened (see :class:`walrus_core.info.Stats`)."""
        if self._closed:
            self._check_slow()
        return self._collect_stats()

    def _collect_stats(self) -> Stats:
        topics = list(self._topics.values())
        cursors = [c for t in topics for c in list(t.cursors.values())]
        return Stats(
            appends=sum(t.appends for t in topics),
            batches=sum(t.batches for t in topics),
            entries_appended=sum(t.appends + t.batch_entries for t in topics),
            sync_groups=sum(t.sync_groups for t in topics),
            bytes_appended=sum(t.bytes_appended for t in topics),
            reads=sum(c.reads for c in cursors)
            + self._unlocked_reads.entries
            + self._cursors.deleted_reads,
            bytes_read=sum(c.bytes_read for c in cursors)
            + self._unlocked_reads.bytes
            + self._cursors.deleted_bytes_read,
            fsyncs=self._fsync_latency.snapshot(),
            reclaimed_bytes=self._reclaimer.bytes_freed,
            files_deleted=self._reclaimer.files_deleted,
            blocks_punched=self._reclaimer.blocks_punched,
            backend_chain=self.backend_chain,
        )

    @staticmethod
    def open_readonly(
        data_dir: str | os.PathLike[str] | None = None, key: str | None = None
    ) -> WalrusReader:
        """Open ``data_dir`` for reading only, also while another process writes to it: no
        lock is taken and nothing is written (see :class:`walrus_core.readonly.WalrusReader`).
        """
        from walrus_core.readonly import WalrusReader

        return WalrusReader(data_dir, key)

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
                flush_dirty(self._all_storages(), force=True, latency=self._fsync_latency)
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
                flush_dirty(self._all_storages(), latency=self._fsync_latency)
        except OSError as exc:
            errors.append(exc)
        self._registry.report_stats(self.root, self._collect_stats())
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
