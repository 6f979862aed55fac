"""A tracing storage layer for Walrus: per-operation latency histograms and byte counts.

It stacks over any backend (fd by default) and delegates every operation to it, timing each
call with :func:`time.perf_counter_ns`. Each :class:`TraceLayer` instance keeps its own
counters, so a test or a benchmark builds one per log and reads them back::

    layer = TraceLayer(over="mmap")
    registry = default_registry().with_plugins({"trace": layer})
    with Walrus(path, backend="trace", registry=registry) as wal:
        ...
    report = layer.snapshot()
    print(report["write"].calls, report["write"].percentile(99), report.bytes_written)

Latencies go into log2 buckets of nanoseconds: bucket ``i`` counts calls that took at least
``2**(i-1)`` and less than ``2**i`` ns (bucket 0: under 1 ns), the last bucket everything
longer. The ``open`` latency is only this layer's own work: the engine opens the chain below
before it calls this layer's ``walrus_open``, so the lower backend's open is not in it.
"""

from __future__ import annotations

import errno
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from time import perf_counter_ns
from types import MappingProxyType

import attrs

from walrus_core.plugin import BackendInfo, Buffers, OpenSpec, Storage, WriteOp, hookimpl

__all__ = ["BUCKETS", "OPS", "OpStats", "TraceLayer", "TraceReport", "default_layer"]

__version__ = "0.1.0"

#: The operations traced, in report order.
OPS = ("open", "write", "read", "flush", "batch_submit", "discard", "close")
#: Histogram buckets: bucket 63 starts at 2**62 ns (146 years), so no latency is clamped.
BUCKETS = 64


@attrs.frozen
class OpStats:
    """The counters of one operation, frozen at :meth:`TraceLayer.snapshot` time.

    ``bytes`` is what the operation moved: written (write, batch_submit), returned (read),
    given back (discard); 0 for the others. Failed calls count in ``calls`` and ``errors`` and
    in the histogram, but not in ``bytes``.
    """

    calls: int = 0
    errors: int = 0
    bytes: int = 0
    histogram: tuple[int, ...] = (0,) * BUCKETS
    total_ns: int = 0

    @property
    def mean_ns(self) -> float:
        """Mean latency in nanoseconds (0.0 without calls)."""
        return self.total_ns / self.calls if self.calls else 0.0

    def percentile(self, q: float) -> int:
        """An upper bound, in nanoseconds, of the latency of ``q`` percent of the calls (the
        end of the bucket holding that rank); 0 without calls.

        :param q: from 0 to 100.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"q must be between 0 and 100, got {q}")
        total = sum(self.histogram)
        if total == 0:
            return 0
        rank = max(1, math.ceil(total * q / 100))  # the q-th percentile is the rank-th call
        seen = 0
        for index, count in enumerate(self.histogram):
            seen += count
            if seen >= rank:
                return 1 << index
        return 1 << (len(self.histogram) - 1)  # not reached: the counts sum to total

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """The non-empty buckets as (lowest ns, highest ns exclusive, calls)."""
        for index, count in enumerate(self.histogram):
            if count:
                yield (0 if index == 0 else 1 << (index - 1)), 1 << index, count


def _empty_ops() -> Mapping[str, OpStats]:
    return MappingProxyType({op: OpStats() for op in OPS})


@attrs.frozen
class TraceReport:
    """Every operation's :class:`OpStats` (``report["write"]``), as one consistent-enough
    snapshot: each operation's counters are read together, operations one after the other."""

    ops: Mapping[str, OpStats] = attrs.field(factory=_empty_ops)

    def __getitem__(self, op: str) -> OpStats:
        """The counters of ``op`` (one of :data:`OPS`); KeyError for another name."""
        return self.ops[op]

    @property
    def bytes_written(self) -> int:
        """Bytes written by single writes and batches together."""
        return self.ops["write"].bytes + self.ops["batch_submit"].bytes

    @property
    def bytes_read(self) -> int:
        """Bytes returned by reads."""
        return self.ops["read"].bytes

    @property
    def errors(self) -> int:
        """Failed calls of every operation."""
        return sum(stats.errors for stats in self.ops.values())

    def format(self) -> str:
        """A small text table: calls, errors, bytes, mean, p50 and p99 per operation."""
        head = f"{'op':<13}{'calls':>9}{'errors':>8}{'bytes':>14}{'mean':>10}{'p50':>10}{'p99':>10}"
        lines = [head]
        for op, s in self.ops.items():
            lines.append(
                f"{op:<13}{s.calls:>9}{s.errors:>8}{s.bytes:>14}{s.mean_ns / 1000:>8.1f}us"
                f"{s.percentile(50) / 1000:>8.1f}us{s.percentile(99) / 1000:>8.1f}us"
            )
        return "\n".join(lines)


