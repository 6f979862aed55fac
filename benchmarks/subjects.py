"""Durability levels, and the one interface every library adapter ("subject") implements.

A subject is one library at one durability level, opened on one fresh directory, holding one
log (or queue) of entries of one payload size. Workloads only talk to this interface, so that
every library does the same work: the same payload objects, the same counts, its own natural
loop inside the timed region, no helper code of ours inside it beyond what the library forces
on a caller (building keys for a key-value store is part of using one).

Levels (the same for every library; a library is only run at the levels it really offers):

* D0: nothing is forced to stable storage by the library (the data is in the OS page cache:
  it survives the process being killed, not a power loss);
* D1: group commit or a periodic sync: durable within a bounded delay, not per call;
* D2: durable before the call returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import ClassVar, NamedTuple

from benchmarks.data import items


class Level(enum.Enum):
    """A durability level."""

    D0 = "D0"
    D1 = "D1"
    D2 = "D2"

    @property
    def meaning(self) -> str:
        return LEVEL_MEANING[self]


LEVEL_MEANING = {
    Level.D0: "no library fsync: survives a killed process, not a power loss",
    Level.D1: "group commit or periodic sync: durable within a bounded delay",
    Level.D2: "durable before the call returns",
}

# Capabilities a workload may need (a subject lists the ones it has).
APPEND = "append"  # one entry per call
BATCH = "batch"  # an atomic batch of entries per call
CONSUME_EACH = "consume-each"  # read the next entry and commit the position, durably, each time
CONSUME_GROUP = "consume-group"  # read one at a time, commit the position every N entries
READ_NEXT = "read-next"  # rewindable consume (cursor moved back, entries kept)
BATCH_READ = "batch-read"  # many entries per call, by position
RANDOM = "random"  # one entry at an arbitrary offset
THREADS = "threads"  # appends from several threads at once


class Got(NamedTuple):
    """Evidence of a read loop: the offset of the last entry it returned, and its payload."""

    offset: int
    data: bytes | None


class Unavailable(Exception):
    """The library is not installed (the subject's cells are skipped with this reason)."""


class Subject:
    """One library at one durability level, on one directory. Untimed methods may be slow;
    the timed ones (``append``, ``append_batches``, ``consume``, ``read_batches``,
    ``random_reads``, ``thread_appender``'s function) are the library's own tight loops."""

    library: ClassVar[str]  # the name shown in tables
    kind: ClassVar[str]  # "ours", "raw" or "peer"
    caps: ClassVar[frozenset[str]]
    # What each level it offers means for this library (the mapping table printed).
    levels: ClassVar[dict[Level, str]]
    # Capabilities that exist only at some levels (e.g. a queue whose reads always commit).
    note: ClassVar[str] = ""
    flagged: ClassVar[frozenset[Level]] = frozenset()  # levels shown with a '*': see note
    cap_notes: ClassVar[dict[str, str]] = {}  # why a capability is missing

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        self.path = path
        self.level = level
        self.size = size
        self.commit_every = commit_every
        # The workload moves the consumer back (or anywhere): consumed entries must stay.
        self.rereads = rereads

    @classmethod
    def version(cls) -> str:
        """The library's version (raises :class:`Unavailable` if it is not installed)."""
        return ""

    @property
    def label(self) -> str:
        return self.library + ("*" if self.level in self.flagged else "")

    def inputs(self, start: int, n: int) -> list[bytes]:
        """What ``append`` takes for entries ``start .. start + n - 1`` (untimed): the pool's
        payloads; the raw baseline takes whole records instead."""
        return items(self.size, start, n)

    # -- writing (timed) ------------------------------------------------------------------
    def append(self, payloads: list[bytes]) -> None:
        """One call per payload."""
        raise NotImplementedError

    def append_batches(self, batches: list[list[bytes]]) -> None:
        """One atomic batch per list."""
        raise NotImplementedError

    def fill(self, payloads: list[bytes]) -> None:
        """Store ``payloads`` (from :meth:`inputs`) after the others, quickly (untimed set-up
        for read workloads)."""
        if BATCH in self.caps:
            for i in range(0, len(payloads), 1000):
                self.append_batches([payloads[i : i + 1000]])
        else:
            self.append(payloads)

    # -- reading (timed) ------------------------------------------------------------------
    def consume(self, n: int) -> Got:
        """Read the next ``n`` entries one at a time, committing the position every
        ``commit_every`` entries at this subject's level."""
        raise NotImplementedError

    def rewind(self) -> None:
        """Move the consumer back to the first entry (entries are kept)."""
        raise NotImplementedError

    def read_batches(self, calls: int) -> Got:
        """``calls`` reads of 1000 entries each, continuing from the current position (from
        the first entry after :meth:`rewind`)."""
        raise NotImplementedError

    def random_reads(self, offsets: list[int]) -> Got:
        """Read the entry at each offset (0 = the first entry stored)."""
        raise NotImplementedError

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        """A function for thread number ``thread`` that appends its payloads one per call."""
        raise NotImplementedError

    def sync_counters(self) -> tuple[int, int] | None:
        """(appends, durable writes that served them) so far, where the library reports it."""
        return None

    # -- verification (untimed) -----------------------------------------------------------
    def read_all(self) -> Iterator[bytes]:
        """Every payload still stored, in order (may consume them: it runs last)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release everything (a clean close)."""


def mapping_rows(classes: list[type[Subject]]) -> list[dict[str, str]]:
    """The D0/D1/D2 mapping table: one row per library."""
    rows = []
    for cls in classes:
        row = {"library": cls.library, "kind": cls.kind}
        for level in Level:
            text = cls.levels.get(level)
            row[level.value] = (text + (" (*)" if level in cls.flagged else "")) if text else "-"
        row["note"] = cls.note
        rows.append(row)
    return rows
