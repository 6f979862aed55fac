"""Reopening a directory does not rescan the data (issue 2: "Opening an existing directory must
not rescan all data: reopen time grows with the number of blocks and the unsealed tails, not
with the bytes stored"), checked with I/O counts, never with timing.

A *spy layer* plugin sits on top of the backend under test and counts every storage call and
byte that goes through the chain. It is registered in-process with
``BackendRegistry.from_entry_points().with_plugins({"spy": Spy(...)})``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from walrus_core import FsyncSchedule, Walrus
from walrus_core.format import parse_data_file_name
from walrus_core.plugin import BackendInfo, BackendRegistry, default_registry, hookimpl
from walrus_core.storage import Buffers, OpenSpec, Storage, WriteOp

HELPERS = Path(__file__).parent / "helpers"
KIB = 1024
MIB = 1024 * KIB
#: Blocks big enough that a few MiB are a few dozen blocks: per-block costs stay visible as such.
GEOMETRY = {"block_size": 256 * KIB, "blocks_per_file": 8}
#: What a reopen may read per block (a header region, rounded up generously to a few pages).
PER_BLOCK_ALLOWANCE = 8 * KIB


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_walrus_test_{name}", HELPERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


child = _load("walrus_child")


class SpyHandle:
    """The spy's handle: the lower storage it wraps and what it was opened for."""

    __slots__ = ("lower", "spec")

    def __init__(self, spec: OpenSpec, lower: Storage) -> None:
        self.spec = spec
        self.lower = lower


class Spy:
    """A layer plugin that delegates every operation to the storage below and counts it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.opens: list[OpenSpec] = []
            self.read_calls = 0
            self.read_bytes = 0
            self.write_calls = 0
            self.write_bytes = 0
            self.batch_calls = 0
            self.flush_calls = 0
            self.close_calls = 0

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(version="1", layers_over=self.base)

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> SpyHandle:
        assert lower is not None, "a layer is always opened over a lower storage"
        with self._lock:
            self.opens.append(spec)
        return SpyHandle(spec, lower)

    @hookimpl
    def walrus_read(self, handle: SpyHandle, offset: int, size: int) -> bytes:
        data = handle.lower.read(offset, size)
        with self._lock:
            self.read_calls += 1
            self.read_bytes += len(data)
        return data

    @hookimpl
    def walrus_write(self, handle: SpyHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
        handle.lower.write(offset, buffers, nbytes)
        with self._lock:
            self.write_calls += 1
            self.write_bytes += nbytes

    @hookimpl
    def walrus_flush(self, handle: SpyHandle) -> None:
        handle.lower.flush()
        with self._lock:
            self.flush_calls += 1

    @hookimpl
    def walrus_batch_submit(self, handle: SpyHandle, ops: Sequence[WriteOp], sync: bool) -> None:
        handle.lower.batch_submit(ops, sync)
        with self._lock:
            self.batch_calls += 1
            self.write_bytes += sum(op.nbytes for op in ops)

    @hookimpl
    def walrus_close(self, handle: SpyHandle) -> None:
        handle.lower.close()
        with self._lock:
            self.close_calls += 1


def rchar() -> int | None:
    """Bytes this process read through read(2)-like calls so far (Linux), else None."""
    try:
        with open("/proc/self/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def data_file_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if parse_data_file_name(p.name) is not None)


def slots_on_disk(root: Path) -> int:
    return (
        sum(p.stat().st_size for p in root.iterdir() if parse_data_file_name(p.name) is not None)
        // GEOMETRY["block_size"]
    )


class Opened:
    """A Walrus opened through the spy, with the I/O its construction caused."""

    def __init__(self, root: Path, backend: str) -> None:
        self.spy = Spy(default_registry().select(backend))  # "uring,fd" -> what runs here
        registry = BackendRegistry.from_entry_points().with_plugins({"spy": self.spy})
        before = rchar()
        self.wal = Walrus(
            data_dir=root,
            backend="spy",
            registry=registry,
            fsync=FsyncSchedule.no_fsync(),
            **GEOMETRY,
        )
        after = rchar()
        self.open_read_bytes = self.spy.read_bytes
        self.open_read_calls = self.spy.read_calls
        self.open_rchar = None if before is None or after is None else after - before


def fill(wal: Walrus, seed: int, nbytes: int) -> list[tuple[str, int]]:
    """Append about ``nbytes`` to two topics (batches of 256) plus one multi-block entry."""
    written: list[tuple[str, int]] = []
    for n, batch in enumerate(child.gen_payloads(seed, nbytes)):
        topic = ("left", "right")[n % 2]
        got = wal.batch_append_for_topic(topic, batch)
        written.append((topic, len(got)))
    wal.append_for_topic("left", b"big|" + bytes(range(256)) * (600 * KIB // 256))
    return written


def test_spy_layer_sits_in_the_chain_and_sees_the_io(tmp_path: Path, backend_name: str) -> None:
    """Precondition of the no-rescan checks: a layer plugin registered in-process is used
    (backend_chain ("spy", <backend>, ...)) and every data read and write goes through it, so
    its counts are the engine's real storage I/O."""
    root = tmp_path / "wal"
    opened = Opened(root, backend_name)
    wal = opened.wal
    assert wal.backend_chain[:2] == ("spy", default_registry().select(backend_name))
    payload = b"spied" * 1000
    wal.append_for_topic("t", payload)
    wal.batch_append_for_topic("t", [payload] * 10)
    assert opened.spy.write_bytes >= 11 * len(payload), "appends bypassed the storage chain"
    before = opened.spy.read_bytes
    got = wal.batch_read_for_topic("t", 1 << 20, checkpoint=False, start_offset=0)
    assert [e.data for e in got] == [payload] * 11
    assert opened.spy.read_bytes - before >= 11 * len(payload), "reads bypassed the storage chain"
    assert any(s.path.endswith(".wal") for s in opened.spy.opens)
    wal.close()
    assert opened.spy.close_calls == len(opened.spy.opens), "not every opened storage was closed"


