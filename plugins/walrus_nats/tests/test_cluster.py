"""Failure tests on a 3-node cluster with replicas=3: leaders killed with SIGKILL, quorum lost,
everything restarted. The invariant each one checks is the local log's: an append that
returned is there exactly once at its offset, offsets are contiguous, and a strictly-at-once
read is never handed out twice."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_mirror import _kill_mirror_and_resume
from walrus_nats import NatsWalrus, naming
from walrus_nats.testing import NatsCluster

from walrus_core import AppendOutcomeUnknownError, Entry, RemoteUnavailableError

pytestmark = pytest.mark.cluster


@pytest.fixture
def open_r3(nats_cluster: NatsCluster, key: str) -> Any:
    opened: list[NatsWalrus] = []

    def factory(**overrides: Any) -> NatsWalrus:
        kwargs: dict[str, Any] = {"key": key, "replicas": 3, "timeout": 2.0, "retry_for": 60.0}
        kwargs.update(overrides)
        log = NatsWalrus(nats_cluster.urls, **kwargs)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        try:
            log.close()
        except Exception:
            pass
    for server in nats_cluster.servers:  # the next test starts with all three up
        server.start()
    nats_cluster.wait_leader()


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.05)


def _stream(log: NatsWalrus, topic: str) -> str:
    return naming.stream_name(naming.namespace_token(log.key), topic)


def test_stream_leader_killed_during_appends_loses_and_duplicates_nothing(
    nats_cluster: NatsCluster, open_r3: Any
) -> None:
    log = open_r3()
    log.append_for_topic("t", b"first")
    acked: dict[int, bytes] = {0: b"first"}
    stop = threading.Event()
    errors: list[BaseException] = []

    def append() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                if i % 10 == 0:
                    payloads = [b"batch-%d-%d" % (i, j) for j in range(20)]
                    r = log.batch_append_for_topic("t", payloads)
                    acked.update(zip(r, payloads, strict=True))
                else:
                    payload = b"single-%d" % i
                    acked[log.append_for_topic("t", payload)] = payload
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=append)
    writer.start()
    time.sleep(1.0)
    leader = nats_cluster.stream_leader(_stream(log, "t"))
    before = len(acked)
    leader.kill()
    _wait_for(lambda: len(acked) > before + 50 or bool(errors), 60, "appends after the kill")
    leader.start()
    after_restart = len(acked)
    _wait_for(lambda: len(acked) > after_restart + 50 or bool(errors), 60, "appends after restart")
    stop.set()
    writer.join(120)
    assert not errors, errors
    assert len(acked) > before + 10, "no append returned after the leader was killed"
    got = open_r3().batch_read_for_topic("t", 1 << 30, start_offset=0)
    while len(got) < len(acked):
        more = open_r3().batch_read_for_topic("t", 1 << 30, start_offset=len(got))
        assert more, f"read {len(got)} of {len(acked)}"
        got += more
    assert [e.offset for e in got] == list(range(len(got)))  # contiguous, nothing extra
    assert {e.offset: e.data for e in got} == acked  # every acked entry once, at its offset


def test_cursor_leader_killed_under_strictly_at_once_redelivers_nothing(
    nats_cluster: NatsCluster, open_r3: Any
) -> None:
    log = open_r3()
    log.batch_append_for_topic("jobs", [b"%d" % i for i in range(600)])
    reader = open_r3()
    seen: list[int] = []
    bucket = "KV_" + naming.cursor_bucket(naming.namespace_token(log.key))
    killed = False
    while True:
        entry = reader.read_next("jobs")
        if entry is None:
            break
        seen.append(entry.offset)
        if len(seen) == 200 and not killed:
            nats_cluster.stream_leader(bucket).kill()
            killed = True
        if len(seen) == 400:
            for server in nats_cluster.servers:
                server.start()
    assert killed
    assert seen == list(range(600))  # each exactly once: 0 redeliveries, none skipped
    # A new reader (another process) starts after the last one handed out.
    assert open_r3().read_next("jobs") is None


def test_quorum_loss_gives_outcome_unknown_and_the_offset_settles_it(
    nats_cluster: NatsCluster, open_r3: Any
) -> None:
    log = open_r3(retry_for=4.0)
    assert log.append_for_topic("t", b"before") == 0
    leader = nats_cluster.stream_leader(_stream(log, "t"))
    others = [s for s in nats_cluster.servers if s is not leader]
    for server in others:
        server.kill()
    with pytest.raises((AppendOutcomeUnknownError, RemoteUnavailableError)) as info:
        log.append_for_topic("t", b"during")
    for server in others:
        server.start()
    nats_cluster.wait_leader()
    # A timed-out publish can still be committed once the quorum is back (the servers hold
    # it), so only a later append and a read after it tell the final state.
    after = open_r3()
    later = after.append_for_topic("t", b"later")
    entries = after.batch_read_for_topic("t", 1 << 20, start_offset=0)
    if isinstance(info.value, AppendOutcomeUnknownError):
        assert (info.value.expected_offset, info.value.count, info.value.topic) == (1, 1, "t")
        # Stored or not, it is at the expected offset or nowhere: never twice.
        assert entries in (
            [Entry(b"before", 0), Entry(b"later", 1)],
            [Entry(b"before", 0), Entry(b"during", 1), Entry(b"later", 2)],
        )
    else:  # refused outright: nothing stored
        assert entries == [Entry(b"before", 0), Entry(b"later", 1)]
    assert later == len(entries) - 1


def test_everything_survives_all_three_killed_and_restarted(
    nats_cluster: NatsCluster, open_r3: Any
) -> None:
    log = open_r3()
    r = log.batch_append_for_topic("t", [b"%d" % i for i in range(1000)])
    assert r == range(0, 1000)
    assert [log.read_next("t").offset for _ in range(10)] == list(range(10))  # type: ignore[union-attr]
    log.seek("t", 500, consumer="named")
    for server in nats_cluster.servers:
        server.kill()
    for server in nats_cluster.servers:
        server.start(wait=False)
    for server in nats_cluster.servers:
        server.wait_healthy()
    nats_cluster.wait_leader()
    again = open_r3()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert again.topic_entry_count("t") == 990
            break
        except RemoteUnavailableError:
            assert time.monotonic() < deadline
    assert again.read_next("t") == Entry(b"10", 10)
    assert again.read_next("t", consumer="named") == Entry(b"500", 500)
    assert [e.data for e in again.batch_read_for_topic("t", 1 << 20, start_offset=0)] == [
        b"%d" % i for i in range(1000)
    ]


def test_a_mirror_killed_mid_stream_resumes_exactly_on_the_cluster(
    nats_cluster: NatsCluster, open_r3: Any, tmp_path: Any, key: str
) -> None:
    _kill_mirror_and_resume(nats_cluster.urls, tmp_path, key, replicas=3)
