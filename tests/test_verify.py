"""The verify scan and the repair: damage and torn tails found where they are, nothing else
reported, also on a directory a live writer holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SMALL_GEOMETRY, OpenWal
from helpers.live_writer import LiveWriter
from helpers.ondisk import blocks_of, payload, read_all

from walrus_core import DirectoryLockedError, Walrus
from walrus_core.directory import DirectoryLock
from walrus_core.format import SEAL_AT, SEAL_SIZE
from walrus_core.readonly import WalrusReader
from walrus_core.verify import repair_directory, verify_directory

BLOCK_SIZE = SMALL_GEOMETRY["block_size"]


def _filled(open_wal: OpenWal, count: int = 200) -> None:
    wal = open_wal()
    for i in range(count):
        wal.append_for_topic("a", payload(i))
    wal.batch_append_for_topic("b", [payload(i, 500) for i in range(30)])
    wal.close()


def test_a_clean_directory_verifies(open_wal: OpenWal, wal_dir: Path) -> None:
    _filled(open_wal)
    calls: list[tuple[int, int]] = []
    report = verify_directory(wal_dir, progress=lambda done, total: calls.append((done, total)))
    assert report.ok and report.damaged == () and report.torn_tails == ()
    assert report.entries_checked == 230
    assert report.bytes_checked == 200 * (16 + 100) + 30 * (16 + 500)
    assert report.files == len(list(wal_dir.glob("data-*.wal")))
    total = sum(p.stat().st_size for p in wal_dir.glob("data-*.wal"))
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_a_flipped_payload_byte_is_one_damaged_entry(open_wal: OpenWal, wal_dir: Path) -> None:
    _filled(open_wal)
    blocks = blocks_of(wal_dir, "a", BLOCK_SIZE)
    offset = blocks[1].first_offset + 2  # a sealed block, valid entries after it
    needle = payload(offset)
    path = blocks[1].path
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at > 0
    data[at + 40] ^= 0x01
    path.write_bytes(bytes(data))

    report = verify_directory(wal_dir)
    assert not report.ok
    assert len(report.damaged) == 1
    damaged = report.damaged[0]
    assert (damaged.topic, damaged.offset, damaged.path) == ("a", offset, str(path))
    assert damaged.position == at - 16  # where the entry's header starts
    assert report.entries_checked == 229
    assert report.torn_tails == ()


def _tear_tail(wal_dir: Path, last_offset: int) -> tuple[Path, int]:
    """What a crash in the middle of an append leaves: the head block's clean-close record
    gone and half an entry after its last one. Returns (file, byte where the tear starts)."""
    head = blocks_of(wal_dir, "a", BLOCK_SIZE)[-1]
    data = bytearray(head.path.read_bytes())
    end = data.find(payload(last_offset)) + 100
    data[head.base + SEAL_AT : head.base + SEAL_AT + SEAL_SIZE] = bytes(SEAL_SIZE)
    data[end : end + 40] = b"\x07" * 40
    head.path.write_bytes(bytes(data))
    return head.path, end


def test_a_torn_tail_is_reported_and_repaired(open_wal: OpenWal, wal_dir: Path) -> None:
    _filled(open_wal)
    path, end = _tear_tail(wal_dir, 199)
    report = verify_directory(wal_dir)
    assert report.ok  # nothing committed is damaged
    assert len(report.torn_tails) == 1
    torn = report.torn_tails[0]
    assert (torn.topic, torn.path, torn.position, torn.bytes) == ("a", str(path), end, 40)
    with WalrusReader(wal_dir) as reader:  # a torn tail is "not yet", never an error
        assert [e.data for e in read_all(reader, "a")] == [payload(i) for i in range(200)]

    holder = DirectoryLock(str(wal_dir))  # held, as by a writer that has not recovered it
    with pytest.raises(DirectoryLockedError):
        repair_directory(wal_dir)
    holder.release()
    assert len(verify_directory(wal_dir).torn_tails) == 1
    result = repair_directory(wal_dir, backend=os.environ.get("WALRUS_TEST_BACKEND", "fd"))
    assert any("torn" in action for action in result.actions)
    after = verify_directory(wal_dir)
    assert after.ok and after.torn_tails == () and after.entries_checked == 230
    with Walrus(wal_dir, **SMALL_GEOMETRY) as wal:
        assert wal.batch_read_for_topic("a", 1 << 20, start_offset=0)[-1].data == payload(199)
    assert repair_directory(wal_dir).actions == ()


def test_verifies_a_directory_a_live_writer_holds(wal_dir: Path, backend_name: str) -> None:
    writer = LiveWriter(wal_dir, backend_name, 1500, "pace=0.002")
    try:
        scans = 0
        while not writer.finished() or scans < 3:
            report = verify_directory(wal_dir)
            assert report.ok, report.damaged
            scans += 1
        # The writer is idle but holds the directory: its tails are complete.
        report = verify_directory(wal_dir)
        assert report.ok and report.torn_tails == ()
        with pytest.raises(DirectoryLockedError):
            repair_directory(wal_dir)
    finally:
        writer.stop()
    with WalrusReader(wal_dir) as reader:
        total = sum(reader.topic_info(t).end_offset for t in reader.topics())
    assert verify_directory(wal_dir).entries_checked == total
