"""Walrus.read_batches: entries grouped by the append call that wrote them (the batch
boundaries a copy of the log needs to keep every batch atomic)."""

from __future__ import annotations

import random

import pytest

from walrus_core import Entry, OffsetOutOfRangeError, Walrus, WalrusValueError
from walrus_core.testing.plugin import OpenWalrus


def _write(wal: Walrus, rng: random.Random, calls: int) -> list[list[bytes]]:
    written: list[list[bytes]] = []
    for i in range(calls):
        if rng.random() < 0.4:
            payload = rng.randbytes(rng.choice([0, 1, 50, 3000, 9000]))
            wal.append_for_topic("t", payload)
            written.append([payload])
        else:
            batch = [
                rng.randbytes(rng.choice([0, 7, 700, 5000])) for _ in range(rng.randint(1, 40))
            ]
            wal.batch_append_for_topic("t", batch)
            written.append(batch)
        if i % 7 == 0:
            wal.append_for_topic("other", b"noise")  # another topic between the groups
    return written


@pytest.mark.parametrize("max_bytes", [1, 4096, 100_000, 1 << 30])
def test_groups_are_the_append_calls(open_walrus: OpenWalrus, max_bytes: int) -> None:
    wal = open_walrus()  # 4 KiB blocks: batches cross blocks and files
    written = _write(wal, random.Random(max_bytes), 120)
    got: list[list[bytes]] = []
    offset = 0
    while True:
        groups = wal.read_batches("t", offset, max_bytes)
        if not groups:
            break
        assert groups[0][0].offset == offset
        size = sum(len(e.data) for g in groups for e in g)
        assert len(groups) == 1 or size <= max_bytes  # whole groups; the first one always
        for group in groups:
            assert [e.offset for e in group] == list(range(offset, offset + len(group)))
            got.append([e.data for e in group])
            offset += len(group)
    assert got == written
    wal.close()
    reopened = open_walrus()  # the boundaries are in the entries, not in memory
    assert [[e.data for e in g] for g in reopened.read_batches("t", 0, 1 << 30)][:5] == written[:5]


def test_bad_start_offsets_and_sizes(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    wal.append_for_topic("t", b"a")
    wal.batch_append_for_topic("t", [b"b", b"c", b"d"])
    assert wal.read_batches("t", 1, 10) == [[Entry(b"b", 1), Entry(b"c", 2), Entry(b"d", 3)]]
    assert wal.read_batches("t", 4, 10) == []
    assert wal.read_batches("missing", 0, 10) == []
    for inside in (2, 3):
        with pytest.raises(OffsetOutOfRangeError, match="inside a batch"):
            wal.read_batches("t", inside, 10)
    with pytest.raises(OffsetOutOfRangeError):
        wal.read_batches("t", 5, 10)
    with pytest.raises(OffsetOutOfRangeError):
        wal.read_batches("t", -1, 10)
    with pytest.raises(WalrusValueError):
        wal.read_batches("t", 0, 0)
    with pytest.raises(TypeError):
        wal.read_batches("t", "0", 10)  # type: ignore[arg-type]
    # The cursor is untouched.
    assert wal.read_next("t") == Entry(b"a", 0)


def test_a_group_larger_than_max_entries_budget_is_returned_whole(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    big = [b"x" * 10] * wal.limits.max_batch_entries
    wal.append_for_topic("t", b"first")
    wal.batch_append_for_topic("t", big)
    groups = wal.read_batches("t", 0, 1 << 30)
    assert [len(g) for g in groups] == [1]  # the batch would exceed max_batch_entries
    groups = wal.read_batches("t", 1, 1)
    assert [len(g) for g in groups] == [len(big)]
