"""Disk full and I/O errors, injected with the fault layer (``walrus_faults``) stacked over the
backend under test.

ENOSPC and EIO during a single append, a batch (torn and untorn, in one block or across
blocks), a checkpoint (the cursor write), ``flush()`` and the background flusher of
``milliseconds(5)``. Guarantees checked (issue 4, "Disk full and I/O errors"), each named in the
assertion messages:

* ``raises_storage_error``: the call raises ``StorageError`` (a ``WalrusError``) whose
  ``__cause__`` is the ``OSError`` and whose ``.errno`` is the injected errno;
* ``failed_write_absent``: the failed append or batch is absent, in this instance and after a
  reopen (clean, or after a crash: a power loss of the same instance, which leaves whatever
  part of the failed write landed on disk);
* ``nothing_earlier_lost``: every entry written before the failure reads back exactly;
* ``works_after_heal``: after ``plan.heal()`` appends and batches succeed again at the next
  offsets and read back, also after a reopen;
* ``failed_checkpoint_keeps_cursor``: a failed cursor write does not advance the cursor: the
  entry is delivered again (in this instance and after a reopen);
* ``background_error_reported``: a failed background fsync is never swallowed: the next call
  raises it (and does not do its work), or ``flush()`` raises it.
"""

from __future__ import annotations

import errno
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import (
    FsyncSchedule,
    ReadConsistency,
    StorageError,
    Walrus,
    WalrusError,
)
from walrus_core.plugins import BackendRegistry, default_registry

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
ERRNOS = pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
SCHEDULES = {
    "no_fsync": FsyncSchedule.no_fsync,
    "sync_each": FsyncSchedule.sync_each,
    "ms5": lambda: FsyncSchedule.milliseconds(5),
}
WAIT = 30.0  # seconds: a safety net when waiting for the background flusher

Expect = dict[str, list[bytes]]


def open_faulty(
    wal_dir: Path,
    backend: str,
    schedule: str = "no_fsync",
    consistency: ReadConsistency | None = None,
) -> tuple[Walrus, FaultPlan]:
    plan = FaultPlan()
    layer = FaultLayer(plan, over=default_registry().select(backend))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    wal = Walrus(
        data_dir=wal_dir,
        backend="faults",
        registry=registry,
        fsync=SCHEDULES[schedule](),
        consistency=consistency,
        **GEOMETRY,
    )
    return wal, plan


def baseline(wal: Walrus) -> Expect:
    """Entries written before any fault: singles and a batch on two topics."""
    expect: Expect = {"t": [], "u": []}
    for i in range(5):
        data = b"t-single-%d:" % i + bytes([i]) * (100 + 37 * i)
        assert wal.append_for_topic("t", data) == len(expect["t"])
        expect["t"].append(data)
    batch = [b"t-batch-%d:" % i + b"x" * (50 * i) for i in range(8)]
    assert wal.batch_append_for_topic("t", batch) == range(5, 13)
    expect["t"].extend(batch)
    for i in range(3):
        data = b"u-%d" % i
        wal.append_for_topic("u", data)
        expect["u"].append(data)
    return expect


def read_all(wal: Walrus, topic: str) -> list[bytes]:
    out: list[bytes] = []
    while True:
        got = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=len(out))
        if not got:
            return out
        assert [e.offset for e in got] == list(range(len(out), len(out) + len(got)))
        out.extend(e.data for e in got)


def check_state(wal: Walrus, expect: Expect, what: str) -> None:
    for topic, want in expect.items():
        got = read_all(wal, topic)
        assert got[: len(want)] == want[: len(got)] and len(got) >= len(want), (
            f"nothing_earlier_lost ({what}): {topic!r} holds {len(got)} entries, expected "
            f"{len(want)}"
        )
        assert got == want, (
            f"failed_write_absent ({what}): {topic!r} holds {len(got)} entries, expected "
            f"{len(want)}; extra: {[g[:20] for g in got[len(want) :]]}"
        )
        assert wal.topic_entry_count(topic, consumer="fresh") == len(want), what


def check_error(exc: BaseException, err: int) -> None:
    assert isinstance(exc, StorageError) and isinstance(exc, WalrusError), (
        f"raises_storage_error: got {type(exc).__name__}: {exc}"
    )
    assert isinstance(exc.__cause__, OSError), (
        f"raises_storage_error: __cause__ is {exc.__cause__!r}, not the OSError"
    )
    assert exc.__cause__.errno == err and exc.errno == err, (
        f"raises_storage_error: errno {exc.errno} / cause {exc.__cause__.errno}, expected {err}"
    )