class _Counter:
    """The live counters of one operation. One lock per operation, not per layer: reads and
    writes of a log run on different threads and should not wait on each other's tally."""

    __slots__ = ("bytes", "calls", "errors", "histogram", "lock", "total_ns")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = self.errors = self.bytes = self.total_ns = 0
        self.histogram = [0] * BUCKETS

    def add(self, start: int, nbytes: int, failed: bool = False) -> None:
        """Count one call that started at ``start`` (perf_counter_ns) and ends now."""
        ns = perf_counter_ns() - start
        bucket = min(ns.bit_length(), BUCKETS - 1)  # computed outside the lock
        with self.lock:
            self.calls += 1
            self.total_ns += ns
            self.histogram[bucket] += 1
            if failed:
                self.errors += 1
            else:
                self.bytes += nbytes

    def freeze(self) -> OpStats:
        with self.lock:
            return OpStats(
                self.calls, self.errors, self.bytes, tuple(self.histogram), self.total_ns
            )

    def clear(self) -> None:
        with self.lock:
            self.calls = self.errors = self.bytes = self.total_ns = 0
            self.histogram = [0] * BUCKETS


class _Handle:
    """This layer's handle: only the storage below, which it owns and closes."""

    __slots__ = ("lower",)

    def __init__(self, lower: Storage) -> None:
        self.lower = lower


class TraceLayer:
    """The plugin object: a layer over ``over`` that times and counts every operation.

    Register one instance per log (``registry.with_plugins({"trace": layer})``) to read that
    log's numbers alone; :data:`default_layer`, the one the entry point registers, counts
    every log opened with ``backend="trace"``.
    """

    def __init__(self, over: str = "fd") -> None:
        self.over = over
        self._counters = {op: _Counter() for op in OPS}
        # The hot-path counters as attributes: one attribute load per call instead of a lookup.
        self._write = self._counters["write"]
        self._read = self._counters["read"]
        self._flush = self._counters["flush"]
        self._batch = self._counters["batch_submit"]
        self._discard = self._counters["discard"]

    def snapshot(self) -> TraceReport:
        """The counters now, frozen (later calls do not change the report)."""
        return TraceReport(MappingProxyType({op: c.freeze() for op, c in self._counters.items()}))

    def reset(self) -> None:
        """Set every counter back to zero (calls running now may count before or after)."""
        for counter in self._counters.values():
            counter.clear()

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        """A layer over ``self.over``; never picked by ``"auto"``."""
        return BackendInfo(
            version=__version__,
            layers_over=self.over,
            platforms=("*",),
            install="pip install ./examples/walrus_trace",
            description=f"traces latency and bytes of every operation of {self.over!r}",
            auto_priority=0,
            durable=True,
        )

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> _Handle:
        """Wrap the storage the chain below opened (a layer, so there must be one)."""
        start = perf_counter_ns()
        if lower is None:
            self._counters["open"].add(start, 0, failed=True)
            raise OSError(errno.EINVAL, "the trace layer needs a backend below it")
        handle = _Handle(lower)
        self._counters["open"].add(start, 0)
        return handle

    # Each operation below: time the delegated call, count a failure and re-raise it
    # unchanged (the engine must see the lower backend's own OSError and errno).

    @hookimpl
    def walrus_write(self, handle: _Handle, offset: int, buffers: Buffers, nbytes: int) -> None:
        """Delegate; count ``nbytes`` written."""
        start = perf_counter_ns()
        try:
            handle.lower.write(offset, buffers, nbytes)
        except BaseException:
            self._write.add(start, 0, failed=True)
            raise
        self._write.add(start, nbytes)

    @hookimpl
    def walrus_read(self, handle: _Handle, offset: int, size: int) -> bytes:
        """Delegate; count the bytes returned."""
        start = perf_counter_ns()
        try:
            data = handle.lower.read(offset, size)
        except BaseException:
            self._read.add(start, 0, failed=True)
            raise
        self._read.add(start, len(data))
        return data

    @hookimpl
    def walrus_flush(self, handle: _Handle) -> None:
        """Delegate."""
        start = perf_counter_ns()
        try:
            handle.lower.flush()
        except BaseException:
            self._flush.add(start, 0, failed=True)
            raise
        self._flush.add(start, 0)

    @hookimpl
    def walrus_batch_submit(self, handle: _Handle, ops: Sequence[WriteOp], sync: bool) -> None:
        """Delegate the whole batch (so the backend keeps its one-submission path); count the
        bytes of every run."""
        start = perf_counter_ns()
        try:
            handle.lower.batch_submit(ops, sync)
        except BaseException:
            self._batch.add(start, 0, failed=True)
            raise
        self._batch.add(start, sum(op.nbytes for op in ops))

    @hookimpl
    def walrus_discard(self, handle: _Handle, offset: int, size: int) -> None:
        """Delegate; a chain below without discard is reported as ``EOPNOTSUPP`` (as a file
        system that refuses would be), since implementing this hook makes the operation look
        available to the engine."""
        start = perf_counter_ns()
        try:
            discard = handle.lower.discard
            if discard is None:
                raise OSError(errno.EOPNOTSUPP, "the backend below the trace layer cannot discard")
            discard(offset, size)
        except BaseException:
            self._discard.add(start, 0, failed=True)
            raise
        self._discard.add(start, size)

    @hookimpl
    def walrus_close(self, handle: _Handle) -> None:
        """Close the storage below (this layer owns it)."""
        counter = self._counters["close"]
        start = perf_counter_ns()
        try:
            handle.lower.close()
        except BaseException:
            counter.add(start, 0, failed=True)
            raise
        counter.add(start, 0)


#: The instance the entry point registers: a trace over fd, counting every log that uses it.
default_layer = TraceLayer()
