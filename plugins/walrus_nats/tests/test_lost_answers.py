"""Answers lost on the way back (the server stored the entry, the client never heard), calls
racing each other on one instance, and close() under running calls. The lost answers are
made by wrapping the publish request: the real server stores, the wrapper raises a timeout."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from walrus_nats import Mirror, MirrorLimitError, wire
from walrus_nats.testing import NatsServer

from walrus_core import (
    AppendOutcomeUnknownError,
    Entry,
    ReadConsistency,
    Walrus,
    WalrusClosedError,
)

OpenLog = Any


def _lose_answers(monkeypatch: pytest.MonkeyPatch, victim: bytes, times: int) -> list[int]:
    """Make the first ``times`` publishes whose payload is ``victim`` store, then time out."""
    real_publish, real_batch = wire.publish, wire.publish_batch
    lost: list[int] = []

    async def publish(*args: Any) -> wire.Stored:
        stored = await real_publish(*args)
        if args[2] == victim and len(lost) < times:
            lost.append(stored.seq)
            raise nats.errors.TimeoutError
        return stored

    async def publish_batch(*args: Any) -> wire.Stored:
        stored = await real_batch(*args)
        if args[2][0] == victim and len(lost) < times:
            lost.append(stored.seq)
            raise nats.errors.TimeoutError
        return stored

    monkeypatch.setattr(wire, "publish", publish)
    monkeypatch.setattr(wire, "publish_batch", publish_batch)
    return lost


def test_a_lost_answer_is_settled_at_its_offset_not_stored_again(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(timeout=1.0)
    log.append_for_topic("t", b"first")
    lost = _lose_answers(monkeypatch, b"victim", 1)
    stop = threading.Event()

    def poll_end() -> None:  # another thread moving the instance's idea of the end
        while not stop.is_set():
            log.end_offset("t")

    poller = threading.Thread(target=poll_end)
    poller.start()
    try:
        assert log.append_for_topic("t", b"victim") == 1
    finally:
        stop.set()
        poller.join()
    assert lost == [2]
    assert log.batch_read_for_topic("t", 1 << 20, start_offset=0) == [
        Entry(b"first", 0),
        Entry(b"victim", 1),
    ]
    assert log.append_for_topic("t", b"next") == 2


def test_a_batch_whose_commit_answer_is_lost_is_stored_once(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(timeout=1.0)
    log.append_for_topic("t", b"first")
    _lose_answers(monkeypatch, b"b0", 1)
    assert log.batch_append_for_topic("t", [b"b0", b"b1", b"b2"]) == range(1, 4)
    assert [e.data for e in log.batch_read_for_topic("t", 1 << 20, start_offset=0)] == [
        b"first",
        b"b0",
        b"b1",
        b"b2",
    ]


def test_requests_lost_until_retries_run_out_give_the_expected_offset(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(timeout=0.5, retry_for=1.5)
    log.append_for_topic("t", b"first")
    real_publish = wire.publish

    async def unanswered(*args: Any) -> wire.Stored:
        if args[2] == b"victim":  # the request never reaches a server that answers
            raise nats.errors.TimeoutError
        return await real_publish(*args)

    monkeypatch.setattr(wire, "publish", unanswered)
    with pytest.raises(AppendOutcomeUnknownError) as info:
        log.append_for_topic("t", b"victim")
    assert (info.value.topic, info.value.expected_offset, info.value.count) == ("t", 1, 1)
    # Here it was not stored; the offset it names is where to look, and the log goes on.
    assert log.batch_read_for_topic("t", 1 << 20, start_offset=1) == []
    assert log.append_for_topic("t", b"next") == 1


def test_an_answer_lost_on_every_try_is_still_settled_by_the_refusal(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(timeout=0.5)
    log.append_for_topic("t", b"first")
    _lose_answers(monkeypatch, b"victim", 10**6)  # stored, and every answer lost
    # The retry is refused (the end moved), and the entry there carries this append's id.
    assert log.append_for_topic("t", b"victim") == 1
    assert log.batch_read_for_topic("t", 1 << 20, start_offset=0) == [
        Entry(b"first", 0),
        Entry(b"victim", 1),
    ]


def test_close_ends_calls_running_on_other_threads(open_log: OpenLog) -> None:
    log = open_log()
    outcomes: list[BaseException | int] = []

    def append() -> None:
        try:
            while True:
                outcomes.append(log.append_for_topic("t", b"x"))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=append) for _ in range(3)]
    for thread in threads:
        thread.start()
    while len(outcomes) < 30:
        pass
    log.close()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 3 and all(isinstance(e, WalrusClosedError) for e in errors), errors
    offsets = [o for o in outcomes if isinstance(o, int)]
    assert sorted(offsets) == list(range(len(offsets)))  # every returned append is distinct


def test_concurrent_first_reads_on_one_instance_share_one_cursor(open_log: OpenLog) -> None:
    log = open_log(consistency=ReadConsistency.at_least_once(persist_every=100))
    log.batch_append_for_topic("t", [b"%d" % i for i in range(40)])
    got: list[int] = []

    def read() -> None:
        for _ in range(10):
            entry = log.read_next("t")
            assert entry is not None
            got.append(entry.offset)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(got) == list(range(40))


def test_a_local_batch_the_server_cannot_take_stops_that_topic_only(
    nats_binary: Any, tmp_path: Path, key: str
) -> None:
    server = NatsServer(tmp_path / "srv", batch_max=1000, binary=nats_binary).start()
    try:
        with Walrus(tmp_path / "local", backend="fd") as wal:
            wal.append_for_topic("big", b"before")
            wal.batch_append_for_topic("big", [b"x"] * 1500)  # fine locally (2000)
            wal.append_for_topic("small", b"fine")
            mirror = Mirror(wal, [server.url], key=key)
            try:
                with pytest.raises(MirrorLimitError, match="batch limit is 1000"):
                    mirror.sync()
                status = mirror.status()
                assert status["big"].remote_end == 1 and "1000" in (status["big"].error or "")
                assert status["small"].lag == 0
                assert mirror.sync() == 0  # stopped, not retried forever
            finally:
                mirror.stop()
    finally:
        server.stop()
