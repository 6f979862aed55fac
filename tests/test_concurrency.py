"""Concurrency: many threads on one Walrus instance.

1. ``test_mixed_threads_exactly_once``: 8 threads, for a bounded time (~2 s), mix single
   appends, batches, ``read_next`` and batch reads on shared and separate topics, with shared
   and separate consumers, under ``strictly_at_once``. Checks (named in the messages):
   ``acked_at_offset`` (each append's returned offset holds its payload), ``order_per_topic``
   (each producer's entries appear in its sequence order in every topic; a batch is
   contiguous), ``exactly_once`` (every entry is delivered exactly once per consumer, across
   all the threads sharing that consumer), ``consumer_order`` (each thread sees increasing
   offsets from a cursor), ``no_deadlock`` (every join has a timeout and the test fails if a
   thread is still alive), and after a reopen nothing is redelivered.
2. ``test_close_while_writing``: threads append, batch, read (cursor and ``start_offset``
   reads) and flush while two threads call ``close()``: ``no_crash``; ``closed_or_completed``
   (every call returns normally or raises ``WalrusClosedError``; any other exception fails);
   ``acked_present`` (after a reopen every acknowledged append and batch is present, and
   nothing else).
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import (
    FsyncSchedule,
    ReadConsistency,
    Walrus,
    WalrusClosedError,
)
from walrus_core.hookspecs import hookimpl
from walrus_core.plugins import BackendRegistry, default_registry

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
JOIN_TIMEOUT = 60.0
RUN_SECONDS = 2.0
THREADS = 8
TOPICS = ("shared", "pair-0", "pair-1", "solo")
CONSUMERS: tuple[str | None, ...] = (None, "ca", "cb")


def _join(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"no_deadlock: threads still running after {JOIN_TIMEOUT}s: {alive}"


def _payload(tid: int, seq: int, batch: int, index: int, rng: random.Random) -> bytes:
    head = b"%d:%d:%d:%d|" % (tid, seq, batch, index)
    return head + b"." * rng.choice((0, 10, 200, 1500))


def _parse(data: bytes) -> tuple[int, int, int, int]:
    head = data.split(b"|", 1)[0]
    tid, seq, batch, index = (int(x) for x in head.split(b":"))
    return tid, seq, batch, index


def _topics_for(tid: int) -> tuple[str, ...]:
    """Shared by all, a pair topic shared by half the threads, and "solo" (thread 0 only)."""
    own = ("pair-0",) if tid % 2 == 0 else ("pair-1",)
    return ("shared", *own, *(("solo",) if tid == 0 else ()))


def _read_all(wal: Walrus, topic: str) -> list[bytes]:
    out: list[bytes] = []
    while True:
        got = wal.batch_read_for_topic(topic, 1 << 22, checkpoint=False, start_offset=len(out))
        if not got:
            return out
        out.extend(e.data for e in got)


def test_mixed_threads_exactly_once(wal_dir: Path, backend_name: str) -> None:
    """See the module docstring (1)."""
    wal = Walrus(
        data_dir=wal_dir,
        backend=backend_name,
        consistency=ReadConsistency.strictly_at_once(),
        fsync=FsyncSchedule.no_fsync(),
        # The final check reads every topic from offset 0; reclamation racing these threads
        # is tested in test_reclaim.py.
        auto_reclaim=False,
        **GEOMETRY,
    )
    stop_at = time.monotonic() + RUN_SECONDS
    acked: list[list[tuple[str, int, bytes]]] = [[] for _ in range(THREADS)]
    batches: list[list[tuple[str, range]]] = [[] for _ in range(THREADS)]
    delivered: list[dict[tuple[str, str | None], list[tuple[int, bytes]]]] = [
        defaultdict(list) for _ in range(THREADS)
    ]
    errors: list[tuple[int, BaseException]] = []

    def worker(tid: int) -> None:
        rng = random.Random(f"conc:{tid}")
        seq = 0
        batch_id = 0
        try:
            while time.monotonic() < stop_at:
                r = rng.random()
                if r < 0.45:
                    topic = rng.choice(_topics_for(tid))
                    if rng.random() < 0.6:
                        data = _payload(tid, seq, -1, 0, rng)
                        seq += 1
                        acked[tid].append((topic, wal.append_for_topic(topic, data), data))
                    else:
                        n = rng.randint(1, 25)
                        items = []
                        for i in range(n):
                            items.append(_payload(tid, seq, batch_id, i, rng))
                            seq += 1
                        got = wal.batch_append_for_topic(topic, items)
                        assert len(got) == n
                        batches[tid].append((topic, got))
                        acked[tid].extend((topic, o, d) for o, d in zip(got, items, strict=True))
                        batch_id += 1
                else:
                    topic = rng.choice(TOPICS)
                    consumer = rng.choice(CONSUMERS)
                    if rng.random() < 0.5:
                        entry = wal.read_next(topic, consumer=consumer)
                        got_entries = [] if entry is None else [entry]
                    else:
                        got_entries = wal.batch_read_for_topic(
                            topic, rng.choice((1, 500, 5000, 1 << 20)), consumer=consumer
                        )
                    delivered[tid][(topic, consumer)].extend(
                        (e.offset, e.data) for e in got_entries
                    )
        except BaseException as exc:
            errors.append((tid, exc))

    threads = [
        threading.Thread(target=worker, args=(tid,), name=f"mixed-{tid}", daemon=True)
        for tid in range(THREADS)
    ]
    for t in threads:
        t.start()
    _join(threads)
    assert not errors, f"no_crash: thread errors: {errors!r}"

    contents = {topic: _read_all(wal, topic) for topic in TOPICS}
    total = sum(len(a) for a in acked)
    assert total > 100, f"harness: only {total} appends in {RUN_SECONDS}s"
    # acked_at_offset, and nothing but acknowledged entries.
    per_topic_acked: dict[str, int] = defaultdict(int)
    for tid_acks in acked:
        for topic, offset, data in tid_acks:
            assert contents[topic][offset] == data, (
                f"acked_at_offset: {topic!r} offset {offset} does not hold {data[:20]!r}"
            )
            per_topic_acked[topic] += 1
    for topic in TOPICS:
        assert len(contents[topic]) == per_topic_acked[topic], (
            f"{topic!r} holds {len(contents[topic])} entries, {per_topic_acked[topic]} acked"
        )
        # order_per_topic: each producer's sequence numbers increase along the topic.
        last: dict[int, int] = {}
        for offset, data in enumerate(contents[topic]):
            tid, seq, _batch, _index = _parse(data)
            assert seq > last.get(tid, -1), (
                f"order_per_topic: {topic!r} offset {offset}: producer {tid} seq {seq} after "
                f"{last.get(tid)}"
            )
            last[tid] = seq
    for tid_batches in batches:
        for topic, r in tid_batches:
            ids = {_parse(contents[topic][o])[2] for o in r}
            assert len(ids) == 1 and -1 not in ids, f"order_per_topic: batch {r} not contiguous"

    # Drain what is left, then exactly_once per (topic, consumer).
    leftovers: dict[tuple[str, str | None], list[tuple[int, bytes]]] = {}
    for topic in TOPICS:
        for consumer in CONSUMERS:
            rest = wal.batch_read_for_topic(topic, 1 << 24, consumer=consumer)
            leftovers[(topic, consumer)] = [(e.offset, e.data) for e in rest]
            assert wal.read_next(topic, consumer=consumer) is None
    for topic in TOPICS:
        for consumer in CONSUMERS:
            key = (topic, consumer)
            got: list[tuple[int, bytes]] = []
            for tid in range(THREADS):
                seen = delivered[tid].get(key, [])
                offsets = [o for o, _ in seen]
                assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), (
                    f"consumer_order: thread {tid} got {key} offsets out of order"
                )
                got.extend(seen)
            got.extend(leftovers[key])
            offsets = sorted(o for o, _ in got)
            dupes = sorted(o for o, n in Counter(offsets).items() if n > 1)
            assert not dupes, f"exactly_once: {key} delivered offsets {dupes[:10]} twice"
            assert offsets == list(range(len(contents[topic]))), (
                f"exactly_once: {key} delivered {len(offsets)} of {len(contents[topic])}"
            )
            for o, data in got:
                assert data == contents[topic][o], f"{key}: wrong bytes at {o}"
    wal.close()
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        for topic in TOPICS:
            for consumer in CONSUMERS:
                assert wal.topic_entry_count(topic, consumer=consumer) == 0, (
                    f"exactly_once: ({topic!r}, {consumer!r}) would redeliver after reopen"
                )


class CloseRace:
    """One round: 6 threads work on ``wal`` until two threads close it."""

    def __init__(self, wal: Walrus, round_no: int, acked: dict[str, list[tuple[int, bytes]]]):
        self.wal = wal
        self.round_no = round_no
        self.acked = acked
        self.lock = threading.Lock()
        self.unexpected: list[tuple[str, BaseException]] = []
        self.outcomes: dict[str, int] = defaultdict(int)
        self.ready = threading.Event()
        self.warmed = 0
        self.stop = threading.Event()

    def call(self, name: str, fn: Callable[[], Any]) -> bool:
        """Run one call; False once the instance is closed (or on an unexpected error)."""
        try:
            fn()
        except WalrusClosedError:
            with self.lock:
                self.outcomes["closed"] += 1
            return False
        except BaseException as exc:
            with self.lock:
                self.unexpected.append((name, exc))
            return False
        with self.lock:
            self.outcomes["completed"] += 1
        return True

    def _single(self, topic: str, data: bytes) -> None:
        offset = self.wal.append_for_topic(topic, data)
        with self.lock:
            self.acked[topic].append((offset, data))

    def _batch(self, topic: str, items: list[bytes]) -> None:
        got = self.wal.batch_append_for_topic(topic, items)
        with self.lock:
            self.acked[topic].extend(zip(got, items, strict=True))

    def _read(self, topic: str, tid: int) -> None:
        self.wal.read_next(topic, consumer=f"r{tid}")
        self.wal.batch_read_for_topic(topic, 4096, consumer="shared-reader")
        self.wal.batch_read_for_topic(topic, 4096, checkpoint=False, start_offset=0)
        self.wal.topic_entry_count(topic)
        self.wal.topics()

    def writer(self, tid: int) -> None:
        rng = random.Random(f"close:{self.round_no}:{tid}")
        topic = ("c-a", "c-b", "c-shared")[tid % 3]
        n = 0
        while not self.stop.is_set():
            n += 1
            kind = rng.random()
            data = b"r%d-t%d-%d" % (self.round_no, tid, n)
            if kind < 0.45:
                op = functools.partial(self._single, topic, data)
            elif kind < 0.7:
                items = [data + b"-%d" % i for i in range(rng.randint(1, 30))]
                op = functools.partial(self._batch, topic, items)
            elif kind < 0.8:
                op = self.wal.flush
            else:
                op = functools.partial(self._read, topic, tid)
            if not self.call("op", op):
                return
            if n == 20:
                with self.lock:
                    self.warmed += 1
                    if self.warmed == 6:
                        self.ready.set()

    def closer(self) -> None:
        if not self.ready.wait(JOIN_TIMEOUT):
            with self.lock:
                self.unexpected.append(("closer", AssertionError("writers made no progress")))
        self.call("close", self.wal.close)
        self.call("close", self.wal.close)  # idempotent

    def run(self) -> None:
        writers = [
            threading.Thread(target=self.writer, args=(tid,), name=f"w{tid}", daemon=True)
            for tid in range(6)
        ]
        closers = [
            threading.Thread(target=self.closer, name=f"closer{i}", daemon=True) for i in range(2)
        ]
        for t in writers + closers:
            t.start()
        _join(closers)
        self.stop.set()
        _join(writers)


def test_close_while_writing(wal_dir: Path, backend_name: str) -> None:
    """See the module docstring (2). Five rounds on the same directory; in each, 6 threads
    append, batch, read (cursor and start_offset reads) and flush until two other threads
    close the instance."""
    acked: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    for round_no in range(5):
        wal = Walrus(
            data_dir=wal_dir,
            backend=backend_name,
            fsync=(FsyncSchedule.no_fsync(), FsyncSchedule.milliseconds(5))[round_no % 2],
            **GEOMETRY,
        )
        race = CloseRace(wal, round_no, acked)
        race.run()
        assert not race.unexpected, (
            f"closed_or_completed: calls raised something else than WalrusClosedError: "
            f"{race.unexpected!r}"
        )
        assert wal.closed
        outcomes.update(race.outcomes)
        with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as check:
            for topic, entries in acked.items():
                content = _read_all(check, topic)
                for offset, data in entries:
                    assert offset < len(content) and content[offset] == data, (
                        f"acked_present: {topic!r} offset {offset} lost {data!r} (round {round_no})"
                    )
                assert len(content) == len(entries), (
                    f"acked_present: {topic!r} holds {len(content)} entries, "
                    f"{len(entries)} were acknowledged (round {round_no})"
                )
    assert outcomes["closed"] > 0 and outcomes["completed"] > 0, dict(outcomes)


class GateLayer(FaultLayer):
    """Holds one chosen operation of one chosen thread inside the storage layer until
    released, so that ``close()`` can run while that call is in flight."""

    def __init__(self, op: str, *, over: str) -> None:
        super().__init__(FaultPlan(), over=over)
        self.op = op
        self.thread: threading.Thread | None = None
        self.entered = threading.Event()
        self.go = threading.Event()

    def _gate(self, op: str) -> None:
        if (
            op == self.op
            and threading.current_thread() is self.thread
            and not self.entered.is_set()
        ):
            self.entered.set()
            self.go.wait(JOIN_TIMEOUT)

    @hookimpl
    def walrus_write(self, handle: Any, offset: int, buffers: Any, nbytes: int) -> None:
        self._gate("write")
        super().walrus_write(handle, offset, buffers, nbytes)

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        self._gate("read")
        return super().walrus_read(handle, offset, size)

    @hookimpl
    def walrus_flush(self, handle: Any) -> None:
        self._gate("flush")
        super().walrus_flush(handle)


IN_FLIGHT_CALLS: dict[str, tuple[str, Callable[[Walrus], Any]]] = {
    "append": ("write", lambda wal: wal.append_for_topic("g", b"in-flight")),
    "read_next": ("read", lambda wal: wal.read_next("g", consumer="gated")),
    "flush": ("flush", lambda wal: wal.flush()),
    "start_offset_read": (
        "read",
        lambda wal: wal.batch_read_for_topic("g", 1 << 20, checkpoint=False, start_offset=0),
    ),
}


@pytest.mark.parametrize("call", list(IN_FLIGHT_CALLS))
def test_close_during_an_in_flight_call(wal_dir: Path, backend_name: str, call: str) -> None:
    """closed_or_completed, deterministic: a call (append, read_next, flush() or a start_offset
    batch read) is held inside the storage layer (its write, read or fsync) while another
    thread runs close(); close() must not close the storage handles under it, and when
    released the call must complete (an append is then present after reopen) or raise
    WalrusClosedError, never a StorageError from a closed handle."""
    base = default_registry().select(backend_name)
    op, fn = IN_FLIGHT_CALLS[call]
    layer = GateLayer(op, over=base)
    registry = BackendRegistry.from_entry_points().with_plugins({"gate": layer})
    wal = Walrus(
        data_dir=wal_dir,
        backend="gate",
        registry=registry,
        fsync=FsyncSchedule.no_fsync(),
        **GEOMETRY,
    )
    wal.batch_append_for_topic("g", [b"one", b"two", b"three"])
    outcome: list[BaseException | None] = []

    def in_flight() -> None:
        try:
            fn(wal)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=in_flight, name="in-flight", daemon=True)
    layer.thread = caller
    closer = threading.Thread(target=wal.close, name="closer", daemon=True)
    try:
        caller.start()
        assert layer.entered.wait(JOIN_TIMEOUT), "harness: the call never reached the layer"
        closer.start()
        # close() waits for the in-flight call: release it once close() has started.
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not wal.closed:
            assert time.monotonic() < deadline, "close() did not start"
            time.sleep(0.001)
    finally:
        layer.go.set()
        _join([caller, closer])
    assert outcome, "no_crash: the in-flight call did not return"
    exc = outcome[0]
    assert exc is None or isinstance(exc, WalrusClosedError), (
        f"closed_or_completed: the in-flight {call} raised {exc!r}"
    )
    if call == "append":
        with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as check:
            assert _read_all(check, "g") == [b"one", b"two", b"three", b"in-flight"], (
                "acked_present: the append that completed during close() is missing"
            )
