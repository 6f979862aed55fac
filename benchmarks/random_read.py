"""Random access: one entry at a uniformly random offset among 1M entries (200k with
``--quick``), for 10 B and 1 KiB payloads; microseconds per read.

Ours is measured two ways on one log (built once with batch appends, reopened at D1 with the
default ``strictly_at_once`` consumer):

* ``seek`` then ``read_next``: moving the default cursor (``seek`` persists it) and consuming;
* ``batch_read_for_topic(start_offset=k)`` with ``max_bytes`` = one payload: a stateless read of
  exactly one entry, no cursor.

Before timing, one read lands in every 10 MiB of entries (each Walrus block), untimed: the
steady state is measured, not the first touch of a block after the open. Raw: ``os.pread`` of
the fixed-size record at ``k * record_size``. Peers with reads by key:
``sqlite3`` (``SELECT`` by primary key), ``lmdb`` (a read transaction and ``get`` per read),
``rocksdict`` (``get``). All the data is in the page cache: this measures the lookup path, not
the disk.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from benchmarks.biglog import BigLogs
from benchmarks.data import check_entry
from benchmarks.harness import VerificationError, measure
from benchmarks.ours import WalrusSubject
from benchmarks.subjects import RANDOM, Got, Level, Subject
from benchmarks.workloads import Context, Row

SIZES = (10, 1024)


def entries_for(ctx: Context) -> int:
    return 200_000 if ctx.quick else 1_000_000


class RandomCell:
    """Reads at offsets drawn before each repetition."""

    def __init__(self, fn: Callable[[list[int]], Got], size: int, entries: int, label: str):
        self.fn = fn
        self.size = size
        self.entries = entries
        self.label = label
        self.rng = random.Random(size * 7919 + entries)
        self.offsets: list[int] = []

    def prepare(self, n: int) -> None:
        rand = self.rng.randrange
        self.offsets = [rand(self.entries) for _ in range(n)]

    def run(self, n: int) -> Got:
        return self.fn(self.offsets)

    def check(self, n: int, got: Got) -> None:
        if got.offset != self.offsets[-1]:
            raise VerificationError(f"{self.label}: read {got.offset}, not {self.offsets[-1]}")
        check_entry(self.size, got.offset, got.data, self.label)

    def touch_blocks(self) -> None:
        """Untimed warm-up: one read in every 10 MiB of entries (every Walrus block), so that
        one-off work per block (an offset index built lazily after an open) is not charged to
        whichever repetition first lands there; for the others it warms their caches alike."""
        per_block = max(1, (10 << 20) // (self.size + 16))
        offsets = [
            min(self.entries - 1, i + per_block // 2) for i in range(0, self.entries, per_block)
        ]
        self.fn(offsets)

    def sample(self, count: int = 200, seconds: float = 0.3) -> None:
        """Untimed: up to ``count`` more random offsets (at least 3, else as many as fit in
        ``seconds``), each read alone and compared."""
        began = time.perf_counter()
        for i, k in enumerate(random.Random(count).sample(range(self.entries), count)):
            if i >= 3 and time.perf_counter() - began > seconds:
                break
            got = self.fn([k])
            if got.offset != k:
                raise VerificationError(f"{self.label}: read {got.offset}, not {k}")
            check_entry(self.size, k, got.data, self.label)


def _measure(ctx: Context, cell: RandomCell) -> Row:
    # The cost of a read may depend on where the offset falls (in a block, in an index
    # interval): a repetition is at least 8 reads (32 in the full run), however slow.
    floor = 8 if ctx.quick else 32
    cell.touch_blocks()
    m = measure(cell, ctx.budget, first=4, cap=ctx.budget.max_rep_ops, floor=floor)
    cell.sample()
    return Row("random-read", cell.size, "D1", cell.label, "", "", m, extra={"unit": "us/op"})


def run(ctx: Context, logs: BigLogs) -> list[Row]:
    """Both sizes: ours (two ways), raw, and each peer with reads by key."""
    out: list[Row] = []
    n = entries_for(ctx)
    for size in SIZES:
        group: list[Row] = []
        ctx.say(f"  random-read {size} B: building {n:,} entries ...")
        path = logs.get(size, n)
        ours = WalrusSubject(path, Level.D1, size, rereads=True)
        try:
            for how, fn in (
                ("batch_read(start_offset)", ours.random_reads),
                ("seek+read_next", ours.seek_reads),
            ):
                ctx.say(f"  random-read {size} B walrus {how} ...")
                row = _measure(ctx, RandomCell(fn, size, n, f"{ours.label} {how}"))
                row.library, row.kind = "walrus", "ours"
                group.append(row)
        finally:
            ours.close()
        if size != 1024:
            logs.drop(size, n)  # the 1 KiB log is reused by the reopen section
        for cls in ctx.subjects:
            if cls.kind == "ours" or RANDOM not in cls.caps:
                continue
            ctx.say(f"  random-read {size} B {cls.library} (filling {n:,}) ...")
            group.append(_other(ctx, cls, size, n))
        raw = next(r for r in group if r.kind == "raw")
        stateless = group[0]  # ours, batch_read(start_offset): like the peers' reads by key
        for r in group:
            assert r.m is not None and raw.m is not None and stateless.m is not None
            if r.kind == "ours":
                r.ratio = r.m.median / raw.m.median
            elif r.kind == "peer":
                r.ratio = r.m.median / stateless.m.median
        out.extend(group)
    return out


def _other(ctx: Context, cls: type[Subject], size: int, n: int) -> Row:
    path = ctx.scratch.fresh(f"random-{size}-{cls.library}")
    try:
        s = cls(path, Level.D1, size, rereads=True)
        try:
            for start in range(0, n, 100_000):
                s.fill(s.inputs(start, min(100_000, n - start)))
            row = _measure(ctx, RandomCell(s.random_reads, size, n, s.label))
            row.library, row.kind = cls.library, cls.kind
            return row
        finally:
            s.close()
    finally:
        ctx.scratch.remove(path)
