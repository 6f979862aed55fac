"""The raw baselines: bare system calls over the same bytes and offsets as Walrus.

One data file of fixed-size records (the engine's 16-byte entry header + the payload, built
before timing) and one 8-byte cursor file. What each workload's timed loop does:

* single append: ``os.pwrite`` of one record at the next offset (D2: + ``os.fdatasync``);
* batch append: one ``os.pwritev`` of a batch's 1000 records, chunked at IOV_MAX
  (D2: + one ``fdatasync``);
* consume: ``os.pread`` of the entry, and per commit an 8-byte ``os.pwrite`` of the position to
  the cursor file (D2: + ``fdatasync`` of it);
* batch read: ``os.preadv`` of 1000 records into a preallocated buffer, one ``bytes`` copy of
  each payload out of it, and the cursor ``pwrite`` (as a checkpointing read persists one);
* random read: ``os.pread`` of the record at ``k * record_size``;
* threads: each thread ``pwrite`` + ``fdatasync`` into its own region of the one file.

D1 is a background thread calling ``fdatasync`` on both files every 200 ms. The data file is
extended sparsely with ``ftruncate`` first, as the backends create their data files.
"""

from __future__ import annotations

import os
import platform
import struct
from collections.abc import Callable, Iterator
from typing import ClassVar

from benchmarks.data import BATCH, record_size, records
from benchmarks.periodic import PeriodicSync
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

IOV_MAX = 1024
try:
    IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (ValueError, OSError, AttributeError):
    pass
_datasync = getattr(os, "fdatasync", os.fsync)
_POS = struct.Struct("<Q").pack
_UNPOS = struct.Struct("<Q").unpack
REGION = 1 << 32  # bytes of the file each thread of the threaded workload writes into
SPARSE = 1000 << 20  # the backends' default data file: 100 blocks of 10 MiB


class RawSubject(Subject):
    """Records in one file, a position in another."""

    library = "raw"
    kind = "raw"
    caps = frozenset(
        {APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP, READ_NEXT, BATCH_READ, RANDOM, THREADS}
    )
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "pwrite only",
        Level.D1: "pwrite + a thread calling fdatasync every 200 ms",
        Level.D2: "pwrite + fdatasync per entry, batch or commit",
    }
    note = "system calls over the same bytes: what the kernel gives without a library"

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(os.path.join(path, "raw.dat"), flags, 0o644)
        os.ftruncate(self.fd, SPARSE)
        self.cfd = os.open(os.path.join(path, "raw.pos"), flags, 0o644)
        # Bytes 8..15 of the cursor file: the record count, written by close() so that a
        # reopen (the space section verifies after one) knows how many records there are.
        stored = os.pread(self.cfd, 8, 8)
        self.rec = record_size(size)
        self.count = _UNPOS(stored)[0] if len(stored) == 8 else 0  # records written
        self.pos = 0  # the consumer's next record
        self.regions: dict[int, int] = {}  # thread -> records written into its region
        self.buf = bytearray(BATCH * self.rec)
        mv = memoryview(self.buf)
        self.views = [mv[j + self.rec - size : j + self.rec] for j in range(0, len(mv), self.rec)]
        self.sync = PeriodicSync(self._sync_all) if level is Level.D1 else None

    @classmethod
    def version(cls) -> str:
        return f"Linux {platform.release()}"

    def _sync_all(self) -> None:
        _datasync(self.fd)
        _datasync(self.cfd)

    def inputs(self, start: int, n: int) -> list[bytes]:
        return records(self.size, start, n)

    # -- writing ----------------------------------------------------------------------------
    def append(self, payloads: list[bytes]) -> None:
        fd, rec, pw = self.fd, self.rec, os.pwrite
        off = self.count * rec
        if self.level is Level.D2:
            for r in payloads:
                pw(fd, r, off)
                _datasync(fd)
                off += rec
        else:
            for r in payloads:
                pw(fd, r, off)
                off += rec
        self.count += len(payloads)

    def append_batches(self, batches: list[list[bytes]]) -> None:
        fd, rec, pwv = self.fd, self.rec, os.pwritev
        sync = self.level is Level.D2
        off = self.count * rec
        for b in batches:
            if len(b) <= IOV_MAX:
                pwv(fd, b, off)
            else:
                at = off
                for i in range(0, len(b), IOV_MAX):
                    chunk = b[i : i + IOV_MAX]
                    at += pwv(fd, chunk, at)
            if sync:
                _datasync(fd)
            off += len(b) * rec
            self.count += len(b)

    # -- reading ----------------------------------------------------------------------------
    def consume(self, n: int) -> Got:
        fd, cfd, rec, pr, pw = self.fd, self.cfd, self.rec, os.pread, os.pwrite
        sync = self.level is Level.D2
        i = self.pos
        r = b""
        every = self.commit_every
        if every <= 1:
            for i in range(self.pos, self.pos + n):
                r = pr(fd, rec, i * rec)
                pw(cfd, _POS(i + 1), 0)
                if sync:
                    _datasync(cfd)
        else:
            end = self.pos + n
            for start in range(self.pos, end, every):
                for i in range(start, min(start + every, end)):
                    r = pr(fd, rec, i * rec)
                pw(cfd, _POS(i + 1), 0)
                if sync:
                    _datasync(cfd)
        self.pos += n
        return Got(i, r[rec - self.size :])

    def rewind(self) -> None:
        self.pos = 0
        os.pwrite(self.cfd, _POS(0), 0)

    def read_batches(self, calls: int) -> Got:
        fd, cfd, buf, views = self.fd, self.cfd, self.buf, self.views
        span = len(buf)
        off = self.pos * self.rec
        out: list[bytes] = []
        for _ in range(calls):
            if os.preadv(fd, [buf], off) != span:
                raise OSError("short read in the raw baseline")
            out = list(map(bytes, views))
            off += span
            os.pwrite(cfd, _POS(off), 0)
        self.pos += calls * BATCH
        return Got(self.pos - 1, out[-1] if out else None)

    def random_reads(self, offsets: list[int]) -> Got:
        fd, rec, pr = self.fd, self.rec, os.pread
        r = b""
        for k in offsets:
            r = pr(fd, rec, k * rec)
        return Got(offsets[-1], r[rec - self.size :])

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        fd, rec, pw = self.fd, self.rec, os.pwrite
        base = self._region_first(thread) * rec

        def run(payloads: list[bytes]) -> None:
            off = base + self.regions.get(thread, 0) * rec
            for r in payloads:
                pw(fd, r, off)
                _datasync(fd)
                off += rec
            self.regions[thread] = self.regions.get(thread, 0) + len(payloads)

        return run

    def _region_first(self, thread: int) -> int:
        """The first record of ``thread``'s region (regions are far apart: no overlap)."""
        return thread * (REGION // self.rec)

    # -- verification -----------------------------------------------------------------------
    def read_all(self) -> Iterator[bytes]:
        spans = [(0, self.count)]
        if self.regions:
            spans = sorted((self._region_first(t), c) for t, c in self.regions.items())
        cut = self.rec - self.size
        for first, count in spans:
            for start in range(first, first + count, BATCH):
                k = min(BATCH, first + count - start)
                block = os.pread(self.fd, k * self.rec, start * self.rec)
                for j in range(k):
                    yield block[j * self.rec + cut : (j + 1) * self.rec]

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        os.pwrite(self.cfd, _POS(self.count), 8)
        if self.level is not Level.D0:
            self._sync_all()
        os.close(self.fd)
        os.close(self.cfd)
