"""Consumer cursors: where each consumer of a topic is, and keeping that durable.

:class:`Cursor` is one consumer's position; :class:`CursorBook` is its one owner: it creates
cursors, restores them from disk, moves them after a read or a seek and persists them as the
read consistency says. :class:`CursorStore` is the file underneath, ``cursors.dat``: one 1 KiB
slot per (topic, consumer) holding the names once and two copies of the value, written
alternately with a sequence number and a checksum bound to the slot and its names, so a
checkpoint is one small in-place write, a torn write leaves the other copy valid, and a cursor
never moves backwards on disk. A slot that cannot be read stays reserved: it is never handed to
another consumer, whose position it could otherwise take over.

The same file holds each topic's start mark (see :class:`~walrus_core.index.StartMark`) in a
slot of the reserved consumer name ``START_MARK_CONSUMER``: a small value per topic that only
grows, which is exactly what a cursor slot keeps safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import attrs

from walrus_core.errors import StorageError
from walrus_core.format import (
    BLOCK_HEADER_SIZE,
    CURSOR_COPY,
    CURSOR_COPY_AT,
    CURSOR_INITIAL_SLOTS,
    CURSOR_SLOT_SIZE,
    CURSORS_NAME,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    SEQ_MASK,
    START_MARK_CONSUMER,
    START_MARK_DELETED,
    cursor_salt,
    pack_cursor_copy,
    pack_cursor_slot,
    unpack_cursor_copy,
    unpack_cursor_names,
)
from walrus_core.index import Block, StartMark, Topic
from walrus_core.names import encode_name
from walrus_core.reader import FIRST_AHEAD, FIRST_READAHEAD
from walrus_core.storage import FILE_CURSORS, OpenSpec, Storage

if TYPE_CHECKING:
    from walrus_core.entry import Entry
    from walrus_core.reader import EntryReader

log = logging.getLogger("walrus_core")

#: The name stored for the default consumer (``consumer=None``).
DEFAULT_CONSUMER = ""


@attrs.frozen
class StoredCursor:
    """A cursor as found on disk."""

    slot: int
    seq: int
    offset: int
    block_seq: int
    pos: int


class CursorStore:
    """Reads and writes cursor slots through the storage chain."""

    def __init__(
        self, root: str, open_storage: Callable[[OpenSpec], Storage], *, sync_each: bool
    ) -> None:
        self.path = os.path.join(root, CURSORS_NAME)
        self._open_storage = open_storage
        self._sync_each = sync_each
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], int] = {}
        self._salts: dict[int, int] = {}
        self._reserved: set[int] = set()  # slots in use or unreadable: never handed out
        self._retired: list[Storage] = []
        self._capacity = CURSOR_INITIAL_SLOTS
        self.existed = os.path.exists(self.path)
        if self.existed:
            size = os.path.getsize(self.path)
            if size < CURSOR_INITIAL_SLOTS * CURSOR_SLOT_SIZE or size % CURSOR_SLOT_SIZE:
                # We only ever create and grow it in whole slots, from 64 of them.
                log.warning(
                    "%s is %d bytes, cut short: consumers whose cursors were in the missing"
                    " part replay from the start",
                    self.path,
                    size,
                )
            self._capacity = max(self._capacity, -(-size // CURSOR_SLOT_SIZE))
        self.storage = self._open(self._capacity)

    def _open(self, slots: int) -> Storage:
        return self._open_storage(
            OpenSpec(
                path=self.path,
                size=slots * CURSOR_SLOT_SIZE,
                create=True,
                sync_each=self._sync_each,
                kind=FILE_CURSORS,
            )
        )

    def load(self) -> dict[tuple[str, str], StoredCursor]:
        """Every readable cursor; damaged slots are logged, skipped and kept reserved."""
        raw = self.storage.read(0, self._capacity * CURSOR_SLOT_SIZE)
        found: dict[tuple[str, str], StoredCursor] = {}
        for slot in range(len(raw) // CURSOR_SLOT_SIZE):
            base = slot * CURSOR_SLOT_SIZE
            view = memoryview(raw)[base : base + CURSOR_SLOT_SIZE]
            if not any(view):
                continue
            self._reserved.add(slot)
            names = unpack_cursor_names(view)
            if names is None or names in self._slots:
                log.warning(
                    "cursor slot %d of %s is damaged; its consumer will replay from the start"
                    " (the slot stays reserved)",
                    slot,
                    self.path,
                )
                continue
            self._slots[names] = slot
            salt = cursor_salt(slot, names[0].encode("utf-8"), names[1].encode("utf-8"))
            self._salts[slot] = salt
            copies = [unpack_cursor_copy(view, at, salt) for at in CURSOR_COPY_AT]
            valid = [c for c in copies if c is not None]
            written = [any(view[at : at + CURSOR_COPY.size]) for at in CURSOR_COPY_AT]
            if not valid:
                if any(written):
                    log.warning(
                        "cursor of topic %r consumer %r in %s is damaged; it replays from the"
                        " start",
                        names[0],
                        names[1] or None,
                        self.path,
                    )
                continue
            seq, offset, block_seq, pos = max(valid)
            if any(w and c is None for w, c in zip(written, copies, strict=True)):
                log.warning(
                    "a copy of the cursor of topic %r consumer %r in %s is damaged; using the"
                    " other one (offset %d): entries after it may be delivered again",
                    names[0],
                    names[1] or None,
                    self.path,
                    offset,
                )
            found[names] = StoredCursor(slot, seq, offset, block_seq, pos)
        return found

    def slot_for(self, topic: bytes, consumer: bytes) -> int:
        """The slot of (topic, consumer), allocating and writing it whole on first use."""
        key = (topic.decode("utf-8"), consumer.decode("utf-8"))
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                return slot
            slot = 0
            while slot in self._reserved:
                slot += 1
            if slot >= self._capacity:
                self._grow(slot + 1)
            record = pack_cursor_slot(topic, consumer)
            self.storage.write(slot * CURSOR_SLOT_SIZE, (record,), len(record))
            self.storage.dirty = True
            self._reserved.add(slot)
            self._slots[key] = slot
            self._salts[slot] = cursor_salt(slot, topic, consumer)
            return slot

    def free(self, topic: bytes, consumer: bytes) -> bool:
        """Clear the slot of (topic, consumer) so it can be handed out again; False if it had
        none. One whole-slot write of zeros: a torn one leaves names that do not validate, and
        the slot stays reserved (logged at the next open) instead of being reused."""
        key = (topic.decode("utf-8"), consumer.decode("utf-8"))
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return False
            self.storage.write(
                slot * CURSOR_SLOT_SIZE, (bytes(CURSOR_SLOT_SIZE),), CURSOR_SLOT_SIZE
            )
            self.storage.dirty = True
            del self._slots[key]
            self._salts.pop(slot, None)
            self._reserved.discard(slot)
            return True

    def flush(self) -> None:
        """Make every cursor written so far durable (raises OSError)."""
        for storage in self.storages():
            storage.flush()

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        new = self._open(capacity)
        # The old handle may still be in use by a concurrent checkpoint; close it at the end.
        self._retired.append(self.storage)
        self.storage = new
        self._capacity = capacity

    def write(self, slot: int, seq: int, offset: int, block_seq: int, pos: int) -> None:
        """Persist one cursor value (copy ``seq % 2`` of the slot)."""
        record = pack_cursor_copy(self._salts[slot], seq, offset, block_seq, pos)
        storage = self.storage
        storage.write(slot * CURSOR_SLOT_SIZE + CURSOR_COPY_AT[seq & 1], (record,), len(record))
        storage.dirty = True

    def storages(self) -> list[Storage]:
        """Every open handle (for flushing)."""
        return [*self._retired, self.storage]

    def close(self) -> None:
        """Close the cursor file."""
        for storage in self.storages():
            storage.close()
        self._retired.clear()


class Cursor:
    """A consumer's position in a topic, plus its read-ahead buffer.

    Only the :class:`CursorBook` moves it; the reader fills the read-ahead buffer.
    """

    __slots__ = (
        "ahead",
        "ahead_block",
        "ahead_first",
        "ahead_n",
        "block",
        "buf",
        "buf_block",
        "buf_start",
        "bytes_read",
        "consumer",
        "consumer_raw",
        "deleted",
        "lock",
        "offset",
        "persist_seq",
        "persisted",
        "pos",
        "readahead",
        "reads",
        "since_persist",
        "skipped",
        "slot",
        "topic",
    )

    def __init__(self, topic: Topic, consumer: str | None, consumer_raw: bytes) -> None:
        self.topic = topic
        self.consumer = consumer
        self.consumer_raw = consumer_raw
        self.lock = threading.Lock()
        self.offset = topic.start  # next entry to deliver
        self.block: Block | None = None  # the block holding ``offset`` (None: locate it)
        self.pos = 0  # in-block position of ``offset`` when ``block`` is set
        self.slot: int | None = None
        self.persist_seq = 0
        self.persisted = -1  # offset last written to disk (-1: never)
        self.since_persist = 0
        self.buf = b""
        self.buf_block: Block | None = None
        self.buf_start = 0  # in-block position of buf[0]
        self.readahead = FIRST_READAHEAD  # bytes the next read_next refill asks for
        # Entries of ``ahead_block`` from offset ``ahead_first`` on, already read and
        # validated, that read_next hands out without looking at the bytes again; how many
        # the next decode takes (it grows while reading goes on sequentially).
        self.ahead: list[Entry] = []
        self.ahead_block: Block | None = None
        self.ahead_first = 0
        self.ahead_n = FIRST_AHEAD
        self.skipped = 0  # entries retention dropped before this consumer read them
        self.deleted = False  # deleted: never persisted again (a new cursor takes the name)
        self.reads = 0  # entries delivered through this cursor (counted under its lock)
        self.bytes_read = 0


class CursorBook:
    """The owner of every cursor of one open directory: creation, restoring from disk, moving
    after reads and seeks, and persisting as the read consistency says."""

    def __init__(
        self,
        store: CursorStore,
        reader: EntryReader,
        *,
        strict: bool,
        persist_every: int,
    ) -> None:
        self.store = store
        self._reader = reader
        self._strict = strict
        self._persist_every = persist_every
        self._lock = threading.Lock()
        self._stored: dict[tuple[str, str], StoredCursor] = {}
        self.marks: dict[str, StartMark] = {}
        self._mark_slots: dict[str, StoredCursor] = {}
        # Reads of deleted cursors, so that the stats do not go back when one is deleted.
        self.deleted_reads = 0
        self.deleted_bytes_read = 0

    # -- opening ----------------------------------------------------------------------------
    def load_marks(self) -> dict[str, StartMark]:
        """Read ``cursors.dat``; return the topics' start marks (recovery needs them first)."""
        self._stored = self.store.load()
        for (name, consumer), stored in list(self._stored.items()):
            if consumer == START_MARK_CONSUMER:
                del self._stored[(name, consumer)]
                self._mark_slots[name] = stored
                self.marks[name] = StartMark(
                    stored.offset, stored.block_seq, bool(stored.pos & START_MARK_DELETED)
                )
        return dict(self.marks)

    def load(self, topics: dict[str, Topic], *, sync: bool) -> None:
        """Reconcile the cursors read by :meth:`load_marks` with the recovered topics: a
        cursor past the end of its topic (data after it was lost to a power loss) is moved back
        to the end and persisted there at once (synced unless ``sync`` is false), so that a
        later crash or power loss cannot make it jump forward again over entries appended
        since."""
        clamped = False
        for (name, consumer), stored in list(self._stored.items()):
            topic = topics.get(name)
            end = topic.end if topic is not None else 0
            if stored.offset <= end:
                continue
            log.warning(
                "cursor of topic %r consumer %r was at %d, past the %d entries recovered (data"
                " lost after the last flush); it continues at %d",
                name,
                consumer or None,
                stored.offset,
                end,
                end,
            )
            try:
                self.store.write(stored.slot, stored.seq + 1, end, 0, 0)
            except OSError as exc:
                raise StorageError(
                    f"persisting the cursor of topic {name!r} failed: {exc}"
                ) from exc
            self._stored[(name, consumer)] = StoredCursor(stored.slot, stored.seq + 1, end, 0, 0)
            clamped = True
        if clamped and sync:
            try:
                for storage in self.store.storages():
                    storage.flush()
            except OSError as exc:
                raise StorageError(f"syncing {self.store.path} failed: {exc}") from exc

    # -- cursors ----------------------------------------------------------------------------
    def cursor(self, topic: Topic, consumer: str | None) -> Cursor:
        """The cursor of ``consumer`` (None: the default one), created on first use."""
        cursor = topic.cursors.get(consumer)
        if cursor is not None:
            return cursor
        consumer_raw = b"" if consumer is None else encode_name(consumer, "consumer")
        with self._lock:
            cursor = topic.cursors.get(consumer)
            if cursor is not None:
                return cursor
            created = Cursor(topic, consumer, consumer_raw)
            stored = self._stored.get((topic.name, consumer or DEFAULT_CONSUMER))
            if stored is not None:
                self._restore(created, stored)
            topic.cursors[consumer] = created
            return created

    def _restore(self, cursor: Cursor, stored: StoredCursor) -> None:
        topic = cursor.topic
        offset = max(min(stored.offset, topic.end), topic.start)
        cursor.slot = stored.slot
        cursor.persist_seq = stored.seq
        cursor.persisted = offset
        cursor.offset = offset
        if stored.offset < topic.start:
            cursor.skipped = topic.start - stored.offset
            _log_skip(topic, cursor.consumer, stored.offset, topic.start)
        if offset == stored.offset and offset < topic.end:
            cursor.block, cursor.pos = self._hint(topic, stored)

    @staticmethod
    def _hint(topic: Topic, stored: StoredCursor) -> tuple[Block | None, int]:
        """Trust a persisted (block, position) only if the entry header there is the one of
        that offset in that block."""
        for block in topic.blocks:
            if block.seq != stored.block_seq:
                continue
            if not (block.first_offset <= stored.offset < block.first_offset + block.count):
                return None, 0
            if not BLOCK_HEADER_SIZE <= stored.pos < block.end:
                return None, 0
            try:
                header = block.storage.read(block.base + stored.pos, ENTRY_HEADER_SIZE)
            except OSError:
                return None, 0
            if len(header) == ENTRY_HEADER_SIZE:
                _crc, _length, seq, version, _flags, tag = ENTRY_HEADER.unpack_from(header)
                if (
                    seq == stored.offset & SEQ_MASK
                    and version == ENTRY_VERSION
                    and tag == block.tag
                ):
                    return block, stored.pos
            return None, 0
        return None, 0

    def position(self, cursor: Cursor) -> tuple[Block, int]:
        """(block, in-block position) of the cursor's next entry, located on first need."""
        block = cursor.block
        if block is None:
            block, pos = self._reader.locate(cursor.topic, cursor.offset, cursor)
            cursor.block, cursor.pos = block, pos
            return block, pos
        return block, cursor.pos

    # -- moving -----------------------------------------------------------------------------
    def advance(
        self, cursor: Cursor, new_offset: int, block: Block | None, pos: int, consumed: int
    ) -> None:
        """Move the cursor past ``consumed`` entries it delivered, persisting first when the
        read consistency says so (if that fails, the cursor has not moved)."""
        if self._strict:
            if new_offset > cursor.persisted:
                self.persist(cursor, new_offset, block, pos)
        elif cursor.since_persist + consumed >= self._persist_every:
            self.persist(cursor, new_offset, block, pos)
        else:
            cursor.since_persist += consumed
        cursor.offset = new_offset
        cursor.block = block
        cursor.pos = pos

    def seek(self, cursor: Cursor, offset: int) -> None:
        """Move the cursor to ``offset`` and persist it at once."""
        self.persist(cursor, offset, None, 0)
        cursor.offset = offset
        cursor.block = None
        cursor.pos = 0
        cursor.readahead = FIRST_READAHEAD
        cursor.ahead, cursor.ahead_block, cursor.ahead_n = [], None, FIRST_AHEAD

    def persist(self, cursor: Cursor, offset: int, block: Block | None, pos: int) -> None:
        """Write ``offset`` as the cursor's durable position (raises StorageError)."""
        topic = cursor.topic
        if cursor.deleted:
            return  # the consumer was deleted while this call waited for its lock
        try:
            if cursor.slot is None:
                cursor.slot = self.store.slot_for(topic.raw, cursor.consumer_raw)
            seq = cursor.persist_seq + 1
            self.store.write(cursor.slot, seq, offset, block.seq if block is not None else 0, pos)
        except OSError as exc:
            raise StorageError(
                f"persisting the cursor of topic {topic.name!r} failed: {exc}"
            ) from exc
        cursor.persist_seq = seq
        cursor.persisted = offset
        cursor.since_persist = 0

    # -- reclamation, retention, deletion ---------------------------------------------------
    @contextlib.contextmanager
    def hold(self, topic: Topic) -> Iterator[None]:
        """Hold every cursor of ``topic`` still and keep new ones from being created: what
        reclamation needs while it decides where the topic starts."""
        with self._lock, contextlib.ExitStack() as stack:
            for cursor in list(topic.cursors.values()):
                stack.enter_context(cursor.lock)
            yield

    def floor(self, topic: Topic) -> int:
        """The lowest durable position of any existing consumer of ``topic`` (call inside
        :meth:`hold`): nothing at or after it may be reclaimed.

        A consumer exists once it consumed or sought (its cursor is on disk, or moved in
        memory); one that was only counted or peeked with does not. A cursor that moved but
        is not on disk yet would start over after a crash, so it pins the whole topic, and so
        does having no consumer at all: nobody said they are done with anything yet.
        """
        floor: int | None = None
        for cursor in topic.cursors.values():
            if cursor.persisted >= 0:
                value = cursor.persisted
            elif cursor.since_persist or cursor.offset != topic.start:
                value = topic.start
            else:
                continue
            floor = value if floor is None else min(floor, value)
        for (name, consumer), stored in self._stored.items():
            if name == topic.name and (consumer or None) not in topic.cursors:
                value = max(stored.offset, topic.start)
                floor = value if floor is None else min(floor, value)
        return topic.start if floor is None else floor

    def skip_to(self, topic: Topic, start: int) -> int:
        """Move every consumer of ``topic`` below ``start`` to it (retention dropped what they
        had not read; call inside :meth:`hold`), persisting each; returns the entries skipped.
        Cursors not loaded yet are moved when they are (see ``_restore``)."""
        skipped = 0
        for cursor in topic.cursors.values():
            if cursor.offset >= start:
                continue
            if cursor.persisted < 0 and not cursor.since_persist and cursor.offset == topic.start:
                cursor.offset = start  # only counted or peeked with: it missed nothing
                cursor.block, cursor.buf, cursor.buf_block = None, b"", None
                cursor.ahead, cursor.ahead_block = [], None
                continue
            missed = start - cursor.offset
            _log_skip(topic, cursor.consumer, cursor.offset, start)
            if cursor.persisted >= 0 or cursor.since_persist:
                self.persist(cursor, start, None, 0)
            cursor.offset = start
            cursor.block = None
            cursor.pos = 0
            cursor.buf, cursor.buf_block = b"", None
            cursor.ahead, cursor.ahead_block = [], None
            cursor.skipped += missed
            skipped += missed
        return skipped

    def write_mark(self, topic: Topic, mark: StartMark) -> None:
        """Record where ``topic`` starts (raises OSError); made durable by the caller."""
        previous = self._mark_slots.get(topic.name)
        if previous is None:
            slot = self.store.slot_for(topic.raw, START_MARK_CONSUMER.encode("utf-8"))
            seq = 1
        else:
            slot, seq = previous.slot, previous.seq + 1
        flags = START_MARK_DELETED if mark.deleted else 0
        self.store.write(slot, seq, mark.offset, mark.first_seq, flags)
        self._mark_slots[topic.name] = StoredCursor(slot, seq, mark.offset, mark.first_seq, flags)
        self.marks[topic.name] = mark

    def consumers(self, topic: Topic) -> list[tuple[str | None, int, int]]:
        """(name, offset, skipped) of every existing consumer of ``topic`` (see
        :meth:`floor`), loaded or only on disk; the default consumer (None) first."""
        with self._lock:
            found: dict[str | None, tuple[int, int]] = {
                name: (cursor.offset, cursor.skipped)
                for name, cursor in topic.cursors.items()
                if cursor.persisted >= 0 or cursor.since_persist or cursor.offset != topic.start
            }
            for (name, consumer), stored in self._stored.items():
                key = consumer or None
                if name == topic.name and key not in found and key not in topic.cursors:
                    found[key] = (max(min(stored.offset, topic.end), topic.start), 0)
        names = sorted(n for n in found if n is not None)
        return [(n, *found[n]) for n in ([None] if None in found else []) + names]

    def delete(self, topic: Topic, consumer: str | None) -> bool:
        """Forget ``consumer`` of ``topic`` and free its slot (raises StorageError); False if
        it had no cursor. It no longer holds back reclamation; the name, used again, starts
        at the oldest retained entry."""
        consumer_raw = b"" if consumer is None else encode_name(consumer, "consumer")
        with self._lock:
            cursor = topic.cursors.get(consumer)
            existed = cursor is not None
            if cursor is not None:
                with cursor.lock:
                    cursor.deleted = True
                    del topic.cursors[consumer]
                    self.deleted_reads += cursor.reads
                    self.deleted_bytes_read += cursor.bytes_read
            stored = self._stored.pop((topic.name, consumer or DEFAULT_CONSUMER), None)
            existed = existed or stored is not None
            try:
                freed = self.store.free(topic.raw, consumer_raw)
            except OSError as exc:
                raise StorageError(
                    f"deleting consumer {consumer!r} of topic {topic.name!r} failed: {exc}"
                ) from exc
            return existed or freed

    def delete_all(self, topic: Topic) -> None:
        """Delete every consumer of ``topic`` (the topic is being deleted)."""
        names: set[str | None] = set(topic.cursors)
        names.update(c or None for (n, c) in self._stored if n == topic.name)
        for name in names:
            self.delete(topic, name)

    def persist_pending(self, topics: dict[str, Topic]) -> None:
        """Persist every cursor that moved since it was last written (flush and close)."""
        for topic in list(topics.values()):
            for cursor in list(topic.cursors.values()):
                with cursor.lock:
                    if cursor.offset != cursor.persisted and (
                        cursor.since_persist or cursor.persisted >= 0
                    ):
                        self.persist(cursor, cursor.offset, cursor.block, cursor.pos)


def _log_skip(topic: Topic, consumer: str | None, offset: int, start: int) -> None:
    log.warning(
        "topic %r consumer %r: retention dropped entries %d..%d before it read them; it"
        " continues at %d",
        topic.name,
        consumer,
        offset,
        start - 1,
        start,
    )
