"""The in-memory index: which blocks hold which entries of a topic.

Readers never take a topic's writer lock. They rely on publication order: the writer fills a
block, updates ``Block.count``/``Block.end`` and only then advances ``Topic.end``. An offset below
``Topic.end`` is therefore always readable through the block chain.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import deque
from typing import TYPE_CHECKING

import attrs

from walrus_core.format import BLOCK_HEADER_SIZE, block_salt, block_tag

if TYPE_CHECKING:
    from walrus_core.cursors import Cursor
    from walrus_core.files import DataFile
    from walrus_core.groupcommit import PendingAppend


@attrs.frozen
class StartMark:
    """Where a topic starts after reclamation, as recorded in cursors.dat.

    ``offset`` is the first retained entry; every block of the topic with a sequence number
    below ``first_seq`` was reclaimed (whatever is left of it on disk is not the topic's any
    more). ``deleted``: the topic was deleted at ``offset``.
    """

    offset: int
    first_seq: int
    deleted: bool = False


#: A block's offset index keeps the position of an entry at least every this many bytes...
INDEX_EVERY_BYTES = 4096
#: ... and at least every this many entries, so that finding an entry reads and checks at most
#: this many headers whatever the entry size.
INDEX_EVERY_ENTRIES = 16


class OffsetIndex:
    """Sparse (offset, in-block position) pairs of one block, in increasing order.

    Finding an entry starts at the nearest pair at or below it instead of at the block start,
    so it costs a bisect and a short walk, not a scan of the block. Only the block's writer
    adds pairs, as it publishes entries (``due_*`` say when the next pair is due); readers
    bisect without a lock. ``positions`` is appended to before ``offsets``, so every index
    below ``len(offsets)`` is valid in both. A block recovered from disk starts with
    ``complete`` False: its entries from before the open are indexed by the first reader that
    needs them, which builds a new index and replaces this one as a whole (see reader.py).
    """

    __slots__ = ("complete", "due_offset", "due_pos", "offsets", "positions")

    def __init__(self, due_offset: int, due_pos: int, *, complete: bool) -> None:
        self.offsets = array("q")
        self.positions = array("q")
        self.due_offset = due_offset
        self.due_pos = due_pos
        self.complete = complete

    def add(self, offset: int, pos: int) -> None:
        """Record that entry ``offset`` starts at in-block position ``pos`` (must be past every
        pair already recorded)."""
        self.positions.append(pos)
        self.offsets.append(offset)
        self.due_offset = offset + INDEX_EVERY_ENTRIES
        self.due_pos = pos + INDEX_EVERY_BYTES

    def extend(self, offsets: list[int], positions: list[int]) -> None:
        """:meth:`add` every pair of two equally long lists, in order (not empty)."""
        self.positions.extend(positions)
        self.offsets.extend(offsets)
        self.due_offset = offsets[-1] + INDEX_EVERY_ENTRIES
        self.due_pos = positions[-1] + INDEX_EVERY_BYTES

    def nearest(self, offset: int) -> tuple[int, int] | None:
        """The recorded (offset, position) pair nearest at or below ``offset``, if any."""
        offsets = self.offsets
        i = bisect.bisect_right(offsets, offset, 0, len(offsets)) - 1
        if i < 0:
            return None
        return offsets[i], self.positions[i]

    def __len__(self) -> int:
        return len(self.offsets)


class Block:
    """One block of one topic: where it lives and which entries it holds."""

    __slots__ = (
        "base",
        "close_record",
        "committed",
        "count",
        "end",
        "file_no",
        "first_offset",
        "idle_count",
        "idle_since",
        "index",
        "last",
        "limit",
        "next",
        "nonce",
        "salt",
        "sealed",
        "sealed_at",
        "seq",
        "slot",
        "slots",
        "storage",
        "tag",
        "topic",
    )

    def __init__(
        self,
        *,
        topic: str,
        seq: int,
        file_no: int,
        slot: int,
        slots: int,
        block_size: int,
        first_offset: int,
        nonce: int,
        storage: DataFile,
        fresh: bool = False,
    ) -> None:
        """``fresh``: a new, empty block (its offset index is then complete from the start);
        otherwise the block was found on disk."""
        self.topic = topic
        self.seq = seq
        self.file_no = file_no
        self.slot = slot
        self.slots = slots
        self.base = slot * block_size  # byte offset of the block in its file
        self.limit = slots * block_size  # bytes the block spans
        self.first_offset = first_offset
        self.nonce = nonce  # random per block: binds entries and the seal record to it
        self.salt = block_salt(nonce)
        self.tag = block_tag(nonce)
        self.count = 0  # published entries
        self.end = BLOCK_HEADER_SIZE  # in-block byte just past the last published entry
        self.last = -1  # in-block position of the last published entry
        self.committed = 0  # entries outside an unfinished batch (for the seal record)
        self.sealed = False
        self.close_record = False  # a CLOSED seal record is on disk and must be cleared first
        # When it was sealed (Unix time; 0.0: not sealed): no entry of a sealed block is newer.
        self.sealed_at = 0.0
        # For age-based retention of a block still being written: its count when it was last
        # seen, and since when that count has not changed (no entry of it is newer than that).
        self.idle_count = -1
        self.idle_since = 0.0
        self.storage = storage
        self.next: Block | None = None
        self.index = OffsetIndex(
            first_offset + INDEX_EVERY_ENTRIES,
            BLOCK_HEADER_SIZE + INDEX_EVERY_BYTES,
            complete=fresh,
        )

    @property
    def path(self) -> str:
        """The data file holding this block."""
        return self.storage.path

    @property
    def end_offset(self) -> int:
        """The topic offset just past this block's published entries."""
        return self.first_offset + self.count

    def __repr__(self) -> str:
        return (
            f"<Block {self.topic!r} seq={self.seq} file={self.file_no} slot={self.slot}"
            f" offsets={self.first_offset}..{self.first_offset + self.count}>"
        )


