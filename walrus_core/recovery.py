"""Opening an existing directory: rebuild the index from block headers, scan only unsealed
tails, truncate torn writes and roll back batches that a crash cut short.

Cost: one 512-byte read per slot of every data file, one 16-byte read per sealed block (to
verify its last entry), and a full read only of blocks without a seal record (normally one
per topic, and none after a clean close). Stored bytes are never rescanned.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import defaultdict

import attrs

from walrus_core.allocator import Allocator
from walrus_core.config import MAX_ENTRY_BYTES, Geometry
from walrus_core.format import (
    BLOCK_FLAG_DEAD,
    BLOCK_HEADER_SIZE,
    BLOCK_MAGIC,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    SEAL_CLOSED,
    SEAL_SEALED,
    SEQ_MASK,
    BlockHeader,
    SealRecord,
    data_file_name,
    entry_crc,
    parse_data_file_name,
)
from walrus_core.index import Block, Topic
from walrus_core.names import encode_name
from walrus_core.storage import Storage
from walrus_core.writer import mark_dead, write_seal

log = logging.getLogger("walrus_core")

_unpack_header = ENTRY_HEADER.unpack_from
_SCAN_WINDOW = 4 * 1024 * 1024
_RESYNC_WINDOW = 64


@attrs.define
class _Found:
    header: BlockHeader
    seal: SealRecord | None
    file_no: int
    slot: int
    storage: Storage


@attrs.define
class ScanResult:
    """What a full scan of one block found."""

    count: int  # entries, damaged ones included when valid entries follow them
    end: int  # in-block byte after the last valid entry
    last: int  # position of the last valid entry (-1: none)
    committed: int  # entries up to the last one that is not inside an open batch
    positions: list[int]  # position of entry i of the block (-1: damaged, position unknown)
    damaged: bool  # a bad entry was followed by valid ones
    trailing_bytes: int  # non-zero bytes after ``end`` (a torn write), 0 if clean


class _BlockBytes:
    """Windowed reads of one block."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.start = 0
        self.buf = b""

    def get(self, pos: int, size: int) -> bytes:
        rel = pos - self.start
        if rel < 0 or rel + size > len(self.buf):
            want = min(max(size, _SCAN_WINDOW), self.block.limit - pos)
            self.buf = self.block.storage.read(self.block.base + pos, max(0, want))
            self.start = pos
            rel = 0
        return self.buf[rel : rel + size]


def scan_block(block: Block, expected: int | None = None) -> ScanResult:
    """Validate entries from the start of ``block`` (crc included) until they stop."""
    data = _BlockBytes(block)
    pos = BLOCK_HEADER_SIZE
    offset = block.first_offset
    count = committed = 0
    last = -1
    positions: list[int] = []
    damaged = False
    limit = block.limit
    while pos + ENTRY_HEADER_SIZE <= limit and (expected is None or count < expected):
        header = data.get(pos, ENTRY_HEADER_SIZE)
        valid = False
        if len(header) == ENTRY_HEADER_SIZE:
            crc, length, seq, version, flags, _ = _unpack_header(header)
            if (
                version == ENTRY_VERSION
                and seq == offset & SEQ_MASK
                and length <= MAX_ENTRY_BYTES
                and pos + ENTRY_HEADER_SIZE + length <= limit
            ):
                payload = data.get(pos + ENTRY_HEADER_SIZE, length)
                valid = len(payload) == length and entry_crc(length, seq, flags, payload) == crc
        if not valid:
            found = _resync(data, pos, offset, limit)
            if found is None:
                break
            damaged = True
            pos, skipped = found
            positions.extend([-1] * skipped)  # keep positions[i] aligned with entry i
            offset += skipped
            count += skipped
            continue
        positions.append(pos)
        last = pos
        pos += ENTRY_HEADER_SIZE + length
        offset += 1
        count += 1
        if not flags & FLAG_BATCH_OPEN:
            committed = count
    trailing = 0
    rest = limit - pos
    if expected is None and rest > 0:
        tail = data.get(pos, min(rest, _SCAN_WINDOW))
        checked = pos + len(tail)
        stripped = len(tail.rstrip(b"\x00"))
        while stripped == 0 and checked < limit:
            more = data.get(checked, min(limit - checked, _SCAN_WINDOW))
            if not more:
                break
            if more.rstrip(b"\x00"):
                stripped = checked - pos + len(more.rstrip(b"\x00"))
            checked += len(more)
        trailing = stripped
    return ScanResult(count, pos, last, committed, positions, damaged, trailing)


def _resync(data: _BlockBytes, pos: int, offset: int, limit: int) -> tuple[int, int] | None:
    """Find a valid entry after a damaged one at ``pos``: (its position, entries skipped)."""
    rest = data.get(pos, limit - pos)
    for ahead in range(1, _RESYNC_WINDOW + 1):
        needle = struct.pack("<I", (offset + ahead) & SEQ_MASK)
        start = 1
        while True:
            hit = rest.find(needle, start)
            if hit < 0:
                break
            start = hit + 1
            at = hit - 8
            if at <= 0 or at + ENTRY_HEADER_SIZE > len(rest):
                continue
            crc, length, seq, version, flags, _ = _unpack_header(rest, at)
            end = at + ENTRY_HEADER_SIZE + length
            if version != ENTRY_VERSION or end > len(rest):
                continue
            if entry_crc(length, seq, flags, rest[at + ENTRY_HEADER_SIZE : end]) == crc:
                return pos + at, ahead
    return None


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
    _crc, length, seq, version, _flags, _ = _unpack_header(header)
    return bool(
        version == ENTRY_VERSION
        and seq == (block.first_offset + seal.count - 1) & SEQ_MASK
        and seal.last + ENTRY_HEADER_SIZE + length == seal.end
    )


