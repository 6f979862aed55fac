"""read_next hands out entries decoded ahead of the cursor: peeks, seeks, damage further on in
the block and a writer appending to the same block all still give exactly the entry at the
cursor, once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.reading import payload
from helpers.trust import flip, locate_one, read_data_files

from walrus_core import CorruptionError, ReadConsistency, Walrus

OpenWal = Callable[..., Walrus]
GEOMETRY = {"block_size": 1 << 20, "blocks_per_file": 4}


def test_peeks_and_seeks_between_reads(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    for first in (0, 1500):
        wal.batch_append_for_topic("t", [payload("t", o) for o in range(first, first + 1500)])
    rng = random.Random(4)
    expected = 0
    for _ in range(5000):
        action = rng.random()
        if action < 0.1:
            expected = rng.randrange(3000)
            wal.seek("t", expected)
        elif action < 0.3:
            peeked = wal.read_next("t", checkpoint=False)
            if expected == 3000:
                assert peeked is None
                continue
            assert peeked is not None and peeked.offset == expected
            assert peeked.data == payload("t", expected)
        else:
            entry = wal.read_next("t")
            if expected == 3000:
                assert entry is None
                continue
            assert entry is not None and entry.offset == expected
            assert entry.data == payload("t", expected)
            expected += 1


@pytest.mark.parametrize("consistency", ["strict", "at_least_once"])
def test_damage_ahead_is_reported_at_its_offset(
    wal_dir: Path, open_wal: OpenWal, consistency: str
) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    wal.batch_append_for_topic("t", [payload("t", o) for o in range(400)])
    wal.close()
    victim = 123
    loc = locate_one(read_data_files(wal_dir), payload("t", victim))
    flip(wal_dir / loc.file, loc.pos + loc.length - 1)  # the victim's last payload byte
    chosen = (
        ReadConsistency.strictly_at_once()
        if consistency == "strict"
        else ReadConsistency.at_least_once(persist_every=50)
    )
    again = open_wal(auto_reclaim=False, consistency=chosen, **GEOMETRY)
    for offset in range(victim):
        entry = again.read_next("t")
        assert entry is not None and (entry.offset, entry.data) == (offset, payload("t", offset))
    for _ in range(2):  # it stays at the damage
        with pytest.raises(CorruptionError) as info:
            again.read_next("t")
        assert info.value.offset == victim
    again.seek("t", victim + 1)
    for offset in range(victim + 1, 400):
        entry = again.read_next("t")
        assert entry is not None and (entry.offset, entry.data) == (offset, payload("t", offset))
    assert again.read_next("t") is None


def test_reading_while_a_writer_appends_to_the_same_block(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    total = 20_000
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            offset = 0
            while offset < total:
                n = min(total - offset, 1 + offset % 37)
                if n == 1:
                    wal.append_for_topic("t", payload("t", offset))
                else:
                    wal.batch_append_for_topic(
                        "t", [payload("t", o) for o in range(offset, offset + n)]
                    )
                offset += n
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    expected = 0
    try:
        while expected < total and not errors:
            entry = wal.read_next("t")
            if entry is None:
                continue
            assert (entry.offset, entry.data) == (expected, payload("t", expected))
            expected += 1
    finally:
        thread.join(60)
    assert not errors, errors
    assert expected == total
