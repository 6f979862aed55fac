"""Space comes back: reclamation of consumed blocks, retention, deleting consumers and topics.

Space is measured as allocated bytes (``st_blocks``), never file sizes (data files are sparse).
"""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.reading import fill, payload, read_all

from walrus_core import FsyncSchedule, OffsetOutOfRangeError, ReadConsistency, Walrus
from walrus_core.errors import UnknownTopicError
from walrus_core.info import Retention
from walrus_core.plugins import default_registry

#: The ``open_wal`` fixture's factory (see conftest.py).
OpenWal = Callable[..., Walrus]

BLOCK = 16 * 1024
GEOMETRY = {"block_size": BLOCK, "blocks_per_file": 4}
FILE = 4 * BLOCK


def allocated(path: Path) -> int:
    return sum(os.stat(path / name).st_blocks * 512 for name in os.listdir(path))


def overhead(path: Path) -> int:
    """Allocated bytes of everything but the data files."""
    return sum(
        os.stat(path / name).st_blocks * 512
        for name in os.listdir(path)
        if not name.startswith("data-")
    )


def data_files(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.startswith("data-"))


def drain(wal: Walrus, topic: str, consumer: str | None = None) -> int:
    got = 0
    while True:
        entries = wal.batch_read_for_topic(topic, 1 << 20, consumer=consumer)
        if not entries:
            return got
        for e in entries:
            assert e.data == payload(topic, e.offset)
        got += len(entries)


def test_consumed_files_are_deleted_and_stay_gone(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 2000)
    before = allocated(wal_dir)
    files_before = data_files(wal_dir)
    assert len(files_before) > 3
    assert drain(wal, "t") == 2000
    result = wal.reclaim()
    assert result.files_deleted == len(files_before) - 1  # the file still taking blocks stays
    assert result.bytes_freed > 0
    after = allocated(wal_dir)
    assert before - after >= result.bytes_freed * 0.9
    # What is left: at most one file (the one taking blocks: some backends allocate a file
    # whole), the cursor file and the metadata.
    assert after <= FILE + overhead(wal_dir)
    info = wal.topic_info("t")
    assert 0 < info.first_offset <= 2000
    assert wal.batch_read_for_topic("t", 1 << 20, start_offset=0)[0].offset == info.first_offset
    with pytest.raises(OffsetOutOfRangeError):
        wal.seek("t", 0)
    wal.close()
    # Reopen: nothing reclaimed comes back, the start is where it was, appends continue.
    wal = open_wal(auto_reclaim=False)
    again = wal.topic_info("t")
    assert (again.first_offset, again.end_offset) == (info.first_offset, 2000)
    got = read_all(wal, "t")
    assert [e.offset for e in got] == list(range(info.first_offset, 2000))
    assert all(e.data == payload("t", e.offset) for e in got)
    assert wal.append_for_topic("t", b"next") == 2000


def test_no_damage_warning_after_reopen(
    open_wal: OpenWal, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 1500)
    fill(wal, "u", 1500)
    drain(wal, "t")
    assert wal.reclaim().blocks_dropped > 0
    wal.close()
    with caplog.at_level(logging.WARNING, logger="walrus_core"):
        open_wal(auto_reclaim=False).close()
    assert not [r for r in caplog.records if "no readable block" in r.getMessage()]


def test_slow_topic_does_not_pin_the_others(open_wal: OpenWal, wal_dir: Path) -> None:
    """Four topics share every file; one is never consumed. Punching holes gives the other
    three topics' space back although no file can be deleted."""
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    topics = ["a", "b", "c", "slow"]
    for _round in range(3):
        for _ in range(300):
            for t in topics:
                fill(wal, t, 1)
        for t in topics[:3]:
            drain(wal, t)
        wal.reclaim()
    slow_bytes = wal.topic_info("slow").bytes_on_disk
    others = sum(wal.topic_info(t).bytes_on_disk for t in topics[:3])
    assert others <= 3 * BLOCK  # at most each one's head block
    # Disk in use: the slow topic's data, the three heads, one file being filled, metadata.
    assert allocated(wal_dir) <= slow_bytes + 3 * BLOCK + FILE + overhead(wal_dir)
    assert wal.stats().blocks_punched > 0
    assert drain(wal, "slow") == 900


