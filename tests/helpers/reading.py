"""Reading helpers shared by the behaviour tests."""

from __future__ import annotations

import random
from typing import Any

from walrus_core import Entry, Walrus


def drain(wal: Walrus, topic: str, **kw: Any) -> list[Entry]:
    """read_next (checkpointing by default) until None."""
    out: list[Entry] = []
    while True:
        entry = wal.read_next(topic, **kw)
        if entry is None:
            return out
        out.append(entry)
        assert len(out) < 1_000_000


def payload(topic: str, offset: int) -> bytes:
    """A payload that is a pure function of (topic, offset), 0 to 600 random bytes after a
    readable prefix, so any reader can check any entry it gets."""
    rng = random.Random(f"{topic}:{offset}")
    return f"{topic}:{offset}:".encode() + rng.randbytes(rng.randint(0, 600))


def fill(wal: Walrus, topic: str, count: int) -> None:
    """Append ``count`` entries of :func:`payload` after the topic's end, one by one."""
    start = wal.topic_info(topic).end_offset if topic in wal.topics() else 0
    for offset in range(start, start + count):
        assert wal.append_for_topic(topic, payload(topic, offset)) == offset


def read_all(wal: Walrus, topic: str, start: int = 0) -> list[Entry]:
    """Every entry from ``start`` on, with stateless batch reads (no cursor moves)."""
    out: list[Entry] = []
    offset = start
    while True:
        got = wal.batch_read_for_topic(topic, 1 << 30, start_offset=offset)
        if not got:
            return out
        out.extend(got)
        offset = got[-1].offset + 1
