"""Disk space over time: write and consume N bytes in rounds, print allocated bytes after each.

Two scenarios, default geometry (10 MiB blocks, 100 per file), 1 KiB entries, batches of 1000:

* ``one-topic``: one topic written and fully consumed each round;
* ``slow-consumer``: four topics written round-robin, three consumed each round, the fourth
  never (its space must stay, the others' must come back through hole punching).

Space is ``st_blocks * 512`` summed over the directory (sparse files make sizes meaningless).

    python benchmarks/bench_space.py [--gib 2] [--rounds 3] [--backend fd] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from walrus_core import Walrus

ENTRY = 1024
MIB = 1 << 20
BATCH = 1000


def allocated(path: str) -> int:
    """Allocated bytes of every file in ``path``."""
    return sum(os.stat(os.path.join(path, n)).st_blocks * 512 for n in os.listdir(path))


def run(scenario: str, root: str, gib: float, rounds: int, backend: str) -> None:
    """Write ``gib`` GiB per round, consume, reclaim, report."""
    topics = ["t0"] if scenario == "one-topic" else ["t0", "t1", "t2", "slow"]
    consumed = topics if scenario == "one-topic" else topics[:3]
    batches = int(gib * (1 << 30)) // (ENTRY * BATCH)
    payload = [os.urandom(ENTRY)] * BATCH
    with Walrus(root, backend=backend) as wal:
        geometry = wal.geometry
        print(
            f"{scenario}: {gib} GiB per round, block {geometry.block_size >> 20} MiB,"
            f" {geometry.blocks_per_file} blocks per file, backend {'/'.join(wal.backend_chain)}"
        )
        for round_no in range(1, rounds + 1):
            began = time.perf_counter()
            for i in range(batches):
                wal.batch_append_for_topic(topics[i % len(topics)], payload)
            for topic in consumed:
                while wal.batch_read_for_topic(topic, 64 << 20):
                    pass
            result = wal.reclaim()
            live = sum(wal.topic_info(t).bytes_on_disk for t in topics)
            in_use = allocated(root)
            per_topic_blocks = (in_use - live) / geometry.block_size / len(topics)
            print(
                f"  round {round_no}: allocated {in_use / MIB:.1f} MiB, unconsumed blocks"
                f" {live / MIB:.1f} MiB, above them {(in_use - live) / 1024:.0f} KiB"
                f" (= {per_topic_blocks:.2f} blocks per topic), files"
                f" {len([n for n in os.listdir(root) if n.startswith('data-')])};"
                f" reclaim: {result.files_deleted} files deleted, {result.blocks_punched}"
                f" blocks punched, {result.bytes_freed / MIB:.1f} MiB freed"
                f" ({time.perf_counter() - began:.1f} s)"
            )


def main() -> None:
    """Parse arguments and run both scenarios in fresh directories."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="fd")
    parser.add_argument("--dir", default=None, help="parent directory (default: a temp dir)")
    args = parser.parse_args()
    for scenario in ("one-topic", "slow-consumer"):
        root = tempfile.mkdtemp(prefix=f"walrus-space-{scenario}-", dir=args.dir)
        try:
            run(scenario, root, args.gib, args.rounds, args.backend)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