def reopen_after(
    how: str, wal: Walrus, plan: FaultPlan, wal_dir: Path, backend: str, schedule: str
) -> tuple[Walrus, FaultPlan]:
    """Reopen cleanly, or after a crash (everything flushed first, then a power loss, so only
    what the failure itself left on disk is in question)."""
    if how == "clean":
        wal.close()
    else:
        plan.heal()
        wal.flush()
        plan.power_loss(0)
        try:
            wal.close()
        except StorageError:
            pass  # the dead machine cannot write its close records
    return open_faulty(wal_dir, backend, schedule)


def close_quietly(wal: Walrus) -> None:
    try:
        wal.close()
    except StorageError:
        pass  # a dead (power-lost) instance


def heal_and_continue(wal: Walrus, plan: FaultPlan, expect: Expect) -> None:
    """works_after_heal: single appends and a batch at the next offsets, read back."""
    plan.heal()
    for topic in ("t", "u"):
        data = b"after-heal-" + topic.encode()
        assert wal.append_for_topic(topic, data) == len(expect[topic]), "works_after_heal"
        expect[topic].append(data)
    batch = [b"after-heal-batch-%d" % i + b"y" * (300 * i) for i in range(15)]
    n = len(expect["t"])
    assert wal.batch_append_for_topic("t", batch) == range(n, n + 15), "works_after_heal"
    expect["t"].extend(batch)
    check_state(wal, expect, "after heal")


# --- single appends --------------------------------------------------------------------------

#: (case, payload size, nth write to fail, torn). A 3700-byte payload never fits the head
#: block, so that append writes: the old head's seal (1), the new block's header (2), the entry
#: (3).
APPEND_CASES = {
    "entry": (200, 1, False),
    "torn_entry": (200, 1, True),
    "new_block_seal": (3700, 1, False),
    "new_block_header": (3700, 2, False),
    "new_block_entry": (3700, 3, True),
}


