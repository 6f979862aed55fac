"""D2 appends from 1 and 4 threads on one topic (1 KiB entries).

Every append is durable before it returns (ours: ``FsyncSchedule.sync_each()``). With one
writer the rate is bounded by the device's flush latency; with four, a library that groups the
flushes of concurrent appenders (group commit) can serve several appends per device flush. The
raw row shows what the kernel gives four threads that each ``pwrite`` + ``fdatasync`` their own
region of one file (ext4 and most file systems merge concurrent fdatasyncs into one journal
commit). For ours, "appends per flush" is ``stats().appends / stats().sync_groups`` over the
cell when the engine reports ``sync_groups`` (n/a before it does).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.data import items
from benchmarks.harness import Measurement, VerificationError, measure
from benchmarks.subjects import THREADS, Level, Subject
from benchmarks.workloads import Context

SIZE = 1024
THREAD_COUNTS = (1, 4)


class ThreadsCell:
    """``threads`` threads, each appending its share of a repetition, one entry per call."""

    def __init__(self, subject: Subject, threads: int) -> None:
        self.s = subject
        self.threads = threads
        self.appenders = [subject.thread_appender(t) for t in range(threads)]
        self.written = 0
        self.work: list[list[bytes]] = []
        self.errors: list[BaseException] = []
        self.before: tuple[int, int] | None = None
        self.appends = 0
        self.flushes = 0

    def prepare(self, n: int) -> None:
        k = n // self.threads
        self.work = [self.s.inputs(self.written + t * k, k) for t in range(self.threads)]
        self.before = self.s.sync_counters()

    def _one(self, fn: Callable[[list[bytes]], None], work: list[bytes]) -> None:
        try:
            fn(work)
        except BaseException as exc:  # re-raised in check(): a failed append voids the cell
            self.errors.append(exc)

    def run(self, n: int) -> None:
        if self.threads == 1:
            self.appenders[0](self.work[0])
            return
        ts = [
            threading.Thread(target=self._one, args=(fn, work))
            for fn, work in zip(self.appenders, self.work, strict=True)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def check(self, n: int, evidence: Any) -> None:
        if self.errors:
            raise VerificationError(f"{self.s.label}: a thread failed: {self.errors[0]!r}")
        self.written += n
        after = self.s.sync_counters()
        if self.before is not None and after is not None:
            self.appends += after[0] - self.before[0]
            self.flushes += after[1] - self.before[1]

    def finish(self) -> None:
        # Threads interleave: compare the multiset of payloads read back with what was written.
        got = Counter(bytes(d) for d in self.s.read_all())
        want = Counter(items(self.s.size, 0, self.written))
        if got != want:
            raise VerificationError(
                f"{self.s.label}: {sum(got.values())} entries read back after threaded appends,"
                f" {self.written} written, or their payloads differ"
            )


@dataclass
class ThreadsRow:
    """One subject: 1-thread and 4-thread D2 append rates."""

    subject: str
    library: str
    kind: str
    by_threads: dict[int, Measurement]
    per_flush: dict[int, float | None]

    @property
    def scaling(self) -> float:
        return self.by_threads[4].median / self.by_threads[1].median

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "library": self.library,
            "kind": self.kind,
            "level": "D2",
            "entry_bytes": SIZE,
            "threads": {str(k): m.as_json() for k, m in self.by_threads.items()},
            "ratio_4_over_1": round(self.scaling, 4),
            "appends_per_flush": {str(k): v for k, v in self.per_flush.items()},
        }


def run(ctx: Context) -> list[ThreadsRow]:
    """Every subject with a thread-safe D2 append, at 1 and 4 threads."""
    rows = []
    for cls in ctx.subjects:
        if THREADS not in cls.caps or Level.D2 not in cls.levels:
            continue
        by: dict[int, Measurement] = {}
        per_flush: dict[int, float | None] = {}
        label = cls.library
        for threads in THREAD_COUNTS:
            ctx.say(f"  threads-d2 {threads} thread(s) {cls.library} ...")
            path = ctx.scratch.fresh(f"threads-{threads}-{cls.library}")
            try:
                subject = cls(path, Level.D2, SIZE)
                try:
                    cell = ThreadsCell(subject, threads)
                    by[threads] = measure(
                        cell,
                        ctx.budget,
                        first=8 * threads,
                        step=threads,
                        cap=ctx.budget.max_rep_bytes // SIZE,
                    )
                    cell.finish()
                    per_flush[threads] = (
                        round(cell.appends / cell.flushes, 3) if cell.flushes else None
                    )
                    label = subject.label
                finally:
                    subject.close()
            finally:
                ctx.scratch.remove(path)
        rows.append(ThreadsRow(label, cls.library, cls.kind, by, per_flush))
    return rows