class Topic:
    """A topic's block chain, its writer state and its consumers' cursors."""

    __slots__ = (
        "appends",
        "batch_entries",
        "batches",
        "blocks",
        "bytes_appended",
        "cursors",
        "deleted",
        "end",
        "firsts",
        "hidden_until",
        "last_group",
        "leader",
        "lock",
        "name",
        "pending_dead",
        "raw",
        "retire_head",
        "start",
        "sync_groups",
        "waiting",
        "waiting_lock",
    )

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name
        self.raw = raw
        self.lock = threading.Lock()  # the writer lock: appends and batches take turns
        self.blocks: list[Block] = []
        self.firsts: list[int] = []  # first_offset of each block, for bisect
        self.start = 0  # the first retained offset: a consumer can seek to it and above
        # The topic was deleted at this offset: it is not listed until it has entries past it.
        self.hidden_until = 0
        # Set when the topic is deleted: a writer holding this object must look the name up
        # again (the name continues in a new Topic).
        self.deleted = False
        self.end = 0  # the published end: offsets below it are readable
        # Set after a failed batch: stale bytes may follow the head's end, so the next write
        # seals the head and starts a fresh block instead of writing after them.
        self.retire_head = False
        # Blocks a failed write allocated that could not be marked dead yet: marked before the
        # topic takes another write, so recovery can never adopt them.
        self.pending_dead: list[Block] = []
        # The topic's cursors by consumer name (None: the default one); only the CursorBook
        # (cursors.py) adds to it. It lives here so a read finds its cursor with one lookup.
        self.cursors: dict[str | None, Cursor] = {}
        # Counted by the facade under ``lock`` (exact without a shared lock).
        self.appends = 0
        self.batches = 0
        self.batch_entries = 0
        self.bytes_appended = 0
        # Under sync_each: single appends queued for the next group write, and how many such
        # writes there were (see groupcommit.py).
        self.waiting: deque[PendingAppend] = deque()
        self.waiting_lock = threading.Lock()
        self.leader: PendingAppend | None = None  # whose thread writes the queue now
        self.last_group = 0  # entries in the last group written
        self.sync_groups = 0

    @property
    def head(self) -> Block | None:
        """The block the writer appends to (the last one)."""
        return self.blocks[-1] if self.blocks else None

    def add_block(self, block: Block) -> None:
        """Chain a new block after the current head (the writer holds ``lock``).

        ``start`` only moves when blocks are reclaimed (see reclaim.py): entries below the
        first block found but above ``start`` are a damaged range that reads report, not a
        range that silently never existed.
        """
        if self.blocks:
            self.blocks[-1].next = block
        self.blocks.append(block)
        self.firsts.append(block.first_offset)

    def drop_blocks_from(self, index: int) -> list[Block]:
        """Remove blocks ``index..`` from the chain (a failed batch's fresh blocks)."""
        dropped = self.blocks[index:]
        del self.blocks[index:]
        del self.firsts[index:]
        if self.blocks:
            self.blocks[-1].next = None
        return dropped

    def drop_front(self, count: int) -> list[Block]:
        """Remove the ``count`` oldest blocks (reclaimed; the writer lock is held).

        Readers look blocks up without a lock: ``blocks`` goes first, so a reader that meets
        the lists in between finds a block that starts after the offset it wants, and looks
        again (see :meth:`block_for`).
        """
        dropped = self.blocks[:count]
        del self.blocks[:count]
        del self.firsts[:count]
        return dropped

    def block_for(self, offset: int) -> Block | None:
        """The block holding ``offset``, or None if no block does."""
        while True:
            i = bisect.bisect_right(self.firsts, offset) - 1
            if i < 0:
                return None
            try:
                block = self.blocks[i]
            except IndexError:  # the front was just reclaimed: look again
                continue
            if block.first_offset <= offset:
                break
        # Skip empty blocks that share a first offset with their successor.
        while offset >= block.first_offset + block.count and block.next is not None:
            if block.next.first_offset > offset:
                break
            block = block.next
        return block
