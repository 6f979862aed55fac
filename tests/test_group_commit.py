"""Group commit under ``sync_each``: appends that wait while another thread's durable write
is in flight are written together in one durable write, each returning its own offset; a
failed group write fails every append in it and leaves none behind; every acknowledged append
survives a power loss."""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.reading import payload, read_all
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import FsyncSchedule, StorageError, Walrus
from walrus_core.plugins import BackendRegistry, default_registry

OpenWal = Callable[..., Walrus]
GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}


def faulty(wal_dir: Path, backend: str) -> tuple[Walrus, FaultPlan]:
    plan = FaultPlan()
    layer = FaultLayer(plan, over=default_registry().select(backend))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    wal = Walrus(
        wal_dir,
        backend="faults",
        registry=registry,
        fsync=FsyncSchedule.sync_each(),
        auto_reclaim=False,
        **GEOMETRY,
    )
    return wal, plan


def queue_appends(wal: Walrus, count: int) -> tuple[list[threading.Thread], dict[int, object]]:
    """Start ``count`` appending threads while the test holds the topic's writer lock, and wait
    until all of them are queued. Returns the threads and their outcomes by index (an offset
    or an exception)."""
    topic = wal._topics["t"]
    outcomes: dict[int, object] = {}

    def append(index: int) -> None:
        try:
            outcomes[index] = wal.append_for_topic("t", b"queued %d " % index * (index + 1))
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=append, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(topic.waiting) < count:
        assert time.monotonic() < deadline, "the appends never queued"
        time.sleep(0.001)
    return threads, outcomes


def test_waiting_appends_share_one_durable_write(wal_dir: Path, backend_name: str) -> None:
    wal, plan = faulty(wal_dir, backend_name)
    try:
        wal.append_for_topic("t", b"first")
        before = wal.stats().sync_groups
        topic = wal._topics["t"]
        with topic.lock:  # an append in flight, as the others arrive
            threads, outcomes = queue_appends(wal, 5)
            submits = plan.counts["batch_submit"]
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes.values()) == [1, 2, 3, 4, 5]  # type: ignore[type-var]
        assert wal.stats().sync_groups == before + 1
        assert plan.counts["batch_submit"] == submits + 1  # one write, synced
        for index, offset in outcomes.items():
            got = wal.batch_read_for_topic("t", 1 << 20, start_offset=offset)[0]  # type: ignore[arg-type]
            assert got.data == b"queued %d " % index * (index + 1)
        # Nothing is lost to a power loss: the group's write was durable before any returned.
        plan.power_loss()
    finally:
        with contextlib.suppress(StorageError):  # the dead instance cannot write its seals
            wal.close()
    with Walrus(wal_dir, backend=backend_name, auto_reclaim=False, **GEOMETRY) as again:
        got = read_all(again, "t")
        assert [e.offset for e in got] == list(range(6))
        assert {e.offset: e.data for e in got[1:]} == {
            offset: b"queued %d " % index * (index + 1)
            for index, offset in outcomes.items()  # type: ignore[misc]
        }


def test_a_failed_group_write_fails_every_append_in_it(wal_dir: Path, backend_name: str) -> None:
    wal, plan = faulty(wal_dir, backend_name)
    with wal:
        wal.append_for_topic("t", b"first")
        topic = wal._topics["t"]
        with topic.lock:
            threads, outcomes = queue_appends(wal, 4)
            plan.fail("batch_submit", torn=True, errno=errno.EIO)
        for thread in threads:
            thread.join(30)
        assert all(isinstance(o, StorageError) for o in outcomes.values()), outcomes
        assert wal.topic_info("t").end_offset == 1
        # The log stays usable, and the failed entries never come back.
        assert wal.append_for_topic("t", b"after") == 1
    with Walrus(wal_dir, backend=backend_name, auto_reclaim=False, **GEOMETRY) as again:
        assert [e.data for e in read_all(again, "t")] == [b"first", b"after"]


