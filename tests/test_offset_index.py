"""Finding an entry by offset through the sparse offset index: ``seek`` and ``start_offset``
land on exactly the entry asked for, in the writing instance, after a clean reopen, after a
crash, around damage and failed writes, and while a writer appends; a lookup reads a bounded
number of bytes, not the block up to the entry."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.reading import payload
from helpers.trust import flip, locate_one, read_data_files
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import CorruptionError, FsyncSchedule, StorageError, Walrus
from walrus_core.files import DataFile
from walrus_core.index import INDEX_EVERY_BYTES, INDEX_EVERY_ENTRIES
from walrus_core.plugins import BackendRegistry, default_registry
from walrus_core.reader import FIRST_READAHEAD, SCAN_READ

OpenWal = Callable[..., Walrus]
#: Big enough for thousands of entries per block, so a lookup without the index would scan.
GEOMETRY = {"block_size": 1 << 20, "blocks_per_file": 4}


def sized(offset: int) -> bytes:
    """Entries of very different sizes, empty ones included (a pure function of the offset)."""
    size = (0, 3, 40, 700, 5000)[offset % 5] if offset % 7 else 0
    return payload("t", offset)[:size] if size <= 600 else payload("t", offset) * 9


def write(wal: Walrus, count: int) -> None:
    """Singles and batches, alternating."""
    offset = 0
    while offset < count:
        if offset % 3:
            n = min(count - offset, 257)
            wal.batch_append_for_topic("t", [sized(o) for o in range(offset, offset + n)])
            offset += n
        else:
            wal.append_for_topic("t", sized(offset))
            offset += 1


def check_every_offset(wal: Walrus, count: int, seed: int = 1) -> None:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    for offset in order:
        wal.seek("t", offset)
        entry = wal.read_next("t")
        assert entry is not None and entry.offset == offset
        assert entry.data == sized(offset)
        assert_read_from(wal, offset)


def assert_read_from(wal: Walrus, offset: int) -> None:
    """A stateless read from ``offset`` returns that entry first, then its successors, exact
    (at most one entry with a payload, plus any empty ones, for ``max_bytes=1``)."""
    got = wal.batch_read_for_topic("t", 1, start_offset=offset)
    assert got and got[0].offset == offset
    assert [(e.offset, e.data) for e in got] == [
        (o, sized(o)) for o in range(offset, offset + len(got))
    ]


def test_every_offset_live_then_after_reopen(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    write(wal, 6000)
    check_every_offset(wal, 6000)
    wal.close()
    # A clean reopen trusts the sealed blocks without reading them: the first lookup in each
    # block indexes it.
    again = open_wal(auto_reclaim=False, **GEOMETRY)
    check_every_offset(again, 6000, seed=2)
    write_more = [sized(o) for o in range(6000, 6300)]
    assert again.batch_append_for_topic("t", write_more) == range(6000, 6300)
    check_every_offset(again, 6300, seed=3)


_CRASHING_WRITER = r"""
import os, sys
sys.path.insert(0, sys.argv[3])
from test_offset_index import GEOMETRY, write
from walrus_core import FsyncSchedule, Walrus
wal = Walrus(sys.argv[1], backend=sys.argv[2], fsync=FsyncSchedule.no_fsync(),
             auto_reclaim=False, **GEOMETRY)
