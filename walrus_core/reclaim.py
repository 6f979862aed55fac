"""Reclamation: giving the space of consumed and expired blocks back to the file system.

A block is *garbage* once every consumer of its topic has durably read past it (the default
cursor and every named consumer, whether loaded or only on disk), or once retention drops it.
A pass, run by the background thread and by ``Walrus.reclaim()``:

1. decides, per topic, how many of its oldest blocks go (holding the topic's cursors still, so
   no consumer moves back into them and no new one starts below the new start);
2. records the topic's new start in its start mark and makes it durable (recovery then leaves
   those blocks out, whatever is still on disk, and does not report the missing range);
3. takes the blocks out of the topic's index and releases them to the allocator;
4. deletes each data file that has no live block left and takes no more blocks (its handle
   closed first, the directory synced), and punches holes (``walrus_discard``) where a file
   must stay because another topic's block in it is live.

Why this is safe: blocks are freed only after the mark that disowns them is durable, and a
slot or file is never handed out twice while the log is open. After a reopen a punched slot
may be reused, but every entry is bound to its block's random nonce, so bytes of an earlier
occupant never validate as an entry of the new one. A reader that was inside a block when it
went finds zeros or a missing file, and the engine retries it at the topic's new start.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import threading
import time
from collections.abc import Mapping

from walrus_core.allocator import Allocator
from walrus_core.cursors import CursorBook
from walrus_core.directory import fsync_dir
from walrus_core.errors import StorageError
from walrus_core.index import Block, StartMark, Topic
from walrus_core.info import ReclaimResult, Retention
from walrus_core.writer import Writer

log = logging.getLogger("walrus_core")

PAGE = 4096


def block_bytes(block: Block) -> int:
    """Bytes ``block`` occupies: what was written to it, in whole pages."""
    return min(block.limit, -(-block.end // PAGE) * PAGE)


def allocated_bytes(path: str) -> int:
    """Bytes the file system allocated to ``path`` (0 if it is gone)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _candidates(blocks: list[Block]) -> list[Block]:
    """The blocks that may go: all but the head, and the head too once it is sealed (the
    writer never appends to a sealed block)."""
    if blocks and not blocks[-1].sealed:
        return blocks[:-1]
    return blocks


