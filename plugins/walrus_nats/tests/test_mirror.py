"""The mirror against one server: byte-identical copies with batches kept whole, the lag it
reports, its local consumer, and what it does when the remote copy is not the local log's."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mirror_checks import assert_same
from walrus_nats import MIRROR_CONSUMER, Mirror, MirrorDivergedError, NatsWalrus
from walrus_nats.testing import NatsServer

from walrus_core import Walrus


@pytest.fixture
def wal(tmp_path: Path) -> Any:
    log = Walrus(tmp_path / "local", backend="fd", block_size=64 * 1024, blocks_per_file=4)
    yield log
    log.close()


def test_the_copy_is_identical_batch_for_batch(
    nats_server: NatsServer, wal: Walrus, key: str
) -> None:
    wal.append_for_topic("a", b"one")
    wal.batch_append_for_topic("a", [b"b%d" % i * 300 for i in range(700)])  # crosses blocks
    wal.append_for_topic("a", b"")
    wal.batch_append_for_topic("b.with > odd * name", [b"", b"x"])
    mirror = Mirror(wal, [nats_server.url], key=key)
    try:
        assert mirror.sync() == 704
        assert mirror.lag() == {"a": 0, "b.with > odd * name": 0}
        assert mirror.sync() == 0
        wal.batch_append_for_topic("a", [b"late"] * 3)
        assert mirror.lag() == {"a": 3, "b.with > odd * name": 0}
        assert mirror.sync() == 3
        status = mirror.status()["a"]
        assert (status.local_end, status.remote_end, status.lag, status.error) == (
            705,
            705,
            0,
            None,
        )
    finally:
        mirror.stop()
    assert assert_same(wal, nats_server.url, key) == 707
    consumers = {c.name: c.offset for c in wal.consumers("a")}
    assert consumers[MIRROR_CONSUMER] == 705  # it holds back reclamation of unshipped entries
    with NatsWalrus([nats_server.url], key=key) as reader:  # readers elsewhere
        assert reader.read_next("a").data == b"one"  # type: ignore[union-attr]


def test_the_background_mirror_follows_appends(
    nats_server: NatsServer, wal: Walrus, key: str
) -> None:
    with Mirror(wal, [nats_server.url], key=key, poll_interval=0.01) as mirror:
        for i in range(50):
            wal.append_for_topic("t", b"%d" % i)
            if i % 10 == 0:
                wal.batch_append_for_topic("t", [b"batch"] * 5)
        deadline = time.monotonic() + 30
        while any(mirror.lag().values()):
            assert time.monotonic() < deadline, mirror.status()
            time.sleep(0.02)
    assert assert_same(wal, nats_server.url, key) == 75


def test_a_remote_copy_of_another_log_is_refused(
    nats_server: NatsServer, wal: Walrus, key: str
) -> None:
    with NatsWalrus([nats_server.url], key=key) as other:
        other.append_for_topic("t", b"not yours")
    wal.append_for_topic("t", b"mine")
    wal.append_for_topic("u", b"fine")
    mirror = Mirror(wal, [nats_server.url], key=key)
    try:
        with pytest.raises(MirrorDivergedError, match="differs"):
            mirror.sync()
        assert "differs" in (mirror.status()["t"].error or "")
        assert mirror.status()["u"].lag == 0  # other topics go on
        with NatsWalrus([nats_server.url], key=key) as check:
            assert check.end_offset("t") == 1  # nothing was added to it
    finally:
        mirror.stop()


def test_a_remote_copy_longer_than_the_local_log_is_refused(
    nats_server: NatsServer, wal: Walrus, key: str
) -> None:
    with NatsWalrus([nats_server.url], key=key) as other:
        other.batch_append_for_topic("t", [b"a", b"b"])
    wal.append_for_topic("t", b"a")
    mirror = Mirror(wal, [nats_server.url], key=key)
    try:
        with pytest.raises(MirrorDivergedError, match="2 entries"):
            mirror.sync()
    finally:
        mirror.stop()


def test_a_mirror_killed_mid_stream_resumes_exactly(
    nats_server: NatsServer, tmp_path: Path, key: str
) -> None:
    _kill_mirror_and_resume([nats_server.url], tmp_path, key, replicas=1)


def _kill_mirror_and_resume(urls: list[str], tmp_path: Path, key: str, replicas: int) -> None:
    data = tmp_path / "killed"
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("mirror_child.py")),
            str(data),
            ",".join(urls),
            key,
            str(replicas),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"appending\n"
        with NatsWalrus(urls, key=key) as remote:
            deadline = time.monotonic() + 60
            while remote.end_offset("events") < 2000:  # shipping is under way
                assert time.monotonic() < deadline
                time.sleep(0.02)
        time.sleep(0.3)
    finally:
        child.kill()
        child.wait(30)
    with Walrus(data, backend="fd") as wal:
        local_end = wal.topic_info("events").end_offset
        with NatsWalrus(urls, key=key) as remote:
            shipped = remote.end_offset("events")
        assert 0 < shipped < local_end, (shipped, local_end)  # killed with work left
        wal.batch_append_for_topic("events", [b"after restart"] * 7)
        mirror = Mirror(wal, urls, key=key, replicas=replicas)
        try:
            mirror.sync()
            assert not any(mirror.lag().values())
        finally:
            mirror.stop()
        assert assert_same(wal, urls[0], key) == sum(
            wal.topic_info(t).end_offset for t in wal.topics()
        )
