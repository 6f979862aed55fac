"""Durable consumer cursors: one 1 KiB slot per (topic, consumer) in ``cursors.dat``.

A slot holds the names once and two copies of the cursor value, written alternately with a
sequence number and a crc: a checkpoint is one small in-place write, and a torn write leaves
the other copy valid, so a cursor never moves backwards on disk.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import attrs

from walrus_core.format import (
    CURSOR_COPY,
    CURSOR_COPY_AT,
    CURSOR_INITIAL_SLOTS,
    CURSOR_SLOT_SIZE,
    CURSORS_NAME,
    pack_cursor_copy,
    pack_cursor_names,
    unpack_cursor_copy,
    unpack_cursor_names,
)
from walrus_core.storage import FILE_CURSORS, OpenSpec, Storage

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
        self._retired: list[Storage] = []
        self._capacity = CURSOR_INITIAL_SLOTS
        self.damaged_file = False
        if os.path.exists(self.path):
            size = os.path.getsize(self.path)
            if size < CURSOR_INITIAL_SLOTS * CURSOR_SLOT_SIZE or size % CURSOR_SLOT_SIZE:
                # We only ever create and grow it in whole slots, from 64 of them.
                log.warning(
                    "%s is %d bytes, cut short: consumers whose cursors were in the missing"
                    " part replay from the start",
                    self.path,
                    size,
                )
                self.damaged_file = True
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
        """Every readable cursor; damaged slots are logged and skipped (those consumers replay)."""
        raw = self.storage.read(0, self._capacity * CURSOR_SLOT_SIZE)
        found: dict[tuple[str, str], StoredCursor] = {}
        for slot in range(len(raw) // CURSOR_SLOT_SIZE):
            base = slot * CURSOR_SLOT_SIZE
            view = memoryview(raw)[base : base + CURSOR_SLOT_SIZE]
            if not any(view[:4]):
                continue
            names = unpack_cursor_names(view)
            if names is None:
                log.warning(
                    "cursor slot %d of %s is damaged; its consumer will replay from the start",
                    slot,
                    self.path,
                )
                continue
            self._slots[names] = slot
            copies = [unpack_cursor_copy(view, at) for at in CURSOR_COPY_AT]
            valid = [c for c in copies if c is not None]
            if not valid:
                if any(any(view[at : at + CURSOR_COPY.size]) for at in CURSOR_COPY_AT):
                    log.warning(
                        "cursor of topic %r consumer %r in %s is damaged; it replays from the"
                        " start",
                        names[0],
                        names[1] or None,
                        self.path,
                    )
                continue
            seq, offset, block_seq, pos = max(valid)
            if len(valid) < len(copies) and any(
                any(view[at : at + CURSOR_COPY.size]) and copy is None
                for at, copy in zip(CURSOR_COPY_AT, copies, strict=True)
            ):
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
        """The slot of (topic, consumer), allocating and naming it on first use."""
        key = (topic.decode("utf-8"), consumer.decode("utf-8"))
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                return slot
            slot = len(self._slots)
            used = set(self._slots.values())
            while slot in used:
                slot += 1
            if slot >= self._capacity:
                self._grow(slot + 1)
            names = pack_cursor_names(topic, consumer)
            self.storage.write(slot * CURSOR_SLOT_SIZE, (names,), len(names))
            self.storage.dirty = True
            self._slots[key] = slot
            return slot

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
        record = pack_cursor_copy(seq, offset, block_seq, pos)
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
