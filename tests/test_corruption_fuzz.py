"""Corruption fuzzing (hypothesis): random byte flips and truncations of the data files and of
``cursors.dat`` of a WAL whose content is known.

A pristine directory is built once per test function (two flavours: ``clean``, closed cleanly,
and ``crashed``, abandoned by a child process without closing, so its tail blocks are unsealed),
its layout is read with the documented format (``walrus_core.format``), and every example damages
a fresh copy (``shutil.copytree``). Guarantees checked for every example (issue 4,
"Corruption"; issue 2, "Damage"):

* ``open_succeeds``: opening never raises (no ``CorruptionError``, no other ``WalrusError``) and
  never hangs (open and every read run under a watchdog);
* ``no_wrong_bytes``: every entry returned, by offset reads, by ``read_next`` or by a per-offset
  full verify, equals the original at its offset; anything else raises ``CorruptionError``
  naming that offset;
* ``intact_entries_kept``: every entry whose bytes and block header were not touched is still
  returned, except the ones a torn tail legitimately takes with it (everything after the last
  intact entry, and the rest of the batch that damage cut);
* ``damage_in_the_middle_raises``: a damaged entry with intact entries after it is not dropped:
  reading it raises ``CorruptionError``;
* ``cursor_kept``: with intact ``cursors.dat`` every consumer resumes where it was (clamped to
  what is left);
* ``cursor_damage_replays``: a damaged or truncated ``cursors.dat`` never makes a consumer skip an
  entry it did not consume (its position can only go back), and the data stays intact;
* ``cursor_damage_logged``: when a consumer has to replay, a WARNING says so;
* ``recovery_idempotent``: a second open, with no write in between, finds exactly what the
  first one did (recovery never loses on the next open what it returned on the previous one);
* ``still_usable``: appends work after the damage and read back.

Examples in the default run: 4 x 130 (data) + 2 x 140 (truncations) + 2 x 120 (cursors) =
1040 corruption cases (derandomized, no example database).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrus_core import CorruptionError, FsyncSchedule, ReadConsistency, Walrus
from walrus_core import format as fmt

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
BS = GEOMETRY["block_size"]
TOPICS = ("fz-a", "fz-b", "fz-c")
#: (topic, consumer, entries it reads): some cursors persisted many times (two valid copies),
#: "n2" once (one copy).
READS: tuple[tuple[str, str | None, int], ...] = (
    ("fz-a", None, 7),
    ("fz-a", "n1", 3),
    ("fz-b", "n2", 1),
    ("fz-c", None, 12),
    ("fz-b", None, 5),
)
WATCHDOG = 60.0  # seconds; a hang is a failure, not a wait

FUZZ = settings(
    max_examples=130,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- the pristine directory ------------------------------------------------------------------


def _payload(rng: random.Random, topic: str, offset: int) -> bytes:
    r = rng.random()
    size = (
        0
        if r < 0.08
        else rng.randint(1, 400)
        if r < 0.85
        else rng.randint(400, 3000)
        if r < 0.97
        else 5000
    )
    head = f"<{topic}#{offset}>".encode()
    body = rng.randbytes(min(size, 97))
    return head + ((body * (size // 97 + 1))[:size] if body else b"")


def _plan() -> tuple[list[dict[str, Any]], dict[str, list[bytes]], dict[str, list[range]]]:
    """Deterministic operations: appends and batches, reads in the middle, more appends."""
    rng = random.Random("corruption-fuzz")
    data: dict[str, list[bytes]] = {t: [] for t in TOPICS}
    batches: dict[str, list[range]] = {t: [] for t in TOPICS}
    ops: list[dict[str, Any]] = []

    def appends(count: int) -> None:
        for _ in range(count):
            topic = rng.choice(TOPICS)
            seq = data[topic]
            if rng.random() < 0.5:
                p = _payload(rng, topic, len(seq))
                ops.append({"topic": topic, "hex": p.hex()})
                batches[topic].append(range(len(seq), len(seq) + 1))
                seq.append(p)
            else:
                n = rng.randint(2, 12)
                ps = [_payload(rng, topic, len(seq) + i) for i in range(n)]
                ops.append({"topic": topic, "batch": [p.hex() for p in ps]})
                batches[topic].append(range(len(seq), len(seq) + n))
                seq.extend(ps)

    appends(30)
    for topic, consumer, n in READS:
        ops.append({"topic": topic, "read": n, "consumer": consumer})
    appends(12)
    return ops, data, batches


_CHILD = r"""
import json, os, sys
from walrus_core import FsyncSchedule, ReadConsistency, Walrus
doc = json.loads(sys.stdin.read())
wal = Walrus(data_dir=doc["data_dir"], backend=doc["backend"], fsync=FsyncSchedule.no_fsync(),
             consistency=ReadConsistency.strictly_at_once(), **doc["geometry"])
