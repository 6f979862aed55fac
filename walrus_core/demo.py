"""A short producer/consumer demo on the default embedded setup: ``python -m walrus_core.demo``.

Run it again with the same ``--data-dir`` to see the log continue: offsets go on where they
stopped, and every consumer resumes from its durable cursor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

from walrus_core import Entry, FsyncSchedule, ReadConsistency, Walrus

TOPIC = "orders"
PRODUCER_TIMEOUT_S = 60.0


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def _offsets(entries: list[Entry]) -> str:
    if not entries:
        return "none"
    first, last = entries[0].offset, entries[-1].offset
    return f"offset {first}" if first == last else f"offsets {first}..{last}"


def _where_audit_starts(wal: Walrus) -> str:
    for consumer in wal.consumers(TOPIC):
        if consumer.name == "audit":
            return f"resumes at offset {consumer.offset} (its durable cursor from an earlier run)"
    first = wal.batch_read_for_topic(TOPIC, 1, start_offset=0, checkpoint=False)
    start = first[0].offset if first else 0
    return f"is new, so it starts at the topic's first entry (offset {start})"


def _drain(wal: Walrus, consumer: str | None) -> tuple[list[Entry], str]:
    """Everything left for ``consumer``, by batch reads (each returns at most
    ``limits.max_batch_entries``); and how many reads it took, when more than one."""
    entries: list[Entry] = []
    calls = 0
    while batch := wal.batch_read_for_topic(TOPIC, max_bytes=1 << 20, consumer=consumer):
        entries.extend(batch)
        calls += 1
    return entries, f" in {calls} batch reads" if calls > 1 else ""


def main(argv: list[str] | None = None) -> int:
    """Produce orders in one thread, consume them in another, reopen, and print what happened."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--data-dir", help="where to keep the log (default: a temp directory, removed at the end)"
    )
    parser.add_argument("--count", type=_count, default=1000, help="entries to produce (>= 1)")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="walrus-demo-")
    count: int = args.count
    try:
        run(data_dir, count)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def run(data_dir: str, count: int) -> None:
    """The demo itself, on ``data_dir`` (which may hold a log from an earlier run)."""
    with Walrus(
        data_dir=data_dir,
        consistency=ReadConsistency.strictly_at_once(),
        fsync=FsyncSchedule.milliseconds(200),
    ) as wal:
        print(f"opened {wal.root} with backend chain {wal.backend_chain}")
        singles = count // 2
        produced: list[range] = []
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                for i in range(singles):
                    offset = wal.append_for_topic(TOPIC, f"order-{i}".encode())
                    produced.append(range(offset, offset + 1))
                step = wal.limits.max_batch_entries  # a larger count takes several batches
                for start in range(singles, count, step):
                    stop = min(count, start + step)
                    batch = [f"order-{i}".encode() for i in range(start, stop)]
                    produced.append(wal.batch_append_for_topic(TOPIC, batch))
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        consumed: list[Entry] = []
        goal = max(1, count // 4)  # the consumer keeps up with the producer as it goes
        deadline = time.monotonic() + PRODUCER_TIMEOUT_S
        while len(consumed) < goal and time.monotonic() < deadline:
            finished = not producer.is_alive()  # asked before reading: then None means the end
            entry = wal.read_next(TOPIC)
            if entry is not None:
                consumed.append(entry)
            elif finished:
                break
        producer.join(timeout=PRODUCER_TIMEOUT_S)
        if failure:
            raise failure[0]
        first, last = produced[0].start, produced[-1].stop - 1
        print(
            f"produced {_entries(count)} to {TOPIC!r} at offsets {first}..{last}"
            f" ({singles} one by one, {count - singles} in atomic batches of at most"
            f" {wal.limits.max_batch_entries})"
        )
        during = f"{_entries(len(consumed))} with read_next while producing"
        print(f"consumed {during}: {_offsets(consumed)}")

    with Walrus(data_dir=data_dir) as wal:
        left = wal.topic_entry_count(TOPIC)
        print(f"reopened: {_entries(left)} left for the default consumer (its cursor is durable)")
        batch, calls = _drain(wal, None)
        print(f"batch read {_entries(len(batch))}{calls}: {_offsets(batch)}")
        where = _where_audit_starts(wal)
        audit, calls = _drain(wal, "audit")
        print(
            f"named consumer 'audit' {where}; it read {_entries(len(audit))}{calls}:"
            f" {_offsets(audit)}"
        )
        print(f"topics: {wal.topics()}, unconsumed per topic: {wal.topic_entry_counts()}")
    print(f"files in {data_dir}: {sorted(os.listdir(data_dir))}")


if __name__ == "__main__":
    raise SystemExit(main())
