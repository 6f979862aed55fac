"""The throughput workloads: what is timed, for every subject that can do it, at every level
it offers, for every entry size.

=================  ===========================================================================
``append``         one entry per call (ours: ``append_for_topic``)
``batch-append``   atomic batches of 1000 (ours: ``batch_append_for_topic``)
``consume-each``   read the next entry and durably commit the position, one at a time (ours:
                   ``read_next`` with ``strictly_at_once()``, which persists the cursor on every
                   read); the entries are appended untimed before each repetition
``consume-1000``   read one at a time, commit the position every 1000 entries (ours:
                   ``read_next`` with ``at_least_once(persist_every=1000)``)
``read-next``      ours ``read_next`` ``strictly_at_once`` at D1 against the raw ``pread`` +
                   8-byte cursor ``pwrite``, re-reading the same entries (``seek`` back to 0)
``batch-read``     1000 entries per call from the position, checkpointing (ours:
                   ``batch_read_for_topic(max_bytes=1000 * size)``, exactly 1000 entries)
=================  ===========================================================================

Rates are entries per second. Every cell is verified: appended entries are all read back and
compared with what was written; a read repetition's last entry must be the right payload at the
right offset (see :mod:`benchmarks.data`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.data import BATCH, batches, check_all, check_entry
from benchmarks.harness import Budget, Measurement, Scratch, VerificationError, measure
from benchmarks.subjects import (
    APPEND,
    BATCH_READ,
    CONSUME_EACH,
    CONSUME_GROUP,
    READ_NEXT,
    Got,
    Level,
    Subject,
    Unavailable,
)
from benchmarks.subjects import BATCH as BATCH_CAP


@dataclass
class Row:
    """One line of a table: one subject at one level for one workload and size."""

    workload: str
    size: int
    level: str
    subject: str
    library: str
    kind: str
    m: Measurement | None = None
    ratio: float | None = None  # ours: ours/raw; peers: peer/ours (rates, same level)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workload": self.workload,
            "entry_bytes": self.size,
            "level": self.level,
            "subject": self.subject,
            "library": self.library,
            "kind": self.kind,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "ratio_is": {"ours": "ours/raw", "peer": "peer/ours"}.get(self.kind),
            "note": self.note,
            "unit": "entries/s",
            **self.extra,
        }
        if self.m is not None:
            out.update(self.m.as_json())
        return out


# --- cells ------------------------------------------------------------------------------------


class AppendCell:
    """Appends (single or batched) at the end of the log; verified by reading all back."""

    def __init__(self, subject: Subject, batched: bool) -> None:
        self.s = subject
        self.batched = batched
        self.written = 0
        self.work: Any = None

    def prepare(self, n: int) -> None:
        flat = self.s.inputs(self.written, n)
        self.work = batches(flat) if self.batched else flat

    def run(self, n: int) -> None:
        if self.batched:
            self.s.append_batches(self.work)
        else:
            self.s.append(self.work)

    def check(self, n: int, evidence: Any) -> None:
        self.written += n  # what finish() must find

    def finish(self) -> None:
        check_all(self.s.size, self.s.read_all(), self.written, self.s.label)


class ConsumeCell:
    """Consumes entries appended (untimed) just before; or, ``rewind=True``, re-reads the first
    ``n`` entries after moving the consumer back."""

    #: The untimed fill before a repetition may take this many times the target rep time.
    FILL_FACTOR = 5.0

    def __init__(self, subject: Subject, rewind: bool = False, target_s: float = 0.15) -> None:
        self.s = subject
        self.rewind = rewind
        self.written = 0
        self.consumed = 0
        self.fill_s = 0.0
        self.filled = 0
        self.target_s = target_s

    def _fill(self, k: int) -> None:
        t0 = time.perf_counter()
        self.s.fill(self.s.inputs(self.written, k))
        self.fill_s += time.perf_counter() - t0
        self.filled += k
        self.written += k

    def prepare(self, n: int) -> None:
        if self.rewind:
            if self.written < n:
                self._fill(n - self.written)
            self.s.rewind()
            self.consumed = 0
        else:
            self._fill(n)

    def max_ops(self) -> int:
        """Queues without a batch put fill slowly (persist-queue: a rename per put): bound the
        repetition so that its fill takes at most FILL_FACTOR times the target time."""
        per_entry = self.fill_s / max(1, self.filled)
        return int(self.FILL_FACTOR * self.target_s / max(per_entry, 1e-9))

    def run(self, n: int) -> Got:
        return self.s.consume(n)

    def check(self, n: int, got: Got) -> None:
        want = self.consumed + n - 1
        if got.offset != want:
            raise VerificationError(f"{self.s.label}: consumed up to {got.offset}, not {want}")
        check_entry(self.s.size, want, got.data, self.s.label)
        self.consumed += n

    def finish(self) -> None:
        """Nothing more: every repetition's last entry was checked at its offset."""