for op in doc["ops"]:
    if "hex" in op:
        wal.append_for_topic(op["topic"], bytes.fromhex(op["hex"]))
    elif "batch" in op:
        wal.batch_append_for_topic(op["topic"], [bytes.fromhex(h) for h in op["batch"]])
    else:
        for _ in range(op["read"]):
            assert wal.read_next(op["topic"], consumer=op["consumer"]) is not None
sys.stdout.write("DONE\n")
sys.stdout.flush()
os._exit(0)
"""


@dataclass
class EntryLoc:
    path: str
    pos: int  # file offset of the entry header
    size: int  # header + payload
    block: int  # index into Pristine.blocks


@dataclass
class BlockLoc:
    path: str
    start: int
    header_len: int  # fixed header + topic name (what its crc covers)
    topic: str


@dataclass
class Pristine:
    root: Path
    data: dict[str, list[bytes]]
    batches: dict[str, list[range]]
    positions: dict[tuple[str, str | None], int]
    files: list[str] = field(default_factory=list)  # data file names
    sizes: dict[str, int] = field(default_factory=dict)
    blocks: list[BlockLoc] = field(default_factory=list)
    entries: dict[str, list[EntryLoc]] = field(default_factory=dict)  # per topic, by offset
    cursor_bytes: int = 0  # bytes of cursors.dat holding used slots


def _layout(p: Pristine) -> None:
    """Read the pristine layout with the documented format; every entry must be found."""
    p.files = sorted(n for n in os.listdir(p.root) if fmt.parse_data_file_name(n) is not None)
    found: dict[str, dict[int, EntryLoc]] = {t: {} for t in TOPICS}
    for name in p.files:
        raw = (p.root / name).read_bytes()
        p.sizes[name] = len(raw)
        start = 0
        while start + fmt.BLOCK_HEADER_SIZE <= len(raw):
            header = fmt.BlockHeader.unpack(raw[start : start + fmt.BLOCK_HEADER_SIZE])
            if header is None:
                start += BS
                continue
            assert not header.flags & fmt.BLOCK_FLAG_DEAD, "precondition: no dead blocks"
            p.blocks.append(
                BlockLoc(
                    name, start, fmt.BLOCK_FIXED.size + len(header.topic.encode()), header.topic
                )
            )
            end = start + header.slots * BS
            pos = start + fmt.BLOCK_HEADER_SIZE
            offset = header.first_offset
            while pos + fmt.ENTRY_HEADER_SIZE <= end:
                crc, length, seq, version, flags, _ = fmt.ENTRY_HEADER.unpack_from(raw, pos)
                stop = pos + fmt.ENTRY_HEADER_SIZE + length
                if version != fmt.ENTRY_VERSION or stop > end or seq != offset:
                    break
                body = raw[pos + fmt.ENTRY_HEADER_SIZE : stop]
                seed = fmt.entry_seed(
                    fmt.block_salt(header.nonce), pos - start, offset, length, flags
                )
                if crc32c(body, seed) != crc:
                    break
                assert body == p.data[header.topic][offset], "precondition: layout matches"
                found[header.topic][offset] = EntryLoc(name, pos, stop - pos, len(p.blocks) - 1)
                pos = stop
                offset += 1
            start = end
    for topic in TOPICS:
        assert sorted(found[topic]) == list(range(len(p.data[topic]))), (
            f"precondition: every entry of {topic!r} located"
        )
        p.entries[topic] = [found[topic][o] for o in range(len(p.data[topic]))]
    used = len({(t, c) for t, c, _ in READS})
    p.cursor_bytes = used * fmt.CURSOR_SLOT_SIZE


def build_pristine(root: Path, backend: str, crashed: bool) -> Pristine:
    ops, data, batches = _plan()
    if crashed:
        doc = {"data_dir": str(root), "backend": backend, "geometry": GEOMETRY, "ops": ops}
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0 and proc.stdout == "DONE\n", proc.stderr
    else:
        with Walrus(
            data_dir=root,
            backend=backend,
            fsync=FsyncSchedule.no_fsync(),
            consistency=ReadConsistency.strictly_at_once(),
            **GEOMETRY,
        ) as wal:
            for op in ops:
                if "hex" in op:
                    wal.append_for_topic(op["topic"], bytes.fromhex(op["hex"]))
                elif "batch" in op:
                    wal.batch_append_for_topic(op["topic"], [bytes.fromhex(h) for h in op["batch"]])
                else:
                    for _ in range(op["read"]):
                        assert wal.read_next(op["topic"], consumer=op["consumer"]) is not None
    positions: dict[tuple[str, str | None], int] = {}
    for topic, consumer, n in READS:
        positions[(topic, consumer)] = positions.get((topic, consumer), 0) + n
    p = Pristine(root, data, batches, positions)
    _layout(p)
    assert len(p.files) >= 3, "precondition: the content spans several data files"
    return p


_CACHE: dict[tuple[str, bool], Pristine] = {}
#: Figures for the closing note (printed at the end of the module with ``-s``).
FIGURES: dict[str, int] = {
    "data_cases": 0,
    "cursor_cases": 0,
    "cases_with_corruption_error": 0,
    "cases_with_entries_dropped": 0,
    "cases_with_consumer_replay": 0,
}


@pytest.fixture(scope="module")
def pristine_factory(
    tmp_path_factory: pytest.TempPathFactory, backend_name: str
) -> Iterator[Callable[[bool], Pristine]]:
    """Builds each flavour of the pristine directory once (per module and backend)."""

    def get(crashed: bool) -> Pristine:
        key = (backend_name, crashed)
        if key not in _CACHE:
            root = tmp_path_factory.mktemp("pristine") / ("crashed" if crashed else "clean")
            _CACHE[key] = build_pristine(root, backend_name, crashed)
        return _CACHE[key]

    yield get
    _CACHE.clear()
    print(f"corruption-fuzz figures: {FIGURES}")


# --- damage ----------------------------------------------------------------------------------


@dataclass
class Damage:
    flips: list[tuple[str, int, int]] = field(default_factory=list)  # (file, pos, xor mask)
    cuts: dict[str, int] = field(default_factory=dict)  # file -> new size

    def touched(self, name: str, start: int, stop: int) -> bool:
        """Whether any byte of [start, stop) of file ``name`` was changed or cut off."""
        if name in self.cuts and self.cuts[name] < stop:
            return True
        return any(f == name and start <= pos < stop for f, pos, _ in self.flips)

    def apply(self, root: Path) -> None:
        for name, pos, mask in self.flips:
            with open(root / name, "r+b") as fh:
                fh.seek(pos)
                old = fh.read(1)
                fh.seek(pos)
                fh.write(bytes([old[0] ^ mask]))
        for name, size in self.cuts.items():
            os.truncate(root / name, size)


@st.composite
def data_flip(draw: st.DrawFn, p: Pristine) -> tuple[str, int, int]:
    mask = draw(st.integers(1, 255))
    where = draw(st.sampled_from(("anywhere", "entry", "entry_header", "block_header")))
    if where == "anywhere":
        name = draw(st.sampled_from(p.files))
        return name, draw(st.integers(0, p.sizes[name] - 1)), mask
    if where == "block_header":
        block = draw(st.sampled_from(p.blocks))
        rel = draw(st.integers(0, fmt.BLOCK_HEADER_SIZE - 1))
        return block.path, block.start + rel, mask
    topic = draw(st.sampled_from(TOPICS))
    entry = draw(st.sampled_from(p.entries[topic]))
    limit = fmt.ENTRY_HEADER_SIZE if where == "entry_header" else entry.size
    return entry.path, entry.pos + draw(st.integers(0, limit - 1)), mask


@contextmanager
def captured_warnings() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("walrus_core")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def bounded(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; fail if it does not finish within WATCHDOG seconds."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WATCHDOG)
    if t.is_alive():
        pytest.fail(f"never_hangs: open/read did not finish within {WATCHDOG}s")
    if errors:
        raise errors[0]
    return result[0] if result else None


_CASES = itertools.count()


def copy_of(p: Pristine, tmp: Path) -> Path:
    target = tmp / f"case-{next(_CASES)}"
    shutil.copytree(p.root, target)
    return target


def open_plain(root: Path, backend: str) -> Walrus:
    try:
        return Walrus(data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync(), **GEOMETRY)
    except Exception as exc:
        pytest.fail(f"open_succeeds: opening the damaged directory raised {exc!r}")


# --- reading ---------------------------------------------------------------------------------


def read_everything(wal: Walrus, p: Pristine, topic: str) -> tuple[dict[int, bytes], list[int]]:
    """Offset reads from 0 to the end, seeking past CorruptionError; checks every byte."""
    got: dict[int, bytes] = {}
    corrupt: list[int] = []
    off = 0
    original = p.data[topic]
    for _ in range(4 * len(original) + 10):
        try:
            entries = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=off)
        except CorruptionError as exc:
            # From 0, a topic whose first blocks are unreadable starts later (at its first
            # remaining entry); otherwise the error names the offset asked for.
            starts_later = off == 0 and not got and not corrupt and (exc.offset or 0) > 0
            assert exc.offset == off or starts_later, (
                f"no_wrong_bytes: {topic!r} read from {off} raised naming {exc.offset}: {exc}"
            )
            assert exc.offset is not None
            corrupt.append(exc.offset)
            off = exc.offset + 1
            continue
        if not entries:
            return got, corrupt
        for e in entries:
            assert e.offset >= off and e.offset not in got, f"{topic!r}: offset {e.offset} again"
            assert e.offset < len(original) and e.data == original[e.offset], (
                f"no_wrong_bytes: {topic!r} offset {e.offset} returned {e.data[:40]!r}"
            )
            got[e.offset] = e.data
        off = entries[-1].offset + 1
    pytest.fail(f"never_hangs: reading {topic!r} did not reach the end")


def full_verify(wal: Walrus, p: Pristine, topic: str, start: int, end: int) -> set[int]:
    """Every offset on its own (start_offset reads): exact bytes or CorruptionError naming it."""
    bad: set[int] = set()
    for off in range(start, end):
        try:
            entries = wal.batch_read_for_topic(topic, 1, checkpoint=False, start_offset=off)
        except CorruptionError as exc:
            assert exc.offset == off, f"full verify of {topic!r} at {off} named {exc.offset}"
            bad.add(off)
            continue
        assert entries and entries[0].offset == off, f"full verify of {topic!r} at {off}"
        for e in entries:
            assert e.data == p.data[topic][e.offset], f"no_wrong_bytes: full verify {e.offset}"
    return bad


def consume(wal: Walrus, p: Pristine, topic: str, consumer: str | None, pos: int) -> int:
    """read_next from ``pos`` to the end, seeking past CorruptionError; returns the end."""
    cursor = pos
    for _ in range(4 * len(p.data[topic]) + 10):
        try:
            entry = wal.read_next(topic, consumer=consumer)
        except CorruptionError as exc:
            assert exc.offset == cursor, f"{topic!r}: read_next at {cursor} named {exc.offset}"
            cursor += 1
            wal.seek(topic, cursor, consumer=consumer)
            continue
        if entry is None:
            return cursor
        assert entry.offset == cursor, f"{topic!r}: read_next at {cursor} gave {entry.offset}"
        assert entry.data == p.data[topic][cursor], f"no_wrong_bytes: read_next at {cursor}"
        cursor += 1
    pytest.fail("never_hangs: read_next did not reach the end")


# --- the checks ------------------------------------------------------------------------------


def intact_offsets(p: Pristine, topic: str, damage: Damage) -> set[int]:
    out = set()
    for offset, e in enumerate(p.entries[topic]):
        block = p.blocks[e.block]
        if damage.cuts.get(e.path, BS) < BS:
            continue  # a file cut below one block is ignored entirely
        if damage.touched(e.path, e.pos, e.pos + e.size):
            continue
        if damage.touched(block.path, block.start, block.start + block.header_len):
            continue
        out.add(offset)
    return out


def droppable_from(p: Pristine, topic: str, intact: set[int]) -> int:
    """Offsets from here on may be gone. A torn tail takes everything after the last intact
    entry; a batch cut by it is rolled back as a whole; and what the rollback leaves at the end
    may again be a damaged tail (repeat until stable)."""
    cut = len(p.data[topic])
    while True:
        j = cut
        while j > 0 and j - 1 not in intact:
            j -= 1
        for r in p.batches[topic]:
            if r.start < j < r.stop:
                j = r.start
        if j == cut:
            return cut
        cut = j


def check_data(root: Path, p: Pristine, backend: str, damage: Damage) -> None:
    def body() -> None:
        with captured_warnings() as records:
            wal = open_plain(root, backend)
            first = {topic: read_everything(wal, p, topic) for topic in TOPICS}
            # recovery_idempotent: a second open (no writes in between) sees the same log.
            wal.close()
            wal = open_plain(root, backend)
        for topic in TOPICS:
            again = read_everything(wal, p, topic)
            assert again == first[topic], (
                f"recovery_idempotent: {topic!r} after the first open: returned "
                f"{sorted(first[topic][0])}, CorruptionError at {first[topic][1]}; after the "
                f"second: returned {sorted(again[0])}, CorruptionError at {again[1]} "
                f"(damage {damage})"
            )
        FIGURES["data_cases"] += 1
        flags = {"corrupt": False, "dropped": False}
        try:
            for topic in TOPICS:
                got, corrupt = read_everything(wal, p, topic)
                flags["corrupt"] |= bool(corrupt)
                seen = sorted([*got, *corrupt])
                end = seen[-1] + 1 if seen else 0
                start = seen[0] if seen else 0
                assert seen == list(range(start, end)), f"{topic!r}: offsets {seen} not contiguous"
                intact = intact_offsets(p, topic, damage)
                keep_below = droppable_from(p, topic, intact)
                flags["dropped"] |= end < len(p.data[topic])
                missing = sorted(o for o in intact if o < keep_below and o not in got)
                assert not missing, (
                    f"intact_entries_kept: {topic!r} lost intact entries {missing} "
                    f"(returned {sorted(got)}, CorruptionError at {corrupt}, damage {damage})"
                )
                last_kept = max((i for i in intact if i < keep_below), default=-1)
                if start > 0:
                    # The topic's first block(s) are unreadable: the topic now starts later.
                    # Allowed, but it must be said (intact entries below start were caught
                    # above).
                    assert any(topic in r.getMessage() for r in records), (
                        f"damage_in_the_middle_raises: {topic!r} now starts at {start} and no "
                        f"WARNING names it (damage {damage})"
                    )
                for o in range(start, last_kept):
                    if o not in intact:
                        assert o in corrupt or o in got, (
                            f"damage_in_the_middle_raises: damaged {topic!r} entry {o} vanished "
                            f"with intact entries after it (damage {damage})"
                        )
                bad = full_verify(wal, p, topic, start, end)
                assert bad == set(corrupt), f"full verify of {topic!r}: {bad} != {corrupt}"
                assert (topic in wal.topics()) == (end > 0)
                for (t, consumer), orig in p.positions.items():
                    if t != topic:
                        continue
                    pos = end - wal.topic_entry_count(topic, consumer=consumer)
                    assert pos == max(min(orig, end), start), (
                        f"cursor_kept: consumer {consumer!r} of {topic!r} at {pos}, was {orig} "
                        f"(entries {start}..{end})"
                    )
                    consume(wal, p, topic, consumer, pos)
                assert wal.append_for_topic(topic, b"still-usable") == end, "still_usable"
        finally:
            wal.close()
        FIGURES["cases_with_corruption_error"] += flags["corrupt"]
        FIGURES["cases_with_entries_dropped"] += flags["dropped"]

    bounded(body)


def check_cursors(
    root: Path, p: Pristine, backend: str, records: list[logging.LogRecord], logged: bool
) -> None:
    def body() -> None:
        wal = open_plain(root, backend)
        try:
            replayed = []
            for topic in TOPICS:
                got, corrupt = read_everything(wal, p, topic)
                assert not corrupt and got == dict(enumerate(p.data[topic])), (
                    f"cursor_damage_replays: {topic!r} data changed by cursor damage"
                )
            for (topic, consumer), orig in p.positions.items():
                end = len(p.data[topic])
                pos = end - wal.topic_entry_count(topic, consumer=consumer)
                assert 0 <= pos <= orig, (
                    f"cursor_damage_replays: consumer {consumer!r} of {topic!r} resumed at {pos} "
                    f"but had only consumed up to {orig}: it skips entries"
                )
                if pos < orig:
                    replayed.append((topic, consumer, orig, pos))
                assert consume(wal, p, topic, consumer, pos) == end
            FIGURES["cursor_cases"] += not logged
            FIGURES["cases_with_consumer_replay"] += bool(replayed) and not logged
            if logged and replayed:
                warned = [r for r in records if r.levelno >= logging.WARNING]
                assert warned, (
                    f"cursor_damage_logged: consumers replay {replayed} after cursors.dat was "
                    f"damaged, but no WARNING was logged"
                )
        finally:
            wal.close()

    bounded(body)


# --- the tests -------------------------------------------------------------------------------

FLAVOURS = pytest.mark.parametrize("crashed", [False, True], ids=["clean", "crashed"])


@FLAVOURS
@FUZZ
@given(data=st.data())
def test_data_byte_flips(
    data: st.DataObject,
    crashed: bool,
    pristine_factory: Callable[[bool], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """1 to 4 random byte flips anywhere in the data files, in entries, entry headers or block
    header regions (seal records included): open_succeeds, no_wrong_bytes,
    intact_entries_kept, damage_in_the_middle_raises, cursor_kept, still_usable, and a full
    verify of every offset agrees with the sequential read."""
    p = pristine_factory(crashed)
    flips = data.draw(st.lists(data_flip(p), min_size=1, max_size=4), label="flips")
    damage = Damage(flips=flips)
    root = copy_of(p, tmp_path)
    damage.apply(root)
    check_data(root, p, backend_name, damage)
    shutil.rmtree(root)


@FLAVOURS
@FUZZ
@given(data=st.data())
def test_data_entry_flips(
    data: st.DataObject,
    crashed: bool,
    pristine_factory: Callable[[bool], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """Same checks as test_data_byte_flips with single flips confined to entries of one topic
    (denser coverage of entry headers and payloads)."""
    p = pristine_factory(crashed)
    topic = data.draw(st.sampled_from(TOPICS), label="topic")
    entry = data.draw(st.sampled_from(p.entries[topic]), label="entry")
    rel = data.draw(st.integers(0, entry.size - 1), label="byte")
    mask = data.draw(st.sampled_from((0x01, 0x80, 0xFF)), label="mask")
    damage = Damage(flips=[(entry.path, entry.pos + rel, mask)])
    root = copy_of(p, tmp_path)
    damage.apply(root)
    check_data(root, p, backend_name, damage)
    shutil.rmtree(root)


@FLAVOURS
@settings(FUZZ, max_examples=140)
@given(data=st.data())
def test_data_truncation(
    data: st.DataObject,
    crashed: bool,
    pristine_factory: Callable[[bool], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """One or two data files cut at a random point (sometimes also a byte flip): the same
    checks (recovery_idempotent included); what was cut off may be gone (torn tail, or
    CorruptionError in the middle), the rest stays readable."""
    p = pristine_factory(crashed)
    names = data.draw(
        st.lists(st.sampled_from(p.files), min_size=1, max_size=2, unique=True), label="files"
    )
    cuts = {n: data.draw(st.integers(0, p.sizes[n]), label=f"cut {n}") for n in names}
    flips = data.draw(st.lists(data_flip(p), max_size=1), label="flips")
    damage = Damage(flips=flips, cuts=cuts)
    root = copy_of(p, tmp_path)
    damage.apply(root)
    check_data(root, p, backend_name, damage)
    shutil.rmtree(root)


@st.composite
def cursor_damage(draw: st.DrawFn, p: Pristine) -> Damage:
    size = (p.root / fmt.CURSORS_NAME).stat().st_size
    flips = draw(
        st.lists(
            st.tuples(
                st.just(fmt.CURSORS_NAME),
                st.one_of(
                    st.integers(0, p.cursor_bytes - 1),
                    # the two value copies of a used slot
                    st.builds(
                        lambda slot, at, rel: slot * fmt.CURSOR_SLOT_SIZE + at + rel,
                        st.integers(0, p.cursor_bytes // fmt.CURSOR_SLOT_SIZE - 1),
                        st.sampled_from(fmt.CURSOR_COPY_AT),
                        st.integers(0, fmt.CURSOR_COPY.size - 1),
                    ),
                ),
                st.integers(1, 255),
            ),
            max_size=3,
        )
    )
    cuts = {}
    if not flips or draw(st.booleans()):
        cuts[fmt.CURSORS_NAME] = draw(
            st.one_of(st.integers(0, p.cursor_bytes), st.integers(0, size))
        )
    return Damage(flips=flips, cuts=cuts)


@FLAVOURS
@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_cursor_damage_never_skips(
    data: st.DataObject,
    crashed: bool,
    pristine_factory: Callable[[bool], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """Random flips in the used slots of cursors.dat and/or truncation of it:
    open_succeeds, cursor_damage_replays (every consumer resumes at or before where it was and
    reads the rest with the exact bytes), the data is untouched."""
    p = pristine_factory(crashed)
    damage = data.draw(cursor_damage(p), label="damage")
    root = copy_of(p, tmp_path)
    damage.apply(root)
    check_cursors(root, p, backend_name, [], logged=False)
    shutil.rmtree(root)


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_cursor_damage_replay_is_logged(
    data: st.DataObject,
    pristine_factory: Callable[[bool], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """cursor_damage_logged: whenever cursor damage makes a consumer replay, a WARNING from
    logger ``walrus_core`` says so (issue 4: "fall back to something safe (replay), and say so
    in a log line")."""
    p = pristine_factory(False)
    damage = data.draw(cursor_damage(p), label="damage")
    root = copy_of(p, tmp_path)
    damage.apply(root)
    with captured_warnings() as records:
        check_cursors(root, p, backend_name, records, logged=True)
    shutil.rmtree(root)


def _newest_copy(p: Pristine, slot: int) -> int:
    raw = (p.root / fmt.CURSORS_NAME).read_bytes()[
        slot * fmt.CURSOR_SLOT_SIZE : (slot + 1) * fmt.CURSOR_SLOT_SIZE
    ]
    names = fmt.unpack_cursor_names(raw)
    assert names is not None, "precondition: the slot is readable"
    salt = fmt.cursor_salt(slot, names[0].encode(), names[1].encode())
    copies = [(fmt.unpack_cursor_copy(raw, at, salt), at) for at in fmt.CURSOR_COPY_AT]
    valid = [(c[0], at) for c, at in copies if c is not None]
    assert len(valid) == 2, "precondition: the slot has two valid copies"
    return slot * fmt.CURSOR_SLOT_SIZE + max(valid)[1]


def test_damaged_newest_cursor_copy_is_logged(
    pristine_factory: Callable[[bool], Pristine], backend_name: str, tmp_path: Path
) -> None:
    """cursor_damage_logged, deterministic: the newest copy of the ("fz-a", default) cursor is
    garbled; the consumer replays from the older copy (cursor_damage_replays) and a WARNING
    must say so."""
    p = pristine_factory(False)
    root = copy_of(p, tmp_path)
    Damage(flips=[(fmt.CURSORS_NAME, _newest_copy(p, 0) + 20, 0x10)]).apply(root)
    with captured_warnings() as records:
        with Walrus(data_dir=root, backend=backend_name, **GEOMETRY) as wal:
            pos = len(p.data["fz-a"]) - wal.topic_entry_count("fz-a")
        assert pos < p.positions[("fz-a", None)], "precondition: the consumer replays"
        assert records, "cursor_damage_logged: the replay was not logged"


def test_truncated_cursors_file_is_logged(
    pristine_factory: Callable[[bool], Pristine], backend_name: str, tmp_path: Path
) -> None:
    """cursor_damage_logged, deterministic: cursors.dat is cut to 0 bytes; every consumer
    replays from the start (cursor_damage_replays) and a WARNING must say so."""
    p = pristine_factory(False)
    root = copy_of(p, tmp_path)
    Damage(cuts={fmt.CURSORS_NAME: 0}).apply(root)
    with captured_warnings() as records:
        with Walrus(data_dir=root, backend=backend_name, **GEOMETRY) as wal:
            assert wal.topic_entry_count("fz-a") == len(p.data["fz-a"]), "precondition: replay"
        assert records, "cursor_damage_logged: losing every cursor was not logged"


def test_damaged_length_field_does_not_hide_the_next_entry(
    wal_dir: Path, backend_name: str
) -> None:
    """intact_entries_kept, deterministic: five 40-byte entries in one sealed block; the length
    field of entry 2 gets one bit flipped (40 -> 41). Entry 2 must raise CorruptionError and
    entries 3 and 4 (untouched) must still be returned, by offset reads and by a consumer that
    seeks past entry 2 as documented: the reader resynchronises instead of walking on with the
    damaged length."""
    payloads = [bytes([65 + i]) * 40 for i in range(5)]
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        assert wal.batch_append_for_topic("len", payloads) == range(5)
    blob_name = next(n for n in os.listdir(wal_dir) if fmt.parse_data_file_name(n) is not None)
    raw = (wal_dir / blob_name).read_bytes()
    at = raw.find(payloads[2]) - fmt.ENTRY_HEADER_SIZE
    assert at > 0 and fmt.ENTRY_HEADER.unpack_from(raw, at)[1:3] == (40, 2), "precondition"
    Damage(flips=[(blob_name, at + 4, 0x01)]).apply(wal_dir)
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        with pytest.raises(CorruptionError):
            wal.batch_read_for_topic("len", 1, checkpoint=False, start_offset=2)
        assert [e.data for e in wal.batch_read_for_topic("len", 1 << 20, False, 3)] == (
            payloads[3:]
        ), "intact_entries_kept: entries 3 and 4 must be readable"
        assert wal.read_next("len") is not None and wal.read_next("len") is not None
        with pytest.raises(CorruptionError):
            wal.read_next("len")
        wal.seek("len", 3)
        entry = wal.read_next("len")
        assert entry is not None and entry.data == payloads[3], "intact_entries_kept: read_next"


def _first_data_file(root: Path) -> Path:
    return root / next(n for n in sorted(os.listdir(root)) if fmt.parse_data_file_name(n))


def test_open_survives_damaged_entries_before_a_cut_batch(wal_dir: Path, backend_name: str) -> None:
    """open_succeeds, deterministic: block 1 holds two single appends and the first entry of a
    batch whose remaining entries sit in block 2 (block 1's seal says: 3 entries, 2
    committed). Block 2 never reached the disk (zeroed) and both singles are damaged. Opening
    must succeed: the batch is rolled back, the singles raise CorruptionError or are dropped."""
    singles = [b"s%d" % i + b"." * 1198 for i in range(2)]
    batch = [b"y%02d" % i + b"+" * 397 for i in range(6)]
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        for data in singles:
            wal.append_for_topic("cut", data)
        assert wal.batch_append_for_topic("cut", batch) == range(2, 8)
    path = _first_data_file(wal_dir)
    raw = bytearray(path.read_bytes())
    header = fmt.BlockHeader.unpack(bytes(raw[: fmt.BLOCK_HEADER_SIZE]))
    assert header is not None, "precondition: layout"
    seal = fmt.SealRecord.unpack(bytes(raw[: fmt.BLOCK_HEADER_SIZE]), fmt.block_salt(header.nonce))
    assert seal is not None and (seal.count, seal.committed) == (3, 2), "precondition: layout"
    assert raw.find(batch[1]) // BS == 1, "precondition: the batch continues in block 2"
    for data in singles:
        raw[raw.find(data) + 50] ^= 0x01
    raw[BS : 2 * BS] = bytes(BS)
    path.write_bytes(bytes(raw))
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        assert wal.topic_entry_count("cut") <= 2, "batch_all_or_nothing: the cut batch stays"


def test_recovery_is_idempotent_after_a_damaged_commit_entry(
    wal_dir: Path, backend_name: str
) -> None:
    """recovery_idempotent / intact_entries_kept, deterministic: two singles, then batch X
    (9 entries; its last, committing entry x8 opens block 2), then batch Y (starts in block 2,
    continues in blocks 3 and 4). Block 4 never reached the disk (zeroed) and x8 is damaged.
    The first open rolls back Y and returns x0..x7 (x8 raises CorruptionError); a second open,
    with nothing written in between, must return the same (the rollback must account for the
    damaged entry, neither crashing at open nor dropping entries on the next open)."""
    singles = [b"s%d" % i + b"." * 98 for i in range(2)]
    xs = [b"x%d" % i + b"-" * 328 for i in range(9)]
    ys = [b"y%02d" % i + b"+" * 397 for i in range(20)]
    with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
        for data in singles:
            wal.append_for_topic("idem", data)
        assert wal.batch_append_for_topic("idem", xs) == range(2, 11)
        assert wal.batch_append_for_topic("idem", ys) == range(11, 31)
    path = _first_data_file(wal_dir)
    raw = bytearray(path.read_bytes())
    at = raw.find(xs[8])
    assert at // BS == 1 and raw.find(xs[7]) // BS == 0, "precondition: x8 opens block 2"
    last_block = raw.find(ys[19]) // BS
    assert last_block == 3, "precondition: Y ends in block 4"
    raw[last_block * BS : (last_block + 1) * BS] = bytes(BS)
    raw[at + 100] ^= 0x04
    path.write_bytes(bytes(raw))

    def state() -> tuple[dict[int, bytes], list[int]]:
        with Walrus(data_dir=wal_dir, backend=backend_name, **GEOMETRY) as wal:
            got: dict[int, bytes] = {}
            corrupt: list[int] = []
            off = 0
            for _ in range(100):
                try:
                    entries = wal.batch_read_for_topic("idem", 1 << 20, False, start_offset=off)
                except CorruptionError as exc:
                    assert exc.offset is not None
                    corrupt.append(exc.offset)
                    off = exc.offset + 1
                    continue
                if not entries:
                    break
                got.update((e.offset, e.data) for e in entries)
                off = entries[-1].offset + 1
            return got, corrupt

    first = state()
    assert first[0] == dict(enumerate([*singles, *xs[:8]])), "precondition: first recovery"
    second = state()
    assert second == first, (
        f"recovery_idempotent: the first open returned offsets {sorted(first[0])} "
        f"(CorruptionError at {first[1]}), the second {sorted(second[0])} "
        f"(CorruptionError at {second[1]})"
    )
