"""The log on the backend under test: appends, batches, reads, cursors and reopening, through
the public :class:`~walrus_core.Walrus` API with small blocks (4 KiB, 4 per file), so that a few
entries already cross block and file boundaries of the backend's files."""

from __future__ import annotations

import os

import pytest

from walrus_core import Entry, OffsetOutOfRangeError, ReadConsistency, Walrus
from walrus_core.testing.plugin import OpenWalrus


def drain(wal: Walrus, topic: str, **kw: object) -> list[Entry]:
    """read_next (checkpointing by default) until None."""
    out: list[Entry] = []
    while (entry := wal.read_next(topic, **kw)) is not None:  # type: ignore[arg-type]
        out.append(entry)
        assert len(out) < 1_000_000, "read_next never returned None"
    return out


def payloads(entries: list[Entry]) -> list[bytes]:
    """The data of ``entries``."""
    return [e.data for e in entries]


def test_append_returns_offsets_per_topic(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    assert wal.append_for_topic("a", b"a0") == 0
    assert wal.append_for_topic("a", b"a1") == 1
    assert wal.append_for_topic("b", b"b0") == 0
    assert wal.append_for_topic("a", b"a2") == 2
    got = drain(wal, "a")
    assert got == [Entry(b"a0", 0), Entry(b"a1", 1), Entry(b"a2", 2)]
    assert all(type(e.data) is bytes for e in got)
    assert drain(wal, "b") == [Entry(b"b0", 0)]


def test_batch_append_returns_range(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    assert wal.append_for_topic("t", b"x") == 0
    r = wal.batch_append_for_topic("t", [b"a", b"b", b"c"])
    assert r == range(1, 4)
    assert isinstance(r, range)
    r2 = wal.batch_append_for_topic("t", [b"d"])
    assert r2 == range(4, 5)
    assert wal.append_for_topic("t", b"e") == 5
    assert payloads(drain(wal, "t")) == [b"x", b"a", b"b", b"c", b"d", b"e"]


def test_empty_batch_returns_empty_range(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    r0 = wal.batch_append_for_topic("t", [])
    assert r0 == range(0, 0) and isinstance(r0, range) and r0.start == 0
    wal.batch_append_for_topic("t", [b"1", b"2"])
    r = wal.batch_append_for_topic("t", [])
    assert isinstance(r, range)
    assert (r.start, r.stop) == (2, 2)
    assert wal.topic_entry_count("t") == 2
    assert wal.append_for_topic("t", b"3") == 2
    # An empty batch writes nothing, so it does not create a topic.
    assert wal.batch_append_for_topic("empty", []) == range(0, 0)
    assert "empty" not in wal.topics()


def test_payload_is_copied_at_append(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    buf = bytearray(b"original")
    wal.append_for_topic("t", buf)
    wal.batch_append_for_topic("t", [buf])
    buf[:] = b"CHANGED!"
    assert payloads(drain(wal, "t")) == [b"original", b"original"]


def test_read_next_and_peek(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    assert wal.read_next("t") is None
    assert wal.read_next("t", checkpoint=False) is None
    wal.append_for_topic("t", b"first")
    wal.append_for_topic("t", b"second")
    assert wal.read_next("t", checkpoint=False) == Entry(b"first", 0)
    assert wal.read_next("t", False) == Entry(b"first", 0)
    assert wal.topic_entry_count("t") == 2
    assert wal.read_next("t") == Entry(b"first", 0)
    assert wal.topic_entry_count("t") == 1
    assert wal.read_next("t", checkpoint=True) == Entry(b"second", 1)
    assert wal.read_next("t") is None
    assert wal.topic_entry_count("t") == 0


def test_checkpoint_false_changes_nothing_even_across_reopen(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    wal.batch_append_for_topic("t", [b"a", b"b", b"c"])
    for _ in range(3):
        assert wal.read_next("t", checkpoint=False) == Entry(b"a", 0)
        assert payloads(wal.batch_read_for_topic("t", 1000, checkpoint=False)) == [b"a", b"b", b"c"]
        assert payloads(wal.batch_read_for_topic("t", 1000, False, consumer="c")) == [
            b"a",
            b"b",
            b"c",
        ]
    assert wal.topic_entry_count("t") == 3
    assert wal.topic_entry_count("t", consumer="c") == 3
    assert wal.topic_entry_counts() == {"t": 3}
    wal.close()
    wal = open_walrus()
    assert wal.read_next("t") == Entry(b"a", 0)
    assert wal.read_next("t", consumer="c") == Entry(b"a", 0)


def test_read_your_writes(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    for i in range(50):
        payload = f"rw-{i}".encode()
        assert wal.append_for_topic("t", payload) == i
        assert wal.read_next("t") == Entry(payload, i)
        r = wal.batch_append_for_topic("u", [payload, payload])
        got = wal.batch_read_for_topic("u", 10_000)
        assert got == [Entry(payload, r.start), Entry(payload, r.start + 1)]
    assert wal.read_next("t") is None
    assert wal.batch_read_for_topic("u", 10_000) == []


def test_zero_length_entries_returned_by_both_reads(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    wal.append_for_topic("t", b"")
    wal.batch_append_for_topic("t", [b"", b"x", b""])
    wal.append_for_topic("t", b"")
    expected = [Entry(b"", 0), Entry(b"", 1), Entry(b"x", 2), Entry(b"", 3), Entry(b"", 4)]
    # Zero-length entries cost nothing against the budget: all five fit in max_bytes=1.
    assert wal.batch_read_for_topic("t", 1, checkpoint=False) == expected
    assert wal.batch_read_for_topic("t", 1000, checkpoint=False) == expected
    assert wal.batch_read_for_topic("t", 1000, start_offset=0) == expected
    assert drain(wal, "t", consumer="reader") == expected
    assert wal.batch_read_for_topic("t", 1000) == expected
    assert wal.batch_read_for_topic("t", 1000) == []
    assert wal.topic_entry_count("t") == 0
    wal.close()
    wal = open_walrus()
    assert wal.batch_read_for_topic("t", 1, consumer="after-reopen") == expected
    assert drain(wal, "t", consumer="again") == expected


def test_counts_and_topics(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    assert wal.topics() == []
    assert wal.topic_entry_counts() == {}
    assert wal.topic_entry_count("missing") == 0
    wal.append_for_topic("a", b"1")
    wal.batch_append_for_topic("b", [b"1", b"2", b"3"])
    wal.append_for_topic("c", b"")
    assert sorted(wal.topics()) == ["a", "b", "c"]
    assert wal.topic_entry_counts() == {"a": 1, "b": 3, "c": 1}
    wal.read_next("b")
    wal.batch_read_for_topic("c", 10)
    wal.read_next("a", consumer="other")
    assert wal.topic_entry_counts() == {"a": 1, "b": 2, "c": 0}
    assert wal.topic_entry_count("a", consumer="other") == 0
    assert wal.topic_entry_count("b", consumer="other") == 3
    assert isinstance(wal.topics(), list)
    wal.close()
    wal = open_walrus()
    assert sorted(wal.topics()) == ["a", "b", "c"]
    assert wal.topic_entry_counts() == {"a": 1, "b": 2, "c": 0}
    assert wal.topic_entry_count("a", consumer="other") == 0


def test_seek(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    wal.batch_append_for_topic("t", [b"%d" % i for i in range(5)])
    assert payloads(drain(wal, "t")) == [b"0", b"1", b"2", b"3", b"4"]
    wal.seek("t", 2)
    assert wal.topic_entry_count("t") == 3
    assert wal.read_next("t") == Entry(b"2", 2)
    wal.seek("t", 5)
    assert wal.read_next("t") is None
    assert wal.topic_entry_count("t") == 0
    wal.seek("t", 0)
    assert wal.batch_read_for_topic("t", 2) == [Entry(b"0", 0), Entry(b"1", 1)]
    wal.seek("t", 4, consumer="c")
    assert wal.read_next("t", consumer="c") == Entry(b"4", 4)
    assert wal.read_next("t") == Entry(b"2", 2)
    for bad in (-1, 6, 100):
        with pytest.raises(OffsetOutOfRangeError):
            wal.seek("t", bad)
    with pytest.raises(OffsetOutOfRangeError):
        wal.seek("unknown", 1)
    wal.seek("unknown", 0)
    # seek is durable
    wal.seek("t", 1)
    wal.close()
    wal = open_walrus()
    assert wal.read_next("t") == Entry(b"1", 1)
    assert wal.read_next("t", consumer="c") is None


def test_entries_larger_than_a_block(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    sizes = [4096, 4097, 10_000, 3 * 4096 + 1, 100, 65_536]
    blobs = [os.urandom(n) for n in sizes]
    for i, blob in enumerate(blobs):
        assert wal.append_for_topic("t", blob) == i
    r = wal.batch_append_for_topic("t", blobs)
    assert r == range(len(blobs), 2 * len(blobs))
    expected = [Entry(b, i) for i, b in enumerate(blobs + blobs)]
    assert wal.batch_read_for_topic("t", 10**9, start_offset=0) == expected
    wal.close()
    wal = open_walrus()
    assert drain(wal, "t") == expected


def test_tens_of_mib_entry_roundtrip(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    big = os.urandom(1024) * (20 * 1024)  # 20 MiB
    big = big[:-7] + b"tailend"
    assert wal.append_for_topic("big", b"before") == 0
    assert wal.append_for_topic("big", big) == 1
    assert wal.append_for_topic("big", b"after") == 2
    got = wal.read_next("big", checkpoint=False)
    assert got == Entry(b"before", 0)
    assert wal.batch_read_for_topic("big", 1, start_offset=1) == [Entry(big, 1)]
    wal.close()
    wal = open_walrus()
    got_all = drain(wal, "big")
    assert [e.offset for e in got_all] == [0, 1, 2]
    assert got_all[1].data == big
    assert got_all[2].data == b"after"


@pytest.mark.parametrize(
    "consistency",
    [
        ReadConsistency.strictly_at_once(),
        ReadConsistency.at_least_once(persist_every=3),
        ReadConsistency.at_least_once(persist_every=1000),
    ],
    ids=["strict", "alo3", "alo1000"],
)
def test_clean_close_replays_nothing(open_walrus: OpenWalrus, consistency: ReadConsistency) -> None:
    wal = open_walrus(consistency=consistency)
    wal.batch_append_for_topic("t", [b"%d" % i for i in range(10)])
    wal.append_for_topic("u", b"u0")
    assert payloads([wal.read_next("t") for _ in range(2)]) == [b"0", b"1"]  # type: ignore[misc]
    assert payloads(wal.batch_read_for_topic("t", 2)) == [b"2", b"3"]
    assert wal.read_next("t", consumer="c") == Entry(b"0", 0)
    wal.close()
    wal = open_walrus(consistency=consistency)
    assert wal.topic_entry_counts() == {"t": 6, "u": 1}
    assert wal.read_next("t") == Entry(b"4", 4)
    assert wal.read_next("t", consumer="c") == Entry(b"1", 1)
    assert wal.read_next("u") == Entry(b"u0", 0)
    wal.close()
    wal = open_walrus(consistency=consistency)
    assert wal.read_next("t") == Entry(b"5", 5)
    assert wal.read_next("u") is None


def test_data_persists_across_reopen(open_walrus: OpenWalrus) -> None:
    wal = open_walrus()
    expected = []
    for i in range(300):
        payload = f"entry-{i}-".encode() * (i % 7)
        wal.append_for_topic(f"topic-{i % 3}", payload)
        expected.append(payload)
    wal.close()
    wal = open_walrus()
    for t in range(3):
        assert payloads(drain(wal, f"topic-{t}")) == expected[t::3]
    assert wal.append_for_topic("topic-0", b"more") == 100