def test_reopen_after_clean_close_reads_per_block_not_per_byte(
    tmp_path: Path, backend_name: str
) -> None:
    """Guarantee: opening an existing directory does not rescan the data; what it reads grows
    with the number of blocks, not with the bytes stored. Measured with the spy: reopening 16 MiB
    reads at most twice what reopening 2 MiB read plus a header-sized allowance per extra block,
    and far less than the data (also in read(2) bytes of the process, where /proc shows them).
    A reopen after a clean close creates no new data file."""
    root = tmp_path / "wal"
    with Walrus(
        data_dir=root, backend=backend_name, fsync=FsyncSchedule.no_fsync(), **GEOMETRY
    ) as wal:
        fill(wal, 1, 2 * MIB)
    files_small = data_file_names(root)
    slots_small = slots_on_disk(root)

    small = Opened(root, backend_name)
    assert small.wal.backend_chain[:2] == ("spy", default_registry().select(backend_name))
    assert data_file_names(root) == files_small, "reopen after a clean close created a data file"
    fill(small.wal, 2, 14 * MIB)  # 16 MiB and more in total
    small.wal.close()
    files_big = data_file_names(root)
    slots_big = slots_on_disk(root)
    stored = sum((root / n).stat().st_size for n in files_big)
    assert stored >= 16 * MIB

    big = Opened(root, backend_name)
    assert data_file_names(root) == files_big, "reopen after a clean close created a data file"
    big.wal.close()

    allowance = 2 * small.open_read_bytes + PER_BLOCK_ALLOWANCE * (slots_big - slots_small)
    report = (
        f"reopen read {small.open_read_bytes} B in {small.open_read_calls} calls for "
        f"{slots_small} slots, {big.open_read_bytes} B in {big.open_read_calls} calls for "
        f"{slots_big} slots ({stored} B of data files)"
    )
    assert big.open_read_bytes <= allowance, "reopen reads grow with the data: " + report
    assert big.open_read_bytes < 16 * MIB // 8, "reopen reads a large part of the data: " + report
    if big.open_rchar is not None:
        assert big.open_rchar < 16 * MIB // 8, (
            f"reopen read {big.open_rchar} B through read(2) (outside the storage chain?); "
            + report
        )

    # Repeated clean reopens do not add data files either.
    for _ in range(3):
        Walrus(data_dir=root, backend=backend_name, **GEOMETRY).close()
    assert data_file_names(root) == files_big, "clean reopen cycles created data files"


def test_reopen_after_crash_reads_only_unsealed_tails(tmp_path: Path, backend_name: str) -> None:
    """Guarantee: after a crash (no clean-close seals), recovery scans the unsealed tail blocks
    of each topic, not the sealed blocks: what the reopen reads stays far below the 16 MiB stored
    and within a few blocks per topic plus a per-block header allowance. Everything written is
    still there."""
    root = tmp_path / "wal"
    doc = {
        "data_dir": str(root),
        "backend": backend_name,
        **GEOMETRY,
        "ops": [{"topic": "left", "gen": [3, 8 * MIB]}, {"topic": "right", "gen": [4, 8 * MIB]}],
    }
    proc = subprocess.run(
        [sys.executable, str(HELPERS / "walrus_child.py"), "abandon"],
        input=json.dumps(doc) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("DONE "), proc.stderr
    slots = slots_on_disk(root)
    opened = Opened(root, backend_name)
    wal = opened.wal
    tails = 2 * 3 * GEOMETRY["block_size"]  # two topics, up to three unsealed blocks each
    bound = tails + 2 * MIB + PER_BLOCK_ALLOWANCE * slots  # 2 MiB: cursors and metadata
    report = (
        f"reopen read {opened.open_read_bytes} B in {opened.open_read_calls} calls, {slots} slots"
    )
    assert opened.open_read_bytes <= bound, report
    assert opened.open_read_bytes < 16 * MIB // 2, report
    for seed, topic in ((3, "left"), (4, "right")):
        expected = [p for batch in child.gen_payloads(seed, 8 * MIB) for p in batch]
        assert wal.topic_entry_count(topic) == len(expected)
        for probe in (0, len(expected) // 2, len(expected) - 1):
            got = wal.batch_read_for_topic(topic, 1, checkpoint=False, start_offset=probe)
            assert got[0].data == expected[probe]
    wal.close()


def test_spy_sees_a_full_read(tmp_path: Path, backend_name: str) -> None:
    """Guard for the method itself: reading all data through a spied instance shows up in the
    spy's counts as at least the data's size, so a reopen that rescanned the data through the
    storage chain would be caught by the checks above."""
    root = tmp_path / "wal"
    with Walrus(
        data_dir=root, backend=backend_name, fsync=FsyncSchedule.no_fsync(), **GEOMETRY
    ) as wal:
        fill(wal, 5, 2 * MIB)
    opened = Opened(root, backend_name)
    at_open = opened.spy.read_bytes
    payload_bytes = 0
    for topic in ("left", "right"):
        pos = 0
        while got := opened.wal.batch_read_for_topic(
            topic, 1 << 20, checkpoint=False, start_offset=pos
        ):
            pos += len(got)
            payload_bytes += sum(len(e.data) for e in got)
    assert payload_bytes >= 2 * MIB
    assert opened.spy.read_bytes - at_open >= payload_bytes, "reads bypassed the spy"
    opened.wal.close()
