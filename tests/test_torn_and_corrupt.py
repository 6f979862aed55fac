"""Damaged bytes on disk: torn tails, bit flips, broken block headers and seal records.

The tests write entries with small geometry (block_size 4096, blocks_per_file 4), locate them
with the documented on-disk format (``walrus_core.format``: a header region of
``BLOCK_HEADER_SIZE`` bytes per block holding two header copies and the seal record; entry =
16-byte header ``<IIIBBH`` crc, length, seq, version, flags, tag, then the payload verbatim,
the crc bound to the block's nonce, the entry's position and offset), damage bytes, reopen and
check the "Damage" rules:

* a bad entry at the very end of a topic's data, with nothing valid after it, is a torn write:
  truncated at open with a WARNING saying how much was dropped; earlier entries are kept;
* any other bad entry raises ``CorruptionError`` naming topic, offset and file when read; the
  cursor does not move; ``seek(offset + 1)`` moves on;
* wrong bytes are never returned, and no block of another topic is lost because one is bad.

A "crashed" directory is produced by a child process that appends and then calls os._exit(0)
without closing (``tests/helpers/walrus_child.py``): exactly what kill -9 right after the last
append returned leaves behind (no clean-close seal on the tail blocks).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from walrus_core import CorruptionError, Walrus
from walrus_core import format as fmt

OpenWal = Callable[..., Walrus]
SMALL_GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}  # what conftest's open_wal uses
BS = SMALL_GEOMETRY["block_size"]
HELPERS = Path(__file__).parent / "helpers"


# --- building directories -------------------------------------------------------------------------


def payload_for(topic: str, offset: int, size: int) -> bytes:
    """A recognisable payload: topic and offset, then bytes derived from both."""
    head = f"<{topic}#{offset}>".encode()
    rng = random.Random(f"{topic}:{offset}")
    body = bytes(rng.randrange(256) for _ in range(min(size, 64)))
    body = (body * (size // 64 + 1))[:size] if body else b""
    return head + body


def write_crashed(wal_dir: Path, backend: str, ops: list[dict[str, object]]) -> list[list[int]]:
    """Run ``ops`` in a child that exits without closing (as if killed right after)."""
    doc = {"data_dir": str(wal_dir), "backend": backend, **SMALL_GEOMETRY, "ops": ops}
    proc = subprocess.run(
        [sys.executable, str(HELPERS / "walrus_child.py"), "abandon"],
        input=json.dumps(doc) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("DONE "), (
        f"child failed ({proc.returncode}): {proc.stdout!r}\n{proc.stderr}"
    )
    done: list[list[int]] = json.loads(proc.stdout[5:])
    return done


def write_entries(
    open_wal: OpenWal,
    wal_dir: Path,
    backend: str,
    topic_sizes: list[tuple[str, int]],
    crashed: bool,
) -> dict[str, list[bytes]]:
    """Append one entry per (topic, size), in that order; return each topic's payloads."""
    payloads: dict[str, list[bytes]] = {}
    for topic, size in topic_sizes:
        seq = payloads.setdefault(topic, [])
        seq.append(payload_for(topic, len(seq), size))
    order: list[tuple[str, bytes]] = []
    counters: dict[str, int] = {}
    for topic, _ in topic_sizes:
        i = counters.get(topic, 0)
        counters[topic] = i + 1
        order.append((topic, payloads[topic][i]))
    if crashed:
        write_crashed(wal_dir, backend, [{"topic": t, "hex": p.hex()} for t, p in order])
    else:
        wal = open_wal()
        for topic, p in order:
            wal.append_for_topic(topic, p)
        wal.close()
    return payloads


# --- reading the format ---------------------------------------------------------------------------


@dataclass
class EntryLoc:
    path: Path
    pos: int  # file offset of the entry header
    length: int
    seq: int
    flags: int

    @property
    def payload_pos(self) -> int:
        return self.pos + fmt.ENTRY_HEADER_SIZE


@dataclass
class BlockLoc:
    path: Path
    start: int  # file offset of the block
    header: fmt.BlockHeader
    seal: fmt.SealRecord | None
    entries: list[EntryLoc]