def test_every_consumer_pins_and_deleting_one_releases(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 1000)
    drain(wal, "t")
    wal.seek("t", 10, consumer="laggard")  # it exists now, at 10
    assert wal.reclaim().blocks_dropped == 0
    assert wal.topic_info("t").first_offset == 0
    names = [c.name for c in wal.consumers("t")]
    assert names == [None, "laggard"]
    assert wal.consumers("t")[1].lag == 990
    assert wal.delete_consumer("t", "laggard") is True
    assert wal.delete_consumer("t", "laggard") is False
    assert wal.reclaim().blocks_dropped > 0
    assert [c.name for c in wal.consumers("t")] == [None]
    # The name used again starts at the oldest retained entry.
    start = wal.topic_info("t").first_offset
    entry = wal.read_next("t", consumer="laggard")
    assert entry is not None and entry.offset == start


def test_a_topic_nobody_consumed_keeps_everything(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 1000)
    wal.topic_entry_count("t")  # counting and peeking do not make a consumer
    wal.read_next("t", checkpoint=False)
    assert wal.reclaim().blocks_dropped == 0
    assert wal.topic_info("t").first_offset == 0


def test_unpersisted_progress_pins(open_wal: OpenWal) -> None:
    """At-least-once: entries read but not persisted are delivered again after a crash, so
    they must still be there."""
    wal = open_wal(
        auto_reclaim=False,
        consistency=ReadConsistency.at_least_once(persist_every=1_000_000),
        **GEOMETRY,
    )
    fill(wal, "t", 1000)
    drain(wal, "t")
    assert wal.reclaim().blocks_dropped == 0
    wal.flush()  # persists the cursor
    assert wal.reclaim().blocks_dropped > 0


def test_files_left_by_earlier_runs_are_reclaimed(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 2000)
    drain(wal, "t")
    wal.close()
    count = len(data_files(wal_dir))
    wal = open_wal(auto_reclaim=False)
    assert wal.reclaim().files_deleted == count - 1