write(wal, 5000)
os._exit(0)  # no close: the head block is not sealed, recovery scans it
"""


def test_every_offset_after_a_crash(wal_dir: Path, backend_name: str, open_wal: OpenWal) -> None:
    tests_dir = str(Path(__file__).parent)
    subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(wal_dir), backend_name, tests_dir],
        check=True,
        timeout=120,
    )
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    assert wal.topic_info("t").end_offset == 5000
    check_every_offset(wal, 5000)


def test_a_lookup_reads_a_bounded_number_of_bytes(
    open_wal: OpenWal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny entries: 20,000 of them in one block. Without the index, a seek to the last ones
    would read the block from its start."""
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    for first in range(0, 20_000, 1000):
        wal.batch_append_for_topic("t", [b"%d" % o for o in range(first, first + 1000)])
    wal.append_for_topic("t", b"tail")  # so the entries below are not the block's last
    block = wal._topics["t"].blocks[0]
    assert block.count == 20_001
    pairs = len(block.index)
    assert 20_000 // INDEX_EVERY_ENTRIES - 2 <= pairs <= 20_000 // INDEX_EVERY_ENTRIES + 2

    read_sizes: list[int] = []
    real_read = DataFile.read

    def counting_read(self: DataFile, offset: int, size: int) -> bytes:
        data = real_read(self, offset, size)
        read_sizes.append(len(data))
        return data

    monkeypatch.setattr(DataFile, "read", counting_read)
    for offset in (19_998, 10_001, 7):
        read_sizes.clear()
        wal.seek("t", offset)
        entry = wal.read_next("t")
        assert entry is not None and entry.data == b"%d" % offset
        assert sum(read_sizes) <= SCAN_READ + FIRST_READAHEAD, (offset, read_sizes)


def test_damage_inside_an_indexed_block_never_gives_wrong_bytes(
    wal_dir: Path, open_wal: OpenWal
) -> None:
    """A damaged entry header in the middle of a sealed block: lookups on either side return
    the exact entry or raise CorruptionError, before and after the damage, in any order."""
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.no_fsync(), **GEOMETRY)
    write(wal, 3000)
    wal.close()
    files = read_data_files(wal_dir)
    victim = 1504  # a 5 KiB payload, unique in the files
    loc = locate_one(files, sized(victim))
    flip(wal_dir / loc.file, loc.pos - 16 + 4)  # the length field of the entry's header
    again = open_wal(auto_reclaim=False, **GEOMETRY)
    order = list(range(3000))
    random.Random(5).shuffle(order)
    damaged = []
    for offset in order:
        try:
            assert_read_from(again, offset)
        except CorruptionError:
            damaged.append(offset)
    assert victim in damaged
    # The walk resynchronises past the damage: only the damaged entry is lost.
    assert damaged == [victim]


def test_a_failed_batch_leaves_no_index_entries_behind(wal_dir: Path, backend_name: str) -> None:
    plan = FaultPlan()
    layer = FaultLayer(plan, over=default_registry().select(backend_name))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    with Walrus(
        wal_dir,
        backend="faults",
        registry=registry,
        fsync=FsyncSchedule.no_fsync(),
        auto_reclaim=False,
        **GEOMETRY,
    ) as wal:
        write(wal, 1000)
        plan.fail("batch_submit", torn=True, errno=errno.EIO)
        with pytest.raises(StorageError):
            wal.batch_append_for_topic("t", [b"lost %d" % i * 50 for i in range(400)])
        # The same offsets again, at other positions.
        assert wal.batch_append_for_topic("t", [sized(o) for o in range(1000, 1400)]) == range(
            1000, 1400
        )
        for offset in range(1400, 1500):
            wal.append_for_topic("t", sized(offset))
        check_every_offset(wal, 1500)


def test_lookups_while_a_writer_appends(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    write(wal, 500)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            offset = 500
            while not stop.is_set() and offset < 40_000:
                n = 1 + offset % 50
                wal.batch_append_for_topic("t", [sized(o) for o in range(offset, offset + n)])
                offset += n
                wal.append_for_topic("t", sized(offset))
                offset += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    rng = random.Random(9)
    try:
        for _ in range(3000):
            end = wal.topic_info("t").end_offset
            assert_read_from(wal, rng.randrange(end))
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors


def test_index_spacing_constants_are_sane() -> None:
    """The walk from a pair reads at most about SCAN_READ bytes when entries are small."""
    assert SCAN_READ >= 2 * INDEX_EVERY_BYTES
    assert INDEX_EVERY_ENTRIES >= 8
