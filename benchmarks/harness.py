"""Timing and scratch space: the rules every measurement of the suite follows.

* Every cell (one workload, one entry size, one subject at one durability level) gets a fresh
  directory under one scratch root on a real disk, removed as soon as the cell is done (so that
  its dirty pages are dropped rather than written back while the next cell runs).
* A cell is calibrated first: runs of growing size until one takes a fair share of the target
  time. Those runs are the warm-up (files exist, pages are cached, code paths are hot).
* Then ``reps`` (>= 5) timed repetitions of the same size. Before each one the untimed
  ``prepare`` runs (building the payload lists, filling a queue, rewinding a cursor), then
  ``gc.collect()``; the collector stays enabled inside the timed region, as in real use.
* Reported: median, min and max rate over the repetitions. Every repetition's evidence is
  checked (see :class:`Cell`), so a cell can never time a no-op.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent


def child_argv(script: str, *args: str) -> list[str]:
    """A ``python -c script`` command whose child imports exactly the modules this process
    imports: the parent's ``sys.path`` goes first in the child (as ``sys.argv[1]``), so that
    the engine measured in a child is the one measured here (a snapshot on ``PYTHONPATH`` or
    the work tree, never a mix)."""
    prologue = "import json, sys\nsys.path[:0] = json.loads(sys.argv[1])\n"
    return [sys.executable, "-c", prologue + script, json.dumps(sys.path), *args]


class VerificationError(AssertionError):
    """What was read back is not what was written: the measurement is void."""


@dataclass(frozen=True)
class Budget:
    """How big one repetition is."""

    target_s: float  # what one repetition should take
    reps: int  # timed repetitions (>= 5)
    max_rep_bytes: int  # payload bytes one repetition may write or read (disk, page cache)
    max_rep_ops: int  # operations one repetition may do
    max_calibration_s: float  # stop growing the warm-up runs once one takes this long


QUICK_BUDGET = Budget(
    target_s=0.025, reps=5, max_rep_bytes=24 << 20, max_rep_ops=200_000, max_calibration_s=0.01
)
FULL_BUDGET = Budget(
    target_s=0.15, reps=5, max_rep_bytes=128 << 20, max_rep_ops=1_000_000, max_calibration_s=0.05
)


class Cell(Protocol):
    """One measured thing. ``run(n)`` is the timed region; the rest is not timed."""

    def prepare(self, n: int) -> None:
        """Get ready for ``run(n)`` (build payload lists, fill, rewind)."""

    def run(self, n: int) -> Any:
        """Do ``n`` operations; return evidence of what was done."""

    def check(self, n: int, evidence: Any) -> None:
        """Raise :class:`VerificationError` unless ``evidence`` proves ``run(n)`` did its job."""

    # Optional: ``max_ops() -> int``, consulted after calibration, caps the repetition size
    # when the untimed set-up (filling a slow queue) would otherwise dominate the wall time.


@dataclass
class Measurement:
    """The repetitions of one cell."""

    ops: int  # operations per repetition
    seconds: list[float]
    warmup_ops: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rates(self) -> list[float]:
        return [self.ops / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)

    def as_json(self) -> dict[str, Any]:
        return {
            "ops_per_rep": self.ops,
            "reps": len(self.seconds),
            "seconds": [round(s, 6) for s in self.seconds],
            "median_per_s": round(self.median, 2),
            "min_per_s": round(self.low, 2),
            "max_per_s": round(self.high, 2),
            "warmup_ops": self.warmup_ops,
            **self.extra,
        }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` took, after a full collection (so garbage of the previous step is not
    charged to it), and what it returned."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _round(n: float, step: int, cap: int) -> int:
    return max(step, min(cap, int(n) // step * step))


def measure(
    cell: Cell, budget: Budget, *, first: int, step: int = 1, cap: int, floor: int = 1
) -> Measurement:
    """Calibrate ``cell`` (the warm-up), then time ``budget.reps`` repetitions.

    ``first`` is the size of the first warm-up run, ``step`` the granularity of sizes (a batch
    of 1000 entries counts 1000), ``cap`` the largest size allowed (bytes, memory) and
    ``floor`` the smallest repetition (operations whose cost varies need several per rep,
    even when that makes a repetition longer than the target).
    """
    cap = max(step, min(cap, budget.max_rep_ops) // step * step)
    n = _round(first, step, cap)
    warm = 0
    runs = 0
    while True:
        cell.prepare(n)
        elapsed, evidence = timed(partial(cell.run, n))
        cell.check(n, evidence)
        warm += n
        runs += 1
        if n >= cap:
            break  # cannot grow: this run was the warm-up
        # At least two runs: the first one pays one-off costs (opening, first touches).
        if elapsed >= budget.max_calibration_s:
            if runs >= 2:
                break
            # Slow operations: warm up once more, no longer than the calibration time.
            n = _round(n * budget.max_calibration_s / elapsed, step, cap)
            continue
        grow = budget.max_calibration_s / max(elapsed, 1e-6)
        n = _round(n * min(16.0, max(2.0, grow * 1.2)), step, cap)
    n = _round(n * budget.target_s / max(elapsed, 1e-6), step, cap)
    limit = getattr(cell, "max_ops", None)
    if limit is not None:  # the cell's untimed set-up would be too slow for a bigger n
        n = _round(min(n, limit()), step, cap)
    n = max(n, _round(floor, step, cap))
    seconds: list[float] = []
    for _ in range(budget.reps):
        cell.prepare(n)
        elapsed, evidence = timed(partial(cell.run, n))
        cell.check(n, evidence)
        seconds.append(elapsed)
    return Measurement(ops=n, seconds=seconds, warmup_ops=warm)


# --- scratch space -----------------------------------------------------------------------------


def fs_type(path: str) -> tuple[str, str]:
    """(file system type, mount point) of the mount holding ``path``, from /proc/mounts."""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return "?", "?"
    real = os.path.realpath(path)
    best, kind = "", "?"
    for parts in mounts:
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) > len(best):
            best, kind = mnt, parts[2]
    return kind, best or "?"


def pick_base_dir(requested: str | None) -> str:
    """Where the scratch root goes: ``--dir``; else beside the repository (the disk the project
    lives on), else inside it. Never a tmpfs: memory-backed files would make every durability
    level look free."""
    if requested:
        os.makedirs(requested, exist_ok=True)
        return requested
    for cand in (REPO.parent, REPO):
        if os.access(cand, os.W_OK) and fs_type(str(cand))[0] != "tmpfs":
            return str(cand)
    return str(REPO)


class Scratch:
    """A ``.walrus-bench-*`` root; every cell asks for a fresh directory inside it."""

    def __init__(self, base: str) -> None:
        self.root = tempfile.mkdtemp(prefix=".walrus-bench-", dir=base)
        self._n = 0

    def fresh(self, label: str) -> str:
        """A new empty directory (its name says which cell it belongs to)."""
        self._n += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
        path = os.path.join(self.root, f"{self._n:04d}-{safe}")
        os.mkdir(path)
        return path

    @staticmethod
    def remove(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def allocated_bytes(path: str) -> int:
    """Bytes the file system allocated for everything under ``path`` (``st_blocks * 512``:
    sparse files and preallocation make apparent sizes meaningless)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total
