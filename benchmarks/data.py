"""Payloads: distinct, deterministic, and checkable after the fact.

Entry ``i`` of every subject is ``pool(size)[i % POOL]``. The pool has a prime number of
distinct payloads, each beginning with its own index, so that an entry read back can be
compared with the one that must be at its offset: a read that returned stale data, skipped an
entry or did nothing fails the check (see :func:`check_entry`). The lists handed to a timed
region are built before it from references into the pool: no payload is built while timing.

The raw baselines write records of the engine's own format: the 16-byte entry header
(:func:`walrus_core.format.pack_entry_header`) followed by the payload.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from functools import lru_cache

from benchmarks.harness import VerificationError
from walrus_core.format import ENTRY_HEADER_SIZE, pack_entry_header

POOL = 1009  # prime: entry i uses payload i % POOL, so periods of other loops never line up
BATCH = 1000  # entries per batch append and per batch read
KIB = 1024
MIB = 1 << 20
GIB = 1 << 30
_INDEX = struct.Struct(">I")


@lru_cache(maxsize=8)
def pool(size: int) -> tuple[bytes, ...]:
    """``POOL`` distinct payloads of ``size`` bytes (>= 2): a big-endian index, then noise."""
    if size < 2:
        raise ValueError("payloads must have at least 2 bytes")
    rnd = random.Random(size)
    out = []
    for i in range(POOL):
        tag = _INDEX.pack(i)[-min(4, size) :]
        out.append(tag + rnd.randbytes(size - len(tag)))
    return tuple(out)


def expected(size: int, index: int) -> bytes:
    """The payload entry ``index`` must have."""
    return pool(size)[index % POOL]


def items(size: int, start: int, n: int) -> list[bytes]:
    """Payloads of entries ``start .. start + n - 1`` (references into the pool)."""
    p = pool(size)
    k = start % POOL
    rotated = list(p[k:] + p[:k])
    reps = -(-n // POOL)
    return (rotated * reps)[:n]


def batches(flat: list[bytes], per: int = BATCH) -> list[list[bytes]]:
    """``flat`` cut into lists of ``per``."""
    return [flat[i : i + per] for i in range(0, len(flat), per)]


@lru_cache(maxsize=8)
def record_pool(size: int) -> tuple[bytes, ...]:
    """Header + payload of every pool payload, as the engine lays an entry out on disk."""
    return tuple(pack_entry_header(p, 0, 0, 0, i, 0) + p for i, p in enumerate(pool(size)))


def records(size: int, start: int, n: int) -> list[bytes]:
    """Records (header + payload) of entries ``start .. start + n - 1``."""
    p = record_pool(size)
    k = start % POOL
    rotated = list(p[k:] + p[:k])
    return (rotated * -(-n // POOL))[:n]


def record_size(size: int) -> int:
    return ENTRY_HEADER_SIZE + size


def check_entry(size: int, index: int, data: bytes | None, what: str) -> None:
    """Raise unless ``data`` is the payload of entry ``index``."""
    if data is None:
        raise VerificationError(f"{what}: entry {index} missing (read returned nothing)")
    if bytes(data) != expected(size, index):
        raise VerificationError(
            f"{what}: entry {index} differs from what was written"
            f" ({len(data)} bytes, starts {bytes(data[:8]).hex()},"
            f" wanted {expected(size, index)[:8].hex()})"
        )


def check_all(size: int, got: Iterable[bytes], count: int, what: str, first: int = 0) -> None:
    """Raise unless ``got`` is exactly the payloads of entries ``first .. first + count - 1``,
    in order (every payload compared, not a sample)."""
    n = 0
    p = pool(size)
    for data in got:
        i = first + n
        if n >= count:
            raise VerificationError(f"{what}: more than the {count} entries written")
        if bytes(data) != p[i % POOL]:
            raise VerificationError(f"{what}: entry {i} differs from what was written")
        n += 1
    if n != count:
        raise VerificationError(f"{what}: read back {n} entries, {count} were written")
