"""Disk space: allocated bytes per payload byte for 100 B entries.

Each subject writes N entries (1M; 100k with ``--quick``; fewer for a subject too slow to
write that many within 5 s, 0.5 s with ``--quick``: see the ``entries`` column) with its batch
API where it has one, at D1 where it offers D1 (else its only level), and is closed cleanly. The
directory's allocated bytes (``st_blocks * 512`` of every file: sparse files and preallocation make
apparent sizes meaningless) are divided by the payload bytes (N * 100). Raw is 116 bytes per
entry (16-byte header + payload) plus page rounding: 1.16. After the measurement the subject is
reopened and everything written is read back and compared (reading only after measuring:
reading a queue consumes it, and so does our verifying consumer, whose consumed blocks
background reclamation would give back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from benchmarks.data import check_all
from benchmarks.harness import allocated_bytes
from benchmarks.subjects import APPEND, Level, Subject
from benchmarks.workloads import Context

SIZE = 100
CHUNK = 100_000


@dataclass
class SpaceRow:
    """One subject's footprint."""

    subject: str
    library: str
    kind: str
    level: str
    entries: int
    allocated: int
    seconds: float

    @property
    def payload(self) -> int:
        return self.entries * SIZE

    @property
    def per_payload_byte(self) -> float:
        return self.allocated / self.payload

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "library": self.library,
            "kind": self.kind,
            "level": self.level,
            "entry_bytes": SIZE,
            "entries": self.entries,
            "payload_bytes": self.payload,
            "allocated_bytes": self.allocated,
            "allocated_per_payload_byte": round(self.per_payload_byte, 4),
            "write_seconds": round(self.seconds, 3),
        }


def _level(cls: type[Subject]) -> Level:
    return Level.D1 if Level.D1 in cls.levels else next(iter(cls.levels))


def _one(ctx: Context, cls: type[Subject], target: int, budget_s: float) -> SpaceRow:
    level = _level(cls)
    path = ctx.scratch.fresh(f"space-{cls.library}")
    try:
        s = cls(path, level, SIZE)
        written = 0
        began = time.perf_counter()
        try:
            k = 1000  # then sized by the rate so far to end near the budget
            while written < target:
                s.fill(s.inputs(written, k))
                written += k
                spent = time.perf_counter() - began
                left = budget_s - spent
                if left <= 0:
                    break
                per_entry = spent / written
                k = min(CHUNK, target - written, max(1000, int(left / per_entry)))
                k = max(1000, k // 1000 * 1000) if target - written >= 1000 else target - written
            seconds = time.perf_counter() - began
            label = s.label
        finally:
            s.close()
        # Measured before anything is read back: reading may consume (a queue pops; our
        # verifying consumer would let reclamation give the blocks back), which changes space.
        allocated = allocated_bytes(path)
        again = cls(path, level, SIZE)  # and the data must have survived the close
        try:
            check_all(SIZE, again.read_all(), written, label)
        finally:
            again.close()
        return SpaceRow(label, cls.library, cls.kind, level.value, written, allocated, seconds)
    finally:
        ctx.scratch.remove(path)


def run(ctx: Context) -> list[SpaceRow]:
    """Every subject that can append."""
    target = 100_000 if ctx.quick else 1_000_000
    budget_s = 0.5 if ctx.quick else 5.0
    rows = []
    for cls in ctx.subjects:
        if APPEND not in cls.caps:
            continue
        ctx.say(f"  space {cls.library} ...")
        rows.append(_one(ctx, cls, target, budget_s))
    return rows
