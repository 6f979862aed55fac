"""On-disk surgery for the read-only and verify tests: where a topic's blocks are, start marks
written the way the writer writes them, and reclaiming blocks behind the writer's back."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import attrs

from walrus_core import Entry, Walrus
from walrus_core.format import (
    BLOCK_HEADER_SIZE,
    CURSOR_COPY_AT,
    CURSOR_SLOT_SIZE,
    CURSORS_NAME,
    START_MARK_CONSUMER,
    BlockHeader,
    cursor_salt,
    pack_cursor_copy,
    pack_cursor_slot,
    parse_data_file_name,
)
from walrus_core.readonly import WalrusReader


def payload(i: int, size: int = 100) -> bytes:
    """A payload that names its offset (so that it can be found in a file)."""
    head = f"entry-{i:06d}|".encode()
    return (head * (size // len(head) + 1))[:size]


def fill(wal: Walrus, topic: str, first: int, count: int, size: int = 100) -> None:
    """Append ``payload(i)`` for i in first..first+count-1."""
    for i in range(first, first + count):
        assert wal.append_for_topic(topic, payload(i, size)) == i


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file of ``root``, by name."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.iterdir())}


def read_all(reader: WalrusReader, topic: str) -> list[Entry]:
    """Every retained entry of ``topic``, by stateless batch reads."""
    out: list[Entry] = []
    start = reader.topic_info(topic).first_offset
    while True:
        got = reader.batch_read_for_topic(topic, 1 << 20, start_offset=start + len(out))
        if not got:
            return out
        out.extend(got)


@attrs.frozen
class BlockAt:
    """A block found on disk."""

    path: Path
    slot: int
    base: int  # byte offset in the file
    size: int  # bytes it spans
    seq: int
    first_offset: int


def blocks_of(root: Path, topic: str, block_size: int) -> list[BlockAt]:
    """The blocks of ``topic`` in block sequence order, from their headers."""
    found = []
    for path in sorted(root.iterdir()):
        if parse_data_file_name(path.name) is None:
            continue
        data = path.read_bytes()
        slot = 0
        while slot * block_size < len(data):
            base = slot * block_size
            header = BlockHeader.unpack(data[base : base + BLOCK_HEADER_SIZE])
            if header is None:
                slot += 1
                continue
            if header.topic == topic:
                found.append(
                    BlockAt(
                        path,
                        slot,
                        base,
                        header.slots * block_size,
                        header.block_seq,
                        header.first_offset,
                    )
                )
            slot += header.slots
    return sorted(found, key=lambda b: b.seq)


def write_start_mark(root: Path, topic: str, offset: int, *, deleted: bool = False) -> None:
    """Write ``topic``'s start mark into a free slot of cursors.dat (no writer may be open)."""
    path = root / CURSORS_NAME
    raw = path.read_bytes() if path.exists() else b""
    slot = 0
    while (slot + 1) * CURSOR_SLOT_SIZE <= len(raw) and any(
        raw[slot * CURSOR_SLOT_SIZE : (slot + 1) * CURSOR_SLOT_SIZE]
    ):
        slot += 1
    topic_raw, consumer_raw = topic.encode(), START_MARK_CONSUMER.encode()
    record = bytearray(pack_cursor_slot(topic_raw, consumer_raw))
    copy = pack_cursor_copy(
        cursor_salt(slot, topic_raw, consumer_raw), 1, offset, 0, 1 if deleted else 0
    )
    record[CURSOR_COPY_AT[1] : CURSOR_COPY_AT[1] + len(copy)] = copy
    with open(path, "r+b" if path.exists() else "wb") as fh:
        fh.seek(slot * CURSOR_SLOT_SIZE)
        fh.write(record)


def punch(path: Path, at: int, size: int) -> None:
    """Make ``size`` bytes at ``at`` read as zeros (a hole where the platform can punch one)."""
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            from walrus_core.holes import punch_hole

            punch_hole(fd, at, size)
            return
        except (ImportError, OSError):
            pass
        os.pwrite(fd, bytes(size), at)
    finally:
        os.close(fd)


def reclaim_below(root: Path, topic: str, start: int, block_size: int) -> tuple[int, int]:
    """Do what the writer's reclamation does, for a directory of one topic: record the start
    mark, then delete every data file whose blocks all lie below ``start`` and punch the other
    blocks that do. Returns (files deleted, blocks punched)."""
    blocks = blocks_of(root, topic, block_size)
    below = {(b.path, b.slot) for b, nxt in itertools.pairwise(blocks) if nxt.first_offset <= start}
    write_start_mark(root, topic, start)
    deleted = punched = 0
    for path in sorted({b.path for b in blocks}):
        mine = [b for b in blocks if b.path == path]
        if all((b.path, b.slot) in below for b in mine):
            path.unlink()
            deleted += 1
            continue
        for b in mine:
            if (b.path, b.slot) in below:
                punch(path, b.base, b.size)
                punched += 1
    return deleted, punched
