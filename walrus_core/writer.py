"""Appends: single entries, atomic batches, block sealing.

Every method here runs with the topic's writer lock held, so one topic has one writer at a
time; a batch and a single append on the same topic simply take turns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from crc32c import crc32c

from walrus_core.allocator import Allocator
from walrus_core.config import Geometry
from walrus_core.errors import StorageError
from walrus_core.format import (
    BLOCK_FLAG_DEAD,
    CLEARED_SEAL,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    SEAL_AT,
    SEAL_SEALED,
    SEQ_MASK,
    BlockHeader,
    SealRecord,
    slots_for_entry,
)
from walrus_core.index import Block, Topic
from walrus_core.storage import Storage, WriteOp

log = logging.getLogger("walrus_core")

_pack_header = ENTRY_HEADER.pack
# format.entry_seed, inlined on the hot path (kept equal by tests/test_format.py)
_MIX_LEN = 0x9E3779B1
_MIX_SEQ = 0x85EBCA77


def write_seal(block: Block, kind: int = SEAL_SEALED) -> None:
    """Write the seal record of ``block`` as it is published now (raises OSError).

    A SEALED record makes recovery trust the block without scanning it; a CLOSED one (written
    at a clean close) does too, and is cleared before the block takes more entries.
    """
    record = SealRecord(
        kind=kind,
        count=block.count,
        end=block.end,
        committed=block.committed,
        last=max(block.last, 0),
    ).pack()
    block.storage.write(block.base + SEAL_AT, (record,), len(record))
    block.storage.dirty = True
    if kind == SEAL_SEALED:
        block.sealed = True
        block.close_record = False


def mark_dead(block: Block) -> None:
    """Flag ``block`` dead in its header so recovery skips it (raises OSError)."""
    header = BlockHeader(
        topic=block.topic,
        block_seq=block.seq,
        first_offset=block.first_offset,
        slots=block.slots,
        flags=BLOCK_FLAG_DEAD,
    ).pack()
    block.storage.write(block.base, (header,), len(header))
    block.storage.dirty = True


class Writer:
    """Writes entries for every topic of one open directory."""

    def __init__(
        self, allocator: Allocator, geometry: Geometry, *, mark_dirty: bool, sync_each: bool
    ) -> None:
        self.allocator = allocator
        self.geometry = geometry
        self.mark_dirty = mark_dirty
        self.sync_each = sync_each

    # -- blocks -----------------------------------------------------------------------------
    def seal(self, block: Block) -> None:
        """Seal a full block (recovery then trusts it without a scan)."""
        write_seal(block)

    def _clear_close_record(self, block: Block) -> None:
        block.storage.write(block.base + SEAL_AT, (CLEARED_SEAL,), len(CLEARED_SEAL))
        block.storage.dirty = True
        block.close_record = False

    def _fresh_block(self, topic: Topic, first_offset: int, payload_len: int) -> Block:
        slots = slots_for_entry(self.geometry, payload_len)
        return self.allocator.allocate(topic.name, first_offset, slots)

    def _retire_head(self, topic: Topic) -> None:
        head = topic.head
        if head is not None and not head.sealed:
            self.seal(head)
        topic.retire_head = False

    @staticmethod
    def _abandon_block(block: Block) -> None:
        """Best effort: flag a block that a failed batch allocated, so recovery skips it."""
        try:
            mark_dead(block)
        except OSError as exc:
            log.warning("could not mark abandoned block %r dead: %s", block, exc)

    # -- single appends ---------------------------------------------------------------------
    def append(self, topic: Topic, payload: Any, length: int) -> int:
        """Append one entry; returns its offset. Raises StorageError on I/O failure."""
        try:
            if topic.retire_head:
                self._retire_head(topic)
            block = topic.blocks[-1] if topic.blocks else None
            size = ENTRY_HEADER_SIZE + length
            offset = topic.end
            if block is None or block.sealed or block.end + size > block.limit:
                if block is not None and not block.sealed:
                    self.seal(block)
                block = self._fresh_block(topic, offset, length)
                topic.add_block(block)
            elif block.close_record:
                self._clear_close_record(block)
            pos = block.end
            seq = offset & SEQ_MASK
            header = _pack_header(
                crc32c(payload, (length * _MIX_LEN ^ seq * _MIX_SEQ ^ ENTRY_VERSION) & SEQ_MASK),
                length,
                seq,
                ENTRY_VERSION,
                0,
                0,
            )
            storage = block.storage
            storage.write(block.base + pos, (header, payload), size)
        except OSError as exc:
            raise StorageError(f"append to topic {topic.name!r} failed: {exc}") from exc
        if self.mark_dirty:
            storage.dirty = True
        block.last = pos
        block.end = pos + size
        block.count += 1
        block.committed = block.count
        topic.end = offset + 1  # publish last: readers gate on topic.end
        return offset

    # -- batches ----------------------------------------------------------------------------
    def append_batch(self, topic: Topic, payloads: Sequence[tuple[Any, int]]) -> range:
        """Append all ``payloads`` (buffer, length) atomically; returns their offsets."""
        count = len(payloads)
        first = topic.end
        if count == 0:
            return range(first, first)
        blocks_before = len(topic.blocks)
        try:
            if topic.retire_head:
                self._retire_head(topic)
            head = topic.blocks[-1] if topic.blocks else None
            block = head if head is not None and not head.sealed else None
            if block is not None and block.close_record:
                self._clear_close_record(block)
            # Plan: one run (contiguous bytes) per block touched. Every entry is packed with
            # BATCH_OPEN; the last one is re-packed without it below.
            runs: list[tuple[Block, int, list[Any], int, int, int]] = []
            pos = block.end if block is not None else 0
            limit = block.limit if block is not None else -1
            run_start = last_pos = pos
            run_first = offset = first
            bufs: list[Any] = []
            add = bufs.append
            open_seed = FLAG_BATCH_OPEN << 8 | ENTRY_VERSION
            for payload, length in payloads:
                size = ENTRY_HEADER_SIZE + length
                if pos + size > limit:
                    if block is not None and bufs:
                        runs.append(
                            (block, run_start, bufs, pos - run_start, offset - run_first, last_pos)
                        )
                    block = self._fresh_block(topic, offset, length)
                    topic.add_block(block)
                    pos = run_start = block.end
                    limit = block.limit
                    run_first = offset
                    bufs = []
                    add = bufs.append
                seq = offset & SEQ_MASK
                add(
                    _pack_header(
                        crc32c(
                            payload, (length * _MIX_LEN ^ seq * _MIX_SEQ ^ open_seed) & SEQ_MASK
                        ),
                        length,
                        seq,
                        ENTRY_VERSION,
                        FLAG_BATCH_OPEN,
                        0,
                    )
                )
                add(payload)
                last_pos = pos
                pos += size
                offset += 1
            assert block is not None
            payload, length = payloads[-1]
            seq = (offset - 1) & SEQ_MASK
            bufs[-2] = _pack_header(
                crc32c(payload, (length * _MIX_LEN ^ seq * _MIX_SEQ ^ ENTRY_VERSION) & SEQ_MASK),
                length,
                seq,
                ENTRY_VERSION,
                0,
                0,
            )
            runs.append((block, run_start, bufs, pos - run_start, offset - run_first, last_pos))
            # Seal every block the batch filled except the last one it wrote to. The record is
            # computed as it will be after publication; recovery only trusts it when the
            # batch's last entry is also on disk (or rolls back via the BATCH_OPEN flags).
            by_storage: dict[int, tuple[Storage, list[WriteOp]]] = {}
            for blk, start, bufs, nbytes, _n, _last in runs:
                entry = by_storage.setdefault(id(blk.storage), (blk.storage, []))
                entry[1].append(WriteOp(blk.base + start, bufs, nbytes))
            to_seal = [r[0] for r in runs[:-1]]
            if head is not None and not head.sealed and runs and runs[0][0] is not head:
                to_seal.insert(0, head)
            seal_ops: list[tuple[Block, bytes]] = []
            for blk in to_seal:
                blk_run = next((r for r in runs if r[0] is blk), None)
                record = SealRecord(
                    kind=SEAL_SEALED,
                    count=blk.count + (blk_run[4] if blk_run else 0),
                    end=(blk_run[1] + blk_run[3]) if blk_run else blk.end,
                    committed=blk.count,
                    last=blk_run[5] if blk_run else max(blk.last, 0),
                ).pack()
                seal_ops.append((blk, record))
                entry = by_storage.setdefault(id(blk.storage), (blk.storage, []))
                entry[1].append(WriteOp(blk.base + SEAL_AT, (record,), len(record)))
            for storage, ops in by_storage.values():
                storage.batch_submit(ops, self.sync_each)
        except OSError as exc:
            self._abandon(topic, blocks_before)
            raise StorageError(f"batch append to topic {topic.name!r} failed: {exc}") from exc
        except BaseException:
            self._abandon(topic, blocks_before)
            raise
        # Publish: block counts first, then the topic's end (readers gate on it).
        for blk, start, _bufs, nbytes, n, last in runs:
            blk.count += n
            blk.end = start + nbytes
            blk.last = last
            blk.committed = blk.count
            if self.mark_dirty:
                blk.storage.dirty = True
        for blk, _record in seal_ops:
            blk.sealed = True
        topic.end = first + count
        return range(first, first + count)

    def _abandon(self, topic: Topic, blocks_before: int) -> None:
        """Undo a failed batch in memory and make sure nothing of it can resurface."""
        for block in topic.drop_blocks_from(blocks_before):
            self._abandon_block(block)
        # Part of the batch may sit after the head's end with valid checksums: never append
        # after it again. The head gets sealed at its published end before the next write.
        topic.retire_head = True
