"""A second process for the on-disk tests: leave a directory in a crashed state, or hold its lock.

Usage::

    python walrus_child.py abandon   < JSON   # run the operations, print DONE, then os._exit(0)
    python walrus_child.py hold      < JSON   # open, append, print READY, wait for a stdin line

The JSON document has ``data_dir``, ``backend``, optional ``key``, ``block_size``,
``blocks_per_file`` and ``ops``; each op is ``{"topic": t, "hex": payload}`` (one append),
``{"topic": t, "batch": [hex, ...]}`` (one batch) or ``{"topic": t, "gen": [seed, nbytes]}``
(batches of :func:`gen_payloads` until ``nbytes`` payload bytes). ``abandon`` never closes the
instance: the directory is left as a kill -9 right after the last append returned would leave it
(no clean-close seal records, cursors not persisted by close). In ``hold`` mode, the line read
from stdin decides: ``close`` closes cleanly and exits 0, anything else exits with os._exit(0).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

from walrus_core import FsyncSchedule, Walrus


def gen_payloads(seed: int, nbytes: int) -> Iterator[list[bytes]]:
    """Deterministic batches (256 entries) of 200..2000-byte payloads, ``nbytes`` in total or
    a little more. Every payload starts with ``g<seed>:<index>:``."""
    rng = random.Random(f"gen:{seed}")
    index = 0
    total = 0
    while total < nbytes:
        batch = []
        for _ in range(256):
            head = f"g{seed}:{index}:".encode()
            size = rng.randint(200, 2000)
            batch.append(head + bytes([index % 251]) * size)
            total += len(batch[-1])
            index += 1
            if total >= nbytes:
                break
        yield batch


def _open(doc: dict[str, Any]) -> Walrus:
    return Walrus(
        data_dir=doc["data_dir"],
        key=doc.get("key"),
        backend=doc["backend"],
        fsync=FsyncSchedule.no_fsync(),
        block_size=doc.get("block_size", 4096),
        blocks_per_file=doc.get("blocks_per_file", 4),
    )


def _run_ops(wal: Walrus, ops: list[dict[str, Any]]) -> list[list[int]]:
    done = []
    for op in ops:
        topic = op["topic"]
        if "hex" in op:
            off = wal.append_for_topic(topic, bytes.fromhex(op["hex"]))
            done.append([off, off + 1])
        elif "batch" in op:
            got = wal.batch_append_for_topic(topic, [bytes.fromhex(h) for h in op["batch"]])
            done.append([got.start, got.stop])
        else:
            seed, nbytes = op["gen"]
            for batch in gen_payloads(seed, nbytes):
                got = wal.batch_append_for_topic(topic, batch)
                done.append([got.start, got.stop])
    return done


def main(argv: list[str]) -> None:
    mode = argv[0]
    doc = json.loads(sys.stdin.readline())
    wal = _open(doc)
    done = _run_ops(wal, doc.get("ops", []))
    if mode == "abandon":
        sys.stdout.write("DONE " + json.dumps(done) + "\n")
        sys.stdout.flush()
        os._exit(0)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = sys.stdin.readline().strip()
    if line == "close":
        wal.close()
        sys.stdout.write("CLOSED\n")
        sys.stdout.flush()
        sys.exit(0)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
