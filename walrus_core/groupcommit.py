"""Group commit: concurrent ``sync_each`` appends to one topic share one durable write.

Under ``sync_each`` a write is durable when it returns (backends open the files ``O_DSYNC`` or
sync each write), so every write costs a device flush, and appends to one topic take turns
under its writer lock. Here appends queue up instead: one thread at a time, the leader,
takes the writer lock and writes everything queued in one write (one flush), hands every
queued thread its offset or error, and passes the lead to the first thread that queued
meanwhile. N waiting threads cost one flush, not N, and no entry is visible to readers
before it is durable.

Followers wait on a lock of their own, not on the writer lock: a thread whose entry was
written must be able to return at once, without queueing behind the next leader's write. The
lead is recorded (``Topic.leader``) before it is handed over, so a thread that leaves with an
exception (KeyboardInterrupt while it waits, say) passes on a lead it was given instead of
taking it away with it.

A group is not an atomic batch: each entry stands alone. If a group's write fails, every
appender in it gets a :class:`StorageError` and, as for a failed single append, none of the
entries comes back after a crash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from walrus_core.config import Limits
from walrus_core.errors import StorageError
from walrus_core.index import Topic
from walrus_core.writer import Writer


class PendingAppend:
    """One queued append: its entry, then its outcome."""

    __slots__ = ("done", "error", "length", "offset", "payload", "wake")

    def __init__(self, payload: Any, length: int) -> None:
        self.payload = payload
        self.length = length
        self.done = False
        self.offset = -1  # -1 when done: the topic could not take it (deleted or closed)
        self.error: StorageError | None = None
        # Held until a leader wrote this entry or passed the lead to its thread.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Writes the queued single appends of a topic together (one instance per open log)."""

    def __init__(self, writer: Writer, limits: Limits) -> None:
        self._writer = writer
        self._max_entries = limits.max_batch_entries
        self._max_bytes = limits.max_batch_bytes

    def append(self, topic: Topic, payload: Any, length: int, refused: Callable[[], bool]) -> int:
        """Append one entry durably, in a group with whatever else is queued for ``topic``;
        returns its offset, or -1 when ``topic`` was deleted or ``refused()`` (the instance
        closed) before it was written. Raises StorageError when its group's write failed."""
        mine = PendingAppend(payload, length)
        with topic.waiting_lock:
            topic.waiting.append(mine)
            if topic.leader is None:
                topic.leader = mine
        try:
            if topic.leader is not mine:
                mine.wake.acquire()  # a leader wrote the entry, or passed the lead on
            if not mine.done:
                self._lead(topic, mine, refused)
        except BaseException:
            self._leave(topic, mine)
            raise
        if mine.error is not None:
            raise mine.error
        return mine.offset

    def _leave(self, topic: Topic, mine: PendingAppend) -> None:
        """``mine``'s thread leaves with an exception: take its entry out of the queue if it
        is still there, and pass the lead on if this thread holds it."""
        with topic.waiting_lock:
            if not mine.done and mine in topic.waiting:
                topic.waiting.remove(mine)
            if topic.leader is mine:
                self._pass_lead(topic)

    @staticmethod
    def _pass_lead(topic: Topic) -> None:
        """Hand the lead to the first queued thread, or drop it (``waiting_lock`` held)."""
        if topic.waiting:
            topic.leader = topic.waiting[0]
            topic.leader.wake.release()
        else:
            topic.leader = None

    def _lead(self, topic: Topic, mine: PendingAppend, refused: Callable[[], bool]) -> None:
        """Write queued groups until ``mine`` is written, then pass the lead on."""
        try:
            with topic.lock:
                if topic.last_group > len(topic.waiting):
                    # The threads of the last group are probably about to append again:
                    # let them queue (give up the GIL once) instead of flushing alone.
                    time.sleep(0)
                while not mine.done:
                    group = self._take_group(topic)
                    try:
                        if refused() or topic.deleted:
                            for waiting in group:
                                waiting.done = True
                        else:
                            self._write(topic, group)
                    except BaseException:
                        # Interrupted (KeyboardInterrupt, say) before the entries were
                        # written: they go back to the front of the queue, for the next leader.
                        with topic.waiting_lock:
                            topic.waiting.extendleft(reversed([w for w in group if not w.done]))
                        raise
                    finally:
                        for waiting in group:
                            if waiting.done and waiting is not mine:
                                waiting.wake.release()
        finally:
            self._leave(topic, mine)

    def _take_group(self, topic: Topic) -> list[PendingAppend]:
        group: list[PendingAppend] = []
        nbytes = 0
        queue = topic.waiting
        with topic.waiting_lock:
            while queue and len(group) < self._max_entries:
                if group and nbytes + queue[0].length > self._max_bytes:
                    break
                group.append(queue[0])
                queue.popleft()
                nbytes += group[-1].length
        return group

    def _write(self, topic: Topic, group: list[PendingAppend]) -> None:
        """Write ``group`` and give every member its offset or error."""
        first = topic.end
        try:
            if len(group) == 1:
                self._writer.append(topic, group[0].payload, group[0].length)
            else:
                self._writer.append_batch(
                    topic, [(w.payload, w.length) for w in group], atomic=False
                )
        except StorageError as exc:
            for waiting in group:
                waiting.error = StorageError(*exc.args)
                waiting.error.__cause__ = exc.__cause__
                waiting.done = True
            return
        finally:
            # Published (also when an exception came after the write): the entries are at
            # ``first`` on, and must not be written again.
            if topic.end == first + len(group):
                for index, waiting in enumerate(group):
                    waiting.offset = first + index
                    waiting.done = True
        topic.appends += len(group)
        topic.bytes_appended += sum([w.length for w in group])
        topic.sync_groups += 1
        topic.last_group = len(group)
