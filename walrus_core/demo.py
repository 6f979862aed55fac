"""A short producer/consumer demo on the default embedded setup: ``python -m walrus_core.demo``."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading

from walrus_core import FsyncSchedule, ReadConsistency, Walrus


def main(argv: list[str] | None = None) -> int:
    """Produce orders in one thread, consume them in another, reopen, and print what happened."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--data-dir", help="where to keep the log (default: a temp directory, removed at the end)"
    )
    parser.add_argument("--count", type=int, default=1000, help="entries to produce")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="walrus-demo-")
    count = args.count

    wal = Walrus(
        data_dir=data_dir,
        consistency=ReadConsistency.strictly_at_once(),
        fsync=FsyncSchedule.milliseconds(200),
    )
    print(f"opened {wal.root} with backend chain {wal.backend_chain}")

    def produce() -> None:
        half = count // 2
        for i in range(half):
            wal.append_for_topic("orders", f"order-{i}".encode())
        wal.batch_append_for_topic("orders", [f"order-{i}".encode() for i in range(half, count)])

    producer = threading.Thread(target=produce)
    producer.start()
    consumed: list[bytes] = []
    while len(consumed) < count // 4:  # the consumer keeps up with the producer as it goes
        entry = wal.read_next("orders")
        if entry is not None:
            consumed.append(entry.data)
    producer.join(timeout=60)
    print(f"produced {count} entries to 'orders' (half one by one, half in one atomic batch)")
    print(f"consumed {len(consumed)} with read_next while producing; first={consumed[0]!r}")
    wal.close()

    with Walrus(data_dir=data_dir) as wal:
        left = wal.topic_entry_count("orders")
        print(f"reopened: {left} entries left for the default consumer (the cursor was durable)")
        batch = wal.batch_read_for_topic("orders", max_bytes=1 << 20)
        print(f"batch read {len(batch)} entries, offsets {batch[0].offset}..{batch[-1].offset}")
        audit = wal.batch_read_for_topic("orders", 1 << 20, consumer="audit")
        print(f"named consumer 'audit' has its own cursor, from the start: {len(audit)} entries")
        print(f"topics: {wal.topics()}, unconsumed per topic: {wal.topic_entry_counts()}")
    files = sorted(os.listdir(data_dir))
    print(f"files in {data_dir}: {files}")
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
