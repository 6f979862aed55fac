#!/usr/bin/env python3
"""fd vs uring on batch appends, through the public API, in one run.

The headline is the large durable batch of the issue: 2000 entries of 64 KiB per
``batch_append_for_topic`` under ``FsyncSchedule.sync_each()`` (128 MiB and one fdatasync per
batch). Around it, the other batch shapes where uring must not lose: durable batches from 1 MiB
to 10 MiB (around the ring's size threshold), 1000 x 1 KiB and 16 x 1 KiB, and the same without
fsync. ``uring-nowb`` is uring with the writeback-ahead
(sync_file_range after large pieces) switched off, to show where its gain comes from;
``uring-ring`` sends every batch to the ring (no size threshold), to show why small ones do not
go there (``uring`` writes those with pwritev + fdatasync, as fd, runs of many small buffers
joined first).

Each contender writes to its own Walrus in a fresh directory on the disk of the repository (never
tmpfs), and the contenders take turns batch by batch (rotating who goes first), so they share
whatever else the machine and the disk are doing; two untimed warm-up batches each first.
Reported per contender: the median and 10th percentile of the per-batch times, and the median
relative to fd's (below 1.000 = faster than fd).

    python plugins/walrus_uring/bench_uring.py [--quick] [--dir DIR] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import walrus_uring

from walrus_core import FsyncSchedule, Walrus

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
KIB = 1024


@dataclass(frozen=True)
class Workload:
    name: str
    entries: int
    entry_bytes: int
    sync_each: bool
    batches: int  # timed batches per contender (after two untimed warm-up batches)


WORKLOADS = [
    Workload("2000 x 64 KiB, sync_each", 2000, 64 * KIB, True, 12),
    Workload("150 x 64 KiB, sync_each", 150, 64 * KIB, True, 100),
    Workload("64 x 64 KiB, sync_each", 64, 64 * KIB, True, 200),
    Workload("32 x 64 KiB, sync_each", 32, 64 * KIB, True, 300),
    Workload("16 x 64 KiB, sync_each", 16, 64 * KIB, True, 400),
    Workload("1000 x 1 KiB, sync_each", 1000, 1 * KIB, True, 300),
    Workload("16 x 1 KiB, sync_each", 16, 1 * KIB, True, 1000),
    Workload("2000 x 64 KiB, no_fsync", 2000, 64 * KIB, False, 12),
    Workload("64 x 64 KiB, no_fsync", 64, 64 * KIB, False, 300),
    Workload("1000 x 1 KiB, no_fsync", 1000, 1 * KIB, False, 1000),
    Workload("16 x 1 KiB, no_fsync", 16, 1 * KIB, False, 3000),
]

#: contender -> module settings of walrus_uring it runs with (fd ignores them)
VARIANTS: dict[str, dict[str, int]] = {
    "fd": {},
    "uring": {},
    "uring-ring": {"RING_MIN": 0, "RING_MIN_SYNC": 0},
    "uring-nowb": {"RING_MIN": 0, "RING_MIN_SYNC": 0, "WRITEBACK_AHEAD": 1 << 62},
}


@contextmanager
def settings(values: dict[str, int]) -> Iterator[None]:
    saved = {name: getattr(walrus_uring, name) for name in values}
    for name, value in values.items():
        setattr(walrus_uring, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(walrus_uring, name, value)


def measure(
    base: str, w: Workload, contenders: tuple[str, ...], scale: float
) -> dict[str, list[float]]:
    """Seconds of every timed batch, per contender. Contenders take turns batch by batch (the
    order rotating), each on its own Walrus in its own fresh directory, so that they share
    whatever the machine and the disk are doing at that moment."""
    payload = bytes((i * 31 + 7) & 0xFF for i in range(w.entry_bytes))
    batch = [payload] * w.entries
    fsync = FsyncSchedule.sync_each() if w.sync_each else FsyncSchedule.no_fsync()
    wals: dict[str, Walrus] = {}
    times: dict[str, list[float]] = {c: [] for c in contenders}
    paths = []
    try:
        for c in contenders:
            path = tempfile.mkdtemp(prefix=f"{c}-", dir=base)
            paths.append(path)
            backend = "fd" if c == "fd" else "uring"
            wal = Walrus(data_dir=path, backend=backend, fsync=fsync)
            assert wal.backend_chain == (("fd",) if c == "fd" else ("uring", "fd"))
            wals[c] = wal
            for _ in range(2):
                wal.batch_append_for_topic("bench", batch)  # files, blocks, rings: warm
        os.sync()
        n = max(3, int(w.batches * scale))
        for i in range(n):
            order = contenders[i % len(contenders) :] + contenders[: i % len(contenders)]
            for c in order:
                append = wals[c].batch_append_for_topic
                with settings(VARIANTS[c]):
                    t0 = time.perf_counter()
                    append("bench", batch)
                    times[c].append(time.perf_counter() - t0)
    finally:
        for wal in wals.values():
            wal.close()
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
        os.sync()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a third of the batches")
    parser.add_argument("--dir", default=None, help="scratch base (default: beside the repo)")
    parser.add_argument("--only", default=None, help="run workloads whose name contains this")
    args = parser.parse_args()
    scale = 1 / 3 if args.quick else 1.0
    reason = walrus_uring.probe()
    if reason is not None:
        print(f"io_uring is unavailable here: {reason}")
        return 1
    base = tempfile.mkdtemp(prefix=".walrus-bench-uring-", dir=args.dir or str(REPO.parent))
    print(
        f"fd vs uring batch appends, contenders alternating batch by batch; scratch {base}\n"
        f"python {sys.version.split()[0]}, kernel {os.uname().release},"
        f" WRITEBACK_AHEAD {walrus_uring.WRITEBACK_AHEAD >> 10} KiB,"
        f" RING_MIN {walrus_uring.RING_MIN >> 10} KiB, RING_MIN_SYNC"
        f" {walrus_uring.RING_MIN_SYNC >> 10} KiB,"
        f" JOIN_MAX {walrus_uring.JOIN_MAX >> 20} MiB\n"
    )
    rows = []
    try:
        for w in WORKLOADS:
            if args.only and args.only not in w.name:
                continue
            contenders = tuple(VARIANTS)
            if not w.sync_each:
                contenders = tuple(c for c in contenders if c != "uring-nowb")
            print(f"  {w.name} ...", flush=True)
            rows.append((w, measure(base, w, contenders, scale)))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print()
    header = (
        f"{'workload':26s} {'backend':12s} {'batches':>7s} {'median ms':>10s} {'p10 ms':>8s}"
        f" {'MiB/s':>7s} {'vs fd':>6s}"
    )
    print(header)
    print("-" * len(header))
    for w, times in rows:
        fd_median = statistics.median(times["fd"])
        mib = w.entries * (w.entry_bytes + 16) / (1 << 20)
        for c, ts in times.items():
            med = statistics.median(ts)
            p10 = statistics.quantiles(ts, n=10)[0]
            print(
                f"{w.name:26s} {c:12s} {len(ts):7d} {med * 1e3:10.3f} {p10 * 1e3:8.3f}"
                f" {mib / med:7.1f} {med / fd_median:6.3f}"
            )
    print("\nvs fd = median batch time / fd's median batch time (below 1.000: faster than fd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
