"""Child process of ``tests/test_crash_atomic_batches.py``: appends until it is killed.

Usage::

    python crash_writer.py DATA_DIR BACKEND SCHEDULE SEED FIRST_OP [KILL_AT_WRITE KILL_SEED]

It opens a Walrus on DATA_DIR (geometry :data:`GEOMETRY`) with the given backend and fsync
schedule (``no_fsync``, ``ms5`` or ``sync_each``), then performs operations FIRST_OP, FIRST_OP+1,
... forever. Operation ``op`` is fully determined by ``(SEED, op)`` through :func:`plan` and
:func:`payload`, so the parent can rebuild every byte it expects. Protocol on stdout, one line per
event, flushed before the next step::

    READY                         the WAL is open
    B <op> <topic> <n> <kind>     about to call append_for_topic (kind "s", n == 1)
                                  or batch_append_for_topic (kind "b")
    A <op> <first_offset>         that call returned; its entries start at <first_offset>
    K <n> <cut>/<nbytes>          (killer layer) tearing data write n: <cut> of <nbytes> written

With KILL_AT_WRITE, the storage chain gets a ``killer`` layer on top of BACKEND that counts the
writes made to data files and, on write number KILL_AT_WRITE, writes only a prefix of that write's
bytes (a torn write; the length is drawn from KILL_SEED) and sends SIGKILL to its own process: a
crash placed exactly inside the engine's write sequence (in the middle of a batch, most often).

As a safety net against an orphaned child, it stops appending after 120 s.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sys
import threading
import time
from typing import Any

from walrus_core import FsyncSchedule, Walrus
from walrus_core.plugin import BackendInfo, BackendRegistry, default_registry, hookimpl

TOPICS = ("alpha", "beta", "gamma")
GEOMETRY = {"block_size": 4096, "blocks_per_file": 16}
SCHEDULES = ("no_fsync", "ms5", "sync_each")


def plan(seed: int, op: int) -> tuple[str, str, int]:
    """(topic, kind, entry count) of operation ``op``: kind "s" is one append, "b" a batch."""
    rng = random.Random(f"plan:{seed}:{op}")
    topic = rng.choice(TOPICS)
    if rng.random() < 0.3:
        return topic, "s", 1
    return topic, "b", rng.randint(50, 500)


def payload(seed: int, op: int, i: int) -> bytes:
    """Entry ``i`` of operation ``op``: ``b"b<op>:<i>:"`` then deterministic padding.

    Most payloads are small, some span most of a 4096-byte block, a few are larger than a block
    (they get a multi-slot block of their own).
    """
    rng = random.Random(f"payload:{seed}:{op}:{i}")
    r = rng.random()
    if r < 0.6:
        size = rng.randint(0, 200)
    elif r < 0.96:
        size = rng.randint(200, 3000)
    else:
        size = rng.randint(4100, 13000)
    head = f"b{op}:{i}:".encode()
    fill = hashlib.blake2b(head + seed.to_bytes(8, "little"), digest_size=32).digest()
    return head + (fill * (size // 32 + 1))[:size]


def open_args(schedule: str) -> dict[str, Any]:
    """Keyword arguments for Walrus() for ``schedule``."""
    fsync = {
        "no_fsync": FsyncSchedule.no_fsync,
        "ms5": lambda: FsyncSchedule.milliseconds(5),
        "sync_each": FsyncSchedule.sync_each,
    }[schedule]()
    return {"fsync": fsync, **GEOMETRY}


class _KillerHandle:
    __slots__ = ("lower", "spec")

    def __init__(self, spec: Any, lower: Any) -> None:
        self.spec = spec
        self.lower = lower


class Killer:
    """A layer that tears write number ``kill_at`` (counted over data files) and dies."""

    def __init__(self, base: str, kill_at: int, kill_seed: int) -> None:
        self.base = default_registry().select(base)  # "uring,fd" -> what runs here
        self.kill_at = kill_at
        self.rng = random.Random(f"kill:{kill_seed}")
        self.count = 0
        self.lock = threading.Lock()

    @hookimpl
    def walrus_backend_info(self) -> Any:
        return BackendInfo(version="1", layers_over=self.base)

    @hookimpl
    def walrus_open(self, spec: Any, lower: Any) -> _KillerHandle:
        return _KillerHandle(spec, lower)

    def _write(self, handle: _KillerHandle, offset: int, buffers: Any, nbytes: int) -> None:
        if handle.spec.kind == "data":
            with self.lock:
                self.count += 1
                fatal = self.count == self.kill_at
            if fatal:
                raw = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
                cut = self.rng.randint(0, nbytes)
                if cut:
                    handle.lower.write(offset, [raw[:cut]], cut)
                sys.stdout.write(f"K {self.count} {cut}/{nbytes}\n")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(60)
        handle.lower.write(offset, buffers, nbytes)

    @hookimpl
    def walrus_write(self, handle: _KillerHandle, offset: int, buffers: Any, nbytes: int) -> None:
        self._write(handle, offset, buffers, nbytes)

    @hookimpl
    def walrus_read(self, handle: _KillerHandle, offset: int, size: int) -> bytes:
        data: bytes = handle.lower.read(offset, size)
        return data

    @hookimpl
    def walrus_flush(self, handle: _KillerHandle) -> None:
        handle.lower.flush()

    @hookimpl
    def walrus_batch_submit(self, handle: _KillerHandle, ops: Any, sync: bool) -> None:
        for op in ops:
            self._write(handle, op.offset, op.buffers, op.nbytes)
        if sync:
            handle.lower.flush()

    @hookimpl
    def walrus_close(self, handle: _KillerHandle) -> None:
        handle.lower.close()


def main(argv: list[str]) -> int:
    data_dir, backend, schedule, seed_s, first_s = argv[:5]
    seed, first_op = int(seed_s), int(first_s)
    kwargs = open_args(schedule)
    if len(argv) >= 7:
        killer = Killer(backend, int(argv[5]), int(argv[6]))
        registry = BackendRegistry.from_entry_points().with_plugins({"killer": killer})
        wal = Walrus(data_dir=data_dir, backend="killer", registry=registry, **kwargs)
    else:
        wal = Walrus(data_dir=data_dir, backend=backend, **kwargs)
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    stop_at = time.monotonic() + 120
    op = first_op
    while time.monotonic() < stop_at:
        topic, kind, n = plan(seed, op)
        if kind == "s":
            data = payload(seed, op, 0)
            out.write(f"B {op} {topic} 1 s\n")
            out.flush()
            first = wal.append_for_topic(topic, data)
        else:
            batch = [payload(seed, op, i) for i in range(n)]
            out.write(f"B {op} {topic} {n} b\n")
            out.flush()
            got = wal.batch_append_for_topic(topic, batch)
            if len(got) != n:
                out.write(f"X {op} batch returned {got!r} for {n} entries\n")
                out.flush()
                return 3
            first = got.start
        out.write(f"A {op} {first}\n")
        out.flush()
        op += 1
    wal.close()
    out.write("TIMEOUT\n")
    out.flush()
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
