"""Reads: finding an entry by offset, read_next and batch reads, with every entry validated
against the block, position and offset it must have been written for.

Readers never take a topic's writer lock. A cursor reads ahead into a buffer of published
bytes (bytes below a block's published end never change), so consecutive ``read_next`` calls
cost no system call until the buffer runs out. This module only reads: moving and persisting
cursors is the CursorBook's job (cursors.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crc32c import crc32c

from walrus_core.accel import accel
from walrus_core.entry import Entry, _new, _set_data, _set_offset
from walrus_core.errors import CorruptionError, StorageError
from walrus_core.format import (
    BLOCK_HEADER_SIZE,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    MIX_LEN,
    MIX_POS,
    MIX_SEQ,
    SEQ_MASK,
    find_entry,
)
from walrus_core.index import INDEX_EVERY_BYTES, INDEX_EVERY_ENTRIES, Block, OffsetIndex, Topic

if TYPE_CHECKING:
    from walrus_core.cursors import Cursor

READAHEAD = 256 * 1024
#: A cursor's first read-ahead after it was positioned (doubling up to READAHEAD).
FIRST_READAHEAD = 4096
#: How many entries read_next decodes at once after a cursor was positioned, doubling while
#: it reads on in order up to MAX_AHEAD, and at most about AHEAD_BYTES of payload.
FIRST_AHEAD = 1
MAX_AHEAD = 256
AHEAD_BYTES = 64 * 1024
#: max_bytes as the compiled decoder takes it (an unsigned 64-bit value; more means "no limit").
C_MAX_BYTES = (1 << 62) - 1
#: The least a batch read reads in one go.
MIN_READ = 4096
#: The first read of a walk to an entry from an offset index pair (a few pairs' worth).
SCAN_READ = 2 * INDEX_EVERY_BYTES
#: Read at most this much in one go when a batch read wants a lot (bounds memory).
MAX_READ = 64 * 1024 * 1024
_unpack_header = ENTRY_HEADER.unpack_from


class EntryReader:
    """Finds and validates entries; shared by every cursor of one open directory."""

    # -- errors -----------------------------------------------------------------------------
    @staticmethod
    def damaged(topic: Topic, block: Block, pos: int, offset: int, why: str) -> CorruptionError:
        """The error for a damaged entry (names the topic, offset and file)."""
        return CorruptionError(
            f"entry {offset} of topic {topic.name!r} is damaged ({why}) in {block.path}"
            f" at byte {block.base + pos}",
            topic=topic.name,
            offset=offset,
            path=block.path,
        )

    # -- positioning ------------------------------------------------------------------------
    def locate(self, topic: Topic, offset: int, cursor: Cursor | None = None) -> tuple[Block, int]:
        """(block, in-block position) of entry ``offset`` (which must be < topic.end).

        With ``cursor``, the bytes read to find the entry become the cursor's read-ahead
        buffer, so reading the entry next costs no second read."""
        block = topic.block_for(offset)
        if block is None:
            raise self._missing(topic, offset)
        while offset >= block.first_offset + block.count and block.next is not None:
            block = block.next
        if offset == block.first_offset:
            return block, BLOCK_HEADER_SIZE
        if offset == block.first_offset + block.count:
            return block, block.end
        if block.last >= 0 and offset == block.first_offset + block.count - 1:
            return block, block.last
        if not block.index.complete:
            self._build_index(topic, block)
        nearest = block.index.nearest(offset)
        if nearest is None:
            return block, self._scan_to(topic, block, offset, cursor=cursor)
        return block, self._scan_to(topic, block, offset, *nearest, cursor=cursor)

    def _build_index(self, topic: Topic, block: Block) -> None:
        """Index the entries a block held when the log was opened (recovery trusts a sealed
        block without reading its entries, so their positions are learnt here, once).

        Walks the entry headers from the block start, trusting a step only when the header has
        the block's tag and the expected sequence number. Where one does not fit, it searches
        for the next entry that validates in full (checksum included), as :meth:`_scan_to`
        does, and goes on from there. The new index replaces the old one as a whole (readers
        never see half of it); pairs the writer added meanwhile are carried over, and one lost
        in the race only lengthens a walk.
        """
        old = block.index
        count = block.count
        built = OffsetIndex(old.due_offset, old.due_pos, complete=True)
        pos = prev = BLOCK_HEADER_SIZE
        offset = block.first_offset
        stop = block.first_offset + count
        limit = block.end
        tag = block.tag
        due_pos, due_offset = pos + INDEX_EVERY_BYTES, offset + INDEX_EVERY_ENTRIES
        buf = b""
        buf_start = pos
        while offset < stop:
            rel = pos - buf_start
            if rel + ENTRY_HEADER_SIZE > len(buf):
                buf_start, rel = pos, 0
                buf = self._read(topic, block, pos, min(READAHEAD, limit - pos), offset)
                if len(buf) < ENTRY_HEADER_SIZE:
                    break
            _crc, length, seq, version, _flags, got_tag = _unpack_header(buf, rel)
            if (
                seq != offset & SEQ_MASK
                or version != ENTRY_VERSION
                or got_tag != tag
                or pos + ENTRY_HEADER_SIZE + length > limit
            ):
                # This header or the previous entry's length is damaged.
                start, first = (prev + 1, offset) if prev < pos else (pos + 1, offset + 1)
                if start >= limit:
                    break
                data = self._read(topic, block, start, limit - start, first)
                found = find_entry(data, 0, block.salt, tag, start, first, stop - 1)
                if found is None:
                    break
                pos, offset = start + found.rel, found.offset
                prev = pos
                buf = b""
                due_pos = due_offset = 0  # a validated entry: a good place for a pair
                continue
            if pos >= due_pos or offset >= due_offset:
                built.positions.append(pos)
                built.offsets.append(offset)
                due_pos, due_offset = pos + INDEX_EVERY_BYTES, offset + INDEX_EVERY_ENTRIES
            prev = pos
            pos += ENTRY_HEADER_SIZE + length
            offset += 1
        # Pairs the writer recorded for entries published since the open (all past ``stop``).
        written = len(old.offsets)
        for i in range(written):
            if old.offsets[i] >= offset:
                built.positions.append(old.positions[i])
                built.offsets.append(old.offsets[i])
        built.due_offset, built.due_pos = old.due_offset, old.due_pos
        block.index = built

    def _missing(self, topic: Topic, offset: int) -> CorruptionError:
        return CorruptionError(
            f"entry {offset} of topic {topic.name!r} is not in any block",
            topic=topic.name,
            offset=offset,
        )

    def _scan_to(
        self,
        topic: Topic,
        block: Block,
        target: int,
        from_offset: int = -1,
        from_pos: int = BLOCK_HEADER_SIZE,
        *,
        cursor: Cursor | None = None,
    ) -> int:
        """Walk entry headers to ``target`` from entry ``from_offset`` at ``from_pos`` (by
        default the block's first entry); resynchronise past damage.

        A step is trusted only when the header there has this block's tag and the expected
        sequence number; the target's own checksum is checked when it is read. A header that
        does not fit means this header or the previous entry's length is damaged, so the
        search for the next valid entry (checksum bound to this block and position) starts
        right after the previous header, not where the bad length led.
        """
        pos = prev = from_pos
        offset = block.first_offset if from_offset < 0 else from_offset
        limit = block.end if block.end > BLOCK_HEADER_SIZE else block.limit
        tag = block.tag
        buf = b""
        buf_start = pos
        # The walk from an index pair is short: read little first, more if it goes on.
        want = SCAN_READ
        while True:
            rel = pos - buf_start
            if rel < 0 or rel + ENTRY_HEADER_SIZE > len(buf):
                buf_start = pos
                buf = self._read(topic, block, pos, min(want, limit - pos), offset)
                want = READAHEAD
                rel = 0
            ok = rel + ENTRY_HEADER_SIZE <= len(buf)
            if ok:
                _crc, length, seq, version, _flags, got_tag = _unpack_header(buf, rel)
                ok = (
                    seq == offset & SEQ_MASK
                    and version == ENTRY_VERSION
                    and got_tag == tag
                    and pos + ENTRY_HEADER_SIZE + length <= limit
                )
            if ok:
                if offset == target:
                    if cursor is not None and limit == block.end:  # published bytes only
                        cursor.buf, cursor.buf_block, cursor.buf_start = buf, block, buf_start
                    return pos
                prev = pos
                pos += ENTRY_HEADER_SIZE + length
                offset += 1
                continue
            # The entry at ``prev`` (offset - 1) may itself be the damaged one.
            start, first = (prev + 1, offset) if prev < pos else (pos + 1, offset + 1)
            if start >= limit:
                raise self.damaged(topic, block, pos, target, "the block ends early")
            data = self._read(topic, block, start, limit - start, first)
            found = find_entry(data, 0, block.salt, tag, start, first, target)
            if found is None:
                # Name the entry asked for, so seek(target + 1) moves past the damage.
                raise self.damaged(
                    topic, block, pos, target, f"entries from {offset} on cannot be found"
                )
            pos, offset = start + found.rel, found.offset
            prev = pos
            buf = b""

    @staticmethod
    def _read(topic: Topic, block: Block, pos: int, size: int, offset: int) -> bytes:
        try:
            return block.storage.read(block.base + pos, max(0, size))
        except OSError as exc:
            raise StorageError(
                f"reading entry {offset} of topic {topic.name!r} from {block.path} failed: {exc}"
            ) from exc

    # -- reading ----------------------------------------------------------------------------
    def read_one(self, cursor: Cursor, offset: int) -> tuple[Entry, Block, int]:
        """The entry at ``offset`` (< topic.end) and the position after it.

        The common case costs no system call and no validation: the entry was decoded with
        the ones before it, into ``cursor.ahead``. Otherwise this decodes the next few
        entries of the block at once (more each time reading goes on in order), through
        :meth:`read_batch`.
        """
        block = cursor.block
        if block is not None and block is cursor.ahead_block:
            index = offset - cursor.ahead_first
            ahead = cursor.ahead
            if 0 <= index < len(ahead):
                entry = ahead[index]
                return entry, block, cursor.pos + ENTRY_HEADER_SIZE + len(entry.data)
        if block is None:
            block, pos = self.locate(cursor.topic, offset, cursor)
            cursor.block, cursor.pos = block, pos
        pos = cursor.pos
        end = block.first_offset + block.count
        if offset >= end:  # at the block's end: the entry is the next block's first
            entries, block, pos, _nbytes = self.read_batch(
                cursor, offset, block, pos, offset + 1, 1, 0, True
            )
            return entries[0], block, pos
        count = cursor.ahead_n
        cursor.ahead_n = min(MAX_AHEAD, count * 2)
        entries, _block, _pos, _nbytes = self.read_batch(
            cursor, offset, block, pos, min(end, offset + count), count, AHEAD_BYTES, True
        )
        cursor.ahead, cursor.ahead_block, cursor.ahead_first = entries, block, offset
        entry = entries[0]
        return entry, block, pos + ENTRY_HEADER_SIZE + len(entry.data)

    def read_batch(
        self,
        cursor: Cursor,
        offset: int,
        block: Block,
        pos: int,
        stop: int,
        max_entries: int,
        max_bytes: int,
        peek_one: bool = False,
        flags_out: list[int] | None = None,
    ) -> tuple[list[Entry], Block, int, int]:
        """Read entries from ``offset`` (at ``block``/``pos``) up to offset ``stop``.

        Returns (entries, block, pos, payload bytes) where block/pos locate the entry after
        the last one returned. ``max_bytes`` bounds the payload total (at least one entry is
        returned). The cursor's buffer is used and refilled; the cursor's position is not changed.
        With ``flags_out`` the entry header flags of every returned entry are appended to it
        (the slower Python loop then runs: the compiled one does not report flags).
        """
        topic = cursor.topic
        out: list[Entry] = []
        error: CorruptionError | None = None
        total = 0
        append = out.append
        new, set_data, set_offset = _new, _set_data, _set_offset  # see entry.new_entry
        decode_run = accel.decode_run if accel is not None and flags_out is None else None
        buf = cursor.buf
        buf_start = cursor.buf_start if cursor.buf_block is block else -1
        if buf_start < 0:
            buf = b""
        while offset < stop and len(out) < max_entries:
            if offset >= block.first_offset + block.count:
                nxt = block.next
                if nxt is None:
                    error = self._missing(topic, offset)
                    break
                block, pos = nxt, BLOCK_HEADER_SIZE
                buf, buf_start = b"", -1
                continue
            rel = pos - buf_start
            if buf_start < 0 or rel < 0 or rel + ENTRY_HEADER_SIZE > len(buf):
                if peek_one:
                    # Grows with sequential reads, so a read after a seek stays small.
                    want = cursor.readahead
                    cursor.readahead = min(READAHEAD, want * 2)
                else:
                    # What the rest of the batch needs at this block's mean entry size: as
                    # many entries as max_entries and max_bytes allow (a shortfall just
                    # reads again).
                    mean = (block.end - BLOCK_HEADER_SIZE) // max(1, block.count) + 1
                    entries = min(
                        max_entries - len(out),
                        (max_bytes - total) // max(1, mean - ENTRY_HEADER_SIZE) + 1,
                    )
                    want = max(MIN_READ, entries * mean + ENTRY_HEADER_SIZE)
                published = block.end
                buf = self._read(topic, block, pos, min(want, MAX_READ, published - pos), offset)
                buf_start, rel = pos, 0
                if len(buf) < ENTRY_HEADER_SIZE:
                    error = self.damaged(topic, block, pos, offset, "entry beyond end of file")
                    break
            # Fast path: every entry lying wholly in the buffer. Anything unusual (an entry
            # crossing the buffer's end, a bad header or checksum) drops to the careful
            # one-entry code below, which refills or reports.
            blen = len(buf)
            lim = min(stop, block.first_offset + block.count, offset + max_entries - len(out))
            full = False
            salt = block.salt
            block_tag = block.tag
            if decode_run is not None:
                rel, offset, total, full = decode_run(
                    buf,
                    rel,
                    buf_start,
                    offset,
                    lim,
                    salt,
                    block_tag,
                    min(max_bytes, C_MAX_BYTES),
                    total,
                    out,
                )
            while decode_run is None and offset < lim and rel + ENTRY_HEADER_SIZE <= blen:
                crc, length, seq, version, flags, tag = _unpack_header(buf, rel)
                hi = rel + ENTRY_HEADER_SIZE + length
                if (
                    hi > blen
                    or seq != offset & SEQ_MASK
                    or version != ENTRY_VERSION
                    or tag != block_tag
                ):
                    break
                if total + length > max_bytes and out:
                    full = True
                    break
                data = buf[rel + ENTRY_HEADER_SIZE : hi]
                if (
                    crc32c(
                        data,
                        (
                            salt
                            ^ (buf_start + rel) * MIX_POS
                            ^ offset * MIX_SEQ
                            ^ length * MIX_LEN
                            ^ (flags << 8 | version)
                        )
                        & SEQ_MASK,
                    )
                    != crc
                ):
                    break
                entry = new(Entry)
                set_data(entry, data)
                set_offset(entry, offset)
                append(entry)
                if flags_out is not None:
                    flags_out.append(flags)
                total += length
                offset += 1
                rel = hi
            pos = buf_start + rel
            if full:
                break
            if offset >= lim or rel + ENTRY_HEADER_SIZE > blen:
                continue
            crc, length, seq, version, flags, tag = _unpack_header(buf, rel)
            if seq != offset & SEQ_MASK or version != ENTRY_VERSION or tag != block_tag:
                error = self.damaged(topic, block, pos, offset, "bad entry header")
                break
            end = pos + ENTRY_HEADER_SIZE + length
            if end > block.end:
                error = self.damaged(topic, block, pos, offset, "entry length past the block end")
                break
            if out and total + length > max_bytes:
                break
            seed = (
                salt ^ pos * MIX_POS ^ offset * MIX_SEQ ^ length * MIX_LEN ^ (flags << 8 | version)
            ) & SEQ_MASK
            lo = rel + ENTRY_HEADER_SIZE
            hi = lo + length
            if hi > len(buf):
                if length + ENTRY_HEADER_SIZE > READAHEAD:
                    data = self._read(topic, block, pos + ENTRY_HEADER_SIZE, length, offset)
                    buf, buf_start = b"", -1
                    if len(data) != length or crc32c(data, seed) != crc:
                        error = self.damaged(topic, block, pos, offset, "checksum mismatch")
                        break
                    append(Entry(data, offset))
                    if flags_out is not None:
                        flags_out.append(flags)
                    total += length
                    offset += 1
                    pos = end
                    continue
                buf = self._read(
                    topic, block, pos, min(max(READAHEAD, length + 16), block.end - pos), offset
                )
                buf_start, rel = pos, 0
                lo, hi = ENTRY_HEADER_SIZE, ENTRY_HEADER_SIZE + length
            data = buf[lo:hi]
            if crc32c(data, seed) != crc:
                error = self.damaged(topic, block, pos, offset, "checksum mismatch")
                break
            append(Entry(data, offset))
            if flags_out is not None:
                flags_out.append(flags)
            total += length
            offset += 1
            pos = end
        cursor.buf = buf
        cursor.buf_block = block if buf_start >= 0 else None
        cursor.buf_start = buf_start
        if error is not None and not out:
            raise error
        # Entries before a damaged one are returned; the next read raises at the damage.
        return out, block, pos, total


def read_groups(
    reader: EntryReader, topic: Topic, offset: int, end: int, max_entries: int, max_bytes: int
) -> list[list[Entry]]:
    """Entries from ``offset`` (below ``end``) grouped by the append that wrote them.

    A single append is a group of one, a batch append a group of its entries. Whole groups
    only: groups are added while their payload total stays within ``max_bytes`` and their entry
    count within ``max_entries``, and the first group is returned whole even when it is larger
    (a batch is at most the batch limit, which bounds it). The boundaries come from the entry
    headers' ``BATCH_OPEN`` flag, which every entry of a batch but its last carries.
    """
    from walrus_core.cursors import Cursor  # cursors imports this module

    groups: list[list[Entry]] = []
    group: list[Entry] = []
    total = 0
    count = 0
    while offset < end:
        scratch = Cursor(topic, None, b"")  # a throw-away read-ahead buffer
        block, pos = reader.locate(topic, offset, scratch)
        flags: list[int] = []
        first_group = not groups
        entries, _block, _pos, _nbytes = reader.read_batch(
            scratch,
            offset,
            block,
            pos,
            end,
            max_entries if first_group else max_entries - count,
            max(1, max_bytes - total),
            flags_out=flags,
        )
        for entry, entry_flags in zip(entries, flags, strict=True):
            group.append(entry)
            if not entry_flags & FLAG_BATCH_OPEN:
                size = sum(len(e.data) for e in group)
                if groups and (total + size > max_bytes or count + len(group) > max_entries):
                    return groups
                groups.append(group)
                total += size
                count += len(group)
                group = []
        offset += len(entries)
        if group:
            if groups:  # a group cut by the budget: it is for the next call
                return groups
            continue  # the first group is returned whole
        if total >= max_bytes or count >= max_entries:
            break
    return groups