def infer_geometry(root: str, hint: Geometry) -> Geometry | None:
    """The geometry the data files were written with, read off their block headers; None
    when nothing fits.

    In a file whose first block spans ``k`` slots, the next block header starts ``k`` block
    sizes further on (on a 4 KiB boundary, with a valid crc), which gives the block size. A
    file holding a single block only tells which sizes are consistent with it; then ``hint``
    is used if it is one of them.
    """
    numbers = sorted(
        n for n in (parse_data_file_name(name) for name in os.listdir(root)) if n is not None
    )
    consistent: list[int] = []
    for file_no in numbers:
        path = os.path.join(root, data_file_name(file_no))
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            first = BlockHeader.unpack(fh.read(BLOCK_HEADER_SIZE))
            if first is None:
                continue
            if size % (first.slots * 4096) == 0 and size // first.slots == hint.block_size:
                consistent.append(hint.block_size)
            chunk_at = 4096
            while chunk_at < size:
                fh.seek(chunk_at)
                chunk = fh.read(min(_SCAN_WINDOW, size - chunk_at))
                if not chunk:
                    break
                for rel in range(0, len(chunk) - BLOCK_HEADER_SIZE + 1, 4096):
                    if chunk[rel : rel + 4] != BLOCK_MAGIC:
                        continue
                    header = BlockHeader.unpack(chunk[rel : rel + BLOCK_HEADER_SIZE])
                    at = chunk_at + rel
                    if header is None or at % first.slots:
                        continue
                    block_size = at // first.slots
                    if block_size % 4096 == 0 and size % block_size == 0:
                        return Geometry(block_size=block_size, blocks_per_file=size // block_size)
                chunk_at += len(chunk)
    if consistent or not numbers:
        return Geometry(
            block_size=hint.block_size,
            blocks_per_file=hint.blocks_per_file,
        )
    return None


def recover(root: str, allocator: Allocator) -> dict[str, Topic]:
    """Rebuild every topic of ``root``; leaves ``allocator`` ready to continue."""
    geometry = allocator.geometry
    block_size = geometry.block_size
    found: dict[str, list[_Found]] = defaultdict(list)
    numbers = sorted(
        n for n in (parse_data_file_name(name) for name in os.listdir(root)) if n is not None
    )
    max_seq = 0
    resume_file = resume_slot = 0
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
        slots = size // block_size
        slot = used_end = 0
        while slot < slots:
            region = storage.read(slot * block_size, BLOCK_HEADER_SIZE)
            header = BlockHeader.unpack(region)
            if header is None or slot + header.slots > slots:
                if any(region[:4]):
                    log.warning("%s: unreadable block header in slot %d; skipped", path, slot)
                slot += 1
                continue
            used_end = slot + header.slots
            max_seq = max(max_seq, header.block_seq)
            if not header.flags & BLOCK_FLAG_DEAD:
                seal = SealRecord.unpack(region)
                found[header.topic].append(_Found(header, seal, file_no, slot, storage))
            slot += header.slots
        resume_file, resume_slot = file_no, used_end
    allocator.resume(resume_file, resume_slot, max_seq + 1)

    topics: dict[str, Topic] = {}
    touched: set[int] = set()
    for name, items in found.items():
        items.sort(key=lambda f: f.header.block_seq)
        topic = _rebuild_topic(name, items, block_size, touched)
        if topic is not None:
            topics[name] = topic
    for storage in list(allocator.files.values()):
        if id(storage) in touched and allocator.sync_metadata:
            storage.flush()
    return topics


def _rebuild_topic(
    name: str, items: list[_Found], block_size: int, touched: set[int]
) -> Topic | None:
    try:
        raw = encode_name(name)
    except Exception:
        log.warning("ignoring blocks of a topic with an invalid name %r", name)
        return None
    blocks: list[Block] = []
    scans: dict[int, ScanResult] = {}
    for index, item in enumerate(items):
        block = Block(
            topic=name,
            seq=item.header.block_seq,
            file_no=item.file_no,
            slot=item.slot,
            slots=item.header.slots,
            block_size=block_size,
            first_offset=item.header.first_offset,
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
            if block.count == 0:
                block.last = -1
        else:
            scan = scan_block(block)
            scans[block.seq] = scan
            block.count, block.end, block.last = scan.count, scan.end, scan.last
            block.committed = scan.committed
        blocks.append(block)

    _roll_back_incomplete_batch(name, blocks, scans, touched)
    if not blocks:
        return None
    _settle_blocks(name, blocks, scans, touched)
    topic = Topic(name, raw)
    if blocks[0].first_offset > 0:
        log.warning(
            "topic %r: entries 0..%d are missing (their blocks are unreadable or were removed)",
            name,
            blocks[0].first_offset - 1,
        )
    for block in blocks:
        topic.add_block(block)
    topic.end = blocks[-1].first_offset + blocks[-1].count
    return topic


def _roll_back_incomplete_batch(
    name: str, blocks: list[Block], scans: dict[int, ScanResult], touched: set[int]
) -> None:
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
        return
    if keep == 0:
        commit_at = blocks[0].first_offset
        cut: Block | None = None
    else:
        cut = blocks[keep - 1]
        commit_at = cut.first_offset + cut.committed
    dropped = blocks[-1].first_offset + blocks[-1].count - commit_at
    for block in blocks[keep:]:
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
        return
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
        if scan.damaged:
            log.warning(
                "topic %r: damaged entries in the tail block of %s; reading them raises"
                " CorruptionError",
                name,
                block.path,
            )