class Reclaimer:
    """Runs reclamation passes for one open directory, one at a time."""

    def __init__(
        self,
        root: str,
        allocator: Allocator,
        topics: dict[str, Topic],
        book: CursorBook,
        writer: Writer,
        *,
        retention: Retention,
        topic_retention: Mapping[str, Retention],
        sync: bool,
    ) -> None:
        self._root = root
        self._allocator = allocator
        self._topics = topics
        self._book = book
        self._writer = writer
        self.retention = retention
        self.topic_retention = dict(topic_retention)
        self._sync = sync
        self.lock = threading.Lock()  # one pass (or topic deletion) at a time
        self._punch_refused: str | None = None
        self.files_deleted = 0
        self.blocks_punched = 0
        self.bytes_freed = 0

    def retention_for(self, name: str) -> Retention:
        """The retention in force for topic ``name``: its own, else the instance's."""
        return self.topic_retention.get(name, self.retention)

    # -- a pass -----------------------------------------------------------------------------
    def run(self) -> ReclaimResult:
        """One pass (raises StorageError when a start mark cannot be recorded; nothing is
        freed then)."""
        with self.lock:
            return self._pass()

    def _pass(self) -> ReclaimResult:
        now = time.time()
        cuts = self._retention_cuts(now)
        planned: list[tuple[Topic, int]] = []
        dropped_entries = 0
        for name, topic in list(self._topics.items()):
            cut, skipped = self._decide(topic, cuts.get(name, 0))
            dropped_entries += skipped
            if cut:
                planned.append((topic, cut))
        if planned and self._sync:
            try:
                self._book.store.flush()
            except OSError as exc:
                raise StorageError(f"syncing the start marks failed: {exc}") from exc
        blocks_dropped = 0
        for topic, cut in planned:
            blocks_dropped += self._drop(topic, cut)
        files, punched, freed = self._free()
        return ReclaimResult(
            files_deleted=files,
            blocks_punched=punched,
            bytes_freed=freed,
            entries_dropped=dropped_entries,
            blocks_dropped=blocks_dropped,
        )

    def _decide(self, topic: Topic, retention_cut: int) -> tuple[int, int]:
        """How many of ``topic``'s oldest blocks go, and the unread entries that drops; moves
        the topic's start and records it (raises StorageError)."""
        with topic.lock:  # no write in flight: every block but the head is complete
            blocks = list(topic.blocks)
            end = topic.end
            next_seq = self._allocator.next_seq
        candidates = _candidates(blocks)
        if not candidates:
            return 0, 0
        retention_cut = min(retention_cut, len(candidates))
        if not retention_cut and candidates[0].end_offset > self._rough_floor(topic):
            return 0, 0  # the common case, decided without taking any lock
        with self._book.hold(topic):
            floor = self._book.floor(topic)
            cut = retention_cut
            while cut < len(candidates) and candidates[cut].end_offset <= floor:
                cut += 1
            if not cut:
                return 0, 0
            start = blocks[cut].first_offset if cut < len(blocks) else end
            first_seq = blocks[cut].seq if cut < len(blocks) else next_seq
            skipped = 0
            previous_start = topic.start
            if start > topic.start:
                skipped = self._book.skip_to(topic, start)
                topic.start = start
        try:
            self._book.write_mark(topic, StartMark(start, first_seq))
        except OSError as exc:
            # Nothing is freed: the blocks stay readable, as they are after a reopen.
            with self._book.hold(topic):
                if topic.start == start:
                    topic.start = previous_start
            raise StorageError(
                f"recording the start of topic {topic.name!r} failed: {exc}"
            ) from exc
        return cut, skipped

    def _rough_floor(self, topic: Topic) -> int:
        """An upper bound of :meth:`CursorBook.floor` read without locks (cursors only move
        forward, except by seeks, which the locked check catches)."""
        floor = topic.end
        start = topic.start
        for cursor in list(topic.cursors.values()):
            if cursor.persisted < 0 and not cursor.since_persist and cursor.offset == start:
                continue  # not a consumer yet (only counted or peeked with)
            floor = min(floor, max(cursor.offset, cursor.persisted))
        return floor

    def _drop(self, topic: Topic, cut: int) -> int:
        """Take the ``cut`` oldest blocks out of ``topic`` and release them."""
        with topic.lock, self._book.hold(topic):
            dropped = topic.drop_front(cut)
            gone = {id(block) for block in dropped}
            for cursor in topic.cursors.values():
                if cursor.block is not None and id(cursor.block) in gone:
                    cursor.block = None  # located again from the index on the next read
                if cursor.buf_block is not None and id(cursor.buf_block) in gone:
                    cursor.buf, cursor.buf_block = b"", None
        for block in dropped:
            self._allocator.release(block)
        return len(dropped)

    # -- giving space back ------------------------------------------------------------------
    def _free(self) -> tuple[int, int, int]:
        """Delete files without live blocks, punch released blocks elsewhere; returns (files
        deleted, blocks punched, bytes freed)."""
        doomed, extents = self._allocator.take_unused()
        files = punched = freed = 0
        for file_no in doomed:
            storage = self._allocator.forget_file(file_no)
            path = self._allocator.path_of(file_no)
            before = allocated_bytes(path)
            if storage is not None:
                self._allocator.open_files.retire(storage)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not delete the consumed data file %s: %s", path, exc)
                continue
            files += 1
            self.files_deleted += 1  # counted at once: stats() may be read while a pass runs
            freed += before
        if files and self._sync:
            try:
                fsync_dir(self._root)
            except OSError as exc:
                log.warning("syncing %s after deleting data files failed: %s", self._root, exc)
        touched: dict[int, int] = {}
        for extent in extents:
            if self._punch_refused is not None:
                break
            storage = self._allocator.files.get(extent.file_no)
            if storage is None:
                continue
            path = storage.path
            if extent.file_no not in touched:
                touched[extent.file_no] = allocated_bytes(path)
            try:
                storage.discard(extent.offset, extent.size)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self._punch_refused = str(exc)
                    log.warning(
                        "cannot punch holes in %s (%s): consumed blocks keep their space until"
                        " their whole file is deleted",
                        self._root,
                        exc,
                    )
                else:  # tried again on the next pass
                    log.warning("punching a consumed block of %s failed: %s", path, exc)
                    self._allocator.note_unused(extent.file_no, extent.offset, extent.size)
                continue
            punched += 1
        for file_no, before in touched.items():
            storage = self._allocator.files.get(file_no)
            if storage is not None:
                freed += max(0, before - allocated_bytes(storage.path))
        self.blocks_punched += punched
        self.bytes_freed += freed
        return files, punched, freed

    # -- retention --------------------------------------------------------------------------
    def _retention_cuts(self, now: float) -> dict[str, int]:
        """Per topic, how many of its oldest blocks retention drops (by age and by size, per
        topic, then the instance's size bound over every topic, oldest blocks first)."""
        cuts: dict[str, int] = {}
        remaining: dict[str, tuple[list[Block], int]] = {}
        for name, topic in list(self._topics.items()):
            blocks = list(topic.blocks)
            if not blocks:
                continue
            retention = self.retention_for(name)
            if retention.max_age_seconds is not None:
                self._seal_if_idle(topic, blocks[-1], now, retention.max_age_seconds)
            candidates = _candidates(list(topic.blocks))
            cut = 0
            if retention.max_age_seconds is not None:
                limit = now - retention.max_age_seconds
                while (
                    cut < len(candidates)
                    and candidates[cut].sealed_at
                    and candidates[cut].sealed_at <= limit
                ):
                    cut += 1
            total = sum(block_bytes(b) for b in topic.blocks)
            if retention.max_bytes is not None:
                size_cut = 0
                left = total
                while left > retention.max_bytes and size_cut < len(candidates):
                    left -= block_bytes(candidates[size_cut])
                    size_cut += 1
                cut = max(cut, size_cut)
            total -= sum(block_bytes(b) for b in candidates[:cut])
            if cut:
                cuts[name] = cut
            remaining[name] = (candidates[cut:], total)
        bound = self.retention.max_bytes
        if bound is not None:
            overall = sum(total for _blocks, total in remaining.values())
            heap = [(blocks[0].seq, name, 0) for name, (blocks, _t) in remaining.items() if blocks]
            heapq.heapify(heap)
            while overall > bound and heap:
                _seq, name, index = heapq.heappop(heap)
                blocks = remaining[name][0]
                overall -= block_bytes(blocks[index])
                cuts[name] = cuts.get(name, 0) + 1
                if index + 1 < len(blocks):
                    heapq.heappush(heap, (blocks[index + 1].seq, name, index + 1))
        return cuts

    def _seal_if_idle(self, topic: Topic, head: Block, now: float, max_age: float) -> None:
        """Seal a head block that took no entry for longer than ``max_age``, so that age-based
        retention can drop it like any other block (the next append starts a new block).

        Its age is known without a clock read per append: a pass notes the head's entry count
        and when it first saw that count; no entry of the head is newer than that moment."""
        if head.sealed:
            return
        if head.idle_count != head.count:
            head.idle_count, head.idle_since = head.count, now
            return
        if head.count == 0 or head.idle_since > now - max_age:
            return
        with topic.lock:
            if topic.head is not head or head.sealed or head.count != head.idle_count:
                return
            if topic.retire_head:
                return
            try:
                self._writer.seal_idle(head)
            except OSError as exc:
                log.warning("sealing the idle head block of topic %r failed: %s", topic.name, exc)
