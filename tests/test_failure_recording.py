"""Guarantee: a failed write stays absent and the log stays usable, also when recording the
failure fails too, when creating a data file fails half-way, and when one byte of the first
block header's version field is damaged."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from walrus_core import FsyncSchedule, StorageError, Walrus
from walrus_core.format import data_file_name
from walrus_core.plugins import BackendRegistry

walrus_faults = pytest.importorskip("walrus_faults", reason="walrus-faults is not installed")


def test_failed_batch_whose_dead_mark_also_fails_never_comes_back(
    wal_dir: Path, base_backend: str
) -> None:
    """The batch lands and then fails; marking its fresh block dead fails as well. The next
    append must first finish that job, and after a clean close the acknowledged append reads
    back, never the failed batch's bytes."""
    plan = walrus_faults.FaultPlan()
    registry = BackendRegistry.from_entry_points().with_plugins(
        {"faults": walrus_faults.FaultLayer(plan, over=base_backend)}
    )
    kw = {"block_size": 4096, "blocks_per_file": 16, "fsync": FsyncSchedule.no_fsync()}
    wal = Walrus(wal_dir, backend="faults", registry=registry, **kw)
    wal.append_for_topic("t", b"a" * 1000)
    wal.append_for_topic("t", b"b" * 1000)
    plan.fail("batch_submit", after_write=True, errno=errno.EIO)
    plan.fail("read", kind="data", errno=errno.EIO)  # the dead mark reads the header first
    with pytest.raises(StorageError):
        wal.batch_append_for_topic("t", [b"FAILED%d" % i * 100 for i in range(3)])
    plan.heal()
    offset = wal.append_for_topic("t", b"GOOD" * 250)
    assert offset == 2
    wal.close()
    with Walrus(wal_dir, backend=base_backend, **kw) as wal:
        got = wal.batch_read_for_topic("t", 1 << 20, start_offset=0)
        assert [e.data for e in got] == [b"a" * 1000, b"b" * 1000, b"GOOD" * 250]


def test_a_data_file_that_could_not_be_sized_does_not_block_later_ones(
    wal_dir: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Walrus(wal_dir, backend=backend_name, block_size=4096, blocks_per_file=1) as wal:
        wal.append_for_topic("t", b"x" * 3000)  # file 1 is full
        real = os.ftruncate

        def refuse(fd: int, size: int) -> None:
            raise OSError(errno.EDQUOT, "Disk quota exceeded (simulated)")

        monkeypatch.setattr(os, "ftruncate", refuse)
        with pytest.raises(StorageError):
            wal.append_for_topic("t", b"y" * 3000)
        monkeypatch.setattr(os, "ftruncate", real)  # space is back
        assert [wal.append_for_topic("t", b"z%d" % i * 1000) for i in range(3)] == [1, 2, 3]
    with Walrus(wal_dir, backend=backend_name) as wal:
        got = wal.batch_read_for_topic("t", 1 << 20, start_offset=0)
        assert [e.data for e in got] == [b"x" * 3000, *(b"z%d" % i * 1000 for i in range(3))]


def test_a_damaged_version_byte_in_one_header_copy_does_not_refuse_the_directory(
    wal_dir: Path, backend_name: str
) -> None:
    with Walrus(wal_dir, backend=backend_name, block_size=4096, blocks_per_file=4) as wal:
        wal.append_for_topic("t", b"hello")
    (wal_dir / "walrus.json").unlink()  # so the data files decide
    path = wal_dir / data_file_name(1)
    raw = bytearray(path.read_bytes())
    raw[4] ^= 0x01  # copy A's version byte
    path.write_bytes(bytes(raw))
    with Walrus(wal_dir, backend=backend_name) as wal:
        assert wal.read_next("t") is not None