def test_threads_appending_durably_lose_nothing_to_a_power_loss(
    wal_dir: Path, backend_name: str
) -> None:
    """Four threads append as fast as they can; the power fails under them. Every append that
    returned is on disk afterwards with its bytes, at its offset."""
    wal, plan = faulty(wal_dir, backend_name)
    acked: dict[int, bytes] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def appender(name: str) -> None:
        n = 0
        while not stop.is_set():
            data = payload(name, n)
            try:
                offset = wal.append_for_topic("t", data)
            except StorageError:
                return  # the power is gone
            except BaseException as exc:
                errors.append(exc)
                return
            acked[offset] = data
            n += 1

    threads = [threading.Thread(target=appender, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    plan.power_loss(seed=3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    stats_groups = wal.stats().sync_groups
    with contextlib.suppress(StorageError):  # the dead instance cannot write its seals
        wal.close()
    assert len(acked) > 20
    with Walrus(wal_dir, backend=backend_name, auto_reclaim=False, **GEOMETRY) as again:
        found = {e.offset: e.data for e in read_all(again, "t")}
    assert {o: found.get(o) for o in acked} == acked
    assert stats_groups <= len(acked) + 4


def test_appends_and_topic_deletion_race(open_wal: OpenWal) -> None:
    """Durable appends from several threads while the topic is deleted under them: no append
    hangs or fails, and each offset holds the entry its append returned it for."""
    wal = open_wal(fsync=FsyncSchedule.sync_each(), auto_reclaim=False)
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def appender(name: str) -> None:
        try:
            for n in range(150):
                data = payload(name, n)
                results.append((wal.append_for_topic("t", data), data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        time.sleep(0.02)
        wal.delete_topic("t")
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(results) == 450
    offsets = [offset for offset, _data in results]
    assert len(set(offsets)) == len(offsets)  # a deleted name continues: no offset twice
    kept = {e.offset: e.data for e in read_all(wal, "t")}
    for offset, data in results:
        if offset in kept:
            assert kept[offset] == data


@pytest.mark.parametrize("threads", [1, 3])
def test_every_durable_append_gets_its_own_offset(open_wal: OpenWal, threads: int) -> None:
    wal = open_wal(fsync=FsyncSchedule.sync_each(), auto_reclaim=False)
    results: dict[str, list[int]] = {}

    def appender(name: str) -> None:
        results[name] = [wal.append_for_topic("t", payload(name, n)) for n in range(100)]

    workers = [threading.Thread(target=appender, args=(f"w{i}",)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    stats = wal.stats()
    assert stats.appends == 100 * threads
    assert 1 <= stats.sync_groups <= stats.appends
    by_offset = {e.offset: e.data for e in read_all(wal, "t")}
    assert len(by_offset) == 100 * threads
    for name, offsets in results.items():
        assert offsets == sorted(offsets)  # one thread's appends stay in order
        assert [by_offset[o] for o in offsets] == [payload(name, n) for n in range(100)]


# --- interrupted threads (KeyboardInterrupt from a signal handler, in the main thread) ------------


class _SlowWriter:
    """Stands in for the Writer: a durable write that takes a while, recorded in ``log``."""

    def __init__(self, interrupt_after_batch: bool = False) -> None:
        self.log: list[bytes] = []
        self.interrupt_after_batch = interrupt_after_batch

    def append(self, topic: Any, payload: bytes, length: int) -> int:
        time.sleep(0.3)
        self.log.append(payload)
        topic.end += 1
        return int(topic.end - 1)

    def append_batch(self, topic: Any, payloads: list[tuple[bytes, int]], atomic: bool) -> range:
        start = topic.end
        self.log.extend(p for p, _n in payloads)
        topic.end += len(payloads)
        if self.interrupt_after_batch and threading.current_thread() is threading.main_thread():
            self.interrupt_after_batch = False
            raise KeyboardInterrupt  # the entries are written and published, then the interrupt
        return range(start, topic.end)


def _interrupt_main_thread_in(seconds: float) -> Callable[[], None]:
    def raise_interrupt(*_args: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, raise_interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return lambda: signal.signal(signal.SIGALRM, previous)


def _group_commit(writer: _SlowWriter) -> tuple[Any, Any]:
    from walrus_core.config import Limits
    from walrus_core.groupcommit import GroupCommit
    from walrus_core.index import Topic

    return GroupCommit(writer, Limits()), Topic("t", b"t")  # type: ignore[arg-type]


def test_a_follower_interrupted_while_waiting_does_not_stall_the_topic() -> None:
    group, topic = _group_commit(_SlowWriter())
    leader = threading.Thread(target=group.append, args=(topic, b"a", 1, lambda: False))
    leader.start()
    time.sleep(0.05)
    restore = _interrupt_main_thread_in(0.1)
    try:
        with pytest.raises(KeyboardInterrupt):
            group.append(topic, b"b", 1, lambda: False)  # queued behind the leader
    finally:
        restore()
    leader.join(10)
    later: list[int] = []
    thread = threading.Thread(
        target=lambda: later.append(group.append(topic, b"c", 1, lambda: False)), daemon=True
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "an append hangs after an interrupted follower"
    assert later == [topic.end - 1] and topic.leader is None and not topic.waiting


def test_a_leader_interrupted_after_its_write_does_not_write_the_group_again() -> None:
    writer = _SlowWriter(interrupt_after_batch=True)
    group, topic = _group_commit(writer)
    got: dict[bytes, int] = {}

    def append(payload: bytes) -> None:
        got[payload] = group.append(topic, payload, 1, lambda: False)

    first = threading.Thread(target=append, args=(b"x",))
    first.start()
    time.sleep(0.05)
    others = [threading.Thread(target=append, args=(p,)) for p in (b"b", b"c")]

    def start_others() -> None:
        time.sleep(0.05)
        for thread in others:
            thread.start()

    threading.Thread(target=start_others).start()
    with contextlib.suppress(KeyboardInterrupt):  # the main thread leads the second group
        append(b"m")
    first.join(10)
    time.sleep(0.1)
    for thread in others:
        thread.join(10)
    assert sorted(writer.log) == sorted(set(writer.log)), writer.log  # nothing written twice
    assert topic.end == len(writer.log)
    for data, offset in got.items():
        assert writer.log[offset] == data
