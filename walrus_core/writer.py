"""Appends: single entries, atomic batches, block sealing.

Every method here runs with the topic's writer lock held, so one topic has one writer at a
time; a batch and a single append on the same topic simply take turns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
from crc32c import crc32c

from walrus_core.accel import accel
from walrus_core.allocator import Allocator
from walrus_core.config import Geometry
from walrus_core.errors import StorageError
from walrus_core.files import DataFile
from walrus_core.format import (
    BLOCK_HEADER_SIZE,
    CLEARED_SEAL,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    MIX_LEN,
    MIX_POS,
    MIX_SEQ,
    SEAL_AT,
    SEAL_CLOSED,
    SEAL_SEALED,
    SEQ_MASK,
    BlockHeader,
    SealRecord,
    slots_for_entry,
)
from walrus_core.index import INDEX_EVERY_BYTES, INDEX_EVERY_ENTRIES, Block, Topic
from walrus_core.storage import WriteOp

log = logging.getLogger("walrus_core")

_pack_header = ENTRY_HEADER.pack


def write_seal(block: Block, kind: int = SEAL_SEALED, sealed_at: float | None = None) -> None:
    """Write the seal record of ``block`` as it is published now (raises OSError).

    A SEALED record makes recovery trust the block without scanning it; a CLOSED one (written
    at a clean close) does too, and is cleared before the block takes more entries.
    ``sealed_at`` (default: now) is recorded as the time of the block's newest entry.
    """
    now = time.time() if sealed_at is None else sealed_at
    record = SealRecord(
        kind=kind,
        count=block.count,
        end=block.end,
        committed=block.committed,
        last=max(block.last, 0),
        sealed_at=int(now),
    ).pack(block.salt)
    block.storage.write(block.base + SEAL_AT, (record,), len(record))
    block.storage.dirty = True
    if kind == SEAL_SEALED:
        block.sealed = True
        block.sealed_at = now
        block.close_record = False


def mark_dead(block: Block) -> None:
    """Flag ``block`` dead in both header copies so recovery skips it (raises OSError).

    A header that no longer parses is overwritten with zeros instead: either way no entry of
    the block is ever attributed to a topic again.
    """
    region = block.storage.read(block.base, BLOCK_HEADER_SIZE)
    header = BlockHeader.unpack(region)
    packed = header.dead().pack() if header is not None else bytes(BLOCK_HEADER_SIZE)
    block.storage.write(block.base, (packed,), len(packed))
    block.storage.dirty = True


class Writer:
    """Writes entries for every topic of one open directory."""

    def __init__(
        self,
        allocator: Allocator,
        geometry: Geometry,
        *,
        sync_each: bool,
        sync_failures: bool,
    ) -> None:
        self.allocator = allocator
        self.geometry = geometry
        self.sync_each = sync_each
        # Whether the record of a failed write is made durable before the error is raised
        # (every schedule but no_fsync, which promises nothing across a power loss).
        self.sync_failures = sync_failures

    # -- blocks -----------------------------------------------------------------------------
    def seal(self, block: Block) -> None:
        """Seal a full block (recovery then trusts it without a scan)."""
        write_seal(block)

    def seal_idle(self, block: Block) -> None:
        """Seal the head ``block`` of a topic that took no entry since ``block.idle_since``
        (the topic's writer lock is held; raises OSError). The next append starts a new block.
        """
        write_seal(block, sealed_at=block.idle_since)

    def _clear_close_record(self, block: Block) -> None:
        block.storage.write(block.base + SEAL_AT, (CLEARED_SEAL,), len(CLEARED_SEAL))
        block.storage.dirty = True
        block.close_record = False

    def _fresh_block(self, topic: Topic, first_offset: int, payload_len: int) -> Block:
        slots = slots_for_entry(self.geometry.block_size, payload_len)
        return self.allocator.allocate(topic.name, first_offset, slots)

    def close_topic(self, topic: Topic) -> None:
        """At a clean close: record the head's state so the next open trusts the tail without
        scanning it (CLOSED, cleared by the next append), or seal it for good when stale bytes
        of a failed write may follow its end (raises OSError)."""
        if topic.retire_head:
            self._retire_head(topic)
            return
        head = topic.head
        if head is not None and not head.sealed:
            write_seal(head, SEAL_CLOSED)

    def _retire_head(self, topic: Topic) -> None:
        """Finish recording a failed write: mark the blocks it allocated dead and seal the head
        at its published end, durably (raises OSError; the topic stays marked)."""
        touched: dict[int, DataFile] = {}
        while topic.pending_dead:
            block = topic.pending_dead[0]
            mark_dead(block)
            touched[id(block.storage)] = block.storage
            topic.pending_dead.pop(0)
            self.allocator.release(block)
        head = topic.head
        if head is not None and not head.sealed:
            write_seal(head)
            touched[id(head.storage)] = head.storage
        if self.sync_failures:
            for storage in touched.values():
                storage.flush()
        topic.retire_head = False

    def _record_failure(self, topic: Topic, fresh: list[Block]) -> None:
        """After a failed write whose bytes may have reached the file: seal the head at its
        published end and flag the blocks the write allocated dead, durably, so that no crash
        can bring the failed entries back. If that fails too, the topic stays marked and the
        next write (or close) finishes the job before anything else."""
        topic.retire_head = True
        topic.pending_dead.extend(fresh)
        try:
            self._retire_head(topic)
        except OSError as exc:
            log.error(
                "topic %r: could not record a failed write on disk yet (%s); the next write to"
                " the topic retries it first",
                topic.name,
                exc,
            )

    # -- single appends ---------------------------------------------------------------------
    def append(self, topic: Topic, payload: Any, length: int) -> int:
        """Append one entry; returns its offset. Raises StorageError on I/O failure (the
        entry is then absent, also after a crash)."""
        fresh: list[Block] = []
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
                fresh.append(block)
            elif block.close_record:
                self._clear_close_record(block)
            pos = block.end
            header = _pack_header(
                crc32c(
                    payload,
                    (
                        block.salt
                        ^ pos * MIX_POS
                        ^ offset * MIX_SEQ
                        ^ length * MIX_LEN
                        ^ ENTRY_VERSION
                    )
                    & SEQ_MASK,
                ),
                length,
                offset & SEQ_MASK,
                ENTRY_VERSION,
                0,
                block.tag,
            )
            storage = block.storage
            storage.write(block.base + pos, (header, payload), size)
        except OSError as exc:
            self._record_failure(topic, fresh)
            raise StorageError(f"append to topic {topic.name!r} failed: {exc}") from exc
        if fresh:
            topic.add_block(block)
        block.last = pos
        block.end = pos + size
        block.count += 1
        block.committed = block.count
        index = block.index
        if pos >= index.due_pos or offset >= index.due_offset:
            index.add(offset, pos)
        topic.end = offset + 1  # publish last: readers gate on topic.end
        return offset

    # -- batches ----------------------------------------------------------------------------
    def append_batch(
        self, topic: Topic, payloads: Sequence[tuple[Any, int]], *, atomic: bool = True
    ) -> range:
        """Append all ``payloads`` (buffer, length) in one write; returns their offsets.

        ``atomic``: after a crash the entries are all present or all absent; otherwise each
        entry stands alone (a group commit of single appends)."""
        count = len(payloads)
        first = topic.end
        if count == 0:
            return range(first, first)
        fresh: list[Block] = []
        try:
            if topic.retire_head:
                self._retire_head(topic)
            head = topic.blocks[-1] if topic.blocks else None
            block = head if head is not None and not head.sealed else None
            if block is not None and block.close_record:
                self._clear_close_record(block)
            runs = self._plan_runs(topic, block, payloads, first, fresh, atomic)
            # Seal every block the batch filled except the last one it wrote to. The record is
            # computed as it will be after publication; recovery only trusts it when the
            # batch's last entry is also on disk (or rolls back via the BATCH_OPEN flags).
            by_storage: dict[int, tuple[DataFile, list[WriteOp]]] = {}
            for run in runs:
                ops = by_storage.setdefault(id(run.block.storage), (run.block.storage, []))[1]
                ops.append(WriteOp(run.block.base + run.start, run.buffers, run.nbytes))
            to_seal = [run.block for run in runs[:-1]]
            if head is not None and not head.sealed and runs[0].block is not head:
                to_seal.insert(0, head)
            now = time.time()
            for blk in to_seal:
                blk_run = next((r for r in runs if r.block is blk), None)
                record = SealRecord(
                    kind=SEAL_SEALED,
                    count=blk.count + (blk_run.entries if blk_run else 0),
                    end=(blk_run.start + blk_run.nbytes) if blk_run else blk.end,
                    committed=blk.count,
                    last=blk_run.last if blk_run else max(blk.last, 0),
                    sealed_at=int(now),
                ).pack(blk.salt)
                ops = by_storage.setdefault(id(blk.storage), (blk.storage, []))[1]
                ops.append(WriteOp(blk.base + SEAL_AT, (record,), len(record)))
            for storage, ops in by_storage.values():
                storage.batch_submit(ops, self.sync_each)
        except OSError as exc:
            self._record_failure(topic, fresh)
            raise StorageError(f"batch append to topic {topic.name!r} failed: {exc}") from exc
        except BaseException:
            self._record_failure(topic, fresh)
            raise
        # Publish: chain the fresh blocks, block counts, then the topic's end (readers gate
        # on it).
        for blk in fresh:
            topic.add_block(blk)
        for run in runs:
            blk = run.block
            blk.count += run.entries
            blk.end = run.start + run.nbytes
            blk.last = run.last
            blk.committed = blk.count
            if run.mark_offsets:
                blk.index.extend(run.mark_offsets, run.mark_positions)
        for blk in to_seal:
            blk.sealed = True
            blk.sealed_at = now
            blk.close_record = False
        topic.end = first + count
        return range(first, first + count)

    def _plan_runs(
        self,
        topic: Topic,
        block: Block | None,
        payloads: Sequence[tuple[Any, int]],
        first: int,
        fresh: list[Block],
        atomic: bool,
    ) -> list[_Run]:
        """Pack the headers of a batch into one run of contiguous bytes per block it touches,
        allocating blocks as needed (appended to ``fresh``). In an ``atomic`` batch every entry
        but the last carries BATCH_OPEN."""
        if accel is not None:
            return self._plan_runs_compiled(topic, block, payloads, first, fresh, atomic)
        runs: list[_Run] = []
        pos = block.end if block is not None else 0
        limit = block.limit if block is not None else -1
        run_start = last_pos = pos
        run_first = offset = first
        bufs: list[Any] = []
        add = bufs.append
        salt = block.salt if block is not None else 0
        tag = block.tag if block is not None else 0
        # Offset index pairs for the block being filled, added when the batch is published.
        mark_offsets: list[int] = []
        mark_positions: list[int] = []
        due_pos = block.index.due_pos if block is not None else 0
        due_offset = block.index.due_offset if block is not None else 0
        last_index = len(payloads) - 1
        for index, (payload, length) in enumerate(payloads):
            size = ENTRY_HEADER_SIZE + length
            if pos + size > limit:
                if block is not None and bufs:
                    runs.append(
                        _Run(
                            block,
                            run_start,
                            bufs,
                            pos - run_start,
                            offset - run_first,
                            last_pos,
                            mark_offsets,
                            mark_positions,
                        )
                    )
                block = self._fresh_block(topic, offset, length)
                fresh.append(block)
                pos = run_start = block.end
                limit = block.limit
                salt, tag = block.salt, block.tag
                run_first = offset
                bufs = []
                add = bufs.append
                mark_offsets = []
                mark_positions = []
                due_pos, due_offset = block.index.due_pos, block.index.due_offset
            if pos >= due_pos or offset >= due_offset:
                mark_offsets.append(offset)
                mark_positions.append(pos)
                due_pos, due_offset = pos + INDEX_EVERY_BYTES, offset + INDEX_EVERY_ENTRIES
            flags = FLAG_BATCH_OPEN if atomic and index != last_index else 0
            add(
                _pack_header(
                    crc32c(
                        payload,
                        (
                            salt
                            ^ pos * MIX_POS
                            ^ offset * MIX_SEQ
                            ^ length * MIX_LEN
                            ^ (flags << 8 | ENTRY_VERSION)
                        )
                        & SEQ_MASK,
                    ),
                    length,
                    offset & SEQ_MASK,
                    ENTRY_VERSION,
                    flags,
                    tag,
                )
            )
            add(payload)
            last_pos = pos
            pos += size
            offset += 1
        assert block is not None
        runs.append(
            _Run(
                block,
                run_start,
                bufs,
                pos - run_start,
                offset - run_first,
                last_pos,
                mark_offsets,
                mark_positions,
            )
        )
        return runs

    def _plan_runs_compiled(
        self,
        topic: Topic,
        block: Block | None,
        payloads: Sequence[tuple[Any, int]],
        first: int,
        fresh: list[Block],
        atomic: bool,
    ) -> list[_Run]:
        """:meth:`_plan_runs` with the per-entry loop in the compiled accelerator (the same
        runs, headers and index pairs)."""
        assert accel is not None
        encode_run = accel.encode_run
        items = payloads if type(payloads) is list else list(payloads)
        count = len(items)
        open_before = count - 1 if atomic else 0
        runs: list[_Run] = []
        index = 0
        offset = first
        while index < count:
            new_block = block is None
            if block is None:
                block = self._fresh_block(topic, offset, items[index][1])
                fresh.append(block)
            bufs: list[Any] = []
            mark_offsets: list[int] = []
            mark_positions: list[int] = []
            start = block.end
            run_first = offset
            ix = block.index
            stop, pos, offset, last, _due_pos, _due_offset = encode_run(
                items,
                index,
                block.salt,
                block.tag,
                start,
                offset,
                block.limit,
                open_before,
                ix.due_pos,
                ix.due_offset,
                INDEX_EVERY_BYTES,
                INDEX_EVERY_ENTRIES,
                bufs,
                mark_offsets,
                mark_positions,
            )
            if stop > index:
                runs.append(
                    _Run(
                        block,
                        start,
                        bufs,
                        pos - start,
                        offset - run_first,
                        last,
                        mark_offsets,
                        mark_positions,
                    )
                )
            elif new_block:  # a fresh block is sized for its first entry
                raise RuntimeError(f"entry {offset} does not fit in a fresh block")
            index = stop
            block = None
        return runs


@attrs.define
class _Run:
    """The contiguous bytes a batch writes into one block."""

    block: Block
    start: int  # in-block position of the first entry
    buffers: list[Any]
    nbytes: int
    entries: int
    last: int  # in-block position of the last entry
    # (offset, position) pairs for the block's offset index, in two lists
    mark_offsets: list[int]
    mark_positions: list[int]