def test_background_reclamation(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(20), **GEOMETRY)
    fill(wal, "t", 2000)
    drain(wal, "t")
    deadline = time.monotonic() + 20
    while len(data_files(wal_dir)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(data_files(wal_dir)) == 1
    assert wal.stats().files_deleted > 0


def test_retention_by_bytes_drops_unconsumed_data(
    open_wal: OpenWal, caplog: pytest.LogCaptureFixture
) -> None:
    wal = open_wal(
        auto_reclaim=False, topic_retention={"t": Retention(max_bytes=4 * BLOCK)}, **GEOMETRY
    )
    fill(wal, "t", 3000)
    fill(wal, "u", 3000)  # no retention: kept
    wal.seek("t", 5, consumer="reader")
    first = wal.read_next("t")
    assert first is not None and first.offset == 0  # the default cursor read one
    with caplog.at_level(logging.WARNING, logger="walrus_core"):
        result = wal.reclaim()
    info = wal.topic_info("t")
    assert info.bytes_on_disk <= 5 * BLOCK
    assert result.entries_dropped > 0
    assert info.first_offset > 5
    skipped = {c.name: c.skipped for c in wal.consumers("t")}
    assert skipped == {None: info.first_offset - 1, "reader": info.first_offset - 5}
    assert any("retention dropped" in r.getMessage() for r in caplog.records)
    entry = wal.read_next("t", consumer="reader")
    assert entry is not None and entry.offset == info.first_offset
    assert entry.data == payload("t", entry.offset)
    assert wal.topic_info("u").first_offset == 0


def test_instance_retention_bounds_all_topics(open_wal: OpenWal) -> None:
    wal = open_wal(auto_reclaim=False, retention=Retention(max_bytes=8 * BLOCK), **GEOMETRY)
    for _ in range(800):
        for t in ("a", "b", "c"):
            fill(wal, t, 1)
    wal.reclaim()
    total = sum(wal.topic_info(t).bytes_on_disk for t in ("a", "b", "c"))
    assert total <= 8 * BLOCK + 3 * BLOCK  # plus at most each topic's head
    for t in ("a", "b", "c"):
        got = read_all(wal, t)
        assert got and got[-1].offset == 799
        assert all(e.data == payload(t, e.offset) for e in got)


def test_retention_by_age_also_expires_an_idle_topic(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(auto_reclaim=False, retention=Retention(max_age_seconds=0.3), **GEOMETRY)
    fill(wal, "t", 500)
    wal.reclaim()  # notes the idle head
    time.sleep(0.5)
    wal.reclaim()  # everything sealed before 0.3 s ago goes; the idle head is sealed now
    time.sleep(0.5)
    result = wal.reclaim()
    info = wal.topic_info("t")
    assert (info.first_offset, info.end_offset, info.blocks) == (500, 500, 0), result
    assert wal.batch_read_for_topic("t", 100, start_offset=0) == []
    assert wal.append_for_topic("t", b"fresh") == 500
    wal.close()
    wal = open_wal(auto_reclaim=False)
    assert wal.batch_read_for_topic("t", 100, start_offset=0)[0].data == b"fresh"


def test_delete_topic_then_reuse_the_name(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "gone", 1500)
    fill(wal, "kept", 10)
    wal.read_next("gone", consumer="c1")
    assert wal.delete_topic("gone") is True
    assert wal.delete_topic("gone") is False
    assert wal.topics() == ["kept"]
    with pytest.raises(UnknownTopicError):
        wal.topic_info("gone")
    assert wal.consumers("gone") == [] or all(c.offset == 1500 for c in wal.consumers("gone"))
    assert len(data_files(wal_dir)) == 1
    wal.close()
    wal = open_wal(auto_reclaim=False)
    assert wal.topics() == ["kept"]
    assert wal.read_next("gone", consumer="c1") is None
    assert wal.append_for_topic("gone", b"new life") == 1500
    assert wal.topics() == ["gone", "kept"]
    entry = wal.read_next("gone", consumer="c1")
    assert entry is not None and (entry.offset, entry.data) == (1500, b"new life")
    wal.close()
    wal = open_wal(auto_reclaim=False)
    got = wal.batch_read_for_topic("gone", 1 << 20, start_offset=0)
    assert [(e.offset, e.data) for e in got] == [(1500, b"new life")]


def test_punch_refused_is_logged_once_and_files_still_go(
    wal_dir: Path, base_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    from walrus_faults import FaultLayer, FaultPlan

    plan = FaultPlan()
    registry = default_registry().with_plugins({"faults": FaultLayer(plan, over=base_backend)})
    wal = Walrus(
        wal_dir,
        backend="faults",
        registry=registry,
        fsync=FsyncSchedule.no_fsync(),
        auto_reclaim=False,
        **GEOMETRY,
    )
    plan.fail("discard", errno=errno.EOPNOTSUPP, repeat=True)
    try:
        for _ in range(400):
            fill(wal, "a", 1)
            fill(wal, "b", 1)
        drain(wal, "a")
        with caplog.at_level(logging.WARNING, logger="walrus_core"):
            assert wal.reclaim().blocks_punched == 0
            wal.reclaim()
        refusals = [r for r in caplog.records if "cannot punch holes" in r.getMessage()]
        assert len(refusals) == 1
        drain(wal, "b")
        assert wal.reclaim().files_deleted > 0
    finally:
        wal.close()


def test_reclaim_races_readers_writers_seeks_and_new_consumers(
    open_wal: OpenWal,
) -> None:
    """Reclamation in a tight loop while threads append, consume, peek from random offsets,
    seek and create consumers: every entry returned is exactly the one appended at its
    offset, and every consumer sees its offsets in order, without gaps it did not skip."""
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    stop = threading.Event()
    errors: list[BaseException] = []
    topics = ("x", "y")
    ends = dict.fromkeys(topics, 0)

    def writer(topic: str) -> None:
        try:
            offset = 0
            rng = random.Random(topic)
            while not stop.is_set():
                if rng.random() < 0.5:
                    assert wal.append_for_topic(topic, payload(topic, offset)) == offset
                    offset += 1
                else:
                    n = rng.randint(1, 20)
                    got = wal.batch_append_for_topic(
                        topic, [payload(topic, o) for o in range(offset, offset + n)]
                    )
                    assert got == range(offset, offset + n)
                    offset += n
                ends[topic] = offset
        except BaseException as exc:
            errors.append(exc)

    def consumer(topic: str, name: str | None) -> None:
        try:
            last = -1
            rng = random.Random(f"{topic}{name}")
            while not stop.is_set():
                if rng.random() < 0.02:
                    try:  # seeking back into reclaimed data is refused, else replays
                        target = max(0, last - rng.randint(0, 50))
                        wal.seek(topic, target, consumer=name)
                        last = target - 1
                    except OffsetOutOfRangeError:
                        pass
                    continue
                for e in wal.batch_read_for_topic(topic, rng.choice((1, 3000)), consumer=name):
                    assert e.data == payload(topic, e.offset)
                    assert e.offset == last + 1, (topic, name, last, e.offset)
                    last = e.offset
        except BaseException as exc:
            errors.append(exc)

    def peeker() -> None:
        try:
            rng = random.Random("peek")
            while not stop.is_set():
                topic = rng.choice(topics)
                end = ends[topic]
                start = rng.randint(0, max(0, end))
                for e in wal.batch_read_for_topic(topic, 4000, start_offset=start):
                    assert e.data == payload(topic, e.offset)
                    assert e.offset >= start
                fresh = f"new{rng.randint(0, 10**9)}"
                e2 = wal.read_next(topic, consumer=fresh, checkpoint=False)
                if e2 is not None:
                    assert e2.data == payload(topic, e2.offset)
        except BaseException as exc:
            errors.append(exc)

    def reclaimer() -> None:
        try:
            while not stop.is_set():
                wal.reclaim()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in topics]
    threads += [threading.Thread(target=consumer, args=(t, n)) for t in topics for n in (None, "b")]
    threads += [threading.Thread(target=peeker), threading.Thread(target=reclaimer)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    stats = wal.stats()
    assert stats.reclaimed_bytes > 0, (stats, wal.consumers("x"), wal.topic_info("x"))


_CHILD = r"""
import sys, random
from walrus_core import Walrus, FsyncSchedule
d, backend = sys.argv[1], sys.argv[2]
def payload(topic, offset):
    rng = random.Random(f"{topic}:{offset}")
    return f"{topic}:{offset}:".encode() + rng.randbytes(rng.randint(0, 600))
wal = Walrus(d, backend=backend, fsync=FsyncSchedule.sync_each(), auto_reclaim=False,
             block_size=16384, blocks_per_file=4)
end = wal.topic_info("t").end_offset if "t" in wal.topics() else 0
while True:
    for _ in range(50):
        wal.append_for_topic("t", payload("t", end)); end += 1
        print("ACK", end - 1, flush=True)
    for _ in range(30):
        e = wal.read_next("t")
        if e is None: break
        print("READ", e.offset, flush=True)
    wal.reclaim()
    print("START", wal.topic_info("t").first_offset, flush=True)
"""


def test_sigkill_during_reclamation(wal_dir: Path, backend_name: str) -> None:
    """Kill -9 at random moments of a loop that appends (sync_each), consumes and reclaims:
    every acknowledged entry the consumer had not read is there after reopen, exact; nothing
    reclaimed comes back; the consumer resumes right after what it read."""
    rng = random.Random(7)
    acked = -1
    read = -1
    start = 0
    for _round in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(wal_dir), backend_name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # What the child printed after the last line read above is still in the pipe.
        rest = proc.stdout.read()
        lines += rest.splitlines(keepends=True)
        for line in lines:
            if not line.endswith("\n"):
                continue  # cut short by the kill
            kind, value = line.split()
            if kind == "ACK":
                acked = int(value)
            elif kind == "READ":
                read = int(value)
            else:
                start = int(value)
        with Walrus(wal_dir, backend=backend_name, auto_reclaim=False) as wal:
            info = wal.topic_info("t")
            assert info.end_offset >= acked + 1
            # The child may have been killed after a read persisted its cursor and before it
            # printed the entry: one delivered entry may be missing from what we saw.
            assert start <= info.first_offset <= read + 2
            got = read_all(wal, "t")
            assert [e.offset for e in got] == list(range(info.first_offset, info.end_offset))
            assert all(e.data == payload("t", e.offset) for e in got)
            nxt = wal.read_next("t", checkpoint=False)
            resumed = info.end_offset if nxt is None else nxt.offset
            assert resumed in (read + 1, read + 2)  # strictly at once: nothing read again
        read = resumed - 1
        acked = max(acked, info.end_offset - 1)
        start = info.first_offset


def test_stats_and_info(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(auto_reclaim=False, fsync=FsyncSchedule.milliseconds(10), **GEOMETRY)
    fill(wal, "t", 10)
    wal.batch_append_for_topic("t", [b"a", b"bc"])
    wal.read_next("t")
    wal.batch_read_for_topic("t", 1 << 20, start_offset=0)
    wal.flush()
    stats = wal.stats()
    assert (stats.appends, stats.batches, stats.entries_appended) == (10, 1, 12)
    assert stats.bytes_appended == sum(len(payload("t", o)) for o in range(10)) + 3
    assert stats.reads == 1 + 12
    assert stats.fsyncs.count >= 1 and stats.fsyncs.max_seconds > 0
    assert sum(n for _bound, n in stats.fsyncs.buckets) == stats.fsyncs.count
    assert stats.backend_chain == wal.backend_chain
    info = wal.info()
    assert info.read_only is False and info.files == len(data_files(wal_dir))
    assert info.bytes_on_disk == allocated(wal_dir)
    (topic,) = info.topics
    assert (topic.name, topic.first_offset, topic.end_offset, topic.entries) == ("t", 0, 12, 12)
    assert topic.consumers[0].lag == 11
    # Deleting consumers and topics never makes a counter go back.
    wal.read_next("t", consumer="c")
    before = wal.stats()
    wal.delete_consumer("t", "c")
    wal.delete_topic("t")
    after = wal.stats()
    assert (after.appends, after.entries_appended, after.reads, after.bytes_read) == (
        before.appends,
        before.entries_appended,
        before.reads,
        before.bytes_read,
    )


def test_bad_retention_is_refused() -> None:
    from walrus_core.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        Retention(max_bytes=0)
    with pytest.raises(InvalidConfigError):
        Retention(max_age_seconds=float("nan"))
    with pytest.raises(TypeError):
        Retention(max_bytes="1")  # type: ignore[arg-type]


def test_hook_walrus_stats_report_reaches_observer_plugins(
    wal_dir: Path, backend_name: str
) -> None:
    from walrus_core.info import Stats
    from walrus_core.plugin import hookimpl

    seen: list[tuple[str, Stats]] = []

    class Exporter:
        @hookimpl
        def walrus_stats_report(self, data_dir: str, stats: Stats) -> None:
            seen.append((data_dir, stats))

    registry = default_registry().with_observers({"exporter": Exporter()})
    wal = Walrus(wal_dir, backend=backend_name, registry=registry)
    wal.append_for_topic("t", b"x")
    wal.close()
    assert [(d, s.appends) for d, s in seen] == [(wal.root, 1)]


def test_a_file_with_an_unreadable_header_is_kept(open_wal: OpenWal, wal_dir: Path) -> None:
    """Reclamation never deletes a file holding a slot recovery could not read: it may be the
    only copy of entries a repair could still save."""
    wal = open_wal(auto_reclaim=False, **GEOMETRY)
    fill(wal, "t", 2000)
    drain(wal, "t")
    wal.close()
    victim = wal_dir / data_files(wal_dir)[0]
    with open(victim, "r+b") as fh:  # damage both header copies of the file's first block
        fh.seek(0)
        fh.write(b"\xff" * 1000)
    wal = open_wal(auto_reclaim=False)
    files = len(data_files(wal_dir))
    result = wal.reclaim()
    assert victim.exists()
    assert result.files_deleted == files - 2  # neither it nor the file taking blocks
