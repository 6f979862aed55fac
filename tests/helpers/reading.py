"""Reading helpers shared by the behaviour tests."""

from __future__ import annotations

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
