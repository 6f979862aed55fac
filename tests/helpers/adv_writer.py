"""The writer the adversarial harness (``tests/test_adversarial.py``) kills with SIGKILL.

It runs in a child started by ``helpers.trust.child_argv`` (``wal`` already open) and performs
operations ``first_op, first_op + 1, ...`` of a seeded plan: single appends and batches to
three topics, with zero-length, small, medium and large (multi-block) payloads; large payloads
and some small ones embed real, well-formed entries of another log (``chunk``). Operation
``op`` is fully determined by ``(seed, op)`` (:func:`plan`, :func:`payload`), so the parent
rebuilds every byte. Protocol on stdout, one flushed line per event::

    READY
    B <op> <topic> <n>          about to append n entries (n == 0: a single append)
    A <op> <first_offset>       that call returned
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

TOPICS = ("k-a", "k-b", "k-c")
GEOMETRY = {"block_size": 64 * 1024, "blocks_per_file": 4}


def plan(seed: int, op: int) -> tuple[str, int]:
    """(topic, n): n == 0 is a single append, else a batch of n entries."""
    rng = random.Random(f"advw:{seed}:{op}")
    topic = rng.choice(TOPICS)
    if rng.random() < 0.4:
        return topic, 0
    return topic, rng.choice((1, 2, 5, 20, 60))


def payload(seed: int, op: int, i: int, chunk: bytes) -> bytes:
    """Entry ``i`` of operation ``op``."""
    rng = random.Random(f"advwp:{seed}:{op}:{i}")
    head = f"<w{op}:{i}>".encode()
    r = rng.random()
    if r < 0.03:
        return b""
    if r < 0.08:
        return head + chunk + head
    if r < 0.68:
        size = rng.randint(0, 300)
    elif r < 0.9:
        size = rng.randint(300, 20_000)
    else:  # several blocks of its own, with well-formed entries inside every 32 KiB
        size = rng.randint(100_000, 600_000)
        fill = hashlib.blake2b(head, digest_size=64).digest() * 512
        body = b"".join((chunk + fill)[: 32 * 1024] for _ in range(size // (32 * 1024) + 1))
        return head + body[:size]
    fill = hashlib.blake2b(head + seed.to_bytes(8, "little"), digest_size=32).digest()
    return head + (fill * (size // 32 + 1))[:size]


def run(wal: Any, cfg: dict[str, Any], say: Callable[[str], None]) -> None:
    """Append forever (until killed; a safety net stops after ``max_ops`` or 120 s)."""
    seed, op = cfg["seed"], cfg["first_op"]
    chunk = bytes.fromhex(cfg["chunk"])
    say("READY")
    stop_at = time.monotonic() + 120
    while op < cfg["first_op"] + cfg["max_ops"] and time.monotonic() < stop_at:
        topic, n = plan(seed, op)
        if n == 0:
            data = payload(seed, op, 0, chunk)
            say(f"B {op} {topic} 0")
            first = wal.append_for_topic(topic, data)
        else:
            entries = [payload(seed, op, i, chunk) for i in range(n)]
            say(f"B {op} {topic} {n}")
            first = wal.batch_append_for_topic(topic, entries).start
        say(f"A {op} {first}")
        op += 1
    say("IDLE")
    time.sleep(120)
