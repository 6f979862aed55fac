"""Walrus itself, through its public API only, as a :class:`~benchmarks.subjects.Subject`.

Levels: D0 ``FsyncSchedule.no_fsync()``, D1 the default ``milliseconds(200)``, D2
``sync_each()``. Consumers use the default cursor: ``strictly_at_once()`` (the default; the
cursor is persisted on every checkpointing read) when a workload commits every entry,
``at_least_once(persist_every=N)`` when it commits every N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import version as _dist_version
from typing import Any, ClassVar

from benchmarks.data import BATCH
from benchmarks.subjects import (
    APPEND,
    BATCH_READ,
    CONSUME_EACH,
    CONSUME_GROUP,
    RANDOM,
    READ_NEXT,
    THREADS,
    Got,
    Level,
    Subject,
)
from benchmarks.subjects import BATCH as BATCH_CAP
from walrus_core import FsyncSchedule, ReadConsistency, Walrus

TOPIC = "bench"

FSYNC = {
    Level.D0: FsyncSchedule.no_fsync,
    Level.D1: lambda: FsyncSchedule.milliseconds(200),
    Level.D2: FsyncSchedule.sync_each,
}


class WalrusSubject(Subject):
    """One Walrus directory with one topic."""

    library = "walrus"
    kind = "ours"
    caps = frozenset(
        {APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP, READ_NEXT, BATCH_READ, RANDOM, THREADS}
    )
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "FsyncSchedule.no_fsync()",
        Level.D1: "FsyncSchedule.milliseconds(200) (the default)",
        Level.D2: "FsyncSchedule.sync_each()",
    }
    note = (
        "consumers: strictly_at_once() when committing each entry,"
        " at_least_once(persist_every=1000) when committing every 1000"
    )
    backend = "fd"  # set by the command line (--backend)

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        consistency = (
            ReadConsistency.strictly_at_once()
            if commit_every <= 1
            else ReadConsistency.at_least_once(persist_every=commit_every)
        )
        # A workload that moves the cursor back needs the consumed blocks kept: background
        # reclamation would give them back (a seek forward consumes everything before it).
        self.wal = Walrus(
            data_dir=path,
            backend=self.backend,
            consistency=consistency,
            fsync=FSYNC[level](),
            auto_reclaim=not rereads,
        )
        # Exactly 1000 entries per batch read: the read stops before the payload total would
        # pass max_bytes (Limits.max_batch_entries, 2000 by default, is not what bounds it).
        self.max_bytes = BATCH * size

    @classmethod
    def version(cls) -> str:
        return _dist_version("walrus-core")

    @property
    def label(self) -> str:
        return f"walrus ({'/'.join(self.wal.backend_chain)})"

    def append(self, payloads: list[bytes]) -> None:
        append = self.wal.append_for_topic
        for p in payloads:
            append(TOPIC, p)

    def append_batches(self, batches: list[list[bytes]]) -> None:
        bappend = self.wal.batch_append_for_topic
        for b in batches:
            bappend(TOPIC, b)

    def consume(self, n: int) -> Got:
        rn = self.wal.read_next
        e: Any = None
        for _ in range(n):
            e = rn(TOPIC)
        return Got(-1, None) if e is None else Got(e.offset, e.data)

    def rewind(self) -> None:
        self.wal.seek(TOPIC, 0)

    def read_batches(self, calls: int) -> Got:
        br = self.wal.batch_read_for_topic
        mb = self.max_bytes
        got: list[Any] = []
        for _ in range(calls):
            got = br(TOPIC, mb, True)
        return Got(got[-1].offset, got[-1].data) if got else Got(-1, None)

    def seek_reads(self, offsets: list[int]) -> Got:
        """Random access through the default cursor: ``seek`` then ``read_next``."""
        seek, rn = self.wal.seek, self.wal.read_next
        e: Any = None
        for off in offsets:
            seek(TOPIC, off)
            e = rn(TOPIC)
        return Got(-1, None) if e is None else Got(e.offset, e.data)

    def random_reads(self, offsets: list[int]) -> Got:
        """Stateless random access: ``batch_read_for_topic(start_offset=k)`` of one entry."""
        br = self.wal.batch_read_for_topic
        one = self.size  # max_bytes = one payload: exactly one entry comes back
        got: list[Any] = []
        for off in offsets:
            got = br(TOPIC, one, False, off)
        return Got(got[0].offset, got[0].data) if got else Got(-1, None)

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        append = self.wal.append_for_topic

        def run(payloads: list[bytes]) -> None:
            for p in payloads:
                append(TOPIC, p)

        return run

    def sync_counters(self) -> tuple[int, int] | None:
        stats = self.wal.stats()
        groups = getattr(stats, "sync_groups", None)  # being added to Stats; absent before
        return None if groups is None else (stats.appends, int(groups))

    def read_all(self) -> Iterator[bytes]:
        # Through a consumer of its own, not stateless start_offset reads: those locate their
        # start on every call (a scan from the block start in engines without an offset index).
        # max_bytes is sized to what one call returns (a read buffers up to max_bytes ahead).
        mb = self.size * self.wal.limits.max_batch_entries
        while True:
            got = self.wal.batch_read_for_topic(TOPIC, mb, True, consumer="bench-verify")
            if not got:
                return
            for e in got:
                yield e.data

    def close(self) -> None:
        self.wal.close()
