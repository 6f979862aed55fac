"""Recovery: rebuild the index of an existing directory from its block headers, scan only
unsealed tails, truncate torn writes and roll back batches that a crash cut short.

Cost: one 1 KiB read per slot of every data file, one 16-byte read per sealed block (to verify
its last entry), and a read of what was written into blocks without a seal record (normally
one per topic, and none after a clean close): holes in the sparse data files are skipped
(``SEEK_DATA``), so a tail costs what was written into it, not the block size. Stored bytes
are never rescanned, and a tail once scanned gets a CLOSED seal record, so the next open after
another crash trusts it.

Every entry is checked against the block, position and offset it must have been written for
(see format.py); after damage, scanning resumes only at an entry that validates that way.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import defaultdict

import attrs
from crc32c import crc32c

from walrus_core.allocator import Allocator
from walrus_core.config import MAX_ENTRY_BYTES, Geometry
from walrus_core.files import DataFile
from walrus_core.format import (
    BLOCK_FLAG_DEAD,
    BLOCK_HEADER_SIZE,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    SEAL_CLOSED,
    SEAL_SEALED,
    SEQ_MASK,
    BlockHeader,
    SealRecord,
    entry_seed,
    find_entry,
    header_damage,
    parse_data_file_name,
)
from walrus_core.index import Block, StartMark, Topic
from walrus_core.names import encode_name
from walrus_core.writer import mark_dead, write_seal

log = logging.getLogger("walrus_core")

_unpack_header = ENTRY_HEADER.unpack_from
_FIRST_WINDOW = 64 * 1024
_MAX_WINDOW = 4 * 1024 * 1024


@attrs.define
class _Found:
    header: BlockHeader
    seal: SealRecord | None
    file_no: int
    slot: int
    storage: DataFile


@attrs.define
class ScanResult:
    """What a full scan of one block found."""

    count: int  # entries, damaged ones included when valid entries follow them
    end: int  # in-block byte after the last valid entry
    last: int  # position of the last valid entry (-1: none)
    committed: int  # entries up to the last one that is not inside an open batch
    positions: list[int]  # position of entry i of the block (-1: damaged, position unknown)
    damaged: bool  # a bad entry was followed by valid ones
    trailing_bytes: int  # bytes up to the last non-zero one after ``end`` (a torn write)


class DataExtents:
    """Where a sparse file holds data (``SEEK_DATA``/``SEEK_HOLE``), so that scanning for
    bytes after the end of a tail skips the holes. Where the OS cannot tell, every byte is
    assumed to be data."""

    def __init__(self, path: str) -> None:
        self._fd: int | None = None
        if hasattr(os, "SEEK_DATA"):
            try:
                self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except OSError:
                self._fd = None

    def next_data(self, offset: int, end: int) -> int:
        """The first byte at or after ``offset`` (below ``end``) that may hold data; ``end``
        if there is none."""
        if self._fd is None:
            return offset
        try:
            found = os.lseek(self._fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole after offset
                return end
            return offset
        return min(found, end)

    def next_hole(self, offset: int, end: int) -> int:
        """The end of the data extent at ``offset`` (at most ``end``)."""
        if self._fd is None:
            return end
        try:
            return min(os.lseek(self._fd, offset, os.SEEK_HOLE), end)
        except OSError:
            return end

    def close(self) -> None:
        """Release the descriptor."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class _BlockBytes:
    """Windowed reads of one block: small first, growing, so a small tail costs little."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.start = 0
        self.buf = b""
        self.window = _FIRST_WINDOW

    def get(self, pos: int, size: int) -> bytes:
        rel = pos - self.start
        if rel < 0 or rel + size > len(self.buf):
            want = min(max(size, self.window), self.block.limit - pos)
            self.window = min(self.window * 4, _MAX_WINDOW)
            self.buf = self.block.storage.read(self.block.base + pos, max(0, want))
            self.start = pos
            rel = 0
        return self.buf[rel : rel + size]


def nonzero_extent(block: Block, pos: int, extents: DataExtents | None) -> int:
    """Bytes from in-block ``pos`` up to the last non-zero byte of the block (0: all zero).
    Reads only the data extents of the file (holes are zero)."""
    base, limit = block.base, block.limit
    at = pos
    last_nonzero = pos
    while at < limit:
        if extents is not None:
            at = extents.next_data(base + at, base + limit) - base
            if at >= limit:
                break
            stop = extents.next_hole(base + at, base + limit) - base
        else:
            stop = limit
        while at < stop:
            size = min(stop - at, _MAX_WINDOW)
            chunk = block.storage.read(base + at, size)
            if not chunk:
                return last_nonzero - pos
            # Comparing with zeros is a memcmp; rstrip (which finds where the bytes end) only
            # runs where something non-zero is there.
            if chunk != bytes(len(chunk)):
                last_nonzero = at + len(chunk.rstrip(b"\x00"))
            at += len(chunk)
    return last_nonzero - pos


def _valid_at(data: _BlockBytes, block: Block, pos: int, offset: int) -> tuple[int, int] | None:
    """(length, flags) of the entry for ``offset`` at ``pos``, if it validates there."""
    if pos + ENTRY_HEADER_SIZE > block.limit:
        return None
    header = data.get(pos, ENTRY_HEADER_SIZE)
    if len(header) != ENTRY_HEADER_SIZE:
        return None
    crc, length, seq, version, flags, tag = _unpack_header(header)
    if (
        version != ENTRY_VERSION
        or tag != block.tag
        or seq != offset & SEQ_MASK
        or length > MAX_ENTRY_BYTES
        or pos + ENTRY_HEADER_SIZE + length > block.limit
    ):
        return None
    payload = data.get(pos + ENTRY_HEADER_SIZE, length)
    if len(payload) != length:
        return None
    if crc32c(payload, entry_seed(block.salt, pos, offset, length, flags)) != crc:
        return None
    return length, flags


def scan_block(
    block: Block, expected: int | None = None, extents: DataExtents | None = None
) -> ScanResult:
    """Validate entries from the start of ``block`` until they stop (``expected``: at most
    that many entries, and no look at what follows them)."""
    data = _BlockBytes(block)
    pos = BLOCK_HEADER_SIZE
    offset = block.first_offset
    count = committed = 0
    last = -1
    positions: list[int] = []
    damaged = False
    limit = block.limit
    trailing = -1  # not looked at yet
    while pos + ENTRY_HEADER_SIZE <= limit and (expected is None or count < expected):
        valid = _valid_at(data, block, pos, offset)
        if valid is None:
            if expected is None and not any(data.get(pos, ENTRY_HEADER_SIZE)):
                trailing = nonzero_extent(block, pos, extents)
                if trailing == 0:
                    break  # the clean end: nothing but zeros follows
            found = _resync(data, block, pos, offset)
            if found is None:
                break
            damaged = True
            pos, skipped = found
            positions.extend([-1] * skipped)  # keep positions[i] aligned with entry i
            offset += skipped
            count += skipped
            continue
        length, flags = valid
        positions.append(pos)
        last = pos
        pos += ENTRY_HEADER_SIZE + length
        offset += 1
        count += 1
        if not flags & FLAG_BATCH_OPEN:
            committed = count
    if trailing < 0:
        trailing = nonzero_extent(block, pos, extents) if expected is None and pos < limit else 0
    return ScanResult(count, pos, last, committed, positions, damaged, trailing)


def _resync(data: _BlockBytes, block: Block, pos: int, offset: int) -> tuple[int, int] | None:
    """After a bad entry for ``offset`` at ``pos``: (position of the next valid entry,
    entries skipped), or None when nothing valid follows (a torn write)."""
    header = data.get(pos, ENTRY_HEADER_SIZE)
    if len(header) == ENTRY_HEADER_SIZE:
        # Only the payload may be damaged: the entry after it is where its length says.
        _crc, length, seq, version, _flags, tag = _unpack_header(header)
        if version == ENTRY_VERSION and tag == block.tag and seq == offset & SEQ_MASK:
            after = pos + ENTRY_HEADER_SIZE + length
            if after <= block.limit and _valid_at(data, block, after, offset + 1) is not None:
                return after, 1
    start = pos + 1
    rest = block.storage.read(block.base + start, block.limit - start)
    found = find_entry(
        rest,
        0,
        block.salt,
        block.tag,
        start,
        offset + 1,
        offset + 1 + len(rest) // ENTRY_HEADER_SIZE,
    )
    if found is None:
        return None
    return start + found.rel, found.offset - offset


def _verify_last(block: Block, seal: SealRecord) -> bool:
    """Cheap check that a seal record matches the bytes: the last entry's header is there."""
    if seal.count == 0:
        return seal.end == BLOCK_HEADER_SIZE
    if seal.last == 0:  # written by recovery: the last entry is damaged, its start unknown
        return BLOCK_HEADER_SIZE <= seal.end <= block.limit
    if not BLOCK_HEADER_SIZE <= seal.last < seal.end <= block.limit:
        return False
    header = block.storage.read(block.base + seal.last, ENTRY_HEADER_SIZE)
    if len(header) != ENTRY_HEADER_SIZE:
        return False
    _crc, length, seq, version, _flags, tag = _unpack_header(header)
    return bool(
        version == ENTRY_VERSION
        and tag == block.tag
        and seq == (block.first_offset + seal.count - 1) & SEQ_MASK
        and seal.last + ENTRY_HEADER_SIZE + length == seal.end
    )


