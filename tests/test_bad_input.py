"""Bad input: one table of wrong calls. Each must raise exactly the documented kind of error
(TypeError for wrong types, package errors that are also ValueError for bad values) and leave the
log usable with nothing already written lost, also across a reopen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from walrus_core import (
    BatchTooLargeError,
    Entry,
    EntryTooLargeError,
    FsyncSchedule,
    InvalidConfigError,
    InvalidTopicError,
    Limits,
    OffsetOutOfRangeError,
    ReadConsistency,
    Walrus,
    WalrusError,
)

OpenWal = Callable[..., Walrus]
GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
BASE = [b"e0", b"e1", b"e2"]


class _Value:
    """Marker: any package error that is also a ValueError."""


VALUE = _Value


@attrs.frozen
class Ctx:
    tmp: Path
    backend: str

    def open_other(self, **kw: Any) -> Walrus:
        """Construct a Walrus on a fresh directory (not the one under test)."""
        args: dict[str, Any] = {
            "data_dir": self.tmp / "other",
            "backend": self.backend,
            "fsync": FsyncSchedule.no_fsync(),
            **GEOMETRY,
        }
        args.update(kw)
        wal = Walrus(**args)
        wal.close()  # only reached when the constructor wrongly succeeds
        return wal


@attrs.frozen
class Case:
    id: str
    action: Callable[[Walrus, Ctx], Any]
    expected: type[BaseException]
    overrides: dict[str, Any] = attrs.field(factory=dict)


def gen(*items: Any) -> Iterator[Any]:
    yield from items


def gen_raising() -> Iterator[bytes]:
    yield b"ok1"
    yield b"ok2"
    raise RuntimeError("producer failed")


def a_regular_file(ctx: Ctx) -> Path:
    path = ctx.tmp / "regular-file"
    path.write_bytes(b"not a directory")
    return path


LONG_ASCII = "x" * 256
LONG_UTF8 = "é" * 128  # 256 UTF-8 bytes, 128 characters
SURROGATE = "bad\ud800name"
SMALL_ENTRIES = {"limits": Limits(max_entry_bytes=1000)}
SMALL_BATCH_N = {"limits": Limits(max_batch_entries=3)}
SMALL_BATCH_BYTES = {"limits": Limits(max_batch_bytes=100)}

CASES: list[Case] = [
    # --- topic names: types
    Case("append-topic-None", lambda w, c: w.append_for_topic(None, b"x"), TypeError),
    Case("append-topic-bytes", lambda w, c: w.append_for_topic(b"t", b"x"), TypeError),
    Case("append-topic-int", lambda w, c: w.append_for_topic(7, b"x"), TypeError),
    Case("batch-topic-None", lambda w, c: w.batch_append_for_topic(None, [b"x"]), TypeError),
    Case("read_next-topic-None", lambda w, c: w.read_next(None), TypeError),
    Case("batch_read-topic-bytes", lambda w, c: w.batch_read_for_topic(b"t", 10), TypeError),
    Case("count-topic-int", lambda w, c: w.topic_entry_count(1), TypeError),
    Case("seek-topic-None", lambda w, c: w.seek(None, 0), TypeError),
    # --- topic names: values
    Case("append-topic-empty", lambda w, c: w.append_for_topic("", b"x"), InvalidTopicError),
    Case("append-topic-NUL", lambda w, c: w.append_for_topic("t\x00u", b"x"), InvalidTopicError),
    Case(
        "append-topic-256-ascii",
        lambda w, c: w.append_for_topic(LONG_ASCII, b"x"),
        InvalidTopicError,
    ),
    Case(
        "append-topic-256-utf8", lambda w, c: w.append_for_topic(LONG_UTF8, b"x"), InvalidTopicError
    ),
    Case(
        "append-topic-surrogate",
        lambda w, c: w.append_for_topic(SURROGATE, b"x"),
        InvalidTopicError,
    ),
    Case("batch-topic-empty", lambda w, c: w.batch_append_for_topic("", [b"x"]), InvalidTopicError),
    Case(
        "empty-batch-topic-NUL",
        lambda w, c: w.batch_append_for_topic("\x00", []),
        InvalidTopicError,
    ),
    Case(
        "batch-topic-long",
        lambda w, c: w.batch_append_for_topic(LONG_UTF8, [b"x"]),
        InvalidTopicError,
    ),
    Case("read_next-topic-empty", lambda w, c: w.read_next(""), InvalidTopicError),
    Case("read_next-topic-NUL", lambda w, c: w.read_next("\x00"), InvalidTopicError),
    Case(
        "batch_read-topic-surrogate",
        lambda w, c: w.batch_read_for_topic(SURROGATE, 10),
        InvalidTopicError,
    ),
    Case("count-topic-long", lambda w, c: w.topic_entry_count(LONG_ASCII), InvalidTopicError),
    Case("seek-topic-empty", lambda w, c: w.seek("", 0), InvalidTopicError),
    # --- consumer names: same rules
    Case("read_next-consumer-empty", lambda w, c: w.read_next("t", consumer=""), InvalidTopicError),
    Case(
        "read_next-consumer-NUL", lambda w, c: w.read_next("t", consumer="c\x00"), InvalidTopicError
    ),
    Case(
        "read_next-consumer-256",
        lambda w, c: w.read_next("t", consumer=LONG_ASCII),
        InvalidTopicError,
    ),
    Case(
        "read_next-consumer-utf8-256",
        lambda w, c: w.read_next("t", consumer=LONG_UTF8),
        InvalidTopicError,
    ),
    Case(
        "read_next-consumer-surrogate",
        lambda w, c: w.read_next("t", consumer=SURROGATE),
        InvalidTopicError,
    ),
    Case("read_next-consumer-int", lambda w, c: w.read_next("t", consumer=5), TypeError),
    Case("read_next-consumer-bytes", lambda w, c: w.read_next("t", consumer=b"c"), TypeError),
    Case(
        "batch_read-consumer-empty",
        lambda w, c: w.batch_read_for_topic("t", 10, consumer=""),
        InvalidTopicError,
    ),
    Case(
        "batch_read-consumer-int",
        lambda w, c: w.batch_read_for_topic("t", 10, consumer=1),
        TypeError,
    ),
    Case(
        "count-consumer-NUL",
        lambda w, c: w.topic_entry_count("t", consumer="\x00"),
        InvalidTopicError,
    ),
    Case("seek-consumer-empty", lambda w, c: w.seek("t", 0, consumer=""), InvalidTopicError),
    Case("seek-consumer-list", lambda w, c: w.seek("t", 0, consumer=["c"]), TypeError),
    # --- payloads
    Case("append-payload-str", lambda w, c: w.append_for_topic("t", "text"), TypeError),
    Case("append-payload-int", lambda w, c: w.append_for_topic("t", 3), TypeError),
    Case("append-payload-None", lambda w, c: w.append_for_topic("t", None), TypeError),
    Case("append-payload-list", lambda w, c: w.append_for_topic("t", [1, 2]), TypeError),
    Case("append-new-topic-payload-str", lambda w, c: w.append_for_topic("new", "x"), TypeError),
    # --- batches
    Case("batch-None", lambda w, c: w.batch_append_for_topic("t", None), TypeError),
    Case("batch-int", lambda w, c: w.batch_append_for_topic("t", 3), TypeError),
    Case("batch-str", lambda w, c: w.batch_append_for_topic("t", "abc"), TypeError),
    Case("batch-bytes-not-a-list", lambda w, c: w.batch_append_for_topic("t", b"abc"), TypeError),
    Case(
        "batch-with-str", lambda w, c: w.batch_append_for_topic("t", [b"a", "b", b"c"]), TypeError
    ),
    Case("batch-with-None", lambda w, c: w.batch_append_for_topic("t", [b"a", None]), TypeError),
    Case(
        "batch-new-topic-with-int",
        lambda w, c: w.batch_append_for_topic("new", [b"a", 1]),
        TypeError,
    ),
    Case(
        "generator-batch-with-str",
        lambda w, c: w.batch_append_for_topic("t", gen(b"a", b"b", "c", b"d")),
        TypeError,
    ),
    Case(
        "generator-batch-raising",
        lambda w, c: w.batch_append_for_topic("t", gen_raising()),
        RuntimeError,
    ),
    Case(
        "batch-2001-entries",
        lambda w, c: w.batch_append_for_topic("t", [b""] * 2001),
        BatchTooLargeError,
    ),
    Case(
        "batch-2001-entries-new-topic",
        lambda w, c: w.batch_append_for_topic("new", [b"x"] * 2001),
        BatchTooLargeError,
    ),
    Case(
        "batch-2001-entries-generator",
        lambda w, c: w.batch_append_for_topic("t", (b"x" for _ in range(2001))),
        BatchTooLargeError,
    ),
    Case(
        "batch-over-entry-limit",
        lambda w, c: w.batch_append_for_topic("t", [b"a", b"b", b"c", b"d"]),
        BatchTooLargeError,
        SMALL_BATCH_N,
    ),
    Case(
        "batch-over-entry-limit-generator",
        lambda w, c: w.batch_append_for_topic("t", gen(b"a", b"b", b"c", b"d")),
        BatchTooLargeError,
        SMALL_BATCH_N,
    ),
    Case(
        "batch-over-byte-limit",
        lambda w, c: w.batch_append_for_topic("t", [b"x" * 60, b"y" * 60]),
        BatchTooLargeError,
        SMALL_BATCH_BYTES,
    ),
    Case(
        "batch-over-byte-limit-one-entry",
        lambda w, c: w.batch_append_for_topic("t", [b"z" * 200]),
        BatchTooLargeError,
        SMALL_BATCH_BYTES,
    ),
    Case(
        "append-entry-too-large",
        lambda w, c: w.append_for_topic("t", b"x" * 1001),
        EntryTooLargeError,
        SMALL_ENTRIES,
    ),
    Case(
        "append-entry-too-large-new-topic",
        lambda w, c: w.append_for_topic("new", bytearray(5000)),
        EntryTooLargeError,
        SMALL_ENTRIES,
    ),
    Case(
        "batch-entry-too-large",
        lambda w, c: w.batch_append_for_topic("t", [b"ok", b"x" * 1001]),
        EntryTooLargeError,
        SMALL_ENTRIES,
    ),
    # --- max_bytes
    Case("max_bytes-0", lambda w, c: w.batch_read_for_topic("t", 0), VALUE),
    Case("max_bytes-negative", lambda w, c: w.batch_read_for_topic("t", -1), VALUE),
    Case("max_bytes-0-peek", lambda w, c: w.batch_read_for_topic("t", 0, False), VALUE),
    Case(
        "max_bytes-0-start_offset",
        lambda w, c: w.batch_read_for_topic("t", 0, start_offset=0),
        VALUE,
    ),
    Case("max_bytes-0-unknown-topic", lambda w, c: w.batch_read_for_topic("zz", 0), VALUE),
    Case("max_bytes-str", lambda w, c: w.batch_read_for_topic("t", "100"), TypeError),
    Case("max_bytes-float", lambda w, c: w.batch_read_for_topic("t", 100.0), TypeError),
    Case("max_bytes-None", lambda w, c: w.batch_read_for_topic("t", None), TypeError),
    # --- start_offset
    Case(
        "start_offset-negative",
        lambda w, c: w.batch_read_for_topic("t", 10, start_offset=-1),
        VALUE,
    ),
    Case(
        "start_offset-past-end",
        lambda w, c: w.batch_read_for_topic("t", 10, start_offset=4),
        OffsetOutOfRangeError,
    ),
    Case(
        "start_offset-unknown-topic",
        lambda w, c: w.batch_read_for_topic("zz", 10, start_offset=1),
        OffsetOutOfRangeError,
    ),
    Case(
        "start_offset-str",
        lambda w, c: w.batch_read_for_topic("t", 10, start_offset="0"),
        TypeError,
    ),
    Case(
        "start_offset-float",
        lambda w, c: w.batch_read_for_topic("t", 10, start_offset=0.0),
        TypeError,
    ),
    # --- seek
    Case("seek-negative", lambda w, c: w.seek("t", -1), OffsetOutOfRangeError),
    Case("seek-past-end", lambda w, c: w.seek("t", 4), OffsetOutOfRangeError),
    Case(
        "seek-consumer-past-end", lambda w, c: w.seek("t", 9, consumer="c"), OffsetOutOfRangeError
    ),
    Case("seek-unknown-topic", lambda w, c: w.seek("zz", 1), OffsetOutOfRangeError),
    Case("seek-str", lambda w, c: w.seek("t", "1"), TypeError),
    Case("seek-None", lambda w, c: w.seek("t", None), TypeError),
    # --- configuration values and types
    Case("milliseconds-0", lambda w, c: FsyncSchedule.milliseconds(0), InvalidConfigError),
    Case("milliseconds-negative", lambda w, c: FsyncSchedule.milliseconds(-1), InvalidConfigError),
    Case("milliseconds-str", lambda w, c: FsyncSchedule.milliseconds("200"), TypeError),
    Case("persist_every-str", lambda w, c: ReadConsistency.at_least_once("3"), TypeError),
    Case("limits-zero", lambda w, c: Limits(max_batch_entries=0), InvalidConfigError),
    Case(
        "limits-entry-over-1GiB", lambda w, c: Limits(max_entry_bytes=2**30 + 1), InvalidConfigError
    ),
    Case(
        "block_size-not-4096-multiple",
        lambda w, c: c.open_other(block_size=5000),
        InvalidConfigError,
    ),
    Case("block_size-1000", lambda w, c: c.open_other(block_size=1000), InvalidConfigError),
    Case("block_size-0", lambda w, c: c.open_other(block_size=0), InvalidConfigError),
    Case("block_size-negative", lambda w, c: c.open_other(block_size=-4096), InvalidConfigError),
    Case("block_size-bool", lambda w, c: c.open_other(block_size=True), TypeError),
    Case("block_size-float", lambda w, c: c.open_other(block_size=4096.0), TypeError),
    Case("block_size-str", lambda w, c: c.open_other(block_size="4096"), TypeError),
    Case("blocks_per_file-0", lambda w, c: c.open_other(blocks_per_file=0), InvalidConfigError),
    Case(
        "blocks_per_file-negative",
        lambda w, c: c.open_other(blocks_per_file=-2),
        InvalidConfigError,
    ),
    Case("blocks_per_file-bool", lambda w, c: c.open_other(blocks_per_file=False), TypeError),
    Case("consistency-str", lambda w, c: c.open_other(consistency="strict"), TypeError),
    Case("fsync-int", lambda w, c: c.open_other(fsync=200), TypeError),
    Case("limits-dict", lambda w, c: c.open_other(limits={"max_batch_entries": 1}), TypeError),
    Case("data_dir-int", lambda w, c: c.open_other(data_dir=5), TypeError),
    Case("key-int", lambda w, c: c.open_other(key=5), TypeError),
    Case("backend-int", lambda w, c: c.open_other(backend=5), TypeError),
    Case("data_dir-regular-file", lambda w, c: c.open_other(data_dir=a_regular_file(c)), VALUE),
    Case(
        "data_dir-under-regular-file",
        lambda w, c: c.open_other(data_dir=a_regular_file(c) / "sub"),
        VALUE,
    ),
]


def _prepare(open_wal: OpenWal, overrides: dict[str, Any]) -> Walrus:
    wal = open_wal(**overrides)
    for i, payload in enumerate(BASE):
        assert wal.append_for_topic("t", payload) == i
    assert wal.read_next("t") == Entry(b"e0", 0)
    assert wal.read_next("t", consumer="c") == Entry(b"e0", 0)
    return wal


def read_all(wal: Walrus, topic: str) -> list[Entry]:
    """Every entry, by start_offset reads (a batch read may be capped by max_batch_entries)."""
    out: list[Entry] = []
    while got := wal.batch_read_for_topic(topic, 10_000, start_offset=len(out)):
        assert [e.offset for e in got] == list(range(len(out), len(out) + len(got)))
        out += got
    return out


def _check_intact(wal: Walrus, extra: list[bytes]) -> None:
    expected = [Entry(p, i) for i, p in enumerate(BASE + extra)]
    assert wal.topics() == ["t"]
    assert wal.topic_entry_counts() == {"t": len(expected) - 1}
    assert wal.topic_entry_count("t", consumer="c") == len(expected) - 1
    assert read_all(wal, "t") == expected
    assert wal.read_next("t", checkpoint=False) == Entry(b"e1", 1)
    assert wal.read_next("t", checkpoint=False, consumer="c") == Entry(b"e1", 1)


def test_table_has_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(open_wal: OpenWal, tmp_path: Path, backend_name: str, case: Case) -> None:
    wal = _prepare(open_wal, case.overrides)
    ctx = Ctx(tmp=tmp_path, backend=backend_name)

    with pytest.raises(Exception) as info:
        case.action(wal, ctx)
    exc = info.value
    if case.expected is VALUE:
        assert isinstance(exc, WalrusError) and isinstance(exc, ValueError), repr(exc)
    else:
        assert isinstance(exc, case.expected), repr(exc)
        if case.expected is TypeError:
            assert not isinstance(exc, ValueError), repr(exc)
        elif issubclass(case.expected, WalrusError):
            assert isinstance(exc, ValueError), repr(exc)

    # Still usable, nothing lost, nothing half-written.
    _check_intact(wal, [])
    assert wal.append_for_topic("t", b"after") == len(BASE)
    assert wal.batch_append_for_topic("t", [b"b1", b"b2"]) == range(len(BASE) + 1, len(BASE) + 3)
    extra = [b"after", b"b1", b"b2"]
    _check_intact(wal, extra)
    wal.close()

    wal = open_wal(**case.overrides)
    _check_intact(wal, extra)


# --- the good twins of some bad cases ---------------------------------------------------------


def _iterables() -> list[tuple[str, Callable[[], Any]]]:
    items = [b"a", bytearray(b"b"), memoryview(b"c")]
    return [
        ("list", lambda: list(items)),
        ("tuple", lambda: tuple(items)),
        ("generator", lambda: (x for x in items)),
        ("generator-function", lambda: gen(*items)),
        ("iterator", lambda: iter(items)),
        ("map", lambda: map(bytes, [b"a", b"b", b"c"])),
    ]


@pytest.mark.parametrize("make", [m for _, m in _iterables()], ids=[n for n, _ in _iterables()])
def test_any_iterable_of_buffers_is_a_batch(open_wal: OpenWal, make: Callable[[], Any]) -> None:
    wal = open_wal()
    assert wal.batch_append_for_topic("t", make()) == range(0, 3)
    assert wal.batch_append_for_topic("t", iter([])) == range(3, 3)
    assert wal.batch_append_for_topic("t", make()) == range(3, 6)
    got = wal.batch_read_for_topic("t", 1000)
    assert [e.data for e in got] == [b"a", b"b", b"c"] * 2
    assert [e.offset for e in got] == list(range(6))


def test_limits_are_inclusive(open_wal: OpenWal) -> None:
    wal = open_wal(limits=Limits(max_entry_bytes=1000, max_batch_entries=3))
    assert wal.append_for_topic("t", b"x" * 1000) == 0
    assert wal.batch_append_for_topic("t", [b"a", b"b", b"y" * 1000]) == range(1, 4)
    wal.close()
    wal = open_wal()
    assert wal.batch_append_for_topic("u", [b""] * 2000) == range(0, 2000)
    assert wal.topic_entry_count("u") == 2000


def test_topic_and_consumer_names_at_the_limit(open_wal: OpenWal) -> None:
    wal = open_wal()
    names = ["x" * 255, "é" * 127 + "x", "a", "with space/and:colons..", "ünïcødé ☕", "\ud7ff"]
    for i, name in enumerate(names):
        assert wal.append_for_topic(name, b"%d" % i) == 0
        assert wal.read_next(name, consumer=name) == Entry(b"%d" % i, 0)
    assert sorted(wal.topics()) == sorted(names)
    wal.close()
    wal = open_wal()
    for i, name in enumerate(names):
        assert wal.read_next(name) == Entry(b"%d" % i, 0)
        assert wal.read_next(name, consumer=name) is None


def test_at_least_once_persist_every_below_one_is_accepted() -> None:
    assert ReadConsistency.at_least_once(persist_every=0) == ReadConsistency.at_least_once(1)
    assert ReadConsistency.at_least_once(persist_every=-5) == ReadConsistency.at_least_once(1)