def header_matches(
    header: bytes, payload: bytes, block: fmt.BlockHeader, pos: int, offset: int
) -> bool:
    """Whether ``header`` is exactly the entry header the format prescribes for ``payload`` as
    entry ``offset`` at in-block byte ``pos`` of ``block`` (crc included), given its flags."""
    flags = fmt.ENTRY_HEADER.unpack(header)[4]
    salt, tag = fmt.block_salt(block.nonce), fmt.block_tag(block.nonce)
    return bool(fmt.pack_entry_header(payload, salt, tag, pos, offset, flags) == header)


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if fmt.parse_data_file_name(p.name) is not None)


def scan(root: Path) -> list[BlockLoc]:
    """Every block with a valid header, and the valid entries at its start, file by file."""
    blocks: list[BlockLoc] = []
    for path in data_files(root):
        data = path.read_bytes()
        start = 0
        while start + fmt.BLOCK_HEADER_SIZE <= len(data):
            region = data[start : start + fmt.BLOCK_HEADER_SIZE]
            header = fmt.BlockHeader.unpack(region)
            if header is None:
                start += BS
                continue
            end = min(len(data), start + header.slots * BS)
            entries = []
            pos = start + fmt.BLOCK_HEADER_SIZE
            while pos + fmt.ENTRY_HEADER_SIZE <= end:
                _crc, length, seq, version, flags, _ = fmt.ENTRY_HEADER.unpack_from(data, pos)
                stop = pos + fmt.ENTRY_HEADER_SIZE + length
                if version != fmt.ENTRY_VERSION or stop > end:
                    break
                body = data[pos + fmt.ENTRY_HEADER_SIZE : stop]
                offset = header.first_offset + len(entries)
                raw_header = data[pos : pos + fmt.ENTRY_HEADER_SIZE]
                if not header_matches(raw_header, body, header, pos - start, offset):
                    break
                entries.append(EntryLoc(path, pos, length, seq, flags))
                pos = stop
            seal = fmt.SealRecord.unpack(region, fmt.block_salt(header.nonce))
            blocks.append(BlockLoc(path, start, header, seal, entries))
            start += header.slots * BS
    return blocks


def topic_blocks(root: Path, topic: str) -> list[BlockLoc]:
    """The live blocks of ``topic`` in log order."""
    found = [
        b
        for b in scan(root)
        if b.header.topic == topic and not b.header.flags & fmt.BLOCK_FLAG_DEAD
    ]
    return sorted(found, key=lambda b: (b.header.first_offset, b.header.block_seq))


def locate(root: Path, topic: str) -> dict[int, tuple[BlockLoc, EntryLoc]]:
    """offset -> (block, entry) for every entry of ``topic`` found on disk."""
    out: dict[int, tuple[BlockLoc, EntryLoc]] = {}
    for block in topic_blocks(root, topic):
        for i, entry in enumerate(block.entries):
            out[block.header.first_offset + i] = (block, entry)
    return out


def patch(path: Path, pos: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(data)


def xor_byte(path: Path, pos: int, mask: int = 0x40) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ mask]))


# --- reading through the API ----------------------------------------------------------------------


def read_range(wal: Walrus, topic: str, start: int = 0) -> list[tuple[int, bytes]]:
    """Entries from ``start`` to the end via offset reads (no cursor moves)."""
    out: list[tuple[int, bytes]] = []
    while True:
        got = wal.batch_read_for_topic(
            topic, 1 << 20, checkpoint=False, start_offset=start + len(out)
        )
        if not got:
            return out
        out.extend((e.offset, e.data) for e in got)


