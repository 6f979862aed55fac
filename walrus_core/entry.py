"""The value a read returns."""

from __future__ import annotations

import attrs


@attrs.frozen
class Entry:
    """One entry of a topic: its payload and its offset (0, 1, 2, ... in append order)."""

    data: bytes
    offset: int
