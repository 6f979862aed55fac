"""Named consumers: independent durable cursors per (topic, consumer)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.reading import drain
from helpers.self_kill import run_then_kill

from walrus_core import Entry, ReadConsistency, Walrus

OpenWal = Callable[..., Walrus]

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
JOIN_TIMEOUT = 60.0


def fill(wal: Walrus, topic: str, n: int, size: int = 0) -> list[Entry]:
    data = [(b"%s-%05d-" % (topic.encode(), i)).ljust(size, b".") for i in range(n)]
    r = wal.batch_append_for_topic(topic, data)
    return [Entry(d, o) for d, o in zip(data, r, strict=True)]


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"


# --- independence -----------------------------------------------------------------------------


def test_two_consumers_each_read_whole_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected = fill(wal, "t", 40, size=300)  # several blocks
    assert drain(wal, "t", consumer="billing") == expected
    assert drain(wal, "t", consumer="audit") == expected
    assert drain(wal, "t") == expected
    assert drain(wal, "t", consumer="billing") == []


def test_consumers_are_independent(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected = fill(wal, "t", 10)
    assert [wal.read_next("t", consumer="a") for _ in range(3)] == expected[:3]
    assert wal.batch_read_for_topic("t", 10_000, consumer="b") == expected
    assert wal.topic_entry_count("t", consumer="a") == 7
    assert wal.topic_entry_count("t", consumer="b") == 0
    assert wal.topic_entry_count("t", consumer="never") == 10
    assert wal.topic_entry_count("t") == 10
    assert wal.topic_entry_counts() == {"t": 10}
    assert wal.read_next("t") == expected[0]
    assert wal.topic_entry_count("t", consumer="a") == 7
    wal.seek("t", 9, consumer="a")
    assert wal.read_next("t", consumer="a") == expected[9]
    assert wal.read_next("t", consumer="b") is None
    assert wal.read_next("t", consumer="never") == expected[0]
    assert wal.read_next("t", consumer="never", checkpoint=False) == expected[1]
    assert wal.read_next("t") == expected[1]


def test_consumer_cursors_are_per_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    t1 = fill(wal, "one", 5)
    t2 = fill(wal, "two", 5)
    assert drain(wal, "one", consumer="c") == t1
    assert wal.topic_entry_count("two", consumer="c") == 5
    assert wal.read_next("two", consumer="c") == t2[0]
    assert wal.read_next("unknown", consumer="c") is None
    assert wal.topic_entry_count("unknown", consumer="c") == 0
    assert wal.batch_read_for_topic("unknown", 100, consumer="c") == []


def test_consumer_sees_later_appends(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.read_next("t", consumer="c") is None
    wal.append_for_topic("t", b"first")
    assert wal.read_next("t", consumer="c") == Entry(b"first", 0)
    assert wal.read_next("t", consumer="c") is None
    wal.batch_append_for_topic("t", [b"second", b"third"])
    assert wal.batch_read_for_topic("t", 100, consumer="c") == [
        Entry(b"second", 1),
        Entry(b"third", 2),
    ]


# --- durability -------------------------------------------------------------------------------


def test_consumer_cursors_persist_across_reopen(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected = fill(wal, "t", 30, size=200)
    consumers = {f"consumer-{i}": i for i in range(25)}
    for name, n in consumers.items():
        if n:
            got = wal.batch_read_for_topic("t", 200 * n, consumer=name)
            assert got == expected[:n]
    wal.read_next("t")
    wal.close()
    wal = open_wal()
    for name, n in consumers.items():
        assert wal.topic_entry_count("t", consumer=name) == 30 - n
        assert wal.read_next("t", consumer=name) == expected[n]
    assert wal.read_next("t") == expected[1]
    wal.close()
    wal = open_wal()
    for name, n in consumers.items():
        assert wal.read_next("t", consumer=name) == expected[n + 1]


def test_seek_of_consumer_persists(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected = fill(wal, "t", 8)
    assert drain(wal, "t", consumer="c") == expected
    wal.seek("t", 2, consumer="c")
    wal.close()
    wal = open_wal()
    assert wal.read_next("t", consumer="c") == expected[2]
    assert wal.read_next("t") == expected[0]


def test_strict_consumer_cursor_survives_sigkill(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(10)])\n"
        "for _ in range(3): wal.read_next('t', consumer='a')\n"
        "wal.batch_read_for_topic('t', 5, consumer='b')\n"
        "wal.read_next('t', consumer='b')\n"
    )
    run_then_kill(wal_dir, backend_name, code, None)
    wal = open_wal()
    assert wal.read_next("t", consumer="a") == Entry(b"3", 3)
    assert wal.read_next("t", consumer="b") == Entry(b"6", 6)
    assert wal.read_next("t") == Entry(b"0", 0)


def test_at_least_once_counts_per_consumer(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    # persist_every=2: one read by each of two consumers must not add up to a persist.
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(10)])\n"
        "wal.read_next('t', consumer='a')\n"
        "wal.read_next('t', consumer='b')\n"
        "wal.read_next('t')\n"
        "for _ in range(3): wal.read_next('t', consumer='c')\n"
    )
    run_then_kill(wal_dir, backend_name, code, 2)
    wal = open_wal(consistency=ReadConsistency.at_least_once(persist_every=2))
    assert wal.read_next("t", consumer="a") == Entry(b"0", 0)
    assert wal.read_next("t", consumer="b") == Entry(b"0", 0)
    assert wal.read_next("t") == Entry(b"0", 0)
    assert wal.read_next("t", consumer="c") == Entry(b"2", 2)


def test_at_least_once_batch_reads_persist_by_entry_count(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    # persist_every=10, entries of 10 bytes: each batch read of budget 50 consumes 5 entries.
    # consumer a: 5 + 5 -> persisted at 10, then 5 more not persisted -> resumes at 10.
    # consumer b: 5 -> not persisted -> resumes at 0.
    # consumer c: one batch of 12 -> persisted at 12.
    # default: read_next x9 then a batch of 5 -> 14 >= 10 -> persisted at 14.
    code = (
        "wal.batch_append_for_topic('t', [b'%010d' % i for i in range(40)])\n"
        "for _ in range(3): assert len(wal.batch_read_for_topic('t', 50, consumer='a')) == 5\n"
        "assert len(wal.batch_read_for_topic('t', 50, consumer='b')) == 5\n"
        "assert len(wal.batch_read_for_topic('t', 120, consumer='c')) == 12\n"
        "for _ in range(9): wal.read_next('t')\n"
        "assert len(wal.batch_read_for_topic('t', 50)) == 5\n"
        "print('ok')\n"
    )
    assert run_then_kill(wal_dir, backend_name, code, 10).split() == ["ok"]
    wal = open_wal(consistency=ReadConsistency.at_least_once(persist_every=10))
    assert wal.read_next("t", consumer="a") == Entry(b"%010d" % 10, 10)
    assert wal.read_next("t", consumer="b") == Entry(b"%010d" % 0, 0)
    assert wal.read_next("t", consumer="c") == Entry(b"%010d" % 12, 12)
    assert wal.read_next("t") == Entry(b"%010d" % 14, 14)
    assert wal.topic_entry_count("t", consumer="a") == 29
    assert wal.topic_entry_count("t", consumer="b") == 39


@pytest.mark.parametrize("persist_every", [0, -3, 1])
def test_at_least_once_below_one_behaves_as_one(
    wal_dir: Path, backend_name: str, open_wal: OpenWal, persist_every: int
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(5)])\n"
        "wal.read_next('t', consumer='c')\n"
        "wal.read_next('t', consumer='c')\n"
        "wal.read_next('t')\n"
    )
    run_then_kill(wal_dir, backend_name, code, persist_every)
    wal = open_wal(consistency=ReadConsistency.at_least_once(persist_every=persist_every))
    assert wal.read_next("t", consumer="c") == Entry(b"2", 2)
    assert wal.read_next("t") == Entry(b"1", 1)


def test_at_least_once_clean_close_persists_every_consumer(open_wal: OpenWal) -> None:
    alo = ReadConsistency.at_least_once(persist_every=1000)
    wal = open_wal(consistency=alo)
    expected = fill(wal, "t", 20)
    for i in range(5):
        for _ in range(i):
            wal.read_next("t", consumer=f"c{i}")
    wal.batch_read_for_topic("t", 1000, consumer="batch")
    wal.close()
    wal = open_wal(consistency=alo)
    for i in range(5):
        assert wal.read_next("t", consumer=f"c{i}") == expected[i]
    assert wal.read_next("t", consumer="batch") is None
    assert wal.topic_entry_count("t", consumer="batch") == 0


# --- sharing one consumer's cursor ------------------------------------------------------------


@pytest.mark.parametrize("consumer", [None, "shared"])
def test_read_next_and_batch_read_interleave(open_wal: OpenWal, consumer: str | None) -> None:
    wal = open_wal()
    expected = fill(wal, "t", 100, size=16)  # "t-00000-" padded to 16 bytes
    seen: list[Entry] = []
    rounds = 0
    while len(seen) < 100:
        rounds += 1
        assert rounds < 100
        got = wal.batch_read_for_topic("t", 150, consumer=consumer)  # 9 entries of 16 bytes
        assert len(got) == min(9, 100 - len(seen))
        seen.extend(got)
        for _ in range(5):
            entry = wal.read_next("t", consumer=consumer)
            if entry is not None:
                seen.append(entry)
        peek = wal.batch_read_for_topic("t", 10_000, False, consumer=consumer)
        assert peek == expected[len(seen) :]
    assert seen == expected
    assert wal.read_next("t", consumer=consumer) is None
    assert wal.topic_entry_count("t", consumer=consumer) == 0


@pytest.mark.parametrize("mode", ["read_next", "batch", "mixed"])
def test_concurrent_readers_of_one_consumer_get_each_entry_once(
    open_wal: OpenWal, mode: str
) -> None:
    wal = open_wal()
    n = 600
    expected = fill(wal, "t", n, size=40)
    results: list[list[Entry]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def reader(idx: int) -> None:
        try:
            use_batch = mode == "batch" or (mode == "mixed" and idx % 2 == 0)
            while True:
                if use_batch:
                    got = wal.batch_read_for_topic("t", 40 * (idx + 1), consumer="workers")
                    if not got:
                        return
                    results[idx].extend(got)
                else:
                    entry = wal.read_next("t", consumer="workers")
                    if entry is None:
                        return
                    results[idx].append(entry)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    join_all(threads)
    assert errors == []
    for got in results:
        offsets = [e.offset for e in got]
        assert offsets == sorted(offsets)
    merged = sorted((e for got in results for e in got), key=lambda e: e.offset)
    assert merged == expected
    assert wal.topic_entry_count("t", consumer="workers") == 0
    assert wal.topic_entry_count("t") == n


def test_concurrent_readers_while_writing(open_wal: OpenWal) -> None:
    wal = open_wal()
    n_single, n_batches, batch_len = 200, 40, 5
    total = n_single + n_batches * batch_len
    results: list[list[Entry]] = [[] for _ in range(3)]
    errors: list[BaseException] = []
    lock = threading.Lock()
    count = [0]
    writers_done = threading.Event()

    def single_writer() -> None:
        try:
            for i in range(n_single):
                wal.append_for_topic("t", b"s%05d" % i)
        except BaseException as exc:
            errors.append(exc)

    def batch_writer() -> None:
        try:
            for b in range(n_batches):
                wal.batch_append_for_topic("t", [b"b%03d-%d" % (b, j) for j in range(batch_len)])
        except BaseException as exc:
            errors.append(exc)

    def reader(idx: int) -> None:
        try:
            while True:
                with lock:
                    if count[0] >= total:
                        return
                if idx == 0:
                    got = wal.batch_read_for_topic("t", 64, consumer="c")
                else:
                    entry = wal.read_next("t", consumer="c")
                    got = [] if entry is None else [entry]
                if not got:
                    if writers_done.is_set() and not wal.batch_read_for_topic(
                        "t", 10_000, False, consumer="c"
                    ):
                        return
                    continue
                results[idx].extend(got)
                with lock:
                    count[0] += len(got)
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=single_writer), threading.Thread(target=batch_writer)]
    readers = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in writers + readers:
        t.start()
    join_all(writers)
    writers_done.set()
    join_all(readers)
    assert errors == []
    merged = sorted((e for got in results for e in got), key=lambda e: e.offset)
    assert [e.offset for e in merged] == list(range(total))
    assert wal.batch_read_for_topic("t", 10**9, start_offset=0) == merged
    # Order of each writer is kept; each batch is contiguous.
    data = [e.data for e in merged]
    singles = [d for d in data if d.startswith(b"s")]
    assert singles == [b"s%05d" % i for i in range(n_single)]
    for b in range(n_batches):
        first = data.index(b"b%03d-0" % b)
        assert data[first : first + batch_len] == [b"b%03d-%d" % (b, j) for j in range(batch_len)]


def test_many_consumers_on_many_topics_survive_reopen(open_wal: OpenWal) -> None:
    wal = open_wal()
    for t in range(10):
        fill(wal, f"topic{t}", 12)
    for t in range(10):
        for c in range(12):
            for _ in range((t + c) % 12):
                assert wal.read_next(f"topic{t}", consumer=f"c{c}") is not None
    wal.close()
    wal = open_wal()
    for t in range(10):
        for c in range(12):
            k = (t + c) % 12
            assert wal.topic_entry_count(f"topic{t}", consumer=f"c{c}") == 12 - k
            got = wal.read_next(f"topic{t}", consumer=f"c{c}")
            assert got is not None and got.offset == k


def test_empty_polls_do_not_regress_durable_cursor(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(5)])\n"
        "for _ in range(5): wal.read_next('t', consumer='c')\n"
        "for _ in range(3): assert wal.read_next('t', consumer='c') is None\n"
        "assert wal.batch_read_for_topic('t', 10, consumer='c') == []\n"
        "for _ in range(5): wal.read_next('t')\n"
        "assert wal.read_next('t') is None\n"
        "print('ok')\n"
    )
    assert run_then_kill(wal_dir, backend_name, code, None).split() == ["ok"]
    wal = open_wal()
    assert wal.read_next("t", consumer="c") is None
    assert wal.read_next("t") is None
    assert wal.topic_entry_count("t", consumer="c") == 0
    wal.append_for_topic("t", b"5")
    assert wal.read_next("t", consumer="c") == Entry(b"5", 5)


def test_seek_is_durable_across_sigkill(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(8)])\n"
        "wal.seek('t', 6, consumer='c')\n"
        "wal.seek('t', 3)\n"
        "for _ in range(5): wal.read_next('t', consumer='d')\n"
        "wal.seek('t', 1, consumer='d')\n"
    )
    run_then_kill(wal_dir, backend_name, code, 1000)
    wal = open_wal()
    assert wal.read_next("t", consumer="c") == Entry(b"6", 6)
    assert wal.read_next("t") == Entry(b"3", 3)
    assert wal.read_next("t", consumer="d") == Entry(b"1", 1)


def test_at_least_once_peeks_do_not_count(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(6)])\n"
        "for _ in range(4): wal.read_next('t', checkpoint=False, consumer='c')\n"
        "wal.batch_read_for_topic('t', 100, checkpoint=False, consumer='c')\n"
        "wal.batch_read_for_topic('t', 100, start_offset=0, consumer='c')\n"
        "wal.read_next('t', consumer='c')\n"
    )
    run_then_kill(wal_dir, backend_name, code, 2)
    wal = open_wal(consistency=ReadConsistency.at_least_once(persist_every=2))
    assert wal.read_next("t", consumer="c") == Entry(b"0", 0)


def test_cursor_table_grows_beyond_initial_slots(open_wal: OpenWal) -> None:
    wal = open_wal()
    fill(wal, "t", 3)
    n = 1100
    for i in range(n):
        assert wal.read_next("t", consumer=f"consumer-{i}") is not None
        if i % 2:
            assert wal.read_next("t", consumer=f"consumer-{i}") is not None
    wal.close()
    wal = open_wal()
    for i in range(n):
        got = wal.read_next("t", consumer=f"consumer-{i}", checkpoint=False)
        assert got is not None and got.offset == 1 + i % 2