def consume_skipping(wal: Walrus, topic: str, limit: int) -> tuple[dict[int, bytes], list[int]]:
    """read_next from the cursor (at 0) until None, seeking past every CorruptionError as the
    issue prescribes; returns (offset -> data returned, offsets that raised)."""
    returned: dict[int, bytes] = {}
    corrupt: list[int] = []
    cursor = 0
    for _ in range(limit):
        try:
            entry = wal.read_next(topic)
        except CorruptionError as exc:
            assert exc.topic == topic, (exc, exc.topic)
            assert exc.offset == cursor, (
                f"read_next with the cursor at {cursor} raised CorruptionError naming offset "
                f"{exc.offset} ({exc}); seek(offset + 1) cannot move past it"
            )
            corrupt.append(cursor)
            cursor += 1
            wal.seek(topic, cursor)
            continue
        if entry is None:
            return returned, corrupt
        assert entry.offset == cursor, f"read_next at cursor {cursor} returned {entry.offset}"
        returned[entry.offset] = entry.data
        cursor += 1
    pytest.fail(f"read_next on {topic!r} did not reach the end in {limit} calls")


def assert_no_wrong_bytes(returned: dict[int, bytes], expected: list[bytes], topic: str) -> None:
    for offset, data in returned.items():
        assert offset < len(expected), f"{topic}: offset {offset} returned beyond the data"
        assert data == expected[offset], (
            f"{topic}: WRONG BYTES at offset {offset}: {data[:32]!r}... "
            f"instead of {expected[offset][:32]!r}..."
        )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.split(".")[0] == "walrus_core"
    ]


def assert_drop_warning(caplog: pytest.LogCaptureFixture) -> None:
    records = warnings_of(caplog)
    assert records, "no WARNING from logger 'walrus_core' about the torn tail"
    texts = [r.getMessage() for r in records]
    assert any(re.search(r"[1-9]\d*", t) for t in texts), (
        f"the WARNING does not say how much was dropped: {texts}"
    )


# --- (a) torn tails -------------------------------------------------------------------------------

TORN_KINDS = [
    "payload_cut",  # header written, the end of the payload never reached the disk
    "payload_garbled",  # a byte of the payload is wrong
    "crc_garbled",  # the stored crc does not match
    "length_garbled",  # the length runs past the block
    "file_truncated",  # the file ends in the middle of the entry
    "header_zeroed",  # the header never reached the disk, the payload did
]


