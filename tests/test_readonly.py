"""WalrusReader: reading a directory without its lock, while a writer (in this process or
another) appends, reclaims and sometimes finds damage."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import SMALL_GEOMETRY, OpenWal
from helpers import live_writer
from helpers.ondisk import (
    blocks_of,
    fill,
    payload,
    read_all,
    reclaim_below,
    snapshot,
    write_start_mark,
)

from walrus_core import (
    CorruptionError,
    DirectoryLockedError,
    Entry,
    InvalidConfigError,
    OffsetOutOfRangeError,
    UnsupportedFormatError,
    Walrus,
    WalrusClosedError,
)
from walrus_core.errors import UnknownTopicError
from walrus_core.format import LOCK_NAME, META_NAME
from walrus_core.readonly import WalrusReader

HANG_GUARD = live_writer.HANG_GUARD


# --- a directory nobody holds ---------------------------------------------------------------


def test_reads_a_closed_directory(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 300)
    wal.batch_append_for_topic("b", [payload(i, 700) for i in range(40)])
    wal.append_for_topic("b", payload(40, 9000))  # larger than a block
    wal.read_next("a")
    wal.read_next("a", consumer="audit")
    wal.close()

    with WalrusReader(wal_dir) as reader:
        assert reader.topics() == ["a", "b"]
        info = reader.topic_info("a")
        assert (info.first_offset, info.end_offset, info.entries) == (0, 300, 300)
        assert info.blocks > 1 and info.bytes_on_disk % 4096 == 0
        assert [e.data for e in read_all(reader, "a")] == [payload(i) for i in range(300)]
        assert [e.offset for e in read_all(reader, "b")] == list(range(41))
        assert reader.read("b", 40).data == payload(40, 9000)
        assert reader.read("a", 123) == Entry(payload(123), 123)
        # The stateless read's limits: at least one entry, stop before max_bytes is passed.
        assert len(reader.batch_read_for_topic("a", 1)) == 1
        assert len(reader.batch_read_for_topic("a", 250, start_offset=5)) == 2
        assert reader.batch_read_for_topic("a", 10, start_offset=300) == []
        assert len(reader.batch_read_for_topic("a", 1 << 30)) == 300
        with pytest.raises(OffsetOutOfRangeError):
            reader.batch_read_for_topic("a", 10, start_offset=301)
        with pytest.raises(OffsetOutOfRangeError):
            reader.read("a", 300)
        assert reader.batch_read_for_topic("nope", 10) == []
        with pytest.raises(UnknownTopicError):
            reader.topic_info("nope")
        assert reader.consumers("nope") == []
        consumers = {c.name: c for c in reader.consumers("a")}
        assert set(consumers) == {None, "audit"}
        assert consumers[None].offset == 1 and consumers[None].lag == 299
        assert consumers[None].skipped == 0
        log_info = reader.info()
        assert log_info.read_only and log_info.backend_chain == ()
        assert log_info.block_size == SMALL_GEOMETRY["block_size"]
        assert [t.name for t in log_info.topics] == ["a", "b"]
        assert log_info.files == len(list(wal_dir.glob("data-*.wal")))
        assert log_info.bytes_on_disk > 0
        # follow from an offset yields everything after it, then stops at the timeout.
        assert [e.offset for e in reader.follow("a", 290, timeout=0.05)] == list(range(290, 300))
    assert reader.closed
    with pytest.raises(WalrusClosedError):
        reader.topics()


def test_a_missing_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError):
        WalrusReader(tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_another_format_version_is_refused(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 3)
    wal.close()
    meta = wal_dir / META_NAME
    doc = json.loads(meta.read_text())
    doc["version"] = 1
    meta.write_text(json.dumps(doc))
    with pytest.raises(UnsupportedFormatError):
        WalrusReader(wal_dir)


def test_the_reader_never_writes(
    open_wal: OpenWal, wal_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 200)
    wal.read_next("a")
    wal.close()
    copy = tmp_path / "copy"
    shutil.copytree(wal_dir, copy)
    (copy / LOCK_NAME).unlink()
    before = snapshot(copy)
    dir_mtime = copy.stat().st_mtime_ns

    flags_seen: list[int] = []
    real_open = os.open

    def spying_open(path: object, flags: int, *args: object, **kw: object) -> int:
        flags_seen.append(flags)
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spying_open)
    with WalrusReader(copy) as reader:
        assert len(read_all(reader, "a")) == 200
        reader.refresh()
        reader.info()
        reader.consumers("a")
        list(reader.follow("a", 150, timeout=0.05))
    monkeypatch.undo()

    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    assert flags_seen and all(not flags & writing for flags in flags_seen)
    assert snapshot(copy) == before
    assert copy.stat().st_mtime_ns == dir_mtime
    assert not (copy / LOCK_NAME).exists()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_reads_a_directory_without_write_permission(
    open_wal: OpenWal, wal_dir: Path, tmp_path: Path
) -> None:
    fill(open_wal(), "a", 0, 50)
    copy = tmp_path / "ro"
    shutil.copytree(wal_dir, copy)
    (copy / LOCK_NAME).unlink()
    for path in [*copy.iterdir(), copy]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        with WalrusReader(copy) as reader:
            assert [e.data for e in read_all(reader, "a")] == [payload(i) for i in range(50)]
    finally:
        copy.chmod(0o755)


# --- a writer in this process -----------------------------------------------------------------


def test_reading_while_this_process_holds_the_directory(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 10)
    reader = WalrusReader(wal_dir)
    try:
        assert reader.topic_info("a").end_offset == 10
        # The lock is still the writer's: it keeps working, and a second writer is refused.
        fill(wal, "a", 10, 100)
        wal.batch_append_for_topic("a", [payload(i) for i in range(110, 150)])
        with pytest.raises(DirectoryLockedError):
            Walrus(wal_dir, fsync=wal.fsync)
        assert reader.topic_info("a").end_offset == 10  # nothing new until refresh
        reader.refresh()
        assert reader.topic_info("a").end_offset == 150
        assert [e.data for e in read_all(reader, "a")] == [payload(i) for i in range(150)]
        assert wal.read_next("a") == Entry(payload(0), 0)
    finally:
        reader.close()
    fill(wal, "a", 150, 1)
    wal.close()


# --- damage ---------------------------------------------------------------------------------


def _flip_payload_byte(wal_dir: Path, offset: int) -> Path:
    needle = payload(offset)
    for path in sorted(wal_dir.glob("data-*.wal")):
        data = bytearray(path.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at + 50] ^= 0x40
            path.write_bytes(bytes(data))
            return path
    raise AssertionError(f"payload {offset} not found")


def test_a_flipped_byte_in_a_sealed_block_raises_for_exactly_that_offset(
    open_wal: OpenWal, wal_dir: Path
) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 200)
    wal.close()
    blocks = blocks_of(wal_dir, "a", SMALL_GEOMETRY["block_size"])
    damaged = blocks[2].first_offset + 3  # inside a sealed block, valid entries follow it
    early = WalrusReader(wal_dir)  # has validated every entry before the damage
    path = _flip_payload_byte(wal_dir, damaged)
    try:
        for reader in (early, WalrusReader(wal_dir)):
            with pytest.raises(CorruptionError) as raised:
                reader.read("a", damaged)
            assert raised.value.offset == damaged and raised.value.topic == "a"
            assert raised.value.path == str(path)
            assert reader.read("a", damaged - 1).data == payload(damaged - 1)
            assert reader.read("a", damaged + 1).data == payload(damaged + 1)
            before = reader.batch_read_for_topic("a", 1 << 20, start_offset=0)
            assert [e.offset for e in before] == list(range(damaged))
            with pytest.raises(CorruptionError):
                reader.batch_read_for_topic("a", 1 << 20, start_offset=damaged)
            after = reader.batch_read_for_topic("a", 1 << 20, start_offset=damaged + 1)
            assert [e.data for e in after] == [payload(i) for i in range(damaged + 1, 200)]
            followed: list[int] = []
            with pytest.raises(CorruptionError):
                for entry in reader.follow("a", 0, timeout=5):
                    followed.append(entry.offset)
            assert followed == list(range(damaged))
            reader.close()
    finally:
        early.close()


# --- reclamation ------------------------------------------------------------------------------


def test_reclaimed_entries_are_skipped_by_a_following_reader(
    open_wal: OpenWal, wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    block_size = SMALL_GEOMETRY["block_size"]
    wal = open_wal()
    fill(wal, "a", 0, 300)
    follower = WalrusReader(wal_dir)
    racing = None
    stop = threading.Event()
    try:
        stream = follower.follow("a", stop=stop, poll_interval=0.01)
        assert [next(stream).offset for _ in range(300)] == list(range(300))
        fill(wal, "a", 300, 500)
        wal.close()
        racing = WalrusReader(wal_dir)  # has every block indexed before they go
        blocks = blocks_of(wal_dir, "a", block_size)
        files = sorted({b.path for b in blocks})
        # The start: inside the third block of the first file that starts after what the
        # follower read, so that whole files are deleted and two blocks are punched.
        index, kept = next(
            (i, mine)
            for i, path in enumerate(files)
            if (mine := [b for b in blocks if b.path == path])[0].first_offset > 300
        )
        start = kept[2].first_offset + 1
        deleted, punched = reclaim_below(wal_dir, "a", start, block_size)
        assert deleted == index >= 1 and punched == 2
        in_punched_block = kept[0].first_offset + 1

        with caplog.at_level(logging.WARNING, logger="walrus_core"):
            rest = [next(stream) for _ in range(800 - start)]
        assert [e.offset for e in rest] == list(range(start, 800))
        assert all(e.data == payload(e.offset) for e in rest)
        assert follower.skipped == {"a": start - 300}
        assert any("reclaimed" in r.getMessage() for r in caplog.records)

        # A reader that indexed the reclaimed blocks reads zeros there: it refreshes, and
        # moves to the new start or says the offset is gone.
        with pytest.raises(OffsetOutOfRangeError):
            racing.read("a", in_punched_block)
        got = racing.batch_read_for_topic("a", 1 << 20, start_offset=in_punched_block)
        assert got[0] == Entry(payload(start), start)
        assert racing.topic_info("a").first_offset == start

        with WalrusReader(wal_dir) as fresh:
            assert fresh.topic_info("a").first_offset == start
            assert [e.offset for e in read_all(fresh, "a")] == list(range(start, 800))
            assert fresh.batch_read_for_topic("a", 1, start_offset=0)[0].offset == start
    finally:
        stop.set()
        follower.close()
        if racing is not None:
            racing.close()


def test_a_deleted_topic_is_not_listed_until_appended_again(
    open_wal: OpenWal, wal_dir: Path
) -> None:
    wal = open_wal()
    fill(wal, "a", 0, 5)
    fill(wal, "b", 0, 5)
    wal.close()
    write_start_mark(wal_dir, "a", 5, deleted=True)
    with WalrusReader(wal_dir) as reader:
        assert reader.topics() == ["b"]
        assert reader.batch_read_for_topic("a", 100) == []
        with pytest.raises(UnknownTopicError):
            reader.topic_info("a")
        assert [t.name for t in reader.info().topics] == ["b"]


# --- a writer in another process --------------------------------------------------------------


def end_of(reader: WalrusReader, topic: str) -> int:
    """The published end of ``topic`` (0 before its first entry)."""
    try:
        return reader.topic_info(topic).end_offset
    except UnknownTopicError:
        return 0


def _follow_into(reader: WalrusReader, topic: str, out: list[Entry], stop: threading.Event) -> None:
    try:
        # From 0: whatever was reclaimed before the follower got there counts as skipped.
        stream = reader.follow(topic, 0, poll_interval=0.005, stop=stop, timeout=HANG_GUARD)
        for entry in stream:
            out.append(entry)
    except BaseException as exc:  # reported by the test
        out.append(Entry(repr(exc).encode(), -1))


def test_follows_a_writer_in_another_process(wal_dir: Path, backend_name: str) -> None:
    entries = 1500
    writer = live_writer.LiveWriter(wal_dir, backend_name, entries, "pace=0.002")
    ends = {t: live_writer.boundaries(t, entries) for t in live_writer.TOPICS}
    final = {t: max(ends[t]) for t in live_writer.TOPICS}
    followed: list[Entry] = []
    stop = threading.Event()
    follower = WalrusReader(wal_dir)
    thread = threading.Thread(target=_follow_into, args=(follower, "alpha", followed, stop))
    thread.start()
    poller = WalrusReader(wal_dir)
    seen = dict.fromkeys(live_writer.TOPICS, 0)
    ends_observed = 0
    distinct: set[tuple[str, int]] = set()
    deadline = time.monotonic() + HANG_GUARD
    try:
        while True:
            writer_done = writer.finished()
            poller.refresh()
            for topic in live_writer.TOPICS:
                end = end_of(poller, topic)
                # A batch is visible whole or not at all.
                assert end in ends[topic], (topic, end)
                ends_observed += 1
                distinct.add((topic, end))
                while seen[topic] < end:
                    got = poller.batch_read_for_topic(topic, 64 * 1024, start_offset=seen[topic])
                    assert got and got[0].offset == seen[topic]
                    for entry in got:
                        assert entry.data == live_writer.payload_for(topic, entry.offset)
                    seen[topic] += len(got)
                assert seen[topic] == end
            if writer_done and seen == final:
                break
            assert time.monotonic() < deadline, "hang guard"
        while len(followed) < final["alpha"] and thread.is_alive():
            thread.join(0.05)
            assert time.monotonic() < deadline, "hang guard"
    finally:
        stop.set()
        thread.join()
        follower.close()
        writer.stop()
    assert [e.offset for e in followed] == list(range(final["alpha"]))
    assert all(e.data == live_writer.payload_for("alpha", e.offset) for e in followed)
    assert follower.skipped == {}
    poller.refresh()  # after the clean close: the same entries, now with CLOSED records
    assert {t: end_of(poller, t) for t in live_writer.TOPICS} == final
    poller.close()


@pytest.mark.skipif(not hasattr(Walrus, "reclaim"), reason="the engine cannot reclaim yet")
def test_follows_a_writer_that_reclaims(wal_dir: Path, backend_name: str) -> None:
    entries = 600
    writer = live_writer.LiveWriter(wal_dir, backend_name, entries, "reclaim")
    final = max(live_writer.boundaries("beta", entries))
    followed: list[Entry] = []
    stop = threading.Event()
    follower = WalrusReader(wal_dir)
    thread = threading.Thread(target=_follow_into, args=(follower, "beta", followed, stop))
    thread.start()
    deadline = time.monotonic() + HANG_GUARD
    try:
        while not (writer.finished() and followed and followed[-1].offset >= final - 1):
            thread.join(0.05)
            assert thread.is_alive(), followed[-1:]
            assert time.monotonic() < deadline, "hang guard"
    finally:
        stop.set()
        thread.join()
        writer.stop()
    offsets = [e.offset for e in followed]
    assert offsets == sorted(set(offsets)) and offsets[-1] == final - 1
    assert all(e.data == live_writer.payload_for("beta", e.offset) for e in followed)
    gaps = sum(b - a - 1 for a, b in zip([-1, *offsets], offsets, strict=False))
    assert follower.skipped.get("beta", 0) == gaps
    follower.close()
