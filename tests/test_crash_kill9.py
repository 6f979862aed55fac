"""Crash harness: a writer/consumer process is killed with SIGKILL at random moments, under every
FsyncSchedule and both read-consistency modes; the same directory is reopened after each kill.

The worker (``tests/helpers/kill9_worker.py``) appends single entries and batches to two topics
and consumes them with ``read_next`` and batch reads on the named consumer ``kc``, printing an
acknowledgement after each call returns (see its docstring for the protocol). The parent kills it
at a random moment (right after it announced an append or a read, or after a random delay), then
reopens the directory and checks, each check named in its assertion message:

* ``acked_appends_present``: every append and batch acknowledged before the kill is present, at
  the offset the call returned, with its exact bytes (all schedules: a process crash must not
  lose what an append returned);
* ``batch_all_or_nothing``: the one append or batch in flight at the kill is wholly present or
  wholly absent;
* ``order_per_topic``: offsets are 0, 1, 2, ... and every entry is the one appended there; the
  consumer receives entries in order, with exactly the bytes appended (checked live through the
  crc the worker prints, also for replayed entries after a reopen);
* ``no_redelivery_strict``: under ``strictly_at_once`` the reopened consumer's position is at
  least the last acknowledged consumed offset + 1;
* ``bounded_replay_at_least_once``: under ``at_least_once(persist_every=N)`` fewer than N
  entries plus the last batch read are replayed;
* ``never_skips``: the reopened position is never past what was consumed (plus the read in
  flight at the kill).

Each kill reuses the same directory (cumulative). Default run: 6 configurations x 2 kills. The
slow run (``WALRUS_SLOW=1`` or ``-m slow``) adds 6 x 17 = 102 kills.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import kill9_worker as kw

from walrus_core import CorruptionError, FsyncSchedule, Walrus

HELPERS = Path(__file__).parent / "helpers"
SLOW = os.environ.get("WALRUS_SLOW", "") not in ("", "0")
LINE_TIMEOUT = 60.0  # a safety net for a stuck worker, not a check
DEFAULT_KILLS = 2
SLOW_KILLS = 17
MAX_BATCH_ENTRIES = 2000  # Limits().max_batch_entries, the batch-read cap the worker runs with


CONFIGS = [
    (schedule, consistency) for schedule in kw.SCHEDULES for consistency in ("strict", "alo:7")
]
KILLS = {"total": 0}


@dataclass
class Model:
    seed: int
    consistency: str
    topics: dict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: {t: [] for t in kw.TOPICS}
    )
    pos: dict[str, int] = field(default_factory=lambda: dict.fromkeys(kw.TOPICS, 0))
    last_batch: dict[str, int] = field(default_factory=lambda: dict.fromkeys(kw.TOPICS, 0))
    next_op: int = 0
    replayed: int = 0
    in_flight_append_present: int = 0
    in_flight_append_absent: int = 0
    in_flight_read_persisted: int = 0

    @property
    def persist_every(self) -> int:
        return 0 if self.consistency == "strict" else max(1, int(self.consistency.split(":")[1]))

    _payloads: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def payload(self, op: int, i: int) -> bytes:
        got = self._payloads.get((op, i))
        if got is None:
            got = self._payloads[(op, i)] = kw.payload(self.seed, op, i)
        return got

    def size(self, topic: str, offset: int) -> int:
        return len(self.payload(*self.topics[topic][offset]))

    def read_count(self, topic: str, kind: str, max_bytes: int) -> int:
        """How many entries a read from the current position returns (the batch-read rule)."""
        start, end = self.pos[topic], len(self.topics[topic])
        if start >= end:
            return 0
        if kind == "n":
            return 1
        n = total = 0
        for offset in range(start, end):
            size = self.size(topic, offset)
            if n and total + size > max_bytes:
                break
            total += size
            n += 1
            if n == MAX_BATCH_ENTRIES:
                break
        return n


@dataclass
class InFlight:
    kind: str  # "append" or "read"
    op: int
    topic: str
    n: int  # entries of the append, or entries the read returns


def _reader(stream: object, q: queue.Queue[bytes | None]) -> None:
    try:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line)
    finally:
        q.put(None)


def _apply(model: Model, line: bytes, flight: InFlight | None) -> InFlight | None:
    """Fold one complete acknowledgement line into the model; returns what is in flight."""
    parts = line.decode().split()
    tag = parts[0]
    if tag == "X":
        pytest.fail(f"worker reported: {line!r}")
    if tag == "B":
        op, topic, n = int(parts[1]), parts[2], int(parts[3])
        model.next_op = op + 1
        return InFlight("append", op, topic, n)
    if tag == "A":
        assert flight is not None and flight.kind == "append" and flight.op == int(parts[1])
        first = int(parts[2])
        entries = model.topics[flight.topic]
        assert first == len(entries), (
            f"order_per_topic: op {flight.op} on {flight.topic!r} returned offset {first}, "
            f"expected {len(entries)}"
        )
        entries.extend((flight.op, i) for i in range(flight.n))
        return None
    if tag == "R":
        op, topic, kind, max_bytes = int(parts[1]), parts[2], parts[3], int(parts[4])
        model.next_op = op + 1
        return InFlight("read", op, topic, model.read_count(topic, kind, max_bytes))
    if tag == "C":
        assert flight is not None and flight.kind == "read" and flight.op == int(parts[1])
        first, count, crc = int(parts[2]), int(parts[3]), int(parts[4])
        topic = flight.topic
        assert count == flight.n, (
            f"read op {flight.op} on {topic!r} returned {count} entries, expected {flight.n} "
            f"from position {model.pos[topic]} of {len(model.topics[topic])}"
        )
        if count:
            assert first == model.pos[topic], (
                f"order_per_topic: consumer read {topic!r} from {first}, its position was "
                f"{model.pos[topic]}"
            )
            want = [model.payload(*model.topics[topic][o]) for o in range(first, first + count)]
            assert crc == kw.digest(want), (
                f"order_per_topic: consumer got wrong bytes for {topic!r} {first}..{first + count}"
            )
            model.pos[topic] += count
            model.last_batch[topic] = count
        return None
    pytest.fail(f"unexpected worker line {line!r}")


def run_worker(
    data_dir: Path, backend: str, schedule: str, model: Model, rng: random.Random, tmp: Path
) -> InFlight | None:
    """Start a worker, SIGKILL it at a random moment, fold its acknowledgements into the model;
    returns the operation in flight at the kill."""
    err_path = tmp / f"worker-{model.next_op}.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HELPERS / "kill9_worker.py"),
                str(data_dir),
                backend,
                schedule,
                model.consistency,
                str(model.seed),
                str(model.next_op),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    q: queue.Queue[bytes | None] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True)
    reader.start()
    lines: list[bytes] = []

    def next_line() -> bytes | None:
        try:
            line = q.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            proc.kill()
            proc.wait(timeout=30)
            pytest.fail(f"worker silent for {LINE_TIMEOUT}s; stderr:\n{err_path.read_text()}")
        if line is not None:
            lines.append(line)
        return line

    try:
        first = next_line()
        if first != b"READY\n":
            proc.wait(timeout=30)
            pytest.fail(f"worker did not start: {first!r}\n{err_path.read_text()}")
        if rng.random() < 0.6:
            # Right after the worker announced its k-th call: most likely while it runs.
            k = rng.randint(1, 400)
            prefix = rng.choice((b"B ", b"R ", b""))
            seen = 0
            while True:
                line = next_line()
                if line is None:
                    break
                if line.startswith(prefix):
                    seen += 1
                    if seen >= k:
                        break
            delay = rng.choice((0.0, 0.0, 0.0002, 0.001, 0.004))
            if delay:
                time.sleep(delay)
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            returncode = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait(timeout=30)
        reader.join(timeout=30)
        assert not reader.is_alive(), "stdout reader did not finish"
        while True:
            try:
                line = q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                lines.append(line)
        if proc.stdout is not None:
            proc.stdout.close()
    assert returncode == -signal.SIGKILL, (
        f"worker ended with {returncode}, not SIGKILL:\n{err_path.read_text()}"
    )
    KILLS["total"] += 1
    flight: InFlight | None = None
    for line in lines[1:]:
        if not line.endswith(b"\n"):
            break  # cut by the kill: not an acknowledgement
        flight = _apply(model, line, flight)
    return flight


def _read_all(wal: Walrus, topic: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for _ in range(100_000):
        try:
            got = wal.batch_read_for_topic(topic, 1 << 22, checkpoint=False, start_offset=len(out))
        except CorruptionError as exc:
            pytest.fail(f"no wrong bytes: CorruptionError after a process crash: {exc}")
        if not got:
            return out
        out.extend((e.offset, e.data) for e in got)
    pytest.fail("reading did not end")


def verify(data_dir: Path, backend: str, model: Model, flight: InFlight | None) -> None:
    """Reopen, check every guarantee, and fold the recovered state into the model."""
    with Walrus(
        data_dir=data_dir,
        backend=backend,
        fsync=FsyncSchedule.no_fsync(),
        auto_reclaim=False,
        **kw.GEOMETRY,
    ) as wal:
        for topic in kw.TOPICS:
            expected = model.topics[topic]
            actual = _read_all(wal, topic)
            extra = len(actual) - len(expected)
            ctx = f"{topic!r}: {len(actual)} entries after the kill, {len(expected)} acked; "
            ctx += f"in flight: {flight}"
            assert extra >= 0, f"acked_appends_present: {ctx}"
            here = flight is not None and flight.kind == "append" and flight.topic == topic
            if here and flight is not None:
                assert extra in (0, flight.n), f"batch_all_or_nothing: {ctx}"
                if extra:
                    expected.extend((flight.op, i) for i in range(flight.n))
                    model.in_flight_append_present += 1
                else:
                    model.in_flight_append_absent += 1
            else:
                assert extra == 0, f"batch_all_or_nothing (nothing unacknowledged): {ctx}"
            for pos, (offset, data) in enumerate(actual):
                assert offset == pos, f"order_per_topic: entry #{pos} has offset {offset}"
                op, i = expected[pos]
                assert data == model.payload(op, i), (
                    f"acked_appends_present: {topic!r} offset {pos} holds wrong bytes "
                    f"({data[:30]!r}), expected entry {i} of op {op}"
                )
            end = len(actual)
            pos = end - wal.topic_entry_count(topic, consumer=kw.CONSUMER)
            acked = model.pos[topic]  # last acknowledged consumed offset + 1
            reading = flight is not None and flight.kind == "read" and flight.topic == topic
            in_flight = flight.n if reading and flight is not None else 0
            ctx = (
                f"consumer {kw.CONSUMER!r} of {topic!r} ({model.consistency}) reopened at {pos}; "
                f"acknowledged consumed up to {acked}, in-flight read of {in_flight}, last batch "
                f"{model.last_batch[topic]}"
            )
            assert pos <= acked + in_flight, f"never_skips: {ctx}"
            if model.persist_every == 0:
                assert pos >= acked, f"no_redelivery_strict: {ctx}"
            else:
                assert acked - pos < model.persist_every + model.last_batch[topic], (
                    f"bounded_replay_at_least_once: {ctx}"
                )
            model.replayed += max(0, acked - pos)
            model.in_flight_read_persisted += pos > acked
            model.pos[topic] = pos
            model.last_batch[topic] = 0


def final_check(data_dir: Path, backend: str, model: Model) -> None:
    """After the last kill: the consumer reads the rest in order, and appends still work."""
    with Walrus(data_dir=data_dir, backend=backend, **kw.GEOMETRY) as wal:
        for topic in kw.TOPICS:
            rest = wal.batch_read_for_topic(topic, 1 << 24, consumer=kw.CONSUMER)
            start = model.pos[topic]
            want = [model.payload(op, i) for op, i in model.topics[topic][start:]]
            assert [e.offset for e in rest] == list(range(start, start + len(want)))
            assert [e.data for e in rest] == want
            assert wal.append_for_topic(topic, b"after") == len(model.topics[topic])


def run_config(
    tmp_path: Path, backend: str, schedule: str, consistency: str, kills: int, seed: int
) -> Model:
    data_dir = tmp_path / "wal"
    rng = random.Random(f"kill9:{schedule}:{consistency}:{seed}")
    model = Model(seed=seed, consistency=consistency)
    for _ in range(kills):
        flight = run_worker(data_dir, backend, schedule, model, rng, tmp_path)
        verify(data_dir, backend, model, flight)
    final_check(data_dir, backend, model)
    print(
        f"[{schedule} {consistency} seed {seed}] kills={kills} entries="
        f"{sum(map(len, model.topics.values()))} consumed={sum(model.pos.values())} "
        f"replayed={model.replayed} in-flight append present/absent="
        f"{model.in_flight_append_present}/{model.in_flight_append_absent} "
        f"in-flight read persisted={model.in_flight_read_persisted} total kills={KILLS['total']}"
    )
    return model


@pytest.mark.parametrize(("schedule", "consistency"), CONFIGS)
def test_kill9_writer_consumer(
    tmp_path: Path, backend_name: str, schedule: str, consistency: str
) -> None:
    """Every check of the module docstring after each of DEFAULT_KILLS SIGKILLs of a worker that
    appends and consumes (same directory across kills)."""
    run_config(tmp_path, backend_name, schedule, consistency, DEFAULT_KILLS, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize(("schedule", "consistency"), CONFIGS)
def test_kill9_writer_consumer_slow(
    tmp_path: Path,
    backend_name: str,
    schedule: str,
    consistency: str,
    request: pytest.FixtureRequest,
) -> None:
    """The same checks after SLOW_KILLS SIGKILLs per configuration (102 in all); runs with
    ``WALRUS_SLOW=1`` or ``-m slow``."""
    expr = request.config.getoption("markexpr", "") or ""
    if not (SLOW or ("slow" in expr and "not slow" not in expr)):
        pytest.skip("slow: set WALRUS_SLOW=1 or select -m slow")
    run_config(tmp_path, backend_name, schedule, consistency, SLOW_KILLS, seed=2)