def damage_last_entry(kind: str, block: BlockLoc, entry: EntryLoc) -> None:
    path = entry.path
    if kind == "payload_cut":
        half = entry.length // 2
        patch(path, entry.payload_pos + half, bytes(entry.length - half))
    elif kind == "payload_garbled":
        xor_byte(path, entry.payload_pos + entry.length // 2)
    elif kind == "crc_garbled":
        xor_byte(path, entry.pos, 0xFF)
    elif kind == "length_garbled":
        patch(path, entry.pos + 4, (BS * 3).to_bytes(4, "little"))
    elif kind == "file_truncated":
        later = [b for b in scan(path.parent) if b.path == path and b.start > block.start]
        assert not later, "precondition: the tail block is the last block of its file"
        os.truncate(path, entry.payload_pos + entry.length // 2)
    elif kind == "header_zeroed":
        patch(path, entry.pos, bytes(fmt.ENTRY_HEADER_SIZE))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", TORN_KINDS)
def test_torn_tail_is_truncated_with_warning(
    kind: str,
    open_wal: OpenWal,
    wal_dir: Path,
    backend_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guarantee: a bad entry at the very end of a topic's written data (the last entry of its
    unsealed tail block) is a torn write: dropped when the directory is opened, with a WARNING
    saying how much was dropped; every earlier entry is kept; new appends continue at the dropped
    entry's offset and read back correctly, also after another reopen."""
    topic = "torn"
    sizes = [(topic, 300)] * 25  # 11 entries per block: blocks of 11, 11, 3
    payloads = write_entries(open_wal, wal_dir, backend_name, sizes, crashed=True)[topic]
    locs = locate(wal_dir, topic)
    assert sorted(locs) == list(range(25)), "precondition: all entries are on disk"
    block, entry = locs[24]
    assert block.seal is None, "precondition: the tail block of a crashed writer is unsealed"
    assert len(block.entries) >= 2, "precondition: the tail block holds earlier entries too"
    damage_last_entry(kind, block, entry)

    with caplog.at_level(logging.WARNING, logger="walrus_core"):
        wal = open_wal()
    if kind != "header_zeroed":
        assert_drop_warning(caplog)
    assert wal.topic_entry_count(topic) == 24
    assert read_range(wal, topic) == [(i, payloads[i]) for i in range(24)]
    assert wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=24) == []

    assert wal.append_for_topic(topic, b"after-torn-0") == 24
    assert wal.batch_append_for_topic(topic, [b"after-torn-1", b"after-torn-2"]) == range(25, 27)
    fresh = [*payloads[:24], b"after-torn-0", b"after-torn-1", b"after-torn-2"]
    assert read_range(wal, topic) == list(enumerate(fresh))
    got = [wal.read_next(topic) for _ in range(27)]
    assert [(e.offset, e.data) for e in got if e is not None] == list(enumerate(fresh))
    assert wal.read_next(topic) is None
    wal.close()

    wal = open_wal()
    assert wal.topic_entry_count(topic) == 0, "the clean close persisted the cursor"
    assert read_range(wal, topic) == list(enumerate(fresh))


def test_torn_end_of_batch_rolls_back_the_whole_batch(
    open_wal: OpenWal,
    wal_dir: Path,
    backend_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guarantee: batches are all-or-nothing across a crash. A batch whose last entry is torn
    (its earlier entries carry BATCH_OPEN and are intact, across a block boundary) is rolled back
    entirely at reopen; the entries before the batch are kept; readers never see part of it."""
    topic = "batched"
    before = [payload_for(topic, i, 200) for i in range(5)]
    batch = [payload_for(topic, 5 + i, 300) for i in range(20)]  # crosses into a second block
    ops: list[dict[str, object]] = [{"topic": topic, "hex": p.hex()} for p in before]
    ops.append({"topic": topic, "batch": [p.hex() for p in batch]})
    assert write_crashed(wal_dir, backend_name, ops)[-1] == [5, 25]
    locs = locate(wal_dir, topic)
    assert sorted(locs) == list(range(25)), "precondition: all entries are on disk"
    assert locs[5][0].start != locs[24][0].start, "precondition: the batch spans two blocks"
    assert all(locs[i][1].flags & fmt.FLAG_BATCH_OPEN for i in range(5, 24))
    assert not locs[24][1].flags & fmt.FLAG_BATCH_OPEN
    entry = locs[24][1]
    xor_byte(entry.path, entry.payload_pos + 7)

    with caplog.at_level(logging.WARNING, logger="walrus_core"):
        wal = open_wal()
    assert_drop_warning(caplog)
    assert wal.topic_entry_count(topic) == 5
    assert read_range(wal, topic) == list(enumerate(before))
    assert wal.batch_append_for_topic(topic, [b"x", b"y"]) == range(5, 7)
    wal.close()
    wal = open_wal()
    assert read_range(wal, topic) == list(enumerate([*before, b"x", b"y"]))


# --- (b) a bad entry in the middle ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ("clean", "first_block"),
        ("clean", "tail_block"),
        ("crashed", "first_block"),
        ("crashed", "tail_block"),
    ],
)
def test_bit_flip_mid_topic_raises_corruption_error(
    state: str, where: str, open_wal: OpenWal, wal_dir: Path, backend_name: str
) -> None:
    """Guarantee: a bad entry that is not at the end of the topic's data (valid entries follow
    it) is not truncated; reading it raises CorruptionError whose topic, offset and path (and
    message) name it; the cursor stays (the next read raises again); seek(offset + 1) moves on;
    batch reads raise too and never return wrong bytes."""
    topic = "orders-7"
    payloads = write_entries(
        open_wal, wal_dir, backend_name, [(topic, 300)] * 25, crashed=state == "crashed"
    )[topic]
    locs = locate(wal_dir, topic)
    assert sorted(locs) == list(range(25))
    bad = 4 if where == "first_block" else 23  # the tail block holds 22, 23, 24
    block, entry = locs[bad]
    if where == "tail_block":
        assert block is locs[24][0], "precondition: the bad entry shares the tail block"
    xor_byte(entry.path, entry.payload_pos + 100, 0x01)

    wal = open_wal()
    assert wal.topic_entry_count(topic) == 25, "an entry with valid ones after it was dropped"
    for i in range(bad):
        e = wal.read_next(topic)
        assert e is not None and (e.offset, e.data) == (i, payloads[i])
    for _ in range(2):  # the cursor does not move: it raises again
        with pytest.raises(CorruptionError) as info:
            wal.read_next(topic)
        err = info.value
        assert err.topic == topic
        assert err.offset == bad
        assert err.path is not None and os.path.realpath(err.path) == os.path.realpath(entry.path)
        msg = str(err)
        assert topic in msg and str(bad) in msg and entry.path.name in msg, msg
        assert wal.topic_entry_count(topic) == 25 - bad
    with pytest.raises(CorruptionError):
        wal.read_next(topic, checkpoint=False)
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic(topic, 1 << 20)  # the cursor sits on the bad entry
    assert wal.topic_entry_count(topic) == 25 - bad
    with pytest.raises(CorruptionError) as info:
        wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=bad)
    assert info.value.offset == bad

    # Batch reads from the start return the good entries before the damaged one, then raise.
    got: list[tuple[int, bytes]] = []
    raised_at = None
    for _ in range(bad + 2):
        try:
            more = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=len(got))
        except CorruptionError as exc:
            raised_at = exc.offset
            break
        assert more, "batch read ended before the end of the topic"
        got.extend((e.offset, e.data) for e in more)
    assert raised_at == bad, f"batch reads from 0 raised at {raised_at}, not at {bad}"
    assert got == [(i, payloads[i]) for i in range(bad)], (
        f"batch reads from offset 0 returned {len(got)} entries before raising, not the {bad} "
        f"good ones before the damaged entry {bad}: a consumer that seeks past the error, as "
        "documented, would lose them"
    )

    wal.seek(topic, bad + 1)
    rest = wal.batch_read_for_topic(topic, 1 << 20)
    assert [(e.offset, e.data) for e in rest] == [(i, payloads[i]) for i in range(bad + 1, 25)]
    assert wal.read_next(topic) is None
    assert wal.topic_entry_count(topic) == 0
    assert wal.append_for_topic(topic, b"next") == 25
    assert read_range(wal, topic, bad + 1)[-1] == (25, b"next")
    wal.close()

    wal = open_wal()  # still damaged, still reported; nothing was truncated on reopen
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=bad)
    # The documented recipe, with batch reads of a fresh named consumer: every good entry is
    # delivered exactly once, the damaged one is skipped.
    delivered: list[tuple[int, bytes]] = []
    for _ in range(60):
        try:
            batch = wal.batch_read_for_topic(topic, 1 << 20, consumer="batcher")
        except CorruptionError as exc:
            assert exc.offset is not None
            wal.seek(topic, exc.offset + 1, consumer="batcher")
            continue
        if not batch:
            break
        delivered.extend((e.offset, e.data) for e in batch)
    good = [(i, payloads[i]) for i in range(25) if i != bad]
    assert delivered == [*good, (25, b"next")], (
        f"consumer recipe delivered offsets {[o for o, _ in delivered]}"
    )
    assert read_range(wal, topic, bad + 1) == [
        *((i, payloads[i]) for i in range(bad + 1, 25)),
        (25, b"next"),
    ]


# --- (c) damage in one topic does not touch another -----------------------------------------------


def interleaved(
    open_wal: OpenWal, wal_dir: Path, backend: str, crashed: bool
) -> tuple[dict[str, list[bytes]], list[BlockLoc]]:
    sizes: list[tuple[str, int]] = []
    for _ in range(24):
        sizes += [("red", 1000), ("blue", 1000)]  # 3 entries per block: blocks alternate
    payloads = write_entries(open_wal, wal_dir, backend, sizes, crashed=crashed)
    blocks = scan(wal_dir)
    topics_in_file: dict[Path, list[str]] = {}
    for b in blocks:
        topics_in_file.setdefault(b.path, []).append(b.header.topic)
    assert any({"red", "blue"} <= set(t) for t in topics_in_file.values()), (
        "precondition: blocks of both topics share a file"
    )
    return payloads, blocks


@pytest.mark.parametrize("damage", ["whole_block_garbled", "entry_flip", "tail_garbled"])
def test_damage_in_one_topic_keeps_other_topics(
    damage: str, open_wal: OpenWal, wal_dir: Path, backend_name: str
) -> None:
    """Guarantee: "no block of another topic is lost because one block is bad". Two topics'
    blocks alternate within files; damaging one block of "red" (every byte of it, one entry, or
    its unsealed tail) leaves every entry of "blue" readable, in order, with the right bytes,
    and never returns wrong bytes for "red"."""
    crashed = damage == "tail_garbled"
    payloads, blocks = interleaved(open_wal, wal_dir, backend_name, crashed)
    red = [b for b in blocks if b.header.topic == "red"]
    red.sort(key=lambda b: b.header.first_offset)
    lost: set[int] = set()
    if damage == "tail_garbled":
        target = red[-1]
        assert target.seal is None, "precondition: crashed tail block is unsealed"
        rng = random.Random(1)
        first = target.entries[0]
        noise = bytes(rng.randrange(256) for _ in range(BS - fmt.BLOCK_HEADER_SIZE))
        patch(first.path, first.pos, noise)
        lost = set(range(target.header.first_offset, 24))
    else:
        # a red block followed, in the same file, by a blue block
        def followed_by_blue(b: BlockLoc) -> bool:
            return any(
                o.path == b.path and o.start == b.start + BS and o.header.topic == "blue"
                for o in blocks
            )

        target = next(b for b in red[1:-1] if followed_by_blue(b))
        if damage == "whole_block_garbled":
            rng = random.Random(2)
            patch(target.path, target.start, bytes(rng.randrange(256) for _ in range(BS)))
            lost = set(
                range(target.header.first_offset, target.header.first_offset + len(target.entries))
            )
        else:
            e = target.entries[1]
            xor_byte(e.path, e.payload_pos + 3)
            lost = {target.header.first_offset + 1}

    wal = open_wal()
    blue_all = read_range(wal, "blue")
    assert blue_all == list(enumerate(payloads["blue"])), "blue lost or changed entries"
    assert wal.topic_entry_count("blue") == 24
    returned, corrupt = consume_skipping(wal, "blue", 100)
    assert corrupt == [] and returned == dict(enumerate(payloads["blue"]))

    returned, corrupt = consume_skipping(wal, "red", 100)
    assert_no_wrong_bytes(returned, payloads["red"], "red")
    intact = set(range(24)) - lost
    if damage == "tail_garbled":
        intact = set(range(min(lost)))
    missing = intact - set(returned)
    assert not missing, f"red: intact entries not returned: {sorted(missing)}"
    if damage == "entry_flip":
        assert corrupt == sorted(lost)
    wal.close()


# --- (d) broken block headers and seal records ----------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["header_magic", "header_topic_byte", "both_headers", "seal_garbled", "seal_zeroed"],
)
def test_broken_block_header_or_seal_mid_topic(
    damage: str, open_wal: OpenWal, wal_dir: Path, backend_name: str
) -> None:
    """Guarantee: damage to a block header or seal record in the middle of a topic does not
    crash open and never returns wrong bytes. A broken seal leaves the entries intact, so they
    are all still returned (a sealed block whose seal is unreadable is verified, not trusted);
    so does damage to one of the two header copies; with both copies broken, entries of every
    other block are still returned at their offsets and appends continue at the right offset."""
    topic = "hdr"
    other = "side"
    sizes = [(topic, 300)] * 60 + [(other, 100)] * 5  # 6 blocks of 'hdr' across two files
    payloads = write_entries(open_wal, wal_dir, backend_name, sizes, crashed=False)
    blocks = topic_blocks(wal_dir, topic)
    assert len(blocks) >= 5
    target = blocks[2]
    assert target.seal is not None, "precondition: a full block in the middle is sealed"
    if damage == "header_magic":
        patch(target.path, target.start, b"XXXX")
    elif damage == "header_topic_byte":
        xor_byte(target.path, target.start + fmt.BLOCK_FIXED.size)
    elif damage == "both_headers":
        for at in fmt.HEADER_COPY_AT:
            patch(target.path, target.start + at, b"XXXX")
    elif damage == "seal_garbled":
        xor_byte(target.path, target.start + fmt.SEAL_AT + 20)
    else:
        patch(target.path, target.start + fmt.SEAL_AT, fmt.CLEARED_SEAL)
    first = target.header.first_offset
    in_target = set(range(first, first + len(target.entries)))

    wal = open_wal()
    returned, corrupt = consume_skipping(wal, topic, 200)
    assert_no_wrong_bytes(returned, payloads[topic], topic)
    if damage != "both_headers":
        assert corrupt == []
        assert returned == dict(enumerate(payloads[topic]))
    else:
        missing = set(range(60)) - in_target - set(returned)
        assert not missing, f"entries of intact blocks not returned: {sorted(missing)}"
        assert set(corrupt) <= in_target, f"CorruptionError outside the bad block: {corrupt}"
    assert read_range(wal, other) == list(enumerate(payloads[other]))
    assert wal.append_for_topic(topic, b"after") == 60
    wal.close()
    wal = open_wal()
    assert read_range(wal, topic, 60) == [(60, b"after")]
    assert read_range(wal, other) == list(enumerate(payloads[other]))


def test_closed_tail_entry_damage_never_returns_wrong_bytes(
    open_wal: OpenWal, wal_dir: Path, backend_name: str
) -> None:
    """Guarantee: wrong bytes are never returned, whatever is damaged. The last entry of a
    cleanly closed (sealed) tail block is garbled: it is either dropped at open or raises
    CorruptionError when read, never returned with wrong bytes; earlier entries are intact."""
    topic = "closed"
    payloads = write_entries(open_wal, wal_dir, backend_name, [(topic, 300)] * 25, False)[topic]
    entry = locate(wal_dir, topic)[24][1]
    xor_byte(entry.path, entry.payload_pos + 5)
    wal = open_wal()
    returned, corrupt = consume_skipping(wal, topic, 100)
    assert_no_wrong_bytes(returned, payloads, topic)
    assert returned == {i: payloads[i] for i in range(24)}
    assert corrupt in ([], [24])


# --- (e) payloads are stored verbatim -------------------------------------------------------------


def _entry_sizes() -> Iterator[int]:
    yield from (0, 1, 100, 3000, 3568, 3569, 5000, 10000, 40)


def test_payload_bytes_are_verbatim_in_data_files(open_wal: OpenWal, wal_dir: Path) -> None:
    """Guarantee: "Payload bytes are stored verbatim right after their header", so tools and
    tests can find them in a file: each payload (single appends, batch entries, entries larger
    than a block) is found with bytes.find, preceded by a 16-byte header whose length, seq and
    crc32c match. Checked while the instance is open (after append returned) and after close."""
    wal = open_wal()
    rng = random.Random(7)
    written: list[tuple[str, int, bytes]] = []
    for n, size in enumerate(_entry_sizes()):
        topic = ("verb-a", "verb-b")[n % 2]
        data = b"VERBATIM%03d|" % n + bytes(rng.randrange(256) for _ in range(size))
        written.append((topic, wal.append_for_topic(topic, data), data))
    batch = [b"BATCHED%03d|" % i + bytes(rng.randrange(256) for _ in range(700)) for i in range(9)]
    r = wal.batch_append_for_topic("verb-a", batch)
    written += [("verb-a", off, data) for off, data in zip(r, batch, strict=True)]

    def check() -> None:
        found = {topic: locate(wal_dir, topic) for topic in ("verb-a", "verb-b")}
        for topic, offset, data in written:
            assert offset in found[topic], f"{topic}#{offset}: no valid entry on disk"
            block, entry = found[topic][offset]
            raw = entry.path.read_bytes()
            assert raw[entry.payload_pos : entry.payload_pos + len(data)] == data, (
                f"{topic}#{offset}: payload not stored verbatim"
            )
            header = raw[entry.pos : entry.payload_pos]
            _crc, length, seq, version, _flags, tag = fmt.ENTRY_HEADER.unpack(header)
            assert (length, seq, version) == (len(data), offset, fmt.ENTRY_VERSION)
            assert tag == fmt.block_tag(block.header.nonce)

    check()
    wal.close()
    check()
