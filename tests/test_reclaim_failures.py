"""Reclamation across reopens, power loss, SIGKILL between a mark and the punch, and failed
deletions: block numbers never restart below a start mark, a fully reclaimed topic reopens,
and appends made after a failed delete_topic survive."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.reading import fill, payload, read_all

from walrus_core import FsyncSchedule, Walrus
from walrus_core.info import Retention
from walrus_core.plugins import default_registry

OpenWal = Callable[..., Walrus]

BLOCK = 16 * 1024
GEOMETRY = {"block_size": BLOCK, "blocks_per_file": 4}


def faulty(wal_dir: Path, base_backend: str, **kw):  # type: ignore[no-untyped-def]
    from walrus_faults import FaultLayer, FaultPlan

    plan = FaultPlan()
    registry = default_registry().with_plugins({"faults": FaultLayer(plan, over=base_backend)})

    def opener(**more) -> Walrus:  # type: ignore[no-untyped-def]
        args = {
            "backend": "faults",
            "registry": registry,
            "fsync": FsyncSchedule.sync_each(),
            "auto_reclaim": False,
            **GEOMETRY,
            **kw,
            **more,
        }
        return Walrus(wal_dir, **args)

    return plan, opener


# -- block numbers continue past every start mark --------------------------------------------


def test_delete_topic_reopen_then_append_survives_the_next_reopen(open_wal: OpenWal) -> None:
    """The only topic is deleted (its blocks punched), the log reopened, the name used again:
    the new entry's block gets a sequence number below the topic's start mark (next_seq comes
    only from headers still on disk), so the next open leaves the acknowledged entry out (here
    it even crashes on it)."""
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.sync_each(), **GEOMETRY)
    fill(wal, "gone", 300)
    assert wal.delete_topic("gone") is True
    wal.close()
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.sync_each(), **GEOMETRY)
    assert wal.append_for_topic("gone", b"new life") == 300
    wal.close()
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.sync_each(), **GEOMETRY)
    got = wal.batch_read_for_topic("gone", 1 << 20, start_offset=0)
    assert [(e.offset, e.data) for e in got] == [(300, b"new life")]


def test_expired_topic_reopen_then_appends_survive_the_next_reopen(open_wal: OpenWal) -> None:
    """Age retention drops a whole idle topic (the sealed head too: mark.first_seq is the
    allocator's next_seq). After a reopen next_seq starts from what is left on disk, so the
    next blocks of the topic get numbers below the mark; after another reopen the first of
    them are left out: acknowledged entries raise CorruptionError (no exception is needed for
    the loss: the later blocks survive, the early ones are silently disowned)."""
    wal = open_wal(
        auto_reclaim=False,
        fsync=FsyncSchedule.sync_each(),
        retention=Retention(max_age_seconds=0.2),
        **GEOMETRY,
    )
    fill(wal, "t", 200)  # a few blocks
    wal.reclaim()  # notes the idle head
    time.sleep(0.3)
    wal.reclaim()  # seals the idle head
    time.sleep(0.3)
    wal.reclaim()  # drops everything
    info = wal.topic_info("t")
    assert (info.first_offset, info.end_offset, info.blocks) == (200, 200, 0)
    wal.close()
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.sync_each(), **GEOMETRY)
    fill(wal, "t", 300)  # more blocks than were dropped: some get a sequence number >= mark
    wal.close()
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.sync_each(), **GEOMETRY)
    got = read_all(wal, "t")
    assert [e.offset for e in got] == list(range(200, 500))
    assert all(e.data == payload("t", e.offset) for e in got)


# -- a topic whose blocks are all below its mark reopens -----------------------------------


def test_failed_punch_of_a_deleted_topic_then_reopen(wal_dir: Path, base_backend: str) -> None:
    """delete_topic whose blocks share the current file with another topic: the punch fails
    (EIO from the faults layer; a refusing file system does the same), so the blocks stay on
    disk. Recovery filters them all out by the mark and then calls _rebuild_topic with an
    empty list: the directory cannot be opened any more (IndexError, not a Walrus error)."""
    plan, opener = faulty(wal_dir, base_backend)
    wal = opener()
    fill(wal, "keep", 5)
    fill(wal, "gone", 5)
    plan.fail("discard", repeat=True)
    assert wal.delete_topic("gone") is True
    plan.heal()
    wal.close()
    wal = opener()
    try:
        assert wal.topics() == ["keep"]
        assert [e.data for e in read_all(wal, "keep")] == [payload("keep", o) for o in range(5)]
    finally:
        wal.close()


_KILL_IN_FREE = r"""
import os, signal, sys
from walrus_core import Walrus, FsyncSchedule
from walrus_core import reclaim
d, backend = sys.argv[1], sys.argv[2]
wal = Walrus(d, backend=backend, fsync=FsyncSchedule.sync_each(), auto_reclaim=False,
             block_size=16384, blocks_per_file=4)
for i in range(5):
    wal.append_for_topic("keep", b"k%d" % i)
    wal.append_for_topic("gone", b"g%d" % i)
def die(self):
    os.kill(os.getpid(), signal.SIGKILL)
reclaim.Reclaimer._free = die  # the mark is durable, the blocks are still on disk
wal.delete_topic("gone")
"""


def test_sigkill_between_mark_and_punch_then_reopen(wal_dir: Path, backend_name: str) -> None:
    """SIGKILL after delete_topic made its start mark durable and before the pass gave the
    space back: the same empty-list crash in recovery, so the log never opens again."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_IN_FREE, str(wal_dir), backend_name], timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    with Walrus(wal_dir, backend=backend_name, auto_reclaim=False, **GEOMETRY) as wal:
        assert wal.topics() == ["keep"]
        assert [e.data for e in read_all(wal, "keep")] == [b"k%d" % i for i in range(5)]


def test_power_loss_after_an_ordinary_pass_then_appends_survive(
    wal_dir: Path, base_backend: str
) -> None:
    """Block numbering without delete_topic or retention: a pass reclaims consumed blocks and makes
    the mark (first_seq = the head's seq) durable; a power loss then takes the head's header,
    which was not flushed yet (allowed under a periodic fsync). The next open sees no block
    header at or above the mark's first_seq and restarts next_seq below it, so entries
    appended and flushed (closed cleanly) afterwards are disowned by the mark at the open
    after that."""
    sched = FsyncSchedule.milliseconds(600_000)  # the background never flushes by itself
    plan, opener = faulty(wal_dir, base_backend, fsync=sched)
    wal = opener()
    fill(wal, "t", 25)
    wal.flush()
    fill(wal, "t", 40)  # a new head block, its header not flushed
    assert len(wal.batch_read_for_topic("t", 1 << 30)) == 65  # consumed (strictly at once)
    result = wal.reclaim()
    assert result.blocks_dropped >= 1
    start = wal.topic_info("t").first_offset
    plan.power_loss()
    try:
        wal.close()
    except Exception:
        pass
    with Walrus(wal_dir, backend=base_backend, fsync=sched, auto_reclaim=False, **GEOMETRY) as wal:
        end = wal.topic_info("t").end_offset
        assert end >= start
        assert wal.append_for_topic("t", b"after the power loss") == end
    with Walrus(wal_dir, backend=base_backend, fsync=sched, auto_reclaim=False, **GEOMETRY) as wal:
        got = read_all(wal, "t")
        assert [(e.offset, e.data) for e in got][-1] == (end, b"after the power loss")


# -- a failed delete_topic never costs later appends ---------------------------------------


def test_failed_delete_topic_does_not_delete_later_appends(
    wal_dir: Path, base_backend: str
) -> None:
    """delete_topic writes the deletion mark and then fails to sync it: StorageError. Whether
    or not the mark reaches the disk later, appends made after the failed call must survive:
    the name goes on in a new generation whose blocks are numbered past the mark, and the old
    entries are either all there or all gone at the next open, never half."""
    from walrus_core.errors import StorageError

    plan, opener = faulty(wal_dir, base_backend)
    wal = opener()
    fill(wal, "t", 5)
    plan.fail("flush", kind="cursors")
    with pytest.raises(StorageError):
        wal.delete_topic("t")
    plan.heal()
    assert wal.topics() == []  # this instance finished the deletion in memory
    assert wal.append_for_topic("t", b"after the failed delete") == 5
    wal.close()
    wal = opener()
    try:
        got = read_all(wal, "t")
        assert [e.offset for e in got] in (list(range(6)), [5])
        assert got[-1].data == b"after the failed delete"
        assert all(e.data == payload("t", e.offset) for e in got[:-1])
    finally:
        wal.close()


def test_delete_topic_failing_at_a_consumer_still_keeps_later_appends(
    wal_dir: Path, base_backend: str
) -> None:
    """The mark is written and synced, then freeing a consumer's slot fails: the deletion
    stands (a WARNING names the consumer) and later appends survive the reopen."""
    plan, opener = faulty(wal_dir, base_backend)
    wal = opener()
    fill(wal, "t", 5)
    assert wal.read_next("t", consumer="c1") is not None  # c1 has a slot now
    writes = plan.counts["write"]
    plan.fail("write", kind="cursors", nth=3)  # slot names + mark copy land; c1's free fails
    assert wal.delete_topic("t") is True
    assert plan.counts["write"] - writes == 3
    plan.heal()
    assert wal.topics() == []
    assert wal.append_for_topic("t", b"after") == 5
    wal.close()
    wal = opener()
    try:
        got = read_all(wal, "t")
        assert [(e.offset, e.data) for e in got] == [(5, b"after")]
    finally:
        wal.close()


# -- a full disk during a pass, and damage in a start mark -----------------------------------


def test_full_disk_while_recording_the_start_frees_nothing(
    wal_dir: Path, base_backend: str
) -> None:
    """ENOSPC on the start mark's write: the pass raises StorageError, no block is freed, every
    entry still reads back exactly, and the next pass (disk free again) reclaims."""
    import errno

    from walrus_core.errors import StorageError

    plan, opener = faulty(wal_dir, base_backend)
    wal = opener()
    try:
        fill(wal, "t", 600)
        while wal.batch_read_for_topic("t", 1 << 20):
            pass
        files = sorted(p.name for p in wal_dir.iterdir())
        plan.fail("write", kind="cursors", errno=errno.ENOSPC)
        with pytest.raises(StorageError):
            wal.reclaim()
        assert sorted(p.name for p in wal_dir.iterdir()) == files
        got = read_all(wal, "t")
        assert [e.offset for e in got] == list(range(600))
        assert all(e.data == payload("t", e.offset) for e in got)
        plan.heal()
        assert wal.reclaim().blocks_dropped > 0
    finally:
        wal.close()


@pytest.mark.parametrize("copy", [0, 1])
def test_a_flipped_bit_in_a_start_mark_never_returns_wrong_bytes(
    open_wal: OpenWal, wal_dir: Path, copy: int
) -> None:
    """A bit flipped in either value copy of a topic's start mark: the other copy (an older
    start) or none is used. Reopening works, and every read returns the appended bytes or
    raises CorruptionError for entries whose blocks are gone."""
    from walrus_core import CorruptionError
    from walrus_core.format import CURSOR_COPY_AT, CURSOR_SLOT_SIZE, START_MARK_CONSUMER

    wal = open_wal(**GEOMETRY)
    for _ in range(3):
        fill(wal, "t", 300)
        while wal.batch_read_for_topic("t", 1 << 20):
            pass
        wal.reclaim()
    start = wal.topic_info("t").first_offset
    wal.close()
    raw = bytearray((wal_dir / "cursors.dat").read_bytes())
    marker = START_MARK_CONSUMER.encode()
    slot = next(
        s
        for s in range(len(raw) // CURSOR_SLOT_SIZE)
        if marker in raw[s * CURSOR_SLOT_SIZE : s * CURSOR_SLOT_SIZE + 600]
    )
    raw[slot * CURSOR_SLOT_SIZE + CURSOR_COPY_AT[copy] + 12] ^= 0x10
    (wal_dir / "cursors.dat").write_bytes(bytes(raw))
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    info = wal.topic_info("t")
    assert info.end_offset == 900
    assert info.first_offset <= start
    for offset in range(info.first_offset, 900):
        try:
            got = wal.batch_read_for_topic("t", 1, start_offset=offset)
        except CorruptionError:
            assert offset < start  # only what was reclaimed can be missing
            continue
        assert got[0].offset >= offset
        assert got[0].data == payload("t", got[0].offset)
    assert wal.append_for_topic("t", b"more") == 900