def recover(
    root: str, allocator: Allocator, starts: dict[str, StartMark] | None = None
) -> dict[str, Topic]:
    """Rebuild every topic of ``root``; leaves ``allocator`` ready to continue.

    ``starts`` are the topics' start marks: blocks they say were reclaimed are left out (and
    their space handed to the allocator's unused list), and each topic starts at its mark.
    """
    starts = starts or {}
    geometry = allocator.geometry
    block_size = geometry.block_size
    found: dict[str, list[_Found]] = defaultdict(list)
    numbers = sorted(
        n for n in (parse_data_file_name(name) for name in os.listdir(root)) if n is not None
    )
    extents: dict[int, DataExtents] = {}
    max_seq = 0
    resume_file = resume_slot = 0
    try:
        for file_no in numbers:
            path = allocator.path_of(file_no)
            size = os.path.getsize(path)
            allocator.note_file_number(file_no)
            if size < block_size:
                log.warning("ignoring %s: %d bytes is smaller than one block", path, size)
                continue
            if size < geometry.file_size or size % block_size:
                # Cut short (a damaged or copied file): what is missing reads as zeros, so the
                # blocks it held end early and are truncated or reported as damaged below.
                full = max(geometry.file_size, -(-size // block_size) * block_size)
                log.warning(
                    "%s is %d bytes, shorter than its %d-byte layout; the missing bytes are lost",
                    path,
                    size,
                    full,
                )
                size = full
            storage = allocator.open_existing(file_no, size)
            extents[file_no] = DataExtents(path)
            slots = size // block_size
            slot = used_end = 0
            while slot < slots:
                region = storage.read(slot * block_size, BLOCK_HEADER_SIZE)
                header = BlockHeader.unpack(region)
                if header is not None and not _belongs_here(header, file_no, slot, slots, geometry):
                    log.warning(
                        "%s: slot %d holds the header of block %d of topic %r written for file"
                        " %d slot %d (block_size %d); it is not trusted here",
                        path,
                        slot,
                        header.block_seq,
                        header.topic,
                        header.file_no,
                        header.slot,
                        header.block_size,
                    )
                    header = None
                if header is None:
                    if any(region):
                        # Never hand this slot out again: what it holds may still be evidence,
                        # and nothing written over it could be told apart from it.
                        used_end = slot + 1
                        allocator.keep_file(file_no)
                        log.warning("%s: unreadable block header in slot %d; skipped", path, slot)
                    slot += 1
                    continue
                damaged_copies = header_damage(region)
                if damaged_copies:
                    log.warning(
                        "%s: block header copy %s in slot %d is damaged; using the other copy",
                        path,
                        "AB"[damaged_copies[0]],
                        slot,
                    )
                used_end = slot + header.slots
                max_seq = max(max_seq, header.block_seq)
                if header.flags & BLOCK_FLAG_DEAD:
                    allocator.note_unused(file_no, slot * block_size, header.slots * block_size)
                else:
                    seal = SealRecord.unpack(region, header.nonce & 0xFFFFFFFF)
                    found[header.topic].append(_Found(header, seal, file_no, slot, storage))
                slot += header.slots
            resume_file, resume_slot = file_no, used_end
        # Block numbers continue past every mark too: the blocks that numbered a mark may be
        # gone (reclaimed, or lost to a power loss), and a new block numbered below a mark
        # would be left out at the next open.
        marked = max((mark.first_seq for mark in starts.values()), default=1)
        allocator.resume(resume_file, resume_slot, max(max_seq + 1, marked))

        topics: dict[str, Topic] = {}
        touched: set[int] = set()
        for name, items in found.items():
            items.sort(key=lambda f: f.header.block_seq)
            mark = starts.get(name)
            kept = _drop_abandoned(name, _unique(name, items))
            if mark is not None:
                kept = [f for f in kept if f.header.block_seq >= mark.first_seq]
            kept_ids = {id(f) for f in kept}
            for item in items:
                if id(item) not in kept_ids:
                    allocator.note_unused(
                        item.file_no, item.slot * block_size, item.header.slots * block_size
                    )
            if not kept:
                continue  # every block reclaimed: the topic is rebuilt from its mark below
            topic = _rebuild_topic(name, kept, block_size, touched, extents, mark, allocator)
            if topic is not None:
                topics[name] = topic
        for name, mark in starts.items():
            if name not in topics:  # every block reclaimed (or the topic deleted)
                try:
                    raw = encode_name(name)
                except Exception:
                    continue
                topic = Topic(name, raw)
                topic.start = topic.end = mark.offset
                topic.hidden_until = mark.offset if mark.deleted else 0
                topics[name] = topic
        for topic in topics.values():
            for block in topic.blocks:
                allocator.adopt(block)
    finally:
        for ext in extents.values():
            ext.close()
    for storage in list(allocator.files.values()):
        if id(storage) in touched and allocator.sync_metadata:
            storage.flush()
    return topics


def _belongs_here(
    header: BlockHeader, file_no: int, slot: int, slots: int, geometry: Geometry
) -> bool:
    """A header is trusted only where, and with the geometry, it was written for."""
    return (
        header.file_no == file_no
        and header.slot == slot
        and slot + header.slots <= slots
        and header.block_size == geometry.block_size
        and header.blocks_per_file == geometry.blocks_per_file
    )


def _drop_abandoned(name: str, items: list[_Found]) -> list[_Found]:
    """Drop blocks (in block_seq order) that a later block starts before: a failed write
    allocated them and the topic continued without them, so none of their entries belongs to
    the topic. (The writer marks such blocks dead; this covers a mark that never reached the
    disk.)"""
    kept: list[_Found] = []
    lowest_later: int | None = None
    for item in reversed(items):
        first = item.header.first_offset
        if lowest_later is not None and first > lowest_later:
            log.warning(
                "topic %r: block %d (file %d slot %d) starts at offset %d, after a later block"
                " that starts at %d: it belongs to a failed write and is ignored",
                name,
                item.header.block_seq,
                item.file_no,
                item.slot,
                first,
                lowest_later,
            )
            continue
        kept.append(item)
        lowest_later = first if lowest_later is None else min(lowest_later, first)
    kept.reverse()
    return kept


def _unique(name: str, items: list[_Found]) -> list[_Found]:
    """Drop a second block claiming a block sequence number already seen (a forged or copied
    header: each allocation takes a new number)."""
    seen: set[int] = set()
    kept: list[_Found] = []
    for item in items:
        if item.header.block_seq in seen:
            log.warning(
                "topic %r: a second block %d in file %d slot %d is ignored",
                name,
                item.header.block_seq,
                item.file_no,
                item.slot,
            )
            continue
        seen.add(item.header.block_seq)
        kept.append(item)
    return kept


def _rebuild_topic(
    name: str,
    items: list[_Found],
    block_size: int,
    touched: set[int],
    extents: dict[int, DataExtents],
    mark: StartMark | None,
    allocator: Allocator,
) -> Topic | None:
    try:
        raw = encode_name(name)
    except Exception:
        log.warning("ignoring blocks of a topic with an invalid name %r", name)
        return None
    blocks: list[Block] = []
    scans: dict[int, ScanResult] = {}
    seal_times: dict[int, float] = {}
    for index, item in enumerate(items):
        block = Block(
            topic=name,
            seq=item.header.block_seq,
            file_no=item.file_no,
            slot=item.slot,
            slots=item.header.slots,
            block_size=block_size,
            first_offset=item.header.first_offset,
            nonce=item.header.nonce,
            storage=item.storage,
        )
        next_first = items[index + 1].header.first_offset if index + 1 < len(items) else None
        seal = item.seal
        if (
            seal is not None
            and (next_first is None or block.first_offset + seal.count == next_first)
            and _verify_last(block, seal)
        ):
            block.count, block.end, block.last = seal.count, seal.end, seal.last
            block.committed = seal.committed
            block.sealed = seal.kind == SEAL_SEALED
            block.close_record = seal.kind == SEAL_CLOSED
            if seal.sealed_at:
                seal_times[block.seq] = float(seal.sealed_at)
                if block.close_record:  # closed cleanly then: nothing in it is newer
                    block.idle_count, block.idle_since = seal.count, float(seal.sealed_at)
            if block.count == 0:
                block.last = -1
        else:
            scan = scan_block(block, extents=extents.get(item.file_no))
            scans[block.seq] = scan
            block.count, block.end, block.last = scan.count, scan.end, scan.last
            block.committed = scan.committed
        blocks.append(block)

    for block in _roll_back_incomplete_batch(name, blocks, scans, touched):
        allocator.note_unused(block.file_no, block.base, block.limit)
    if not blocks:
        return None
    _settle_blocks(name, blocks, scans, touched)
    topic = Topic(name, raw)
    start = mark.offset if mark is not None else 0
    if blocks[0].first_offset > start:
        log.warning(
            "topic %r: entries %d..%d are in no readable block; reading them raises"
            " CorruptionError (seek to %d to move past them)",
            name,
            start,
            blocks[0].first_offset - 1,
            blocks[0].first_offset,
        )
    for block in blocks:
        topic.add_block(block)
        if block.sealed and not block.sealed_at:
            block.sealed_at = seal_times.get(block.seq) or time.time()
    topic.start = start
    topic.end = max(start, blocks[-1].first_offset + blocks[-1].count)
    if mark is not None and mark.deleted:
        topic.hidden_until = mark.offset
    return topic


def _roll_back_incomplete_batch(
    name: str, blocks: list[Block], scans: dict[int, ScanResult], touched: set[int]
) -> list[Block]:
    """Drop everything after the topic's last complete write.

    Entries of a batch carry ``BATCH_OPEN`` except the last one, so the last entry that does
    not carry it ends the last complete append or batch. Blocks a cut batch allocated (their
    headers are written before the data) are marked dead; the block holding the cut is sealed
    at the commit point, so nothing is ever appended after the stale bytes.
    """
    keep = len(blocks)
    while keep > 0 and blocks[keep - 1].committed == 0:
        keep -= 1
    if keep == len(blocks) and blocks[-1].committed == blocks[-1].count:
        return []
    if keep == 0:
        commit_at = blocks[0].first_offset
        cut: Block | None = None
    else:
        cut = blocks[keep - 1]
        commit_at = cut.first_offset + cut.committed
    dropped = blocks[-1].first_offset + blocks[-1].count - commit_at
    dead = blocks[keep:]
    for block in dead:
        mark_dead(block)
        touched.add(id(block.storage))
    del blocks[keep:]
    if dropped > 0:
        log.warning(
            "topic %r: rolled back an incomplete batch of %d entries (offsets %d..%d) cut short"
            " by a crash",
            name,
            dropped,
            commit_at,
            commit_at + dropped - 1,
        )
    if cut is None or cut.committed == cut.count:
        return dead
    scan = scans.get(cut.seq)
    if scan is None or len(scan.positions) < cut.count:
        scan = scan_block(cut, cut.count)
        scans[cut.seq] = scan
    keep_count = cut.committed
    cut.count = keep_count
    # The byte end: where the first dropped entry starts (the next known one if it is damaged).
    later = [p for p in scan.positions[keep_count:] if p >= 0]
    cut.end = later[0] if later else scan.end
    cut.last = scan.positions[keep_count - 1] if keep_count > 0 else -1
    write_seal(cut)
    cut.sealed = True
    cut.close_record = False
    touched.add(id(cut.storage))
    return dead


def _settle_blocks(
    name: str, blocks: list[Block], scans: dict[int, ScanResult], touched: set[int]
) -> None:
    """Reconcile each block with its successor, seal what a crash left unsealed, and truncate
    a torn tail."""
    for index, block in enumerate(blocks):
        scan = scans.get(block.seq)
        if index + 1 < len(blocks):
            expected = max(0, blocks[index + 1].first_offset - block.first_offset)
            if block.count < expected:
                log.warning(
                    "topic %r: entries %d..%d in %s are damaged; reading them raises"
                    " CorruptionError",
                    name,
                    block.first_offset + block.count,
                    block.first_offset + expected - 1,
                    block.path,
                )
                block.count = expected
                block.end = block.limit
                block.last = -1
                block.sealed = True
            elif block.count > expected:  # the successor says where this block ends
                block.count = expected
                block.last = -1
                if scan is not None and expected < len(scan.positions):
                    later = [p for p in scan.positions[expected:] if p >= 0]
                    block.end = later[0] if later else scan.end
                block.sealed = True
            elif not block.sealed:  # the seal was lost: write it so the next open need not scan
                block.committed = block.count
                write_seal(block)
                block.sealed = True
                touched.add(id(block.storage))
            block.close_record = False
            continue
        if scan is None or block.sealed:
            continue
        if scan.trailing_bytes:
            log.warning(
                "topic %r: dropped a torn write of %d bytes after entry %d at the end of %s",
                name,
                scan.trailing_bytes,
                block.first_offset + block.count - 1,
                block.path,
            )
            # Stale bytes follow the end: never append after them.
            write_seal(block)
            block.sealed = True
            touched.add(id(block.storage))
        elif not block.close_record:
            # Record what the scan found, so the next open (after another crash, with no
            # write in between) trusts it instead of scanning again; the first append clears
            # the record, as after a clean close.
            block.committed = block.count
            write_seal(block, SEAL_CLOSED)
            block.close_record = True
            touched.add(id(block.storage))
        if scan.damaged:
            log.warning(
                "topic %r: damaged entries in the tail block of %s; reading them raises"
                " CorruptionError",
                name,
                block.path,
            )