class BatchReadCell:
    """Reads the first ``n`` entries, 1000 per call, after moving the consumer back."""

    def __init__(self, subject: Subject) -> None:
        self.s = subject
        self.written = 0

    def prepare(self, n: int) -> None:
        if self.written < n:
            self.s.fill(self.s.inputs(self.written, n - self.written))
            self.written = n
        self.s.rewind()

    def run(self, n: int) -> Got:
        return self.s.read_batches(n // BATCH)

    def check(self, n: int, got: Got) -> None:
        if got.offset != n - 1:
            raise VerificationError(
                f"{self.s.label}: batch reads ended at {got.offset}, not {n - 1}"
            )
        check_entry(self.s.size, n - 1, got.data, self.s.label)

    def finish(self) -> None:
        check_all(self.s.size, self.s.read_all(), self.written, self.s.label)


# --- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A timed loop, the capability it needs and where it runs."""

    name: str
    title: str
    cap: str
    levels: tuple[Level, ...]
    sized: bool  # at every --sizes size (else 1 KiB only)
    make: Callable[[Subject], Any]
    step: int = 1  # repetition sizes are multiples of this
    commit_every: int = 1
    rereads: bool = False  # moves the consumer back: ours keeps consumed blocks (no reclaim)
    kinds: tuple[str, ...] = ("ours", "raw", "peer")
    ours: str = ""  # what Walrus does
    raw: str = ""  # what the raw baseline does


ALL_LEVELS = (Level.D0, Level.D1, Level.D2)

WORKLOADS: list[Workload] = [
    Workload(
        "append",
        "single append",
        APPEND,
        ALL_LEVELS,
        True,
        lambda s: AppendCell(s, batched=False),
        ours="append_for_topic",
        raw="os.pwrite of a pre-built record (D2: + fdatasync)",
    ),
    Workload(
        "batch-append",
        "batch append, 1000 per call",
        BATCH_CAP,
        ALL_LEVELS,
        True,
        lambda s: AppendCell(s, batched=True),
        step=BATCH,
        ours="batch_append_for_topic",
        raw="one os.pwritev per batch, chunked at IOV_MAX (D2: + fdatasync)",
    ),
    Workload(
        "consume-each",
        "consume one at a time, durable commit per entry",
        CONSUME_EACH,
        ALL_LEVELS,
        False,
        ConsumeCell,
        ours="read_next, strictly_at_once()",
        raw="os.pread + 8-byte cursor os.pwrite per entry (D2: + fdatasync)",
    ),
    Workload(
        "consume-1000",
        "consume one at a time, commit every 1000",
        CONSUME_GROUP,
        ALL_LEVELS,
        False,
        ConsumeCell,
        step=BATCH,
        commit_every=BATCH,
        ours="read_next, at_least_once(persist_every=1000)",
        raw="os.pread per entry, cursor os.pwrite every 1000 (D2: + fdatasync)",
    ),
    Workload(
        "read-next",
        "read_next strictly_at_once at D1, re-reading (seek back to 0)",
        READ_NEXT,
        (Level.D1,),
        True,
        lambda s: ConsumeCell(s, rewind=True),
        rereads=True,
        kinds=("ours", "raw"),
        ours="seek(0), then read_next, strictly_at_once(), milliseconds(200)",
        raw="os.pread + 8-byte cursor os.pwrite per entry, fdatasync thread",
    ),
    Workload(
        "batch-read",
        "batch read, 1000 per call, checkpointing",
        BATCH_READ,
        (Level.D1,),
        True,
        BatchReadCell,
        step=BATCH,
        rereads=True,
        ours="batch_read_for_topic(max_bytes=1000*size, checkpoint=True), strictly_at_once",
        raw="os.preadv into a preallocated buffer + a bytes copy per entry + cursor pwrite",
    ),
]


@dataclass
class Context:
    """What every section needs: scratch space, budget, sizes, subjects, output."""

    scratch: Scratch
    budget: Budget
    sizes: list[int]
    subjects: list[type[Subject]]  # ours, raw, then the installed peers
    missing: dict[str, str]  # library -> why it is skipped
    quick: bool
    say: Callable[[str], None]


def run_cell(
    ctx: Context,
    workload: str,
    cls: type[Subject],
    level: Level,
    size: int,
    make: Callable[[Subject], Any],
    *,
    step: int,
    commit_every: int,
    rereads: bool = False,
) -> Row:
    """One cell in a fresh directory, removed afterwards."""
    path = ctx.scratch.fresh(f"{workload}-{size}-{cls.library}-{level.value}")
    try:
        subject = cls(path, level, size, commit_every=commit_every, rereads=rereads)
        try:
            cell = make(subject)
            if hasattr(cell, "target_s"):
                cell.target_s = ctx.budget.target_s
            first = 8 if level is Level.D2 else 64
            cap = max(step, ctx.budget.max_rep_bytes // max(size, 1))
            m = measure(cell, ctx.budget, first=max(first, step), step=step, cap=cap)
            cell.finish()
            label = subject.label
        finally:
            subject.close()
    finally:
        ctx.scratch.remove(path)
    return Row(workload, size, level.value, label, cls.library, cls.kind, m)


def add_ratios(rows: list[Row]) -> None:
    """Within one (workload, size, level) group: ours/raw on our row, peer/ours on peers'."""
    ours = next((r for r in rows if r.kind == "ours" and r.m), None)
    raw = next((r for r in rows if r.kind == "raw" and r.m), None)
    for r in rows:
        if r.m is None:
            continue
        if r.kind == "ours" and raw is not None and raw.m is not None:
            r.ratio = r.m.median / raw.m.median
        elif r.kind == "peer" and ours is not None and ours.m is not None:
            r.ratio = r.m.median / ours.m.median


def run_workload(ctx: Context, w: Workload) -> list[Row]:
    """Every size and level of ``w``, every subject that can do it."""
    out: list[Row] = []
    for size in ctx.sizes if w.sized else [1024]:
        for level in w.levels:
            group: list[Row] = []
            for cls in ctx.subjects:
                if cls.kind not in w.kinds or level not in cls.levels or w.cap not in cls.caps:
                    continue
                t0 = time.perf_counter()
                try:
                    row = run_cell(
                        ctx,
                        w.name,
                        cls,
                        level,
                        size,
                        w.make,
                        step=w.step,
                        commit_every=w.commit_every,
                        rereads=w.rereads,
                    )
                except Unavailable as exc:
                    row = Row(w.name, size, level.value, cls.library, cls.library, cls.kind)
                    row.note = str(exc)
                ctx.say(
                    f"  {w.name} {size} B {level.value} {cls.library}:"
                    f" {time.perf_counter() - t0:.2f} s"
                )
                group.append(row)
            add_ratios(group)
            out.extend(group)
    return out


_MISSING = {
    BATCH_CAP: "has no atomic batch append",
    BATCH_READ: "has no reads by offset (a queue)",
    READ_NEXT: "has no reads by offset (a queue)",
}


def not_applicable(w: Workload, subjects: list[type[Subject]]) -> list[str]:
    """Why each peer that is installed has no row in ``w`` (printed under the table)."""
    notes = []
    for cls in subjects:
        if cls.kind != "peer" or cls.kind not in w.kinds:
            continue
        if w.cap in cls.caps:
            if not any(level in cls.levels for level in w.levels):
                offered = "/".join(lv.value for lv in cls.levels)
                notes.append(f"{cls.library}: only offers {offered}")
            continue
        why = cls.cap_notes.get(w.cap) or _MISSING.get(w.cap, "has no such operation")
        notes.append(f"{cls.library}: {why}")
    return notes
