"""Counting what a log does, cheaply: the numbers behind :meth:`Walrus.stats`.

Appends are counted per topic under its writer lock, and cursor reads per cursor under the
cursor's lock, so the counts are exact without a shared lock on the hot path; the facade
sums them when asked. Flush latencies and stateless reads go through a small lock (they are
rare, or cost a system call anyway).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable

from walrus_core.info import Latency

#: Upper bounds (seconds) of the flush latency histogram.
LATENCY_BOUNDS: tuple[float, ...] = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


class LatencyRecorder:
    """Count, sum, maximum and a histogram of an operation's durations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._total = 0.0
        self._max = 0.0
        self._buckets = [0] * (len(LATENCY_BOUNDS) + 1)

    def record(self, seconds: float) -> None:
        """Add one duration."""
        with self._lock:
            self._count += 1
            self._total += seconds
            self._max = max(self._max, seconds)
            self._buckets[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def timed(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` and record how long it took (also when it raises)."""
        began = time.perf_counter()
        try:
            operation()
        finally:
            self.record(time.perf_counter() - began)

    def snapshot(self) -> Latency:
        """The numbers so far."""
        with self._lock:
            bounds = (*LATENCY_BOUNDS, float("inf"))
            return Latency(
                count=self._count,
                total_seconds=self._total,
                max_seconds=self._max,
                buckets=tuple(zip(bounds, self._buckets, strict=True)),
            )


class ReadCounter:
    """Entries and bytes returned by reads that hold no cursor lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries = 0
        self.bytes = 0

    def add(self, entries: int, nbytes: int) -> None:
        """Count one read."""
        with self._lock:
            self.entries += entries
            self.bytes += nbytes
