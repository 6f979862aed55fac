"""Tests of the trace layer: over a real backend through a whole log, and at its hooks."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

import pytest
from walrus_trace import BUCKETS, OPS, OpStats, TraceLayer

from walrus_core import Walrus
from walrus_core.plugin import Buffers, OpenSpec, Storage, WriteOp
from walrus_core.plugins import BackendRegistry


def _registry(layer: TraceLayer) -> BackendRegistry:
    """The installed backends, with ``layer`` as "trace" (a fresh layer: counts of its own)."""
    registry = BackendRegistry.from_entry_points().with_plugins({"trace": layer})
    if layer.over not in registry.names():
        pytest.skip(f"backend {layer.over!r}, below the trace layer, is not installed")
    return registry


def _check_histograms(layer: TraceLayer) -> None:
    for op, stats in layer.snapshot().ops.items():
        assert len(stats.histogram) == BUCKETS
        assert sum(stats.histogram) == stats.calls, op


def test_counts_through_a_log(tmp_path: Path) -> None:
    """Appends and reads of a log go through the layer, and every one is counted."""
    layer = TraceLayer()
    registry = _registry(layer)
    payloads = [b"p" * (i * 13 % 500 + 1) for i in range(50)]
    with Walrus(tmp_path / "wal", backend="trace", registry=registry) as wal:
        assert wal.backend_chain == ("trace", layer.over)
        for payload in payloads[:40]:
            wal.append_for_topic("events", payload)
        wal.batch_append_for_topic("events", payloads[40:])
        wal.flush()
    # Reopened: recovery and the reads below go through the layer's read.
    with Walrus(tmp_path / "wal", backend="trace", registry=registry) as wal:
        got = [wal.read_next("events") for _ in payloads]
        assert [e.data for e in got if e is not None] == payloads
    report = layer.snapshot()
    assert tuple(report.ops) == OPS
    writes = report["write"].calls + report["batch_submit"].calls
    assert writes >= 1
    assert report.bytes_written >= sum(map(len, payloads))
    assert report["read"].calls >= 1
    assert report.bytes_read >= sum(map(len, payloads))
    assert report["flush"].calls >= 1
    assert report["open"].calls >= 1
    assert report["open"].calls == report["close"].calls  # every file closed with the logs
    assert report.errors == 0
    assert report["write"].total_ns > 0
    _check_histograms(layer)
    assert "batch_submit" in report.format()

    layer.reset()
    assert all(stats == OpStats() for stats in layer.snapshot().ops.values())
    assert report["write"].calls >= 1  # a snapshot is frozen: reset does not change it


class _Lower:
    """A storage below the layer, in memory, whose writes can be made to fail."""

    def __init__(self) -> None:
        self.data = bytearray(100)
        self.fail: int | None = None
        self.closed = 0

    def write(self, offset: int, buffers: Buffers, nbytes: int) -> None:
        if self.fail is not None:
            raise OSError(self.fail, "full")
        self.data[offset : offset + nbytes] = b"".join(bytes(b) for b in buffers)

    def batch_submit(self, ops: Sequence[WriteOp], sync: bool) -> None:
        for op in ops:
            self.write(op.offset, op.buffers, op.nbytes)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def close(self) -> None:
        self.closed += 1

    def storage(self, spec: OpenSpec) -> Storage:
        return Storage(
            spec,
            self,
            ("lower",),
            write=self.write,
            read=self.read,
            flush=lambda: None,
            batch_submit=self.batch_submit,
            close=self.close,
            discard=None,  # this chain cannot discard
        )


def test_hooks_delegate_count_and_reraise(tmp_path: Path) -> None:
    """Bytes and calls per operation; a failure below is counted and reaches the caller
    unchanged; discard without a lower discard is EOPNOTSUPP; close closes the lower."""
    layer = TraceLayer(over="lower")
    lower = _Lower()
    spec = OpenSpec(path=str(tmp_path / "f"), size=100, create=True)
    handle = layer.walrus_open(spec, lower.storage(spec))

    layer.walrus_write(handle, 0, (b"abc", memoryview(b"de")), 5)
    layer.walrus_batch_submit(handle, [WriteOp(10, (b"xy",), 2), WriteOp(20, (b"z",), 1)], True)
    assert layer.walrus_read(handle, 0, 5) == b"abcde"
    layer.walrus_flush(handle)
    lower.fail = errno.ENOSPC
    with pytest.raises(OSError) as failed:
        layer.walrus_write(handle, 0, (b"nope",), 4)
    assert failed.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as refused:
        layer.walrus_discard(handle, 0, 10)
    assert refused.value.errno == errno.EOPNOTSUPP
    layer.walrus_close(handle)
    assert lower.closed == 1

    report = layer.snapshot()
    assert (report["write"].calls, report["write"].errors, report["write"].bytes) == (2, 1, 5)
    assert (report["batch_submit"].calls, report["batch_submit"].bytes) == (1, 3)
    assert (report["read"].calls, report["read"].bytes) == (1, 5)
    assert report["flush"].calls == 1
    assert (report["discard"].calls, report["discard"].errors) == (1, 1)
    assert report["open"].calls == report["close"].calls == 1
    assert report.bytes_written == 8
    assert report.errors == 2
    _check_histograms(layer)


def test_open_without_lower_fails(tmp_path: Path) -> None:
    """A layer needs a backend below it."""
    layer = TraceLayer()
    with pytest.raises(OSError) as info:
        layer.walrus_open(OpenSpec(path=str(tmp_path / "f"), size=0), None)
    assert info.value.errno == errno.EINVAL
    assert layer.snapshot()["open"].errors == 1


def test_backend_info() -> None:
    """A layer over what it was built with, never picked by "auto"."""
    info = TraceLayer(over="mmap").walrus_backend_info()
    assert info.layers_over == "mmap"
    assert info.auto_priority == 0
    assert info.platforms == ("*",)


def test_percentile() -> None:
    """Upper ends of the log2 buckets holding the rank."""
    histogram = [0] * BUCKETS
    histogram[3] = 90  # 4..7 ns
    histogram[10] = 10  # 512..1023 ns
    stats = OpStats(calls=100, histogram=tuple(histogram), total_ns=100 * 60)
    assert stats.percentile(0) == 8
    assert stats.percentile(50) == 8
    assert stats.percentile(90) == 8
    assert stats.percentile(91) == 1024
    assert stats.percentile(100) == 1024
    assert stats.mean_ns == 60
    assert list(stats.buckets()) == [(4, 8, 90), (512, 1024, 10)]
    assert OpStats().percentile(99) == 0
    with pytest.raises(ValueError):
        stats.percentile(101)