@ERRNOS
@pytest.mark.parametrize("schedule", ["no_fsync", "sync_each"])
@pytest.mark.parametrize("case", list(APPEND_CASES))
@pytest.mark.parametrize("how", ["clean", "crash"])
def test_failed_single_append(
    wal_dir: Path, backend_name: str, err: int, schedule: str, case: str, how: str
) -> None:
    """A write of a single append fails (the entry itself, torn or not, or the block sealing /
    allocation it needs): raises_storage_error, failed_write_absent, nothing_earlier_lost,
    works_after_heal — in this instance, and after a clean or crash reopen."""
    size, nth, torn = APPEND_CASES[case]
    wal, plan = open_faulty(wal_dir, backend_name, schedule)
    try:
        expect = baseline(wal)
        plan.fail("write", nth=nth, errno=err, kind="data", torn=torn)
        with pytest.raises(WalrusError) as info:
            wal.append_for_topic("t", b"FAILED" * (size // 6))
        check_error(info.value, err)
        assert plan.injected, "the fault was not injected"
        check_state(wal, expect, f"{case}, same instance")
        wal, plan = reopen_after(how, wal, plan, wal_dir, backend_name, schedule)
        check_state(wal, expect, f"{case}, after a {how} reopen")
        heal_and_continue(wal, plan, expect)
        # The same, without a reopen in between: fail and heal in one instance.
        plan.fail("write", nth=nth, errno=err, kind="data", torn=torn)
        with pytest.raises(WalrusError) as info:
            wal.append_for_topic("t", b"FAILED" * (size // 6))
        check_error(info.value, err)
        heal_and_continue(wal, plan, expect)
        wal.close()
        wal, plan = open_faulty(wal_dir, backend_name, schedule)
        check_state(wal, expect, f"{case}, final reopen")
    finally:
        close_quietly(wal)


# --- batches ---------------------------------------------------------------------------------

#: (case, entries, entry size, op to fail, torn)
BATCH_CASES = {
    "one_block": (6, 100, "batch_submit", False),
    "one_block_torn": (6, 100, "batch_submit", True),
    "across_blocks": (30, 400, "batch_submit", False),
    "across_blocks_torn": (30, 400, "batch_submit", True),
    "block_allocation": (30, 400, "write", False),
}


@ERRNOS
@pytest.mark.parametrize("schedule", ["no_fsync", "sync_each"])
@pytest.mark.parametrize("case", list(BATCH_CASES))
@pytest.mark.parametrize("how", ["clean", "crash"])
def test_failed_batch(
    wal_dir: Path, backend_name: str, err: int, schedule: str, case: str, how: str
) -> None:
    """A batch fails (its vectored submission, torn or not, in one block or across blocks, or
    the allocation of a block it needs): raises_storage_error, the whole batch is absent
    (failed_write_absent: none of the parts that landed resurfaces, also after a crash
    reopen), nothing_earlier_lost, works_after_heal."""
    n, size, op, torn = BATCH_CASES[case]
    wal, plan = open_faulty(wal_dir, backend_name, schedule)
    try:
        expect = baseline(wal)
        batch = [b"FAILED-%03d:" % i + b"z" * size for i in range(n)]
        plan.fail(op, errno=err, kind="data", torn=torn)
        with pytest.raises(WalrusError) as info:
            wal.batch_append_for_topic("t", batch)
        check_error(info.value, err)
        assert plan.injected, "the fault was not injected"
        check_state(wal, expect, f"{case}, same instance")
        wal, plan = reopen_after(how, wal, plan, wal_dir, backend_name, schedule)
        check_state(wal, expect, f"{case}, after a {how} reopen")
        heal_and_continue(wal, plan, expect)
        plan.fail(op, errno=err, kind="data", torn=torn)
        with pytest.raises(WalrusError) as info:
            wal.batch_append_for_topic("u", batch)
        check_error(info.value, err)
        check_state(wal, expect, f"{case}, second failure")
        heal_and_continue(wal, plan, expect)
        wal, plan = reopen_after(how, wal, plan, wal_dir, backend_name, schedule)
        check_state(wal, expect, f"{case}, final {how} reopen")
    finally:
        close_quietly(wal)


# --- checkpoints -----------------------------------------------------------------------------

READS: dict[str, Callable[[Walrus, str | None], list[bytes]]] = {
    "read_next": lambda wal, c: [e.data for e in [wal.read_next("t", consumer=c)] if e],
    "batch_read": lambda wal, c: [e.data for e in wal.batch_read_for_topic("t", 250, consumer=c)],
}


@ERRNOS
@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("consumer", [None, "named"])
@pytest.mark.parametrize("mode", ["strict", "at_least_once_1"])
def test_failed_checkpoint_keeps_cursor(
    wal_dir: Path, backend_name: str, err: int, read: str, consumer: str | None, mode: str
) -> None:
    """The cursor write of a checkpointing read fails (FaultPlan.fail("write",
    kind="cursors")): raises_storage_error; failed_checkpoint_keeps_cursor: the cursor does not
    move, the same entries are delivered again after heal, and after a reopen the cursor is
    where the last successful checkpoint left it."""
    consistency = (
        ReadConsistency.strictly_at_once()
        if mode == "strict"
        else ReadConsistency.at_least_once(persist_every=1)
    )
    wal, plan = open_faulty(wal_dir, backend_name, "no_fsync", consistency)
    try:
        expect = baseline(wal)
        do_read = READS[read]
        first = do_read(wal, consumer)
        assert first == expect["t"][: len(first)] and first
        done = len(first)
        plan.fail("write", errno=err, kind="cursors")
        with pytest.raises(WalrusError) as info:
            do_read(wal, consumer)
        check_error(info.value, err)
        assert wal.topic_entry_count("t", consumer=consumer) == len(expect["t"]) - done, (
            "failed_checkpoint_keeps_cursor: the count moved"
        )
        peek = wal.read_next("t", checkpoint=False, consumer=consumer)
        assert peek is not None and peek.offset == done, "failed_checkpoint_keeps_cursor: peek"
        plan.heal()
        again = do_read(wal, consumer)
        assert again and again == expect["t"][done : done + len(again)], (
            "failed_checkpoint_keeps_cursor: the entry was not delivered again"
        )
        # A failed seek (also a cursor write) does not move the cursor either.
        plan.fail("write", errno=err, kind="cursors")
        with pytest.raises(WalrusError) as info:
            wal.seek("t", 0, consumer=consumer)
        check_error(info.value, err)
        plan.heal()
        delivered = done + len(again)
        assert wal.topic_entry_count("t", consumer=consumer) == len(expect["t"]) - delivered
        # A failure, then a crash: the durable cursor is the last successful checkpoint.
        plan.fail("write", errno=err, kind="cursors")
        with pytest.raises(WalrusError):
            do_read(wal, consumer)
        plan.heal()
        wal.flush()
        plan.power_loss(0)
        try:
            wal.close()
        except StorageError:
            pass
        wal, plan = open_faulty(wal_dir, backend_name, "no_fsync", consistency)
        assert wal.topic_entry_count("t", consumer=consumer) == len(expect["t"]) - delivered, (
            "failed_checkpoint_keeps_cursor: after a reopen the cursor is not at the last "
            "successful checkpoint"
        )
        check_state(wal, expect, "after the checkpoint failures")
    finally:
        close_quietly(wal)


# --- flush and the background flusher --------------------------------------------------------


@ERRNOS
@pytest.mark.parametrize("kind", ["data", "cursors"])
def test_failed_flush_raises(wal_dir: Path, backend_name: str, err: int, kind: str) -> None:
    """An fsync fails during flush() (data file or cursors.dat): raises_storage_error; nothing
    is lost; after heal, flush() succeeds and everything is durable (a power loss after it
    loses nothing)."""
    wal, plan = open_faulty(wal_dir, backend_name, "no_fsync")
    try:
        expect = baseline(wal)
        assert wal.read_next("u") is not None  # a checkpoint, so cursors.dat is dirty too
        plan.fail("flush", errno=err, kind=kind)
        with pytest.raises(WalrusError) as info:
            wal.flush()
        check_error(info.value, err)
        check_state(wal, expect, "after a failed flush")
        plan.heal()
        wal.flush()
        plan.power_loss(0)
        try:
            wal.close()
        except StorageError:
            pass
        wal, plan = open_faulty(wal_dir, backend_name, "no_fsync")
        check_state(wal, expect, "power loss after the healed flush")
        assert wal.topic_entry_count("u") == 2, "the flushed checkpoint was lost"
        heal_and_continue(wal, plan, expect)
    finally:
        close_quietly(wal)


@ERRNOS
@pytest.mark.parametrize("reported_by", ["append", "batch", "read_next", "flush"])
def test_failed_background_fsync_is_reported(
    wal_dir: Path, backend_name: str, err: int, reported_by: str
) -> None:
    """milliseconds(5): the background fsync fails. background_error_reported: a following
    call raises StorageError with the OSError as cause (calls that ran before the flusher
    recorded the failure succeed normally; an append or batch that reports it is not performed:
    failed_write_absent), or flush() raises it; it is reported once, and everything works
    afterwards (nothing_earlier_lost, works_after_heal)."""
    wal, plan = open_faulty(wal_dir, backend_name, "ms5")
    try:
        expect = baseline(wal)
        plan.fail("flush", errno=err, kind="data")
        wal.append_for_topic("u", b"dirty-again")  # make sure a data file needs a flush
        expect["u"].append(b"dirty-again")
        deadline = time.monotonic() + WAIT
        consumed = 0
        for attempt in itertools.count():
            assert time.monotonic() < deadline, (
                f"background_error_reported: no {reported_by} call reported the failed "
                f"background fsync within {WAIT}s (injected: {plan.injected})"
            )
            try:
                if reported_by == "append":
                    data = b"attempt-%d" % attempt
                    wal.append_for_topic("t", data)
                    expect["t"].append(data)
                elif reported_by == "batch":
                    batch = [b"attempt-%d-%d" % (attempt, i) for i in range(3)]
                    wal.batch_append_for_topic("t", batch)
                    expect["t"].extend(batch)
                elif reported_by == "read_next":
                    if wal.read_next("t") is not None:
                        consumed += 1
                else:
                    wal.flush()
            except WalrusError as exc:
                check_error(exc, err)
                break
            time.sleep(0.001)
        assert plan.injected, "the fault was not injected"
        assert wal.topic_entry_count("t") == len(expect["t"]) - consumed, (
            "failed_write_absent: the call that reported the error did its work"
        )
        check_state(wal, expect, f"after the background error ({reported_by})")
        wal.flush()  # reported once: now it succeeds
        heal_and_continue(wal, plan, expect)
        wal.close()
        wal, plan = open_faulty(wal_dir, backend_name, "ms5")
        check_state(wal, expect, "after reopen")
    finally:
        close_quietly(wal)


@ERRNOS
def test_failed_new_file_sync_then_appends_work_again(
    wal_dir: Path, backend_name: str, err: int
) -> None:
    """works_after_heal when the failure hits the fsync of a data file the append had to create
    (sync_each syncs a new file before using it): raises_storage_error, the append is absent,
    and after heal appends succeed again."""
    plan = FaultPlan()
    layer = FaultLayer(plan, over=default_registry().select(backend_name))
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    wal = Walrus(
        data_dir=wal_dir,
        backend="faults",
        registry=registry,
        fsync=FsyncSchedule.sync_each(),
        block_size=4096,
        blocks_per_file=2,
    )
    try:
        wal.append_for_topic("t", b"a" * 3000)
        wal.append_for_topic("t", b"b" * 3000)  # the file's second (last) block
        plan.fail("flush", errno=err, kind="data")
        with pytest.raises(WalrusError) as info:
            wal.append_for_topic("t", b"c" * 3000)  # needs a new file
        check_error(info.value, err)
        assert wal.topic_entry_count("t") == 2, "failed_write_absent"
        plan.heal()
        assert wal.append_for_topic("t", b"d" * 3000) == 2, "works_after_heal"
        assert read_all(wal, "t") == [b"a" * 3000, b"b" * 3000, b"d" * 3000]
    finally:
        close_quietly(wal)
