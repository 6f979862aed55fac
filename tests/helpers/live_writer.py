"""A writer process for the read-only tests: single appends and batches of random sizes, with
payloads that are a pure function of (topic, offset), so a reader in another process can check
every entry it sees.

Usage::

    python live_writer.py DATA_DIR BACKEND ENTRIES [reclaim] [pace=SECONDS]

Opens the directory (16 KiB blocks, 4 per file, no fsync), prints READY, appends groups from
:func:`group_sizes` round-robin over :data:`TOPICS` until every topic has at least ``ENTRIES``
entries, prints DONE, then waits for a line on stdin: ``close`` closes cleanly, anything else
exits without closing. ``pace`` sleeps that long after each round (so that a reader polls many
intermediate states). With ``reclaim`` (only when the engine has ``Walrus.reclaim``), the
default consumer consumes everything every few groups and reclaims what it read.
"""

from __future__ import annotations

import queue
import random
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from walrus_core.format import ENTRY_HEADER, ENTRY_VERSION, FLAG_BATCH_OPEN

TOPICS = ("alpha", "beta", "gamma")
BLOCK_SIZE = 4096 * 4
BLOCKS_PER_FILE = 4


def payload_for(topic: str, offset: int) -> bytes:
    """The payload appended at ``offset`` of ``topic``: mostly small, some empty, a few larger
    than a block, many with bytes that look like entry headers of the next offsets."""
    rng = random.Random(f"payload:{topic}:{offset}")
    kind = rng.random()
    if kind < 0.08:
        size = rng.randint(0, 4)
    elif kind < 0.98:
        size = rng.randint(16, 3000)
    else:
        size = rng.randint(BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 5000)
    body = bytearray(rng.randbytes(size))
    if size >= 64 and rng.random() < 0.4:
        # A plausible header of the next entry, inside the payload: it must never validate.
        for at in range(0, size - ENTRY_HEADER.size, max(ENTRY_HEADER.size, size // 3)):
            fake = ENTRY_HEADER.pack(
                rng.getrandbits(32),
                rng.randint(0, 200),
                (offset + 1) & 0xFFFFFFFF,
                ENTRY_VERSION,
                rng.choice((0, FLAG_BATCH_OPEN)),
                rng.getrandbits(16),
            )
            body[at : at + len(fake)] = fake
    if size >= 8:
        body[:8] = struct.pack("<Q", offset)
    return bytes(body)


def group_sizes(topic: str) -> Iterator[int]:
    """How ``topic``'s entries are grouped: 1 is a single append, more is one batch."""
    rng = random.Random(f"plan:{topic}")
    while True:
        yield 1 if rng.random() < 0.5 else rng.randint(2, 40)


def boundaries(topic: str, entries: int) -> set[int]:
    """Every end offset a complete group leaves, up to the first at or past ``entries``."""
    ends = {0}
    end = 0
    for size in group_sizes(topic):
        end += size
        ends.add(end)
        if end >= entries:
            return ends
    raise AssertionError("unreachable")


#: Guards against a hang only; no assertion depends on how long anything takes.
HANG_GUARD = 300.0


class LiveWriter:
    """The writer subprocess of tests/helpers/live_writer.py."""

    def __init__(self, wal_dir: Path, backend: str, entries: int, *mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(wal_dir), backend, str(entries), *mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.lines.get(timeout=HANG_GUARD) == "READY"
        self.done = False

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("EOF")

    def finished(self) -> bool:
        if not self.done:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return False
            assert line == "DONE", f"writer said {line!r} (exit {self.proc.poll()})"
            self.done = True
        return True

    def stop(self, how: str = "close") -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(how + "\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        assert self.proc.wait(timeout=HANG_GUARD) == 0


def main() -> None:
    from walrus_core import FsyncSchedule, Walrus

    data_dir, backend, entries = sys.argv[1], sys.argv[2], int(sys.argv[3])
    modes = sys.argv[4:]
    reclaim = "reclaim" in modes
    pace = next((float(m.split("=", 1)[1]) for m in modes if m.startswith("pace=")), 0.0)
    wal = Walrus(
        data_dir,
        backend=backend,
        block_size=BLOCK_SIZE,
        blocks_per_file=BLOCKS_PER_FILE,
        fsync=FsyncSchedule.no_fsync(),
    )
    print("READY", flush=True)
    plans = {topic: group_sizes(topic) for topic in TOPICS}
    ends = dict.fromkeys(TOPICS, 0)
    rounds = 0
    while any(end < entries for end in ends.values()):
        for topic in TOPICS:
            if ends[topic] >= entries:
                continue
            size = next(plans[topic])
            first = ends[topic]
            if size == 1:
                got = wal.append_for_topic(topic, payload_for(topic, first))
                assert got == first, (got, first)
            else:
                done = wal.batch_append_for_topic(
                    topic, [payload_for(topic, first + i) for i in range(size)]
                )
                assert done == range(first, first + size), (done, first, size)
            ends[topic] = first + size
        rounds += 1
        if pace:
            time.sleep(pace)
        if reclaim and rounds % 7 == 0:
            for topic in TOPICS:
                while wal.batch_read_for_topic(topic, 1 << 30):
                    pass
            wal.reclaim()  # type: ignore[attr-defined]
    print("DONE", flush=True)
    line = sys.stdin.readline().strip()
    if line == "close":
        wal.close()
        return
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
