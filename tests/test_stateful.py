"""A stateful hypothesis test: Walrus against a simple in-memory model.

The machine drives one WAL directory through random sequences of appends, batch appends
(empty ones included), ``read_next`` (consuming or peeking), batch reads (random ``max_bytes``,
from a consumer's cursor or from a ``start_offset``), named consumers, ``seek``, clean
close/reopen and crash/reopen, and compares every answer with the model:

* a topic is a list of payloads; each (topic, consumer) has a cursor offset (0 until moved);
* batch reads follow the documented rule: entries in order, at most 2000, stopping before the
  payload total would exceed ``max_bytes``, at least one when any is available;
* close/reopen is clean: nothing is lost and nothing is replayed;
* crash/reopen goes through the fault layer (``walrus_faults``) under ``sync_each`` and
  ``strictly_at_once``: ``plan.power_loss()`` drops whatever a flush did not cover, which under
  ``sync_each`` must be nothing, so every acknowledged append and every checkpoint survives.
  The dead instance is closed (its writes fail) and the directory reopened; the tails are then
  unsealed, so recovery has to scan them.

Invariants after every step: ``topic_entry_count`` of every known (topic, consumer),
``topic_entry_counts()`` and ``topics()`` match the model.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import (
    Entry,
    FsyncSchedule,
    OffsetOutOfRangeError,
    ReadConsistency,
    StorageError,
    Walrus,
)
from walrus_core.plugins import BackendRegistry, default_registry

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
TOPICS = ("s-a", "s-b", "s-ü")
CONSUMERS: tuple[str | None, ...] = (None, "c1", "c2")
MAX_BATCH_ENTRIES = 2000

topics = st.sampled_from(TOPICS)
consumers = st.sampled_from(CONSUMERS)
payloads = st.one_of(
    st.binary(max_size=48),
    st.binary(min_size=48, max_size=600),
    # larger than a block (a multi-slot block), cheap to draw
    st.builds(lambda n, b: bytes([b]) * n, st.integers(3600, 6000), st.integers(0, 255)),
)


def expected_batch(data: list[bytes], start: int, max_bytes: int) -> list[Entry]:
    out: list[Entry] = []
    total = 0
    for offset in range(start, len(data)):
        size = len(data[offset])
        if out and total + size > max_bytes:
            break
        out.append(Entry(data[offset], offset))
        total += size
        if len(out) == MAX_BATCH_ENTRIES:
            break
    return out


class WalrusMachine(RuleBasedStateMachine):
    #: set by the test function (the backend under test)
    backend = "fd"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="walrus-stateful-"))
        self.data: dict[str, list[bytes]] = {t: [] for t in TOPICS}
        self.cursors: dict[tuple[str, str | None], int] = {}
        self.wal: Walrus | None = None
        self.plan: FaultPlan | None = None
        self.crashes = itertools.count()

    # -- lifecycle --------------------------------------------------------------------------
    def _open(self) -> None:
        self.plan = FaultPlan()
        layer = FaultLayer(self.plan, over=default_registry().select(self.backend))
        registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
        self.wal = Walrus(
            data_dir=self.dir,
            backend="faults",
            registry=registry,
            consistency=ReadConsistency.strictly_at_once(),
            fsync=FsyncSchedule.sync_each(),
            **GEOMETRY,
        )

    @initialize()
    def open_first(self) -> None:
        self._open()

    def teardown(self) -> None:
        if self.wal is not None:
            try:
                self.wal.close()
            except StorageError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def w(self) -> Walrus:
        assert self.wal is not None
        return self.wal

    def cursor(self, topic: str, consumer: str | None) -> int:
        return self.cursors.get((topic, consumer), 0)

    # -- writing ----------------------------------------------------------------------------
    @rule(topic=topics, data=payloads)
    def append(self, topic: str, data: bytes) -> None:
        offset = self.w.append_for_topic(topic, data)
        assert offset == len(self.data[topic])
        self.data[topic].append(data)

    @rule(topic=topics, batch=st.lists(payloads, max_size=12))
    def batch_append(self, topic: str, batch: list[bytes]) -> None:
        n = len(self.data[topic])
        got = self.w.batch_append_for_topic(topic, batch)
        assert got == range(n, n + len(batch))
        self.data[topic].extend(batch)

    # -- reading ----------------------------------------------------------------------------
    @rule(topic=topics, consumer=consumers, checkpoint=st.booleans())
    def read_next(self, topic: str, consumer: str | None, checkpoint: bool) -> None:
        pos = self.cursor(topic, consumer)
        got = self.w.read_next(topic, checkpoint, consumer=consumer)
        if pos >= len(self.data[topic]):
            assert got is None
            return
        assert got == Entry(self.data[topic][pos], pos)
        if checkpoint:
            self.cursors[(topic, consumer)] = pos + 1

    @rule(
        topic=topics,
        consumer=consumers,
        max_bytes=st.integers(1, 12_000),
        checkpoint=st.booleans(),
    )
    def batch_read(
        self, topic: str, consumer: str | None, max_bytes: int, checkpoint: bool
    ) -> None:
        pos = self.cursor(topic, consumer)
        got = self.w.batch_read_for_topic(topic, max_bytes, checkpoint, consumer=consumer)
        want = expected_batch(self.data[topic], pos, max_bytes)
        assert got == want
        if checkpoint and want:
            self.cursors[(topic, consumer)] = pos + len(want)

    @rule(topic=topics, max_bytes=st.integers(1, 12_000), data=st.data())
    def batch_read_from_offset(self, topic: str, max_bytes: int, data: st.DataObject) -> None:
        end = len(self.data[topic])
        start = data.draw(st.integers(0, end + 2), label="start_offset")
        checkpoint = data.draw(st.booleans(), label="checkpoint")
        if start > end:
            with pytest.raises(OffsetOutOfRangeError):
                self.w.batch_read_for_topic(topic, max_bytes, checkpoint, start_offset=start)
            return
        got = self.w.batch_read_for_topic(topic, max_bytes, checkpoint, start_offset=start)
        assert got == expected_batch(self.data[topic], start, max_bytes)  # no cursor moves

    @rule(topic=topics, consumer=consumers, data=st.data())
    def seek(self, topic: str, consumer: str | None, data: st.DataObject) -> None:
        end = len(self.data[topic])
        offset = data.draw(st.integers(0, end), label="offset")
        self.w.seek(topic, offset, consumer=consumer)
        if end:
            self.cursors[(topic, consumer)] = offset

    # -- lifecycle --------------------------------------------------------------------------
    @rule()
    def close_reopen(self) -> None:
        """A clean close: nothing lost, nothing replayed."""
        self.w.close()
        self._open()

    @rule()
    def crash_reopen(self) -> None:
        """Power loss under sync_each: every acknowledged append and checkpoint survives."""
        assert self.plan is not None
        self.plan.power_loss(next(self.crashes), partial=next(self.crashes) % 2 == 0)
        try:
            self.w.close()
        except StorageError:
            pass  # the machine is dead
        self._open()

    @precondition(lambda self: self.wal is not None)
    @rule()
    def flush(self) -> None:
        self.w.flush()

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def counts_match(self) -> None:
        if self.wal is None:
            return
        for topic in TOPICS:
            for consumer in CONSUMERS:
                want = len(self.data[topic]) - self.cursor(topic, consumer)
                assert self.w.topic_entry_count(topic, consumer=consumer) == want, (
                    topic,
                    consumer,
                )
        assert self.w.topic_entry_counts() == {
            t: len(d) - self.cursor(t, None) for t, d in self.data.items() if d
        }

    @invariant()
    def topics_match(self) -> None:
        if self.wal is None:
            return
        assert self.w.topics() == sorted(t for t, d in self.data.items() if d)


def test_walrus_against_model(backend_name: str) -> None:
    """Runs the state machine (see the module docstring) against the backend under test."""
    WalrusMachine.backend = backend_name
    run_state_machine_as_test(
        WalrusMachine,
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
