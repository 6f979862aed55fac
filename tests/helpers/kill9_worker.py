"""Child process of ``tests/test_crash_kill9.py``: appends and consumes until it is killed.

Usage::

    python kill9_worker.py DATA_DIR BACKEND SCHEDULE CONSISTENCY SEED FIRST_OP

SCHEDULE is ``sync_each``, ``ms5`` or ``no_fsync``; CONSISTENCY is ``strict`` or ``alo:<N>``
(``at_least_once(persist_every=N)``). The worker opens a Walrus on DATA_DIR (geometry
:data:`GEOMETRY`) and then, forever, either appends (a single entry or a batch, to one of
:data:`TOPICS`) or consumes (``read_next`` or ``batch_read_for_topic`` with the named consumer
:data:`CONSUMER`, always checkpointing). Operation ``op`` is fully determined by ``(SEED, op)``
(:func:`plan`, :func:`payload`), so the parent can rebuild every byte. Protocol on stdout, one
line per event, each flushed before the next step::

    READY
    B <op> <topic> <n> <s|b>        about to append (s: one entry, b: a batch of n)
    A <op> <first_offset>           that append returned
    R <op> <topic> <n|b> <max>      about to read (n: read_next, b: batch read of max bytes)
    C <op> <first> <count> <crc>    that read returned <count> entries from offset <first>;
                                    <crc> is the crc32 of their payloads, each prefixed by its
                                    length (so the parent can check the bytes delivered)
    X <message>                     something the worker itself found wrong (then exit 3)

As a safety net against an orphaned child, it stops after 120 s.
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
import time
import zlib

from walrus_core import FsyncSchedule, ReadConsistency, Walrus

TOPICS = ("k-a", "k-b")
CONSUMER = "kc"
GEOMETRY = {"block_size": 4096, "blocks_per_file": 8}
SCHEDULES = ("sync_each", "ms5", "no_fsync")


def plan(seed: int, op: int) -> tuple[str, str, int, int]:
    """(action, topic, n, max_bytes): action "s" one append, "b" a batch of n, "n" read_next,
    "r" a batch read of at most max_bytes."""
    rng = random.Random(f"k9:{seed}:{op}")
    topic = rng.choice(TOPICS)
    r = rng.random()
    if r < 0.3:
        return "s", topic, 1, 0
    if r < 0.55:
        return "b", topic, rng.choice((1, 2, 5, 20, 80, 200)), 0
    if r < 0.75:
        return "n", topic, 1, 0
    return "r", topic, 0, rng.choice((1, 100, 1000, 8000, 1 << 20))


def payload(seed: int, op: int, i: int) -> bytes:
    """Entry ``i`` of append operation ``op``: ``k<op>:<i>:`` and deterministic padding."""
    rng = random.Random(f"k9p:{seed}:{op}:{i}")
    r = rng.random()
    size = rng.randint(0, 300) if r < 0.8 else rng.randint(300, 2500) if r < 0.98 else 6000
    head = f"k{op}:{i}:".encode()
    fill = hashlib.blake2b(head + seed.to_bytes(8, "little"), digest_size=32).digest()
    return head + (fill * (size // 32 + 1))[:size]


def digest(payloads: list[bytes]) -> int:
    """The crc the worker prints for the payloads a read returned."""
    crc = 0
    for p in payloads:
        crc = zlib.crc32(struct.pack("<I", len(p)) + p, crc)
    return crc


def open_args(schedule: str, consistency: str) -> dict[str, object]:
    fsync = {
        "sync_each": FsyncSchedule.sync_each,
        "ms5": lambda: FsyncSchedule.milliseconds(5),
        "no_fsync": FsyncSchedule.no_fsync,
    }[schedule]()
    if consistency == "strict":
        mode = ReadConsistency.strictly_at_once()
    else:
        mode = ReadConsistency.at_least_once(persist_every=int(consistency.split(":")[1]))
    # Reclamation would drop consumed blocks, which this model of acknowledged appends does not
    # follow; SIGKILL during reclamation has its own test (test_reclaim.py).
    return {"fsync": fsync, "consistency": mode, "auto_reclaim": False, **GEOMETRY}


def main(argv: list[str]) -> int:
    data_dir, backend, schedule, consistency, seed_s, first_s = argv[:6]
    seed, op = int(seed_s), int(first_s)
    wal = Walrus(data_dir=data_dir, backend=backend, **open_args(schedule, consistency))  # type: ignore[arg-type]
    out = sys.stdout

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    say("READY")
    stop_at = time.monotonic() + 120
    while time.monotonic() < stop_at:
        action, topic, n, max_bytes = plan(seed, op)
        if action == "s":
            say(f"B {op} {topic} 1 s")
            first = wal.append_for_topic(topic, payload(seed, op, 0))
            say(f"A {op} {first}")
        elif action == "b":
            batch = [payload(seed, op, i) for i in range(n)]
            say(f"B {op} {topic} {n} b")
            got = wal.batch_append_for_topic(topic, batch)
            if len(got) != n:
                say(f"X batch {op} returned {got!r} for {n} entries")
                return 3
            say(f"A {op} {got.start}")
        elif action == "n":
            say(f"R {op} {topic} n 0")
            entry = wal.read_next(topic, consumer=CONSUMER)
            entries = [] if entry is None else [entry]
            first = entries[0].offset if entries else -1
            say(f"C {op} {first} {len(entries)} {digest([e.data for e in entries])}")
        else:
            say(f"R {op} {topic} b {max_bytes}")
            entries = wal.batch_read_for_topic(topic, max_bytes, consumer=CONSUMER)
            first = entries[0].offset if entries else -1
            for i, e in enumerate(entries):
                if e.offset != first + i:
                    say(f"X batch read {op} returned offsets {[x.offset for x in entries]}")
                    return 3
            say(f"C {op} {first} {len(entries)} {digest([e.data for e in entries])}")
        op += 1
    wal.close()
    say("X TIMEOUT")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
