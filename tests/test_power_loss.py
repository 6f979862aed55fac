"""Power loss through the fault layer (``walrus_faults``), stacked over the backend under test.

Each round opens the WAL through ``FaultLayer(plan, over=<backend>)``, runs random appends,
batches, reads (``read_next`` and batch reads, default and named consumers, checkpointing or
peeking) and ``flush()`` calls, then pulls the plug: ``plan.power_loss(seed, partial=...)``
undoes every write that no completed flush covered (all of it, or a random subset of its
512-byte sectors). The dead instance is closed (a ``StorageError`` is expected and ignored),
the directory is reopened *without* the layer and checked. Rounds reuse the directory, so later
rounds append to a recovered directory and must keep everything earlier rounds left.

Checks after every power loss (named in the assertion messages):

* ``sync_each_keeps_every_ack``: under ``sync_each`` every acknowledged append and batch is
  present, and nothing raises ``CorruptionError``;
* ``flushed_prefix_present``: under ``milliseconds(n)`` / ``no_fsync`` everything acknowledged
  before the last completed ``wal.flush()`` is present with its exact bytes (only writes newer
  than the last completed flush may be missing);
* ``nothing_unacknowledged``: a topic never holds more entries than were acknowledged;
* ``batch_all_or_nothing``: recovery never keeps a strict prefix of a batch (the recovered end
  of a topic never falls inside a batch), and a batch older than the last flush is whole;
* ``order_per_topic``: offsets are 0, 1, 2, ... and every entry sits at the offset its append
  returned;
* ``no_wrong_bytes``: every entry returned equals exactly what was appended at that offset,
  or reading it raises ``CorruptionError`` (never wrong or partial bytes);
* ``corruption_only_after_flush``: ``CorruptionError`` appears only for entries newer than the
  last completed flush, and never at all under ``sync_each`` or after a whole (non-partial)
  power loss under ``no_fsync``;
* ``no_redelivery_after_flush``: a consumer whose checkpoint was flushed (every checkpoint
  under ``sync_each`` + ``strictly_at_once``) does not get a consumed entry again;
  ``at_least_once(persist_every=N)`` under ``sync_each`` replays fewer than N entries plus at
  most the last batch read;
* ``never_skips``: a consumer's reopened position is never past what it consumed;
* ``recovery_idempotent``: a second reopen (nothing written in between) finds exactly what the
  first one did.

Default run: 30 power losses. ``WALRUS_SLOW=1`` (or ``-m slow``) adds 210 more.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import (
    CorruptionError,
    FsyncSchedule,
    ReadConsistency,
    StorageError,
    Walrus,
)
from walrus_core.plugin import hookimpl
from walrus_core.plugins import BackendRegistry, default_registry

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
TOPICS = ("pl-a", "pl-b", "pl-c")
CONSUMERS: tuple[str | None, ...] = (None, "c1", "c2")
SLOW = os.environ.get("WALRUS_SLOW", "") not in ("", "0")
SCHEDULES = ("sync_each", "ms5", "no_fsync")

# Power losses: len(SCHEDULES) * dirs * rounds (30 by default, 210 in the slow run).
DEFAULT_SIZE = (2, 5)
SLOW_SIZE = (10, 7)
OPS_PER_ROUND = 60

FIGURES: dict[str, int] = {
    "power_losses": 0,
    "partial": 0,
    "corruption_errors": 0,
    "batches_partly_corrupt": 0,
    "lost_after_flush": 0,
}


def fsync_of(schedule: str) -> FsyncSchedule:
    return {
        "sync_each": FsyncSchedule.sync_each,
        "ms5": lambda: FsyncSchedule.milliseconds(5),
        "no_fsync": FsyncSchedule.no_fsync,
    }[schedule]()


def base_backend(backend_name: str) -> str:
    """The backend the fault layer goes over: the first of a preference list."""
    return default_registry().select(backend_name)


def payload(rng: random.Random, topic: str, offset: int, tag: str) -> bytes:
    r = rng.random()
    if r < 0.1:
        return b""  # zero-length entries are legal
    if r < 0.75:
        size = rng.randint(0, 300)
    elif r < 0.97:
        size = rng.randint(300, 3000)
    else:
        size = rng.randint(4000, 9000)  # larger than a block: a multi-slot block
    head = f"<{topic}#{offset}/{tag}>".encode()
    body = rng.randbytes(min(size, 64))
    return head + (body * (size // 64 + 1))[:size] if body else head


@dataclass
class TopicModel:
    data: list[bytes] = field(default_factory=list)  # what each offset must hold
    batches: list[range] = field(default_factory=list)  # acknowledged batches (len >= 1)
    corrupt_ok: set[int] = field(default_factory=set)  # damaged in an earlier round
    flushed_end: int = 0  # offsets below it were covered by a completed flush


@dataclass
class ConsumerModel:
    pos: int = 0  # next offset to deliver (in memory)
    flushed: int = 0  # position at the last completed flush (or durable checkpoint)
    since_persist: int = 0  # at_least_once bookkeeping (mirrors the documented rule)
    last_batch: int = 0


@dataclass
class Model:
    topics: dict[str, TopicModel] = field(default_factory=lambda: {t: TopicModel() for t in TOPICS})
    consumers: dict[tuple[str, str | None], ConsumerModel] = field(default_factory=dict)

    def consumer(self, topic: str, name: str | None) -> ConsumerModel:
        return self.consumers.setdefault((topic, name), ConsumerModel())


def _check_entry(model: Model, topic: str, offset: int, data: bytes, where: str) -> None:
    tm = model.topics[topic]
    assert offset < len(tm.data), (
        f"nothing_unacknowledged: {where}: {topic!r} returned offset {offset}, only "
        f"{len(tm.data)} entries were acknowledged"
    )
    assert data == tm.data[offset], (
        f"no_wrong_bytes: {where}: {topic!r} offset {offset} returned {data[:40]!r} "
        f"({len(data)} bytes), expected {tm.data[offset][:40]!r} ({len(tm.data[offset])} bytes)"
    )


def _read_op(
    wal: Walrus, model: Model, rng: random.Random, strict: bool, persist_every: int, sync: bool
) -> None:
    topic = rng.choice(TOPICS)
    name = rng.choice(CONSUMERS)
    cm = model.consumer(topic, name)
    checkpoint = rng.random() < 0.8
    try:
        if rng.random() < 0.5:
            entry = wal.read_next(topic, checkpoint, consumer=name)
            got = [] if entry is None else [entry]
        else:
            got = wal.batch_read_for_topic(
                topic, rng.choice((1, 64, 700, 5000, 1 << 20)), checkpoint, consumer=name
            )
    except CorruptionError as exc:
        assert exc.offset == cm.pos and cm.pos in model.topics[topic].corrupt_ok, (
            f"no_wrong_bytes: live read of {topic!r} at {cm.pos} raised {exc} (offset "
            f"{exc.offset}), not a known damaged entry"
        )
        wal.seek(topic, cm.pos + 1, consumer=name)  # persisted at once, like a checkpoint
        cm.pos += 1
        cm.since_persist = 0
        if sync:
            cm.flushed = cm.pos
        return
    for i, e in enumerate(got):
        assert e.offset == cm.pos + i, (
            f"order_per_topic: {topic!r} consumer {name!r} at {cm.pos} got offset {e.offset}"
        )
        _check_entry(model, topic, e.offset, e.data, "live read")
    if not got:
        assert cm.pos >= len(model.topics[topic].data), (
            f"{topic!r} consumer {name!r} got nothing at {cm.pos} of "
            f"{len(model.topics[topic].data)}"
        )
    if checkpoint and got:
        cm.pos += len(got)
        cm.last_batch = len(got)
        if strict:
            if sync:
                cm.flushed = cm.pos
        else:
            cm.since_persist += len(got)
            if cm.since_persist >= persist_every:
                cm.since_persist = 0
                if sync:
                    cm.flushed = cm.pos


def _flush(wal: Walrus, model: Model) -> None:
    wal.flush()
    for tm in model.topics.values():
        tm.flushed_end = len(tm.data)
    for cm in model.consumers.values():
        cm.flushed = cm.pos
        cm.since_persist = 0


def run_round(
    data_dir: Path,
    backend_name: str,
    schedule: str,
    consistency: ReadConsistency,
    model: Model,
    rng: random.Random,
    seed: int,
) -> None:
    """One life of the WAL through the fault layer, ended by a power loss; then verify."""
    plan = FaultPlan()
    layer = FaultLayer(plan, over=base_backend(backend_name))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    sync = schedule == "sync_each"
    strict = consistency.is_strict
    persist_every = max(1, consistency.persist_every)
    wal = Walrus(
        data_dir=data_dir,
        backend="faults",
        registry=registry,
        consistency=consistency,
        fsync=fsync_of(schedule),
        **GEOMETRY,
    )
    assert wal.backend_chain[0] == "faults"
    try:
        for _ in range(rng.randint(OPS_PER_ROUND // 2, OPS_PER_ROUND)):
            r = rng.random()
            if r < 0.35:
                topic = rng.choice(TOPICS)
                tm = model.topics[topic]
                data = payload(rng, topic, len(tm.data), "s")
                got = wal.append_for_topic(topic, data)
                assert got == len(tm.data), f"order_per_topic: append returned {got}"
                tm.data.append(data)
            elif r < 0.6:
                topic = rng.choice(TOPICS)
                tm = model.topics[topic]
                n = rng.choice((0, 1, 2, 5, 20, 60))
                batch = [payload(rng, topic, len(tm.data) + i, "b") for i in range(n)]
                got_range = wal.batch_append_for_topic(topic, batch)
                first = len(tm.data)
                assert got_range == range(first, first + n), (
                    f"order_per_topic: batch of {n} returned {got_range}, expected "
                    f"range({first}, {first + n})"
                )
                tm.data.extend(batch)
                if n:
                    tm.batches.append(got_range)
            elif r < 0.92:
                _read_op(wal, model, rng, strict, persist_every, sync)
            else:
                _flush(wal, model)
            if sync:
                for tm in model.topics.values():
                    tm.flushed_end = len(tm.data)
        partial = rng.random() < 0.5
        plan.power_loss(seed, partial=partial)
    finally:
        try:
            wal.close()
        except StorageError:
            pass  # the machine is dead: its last writes fail
    FIGURES["power_losses"] += 1
    FIGURES["partial"] += partial
    verify(data_dir, backend_name, schedule, consistency, model, partial)


def _read_everything(wal: Walrus, topic: str, limit: int) -> tuple[dict[int, bytes], list[int]]:
    """Every entry of ``topic`` by offset reads, seeking past CorruptionError."""
    got: dict[int, bytes] = {}
    corrupt: list[int] = []
    off = 0
    for _ in range(limit):
        try:
            entries = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=off)
        except CorruptionError as exc:
            assert exc.offset == off, (
                f"{topic!r}: a read from {off} raised CorruptionError naming {exc.offset}: {exc}"
            )
            corrupt.append(off)
            off += 1
            continue
        if not entries:
            return got, corrupt
        for i, e in enumerate(entries):
            assert e.offset == off + i, f"order_per_topic: {topic!r} read from {off}: {e.offset}"
            got[e.offset] = e.data
        off = entries[-1].offset + 1
    pytest.fail(f"reading {topic!r} did not reach its end in {limit} reads")


def verify(
    data_dir: Path,
    backend_name: str,
    schedule: str,
    consistency: ReadConsistency,
    model: Model,
    partial: bool,
) -> None:
    """Reopen without the layer (twice), check every guarantee, fold the recovered state into
    ``model``."""
    sync = schedule == "sync_each"
    with Walrus(
        data_dir=data_dir, backend=backend_name, fsync=FsyncSchedule.no_fsync(), **GEOMETRY
    ) as wal:
        first = {t: _read_everything(wal, t, 10 * len(model.topics[t].data) + 10) for t in TOPICS}
    with Walrus(
        data_dir=data_dir, backend=backend_name, fsync=FsyncSchedule.no_fsync(), **GEOMETRY
    ) as wal:
        listed = wal.topics()
        for topic in TOPICS:
            tm = model.topics[topic]
            acked = len(tm.data)
            got, corrupt = _read_everything(wal, topic, 10 * acked + 10)
            assert (got, corrupt) == first[topic], (
                f"recovery_idempotent: [{schedule}, partial={partial}] {topic!r}: the first "
                f"reopen returned {len(first[topic][0])} entries (CorruptionError at "
                f"{first[topic][1]}), the second {len(got)} (CorruptionError at {corrupt})"
            )
            end = max([*got, *corrupt], default=-1) + 1
            assert wal.topic_entry_count(topic, consumer="never-read") == end, (
                f"{topic!r}: count of a fresh consumer != {end} entries read"
            )
            ctx = f"[{schedule}, partial={partial}] {topic!r}: {end} recovered of {acked} acked, "
            ctx += f"{tm.flushed_end} flushed"
            assert end <= acked, f"nothing_unacknowledged: {ctx}"
            assert sorted([*got, *corrupt]) == list(range(end)), f"order_per_topic: {ctx}"
            if sync:
                assert end == acked, f"sync_each_keeps_every_ack: {ctx}"
            assert end >= tm.flushed_end, f"flushed_prefix_present: {ctx}"
            for offset, data in got.items():
                _check_entry(model, topic, offset, data, f"after power loss {ctx}")
            for offset in corrupt:
                FIGURES["corruption_errors"] += offset not in tm.corrupt_ok
                assert offset in tm.corrupt_ok or offset >= tm.flushed_end, (
                    f"corruption_only_after_flush: offset {offset} raised CorruptionError; {ctx}"
                )
                if offset not in tm.corrupt_ok:
                    assert not sync, f"sync_each_keeps_every_ack: offset {offset} damaged; {ctx}"
                    assert partial or schedule != "no_fsync", (
                        f"corruption_only_after_flush: offset {offset} damaged after a whole "
                        f"(non-partial) power loss under no_fsync; {ctx}"
                    )
            for r in tm.batches:
                assert not r.start < end < r.stop, (
                    f"batch_all_or_nothing: batch {r.start}..{r.stop - 1} cut at {end}; {ctx}"
                )
                if r.stop <= tm.flushed_end:
                    bad = [o for o in r if o in corrupt and o not in tm.corrupt_ok]
                    assert not bad, f"batch_all_or_nothing: flushed batch {r} damaged at {bad}"
                elif r.stop <= end and any(o in corrupt for o in r):
                    FIGURES["batches_partly_corrupt"] += 1
            FIGURES["lost_after_flush"] += acked - end
            assert (topic in listed) == (end > 0), f"topics() {listed} vs {ctx}"

            for name in CONSUMERS:
                cm = model.consumers.get((topic, name))
                if cm is None:
                    continue
                pos = end - wal.topic_entry_count(topic, consumer=name)
                want = min(cm.flushed, end)
                assert pos >= want, (
                    f"no_redelivery_after_flush: consumer {name!r} of {topic!r} reopened at "
                    f"{pos}, its flushed/durable checkpoint was {cm.flushed}; {ctx}"
                )
                assert pos <= min(cm.pos, end), (
                    f"never_skips: consumer {name!r} of {topic!r} reopened at {pos}, it had "
                    f"consumed up to {cm.pos}; {ctx}"
                )
                if sync and not consistency.is_strict:
                    n = max(1, consistency.persist_every)
                    assert min(cm.pos, end) - pos < n + cm.last_batch, (
                        f"no_redelivery_after_flush: at_least_once({n}) replays "
                        f"{cm.pos - pos} entries (last batch {cm.last_batch}); {ctx}"
                    )
                cm.pos = cm.flushed = pos
                cm.since_persist = 0
                cm.last_batch = 0
            # Fold the recovered state into the model for the next round.
            del tm.data[end:]
            tm.batches = [r for r in tm.batches if r.stop <= end]
            tm.corrupt_ok = {o for o in tm.corrupt_ok | set(corrupt) if o < end}
            tm.flushed_end = end


def _slow_selected(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return SLOW or ("slow" in expr and "not slow" not in expr)


def run_rounds(
    tmp_path: Path, backend_name: str, schedule: str, dirs: int, rounds: int, tag: str
) -> None:
    before = FIGURES["power_losses"]
    for d in range(dirs):
        rng = random.Random(f"power-loss:{tag}:{schedule}:{d}")
        consistency = (
            ReadConsistency.strictly_at_once()
            if d % 2 == 0
            else ReadConsistency.at_least_once(persist_every=rng.choice((1, 3, 10)))
        )
        model = Model()
        data_dir = tmp_path / f"wal-{d}"
        for r in range(rounds):
            run_round(data_dir, backend_name, schedule, consistency, model, rng, seed=d * 100 + r)
        # After the last recovery the WAL keeps working: append, flush, read back.
        with Walrus(data_dir=data_dir, backend=backend_name, **GEOMETRY) as wal:
            for topic in TOPICS:
                n = len(model.topics[topic].data)
                assert wal.append_for_topic(topic, b"after") == n
                assert wal.batch_read_for_topic(topic, 100, False, start_offset=n)[0].data == (
                    b"after"
                )
    assert FIGURES["power_losses"] - before == dirs * rounds
    print(f"[{schedule}] power-loss figures so far: {FIGURES}")


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_power_loss_rounds(tmp_path: Path, backend_name: str, schedule: str) -> None:
    """Power losses (whole and partial) after random workloads; every check of the module
    docstring after each one, on a directory reused across rounds (10 per schedule)."""
    run_rounds(tmp_path, backend_name, schedule, *DEFAULT_SIZE, tag="default")


@pytest.mark.slow
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_power_loss_rounds_slow(
    tmp_path: Path, backend_name: str, schedule: str, request: pytest.FixtureRequest
) -> None:
    """The same with 70 power losses per schedule (210 in all); runs with ``WALRUS_SLOW=1``
    or ``-m slow``."""
    if not _slow_selected(request.config):
        pytest.skip("slow: set WALRUS_SLOW=1 or select -m slow")
    run_rounds(tmp_path, backend_name, schedule, *SLOW_SIZE, tag="slow")


class GatedLayer(FaultLayer):
    """Arranges the interleaving of a ``flush()`` call with the background flusher: once armed,
    the test thread's flush of a data file waits (up to a few seconds) until the background
    flusher is inside its flush of ``cursors.dat``, which then waits until the test releases it.
    If the engine serialises the two, the interleaving never happens and the test thread goes
    on after the wait."""

    def __init__(self, plan: FaultPlan, *, over: str) -> None:
        super().__init__(plan, over=over)
        self.owner = threading.current_thread()
        self.armed = False
        self.bg_armed = False
        self.bg_inside_cursors = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def walrus_flush(self, handle: object) -> None:
        kind = getattr(handle, "kind", None)
        if threading.current_thread() is self.owner:
            if self.armed and kind == "data":
                self.armed = False
                self.bg_armed = True
                self.bg_inside_cursors.wait(timeout=3)
        elif self.bg_armed and kind == "cursors":
            self.bg_armed = False
            self.bg_inside_cursors.set()
            self.release.wait(timeout=30)
        super().walrus_flush(handle)  # type: ignore[arg-type]


def test_flush_waits_for_an_in_flight_background_fsync(wal_dir: Path, backend_name: str) -> None:
    """Guarantee: ``flush()`` makes everything appended and checkpointed so far durable *before
    it returns*, also while the background flusher of ``milliseconds(n)`` is flushing the same
    files. The interleaving is forced with a layer: the test's flush() of the data file waits
    until the flusher is inside its fsync of cursors.dat; then the power goes out. The
    checkpoint flush() covered must survive (no_redelivery_after_flush)."""
    plan = FaultPlan()
    layer = GatedLayer(plan, over=base_backend(backend_name))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    wal = Walrus(
        data_dir=wal_dir,
        backend="faults",
        registry=registry,
        consistency=ReadConsistency.strictly_at_once(),
        fsync=FsyncSchedule.milliseconds(5),
        **GEOMETRY,
    )
    try:
        wal.batch_append_for_topic("t", [b"one", b"two", b"three"])
        wal.flush()
        entry = wal.read_next("t")
        assert entry is not None and entry.offset == 0
        layer.armed = True
        wal.flush()
        plan.power_loss(1)
    finally:
        layer.release.set()
        try:
            wal.close()
        except StorageError:
            pass
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        assert wal.topic_entry_count("t", consumer="fresh") == 3, "flushed_prefix_present"
        assert wal.topic_entry_count("t") == 2, (
            "no_redelivery_after_flush: the checkpoint of entry 0 was flushed by flush(), but "
            "the reopened cursor delivers entry 0 again"
        )
