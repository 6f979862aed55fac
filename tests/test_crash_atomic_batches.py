"""Crash durability: a writer process is killed with SIGKILL while it appends; the directory is
reopened and checked against what the writer acknowledged.

Guarantees under test (issue 2, "Semantics"):

* "Whatever the schedule, an append that returned survives a kill -9 of the process."
* "Batch appends are all-or-nothing, also across a crash at any point: after recovery a batch is
  either wholly present or wholly absent."
* A topic is an append-only stream: order per topic holds, offsets are 0, 1, 2, ..., no entry is
  returned twice and wrong bytes are never returned.

The writer (``tests/helpers/crash_writer.py``) prints ``B`` before and ``A`` after each append or
batch. At most one operation is in flight when it dies. After each kill, every topic must read
back as exactly: the acknowledged operations on that topic in order, optionally followed by the
whole in-flight operation. The same directory is reused across kills, so later runs append to a
recovered directory and every earlier state must survive each later crash and recovery.

``WALRUS_SLOW=1`` runs more seeds and kills.
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
from helpers import crash_writer as cw

from walrus_core import CorruptionError, FsyncSchedule, Walrus

HELPERS = Path(__file__).parent / "helpers"
SLOW = os.environ.get("WALRUS_SLOW", "") not in ("", "0")
LINE_TIMEOUT = 60.0  # seconds to wait for a writer line (generous: a safety net, not a check)


if SLOW:
    PARENT_KILL_SEEDS = (11, 29, 47, 83)
    PARENT_KILLS_PER_SEED = 10
    LAYER_KILL_SEEDS = (5, 17, 31)
    LAYER_KILLS_PER_SEED = 8
else:
    PARENT_KILL_SEEDS = (11, 29)
    PARENT_KILLS_PER_SEED = 5
    LAYER_KILL_SEEDS = (5,)
    LAYER_KILLS_PER_SEED = 4


@dataclass
class Op:
    op: int
    topic: str
    n: int
    kind: str


@dataclass
class Run:
    """What one writer process said before it died."""

    begun: list[Op] = field(default_factory=list)
    acked: dict[int, int] = field(default_factory=dict)  # op -> first offset it returned
    raw: list[bytes] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""

    @property
    def in_flight(self) -> Op | None:
        pending = [o for o in self.begun if o.op not in self.acked]
        assert len(pending) <= 1, f"harness: more than one operation in flight: {pending}"
        if pending:
            assert pending[0] is self.begun[-1], "harness: in-flight op is not the last begun"
            return pending[0]
        return None


@dataclass
class Model:
    """The entries each topic must hold: (op, index in op) per offset."""

    seed: int
    topics: dict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: {t: [] for t in cw.TOPICS}
    )
    next_op: int = 0
    in_flight_present: int = 0
    in_flight_absent: int = 0
    batch_in_flight: int = 0


def _reader(stream: object, q: queue.Queue[bytes | None]) -> None:
    try:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line)
    finally:
        q.put(None)


Spawned = tuple["subprocess.Popen[bytes]", "queue.Queue[bytes | None]", threading.Thread]


def _spawn(args: list[str], stderr_path: Path) -> Spawned:
    err = open(stderr_path, "wb")  # noqa: SIM115 - closed right after the child inherited it
    proc = subprocess.Popen(
        [sys.executable, str(HELPERS / "crash_writer.py"), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    err.close()
    q: queue.Queue[bytes | None] = queue.Queue()
    t = threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True)
    t.start()
    return proc, q, t


def _next_line(
    q: queue.Queue[bytes | None], proc: subprocess.Popen[bytes], err: Path
) -> bytes | None:
    try:
        return q.get(timeout=LINE_TIMEOUT)
    except queue.Empty:
        proc.kill()
        proc.wait(timeout=30)
        pytest.fail(f"writer said nothing for {LINE_TIMEOUT}s; stderr:\n{err.read_text()}")


def _parse(run: Run, line: bytes) -> None:
    run.raw.append(line)
    if not line.endswith(b"\n"):
        return  # cut by the kill: not an acknowledgement
    parts = line.decode().split()
    if parts[0] == "B":
        run.begun.append(Op(int(parts[1]), parts[2], int(parts[3]), parts[4]))
    elif parts[0] == "A":
        run.acked[int(parts[1])] = int(parts[2])
    elif parts[0] in ("X", "TIMEOUT"):
        pytest.fail(f"writer reported a problem: {line!r}")


def _finish(
    proc: subprocess.Popen[bytes],
    q: queue.Queue[bytes | None],
    t: threading.Thread,
    run: Run,
    err: Path,
) -> None:
    try:
        run.returncode = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        run.returncode = proc.wait(timeout=30)
    t.join(timeout=30)
    assert not t.is_alive(), "stdout reader did not finish"
    while True:
        line = q.get_nowait() if not q.empty() else None
        if line is None:
            break
        _parse(run, line)
    if proc.stdout is not None:
        proc.stdout.close()
    run.stderr = err.read_text(errors="replace")


def run_writer_parent_kill(
    data_dir: Path, backend: str, schedule: str, model: Model, rng: random.Random, tmp: Path
) -> Run:
    """Start a writer, SIGKILL it from here at a random point (mostly inside a batch)."""
    err = tmp / f"writer-{model.next_op}.err"
    proc, q, t = _spawn(
        [str(data_dir), backend, schedule, str(model.seed), str(model.next_op)], err
    )
    run = Run()
    try:
        line = _next_line(q, proc, err)
        if line != b"READY\n":
            proc.wait(timeout=30)
            pytest.fail(f"writer did not start: {line!r}\nstderr:\n{err.read_text()}")
        if rng.random() < 0.7:
            # Kill shortly after the k-th batch started: most likely while it is being written.
            k = rng.randint(1, 6)
            delay = rng.choice((0.0, 0.0005, 0.002, 0.005, 0.01))
            batches = begun = 0
            while True:
                line = _next_line(q, proc, err)
                if line is None:
                    break
                _parse(run, line)
                if line.startswith(b"B "):
                    begun += 1
                    batches += line.rstrip().endswith(b" b")
                    if batches == k or begun >= 50:
                        if delay:
                            time.sleep(delay)
                        break
        else:
            time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _finish(proc, q, t, run, err)
    assert run.returncode == -signal.SIGKILL, (
        f"writer ended with {run.returncode}, not by SIGKILL; stderr:\n{run.stderr}"
    )
    return run


def run_writer_layer_kill(
    data_dir: Path, backend: str, schedule: str, model: Model, rng: random.Random, tmp: Path
) -> Run:
    """Start a writer whose storage layer tears its N-th data write and SIGKILLs the process."""
    err = tmp / f"writer-{model.next_op}.err"
    kill_at = rng.randint(1, 400)
    proc, q, t = _spawn(
        [
            str(data_dir),
            backend,
            schedule,
            str(model.seed),
            str(model.next_op),
            str(kill_at),
            str(rng.randrange(1 << 30)),
        ],
        err,
    )
    run = Run()
    _finish(proc, q, t, run, err)
    if not run.raw or run.raw[0] != b"READY\n":
        pytest.fail(f"writer did not start: {run.raw[:1]!r}\nstderr:\n{run.stderr}")
    assert run.returncode == -signal.SIGKILL, (
        f"writer ended with {run.returncode}, not by its own SIGKILL; stderr:\n{run.stderr}"
    )
    assert any(line.startswith(b"K ") for line in run.raw), (
        f"the killer layer never reached data write {kill_at}; stderr:\n{run.stderr}"
    )
    return run


def _describe(data: bytes) -> str:
    head = data[:40]
    return f"{len(data)} bytes starting {head!r}"


def read_all(wal: Walrus, topic: str) -> list[tuple[int, bytes]]:
    """Every entry of ``topic`` via offset reads (no cursor moves), as (offset, data)."""
    out: list[tuple[int, bytes]] = []
    while True:
        got = wal.batch_read_for_topic(topic, 1 << 22, checkpoint=False, start_offset=len(out))
        if not got:
            return out
        out.extend((e.offset, e.data) for e in got)
        assert len(out) < 10_000_000


def verify(data_dir: Path, backend: str, model: Model, run: Run) -> None:
    """Reopen and compare every topic with the model; fold the run into the model."""
    # 1. Every acknowledged operation, in order, extends its topic at the offset it returned.
    for op in run.begun:
        if op.op not in run.acked:
            continue
        expect_first = len(model.topics[op.topic])
        assert run.acked[op.op] == expect_first, (
            f"op {op.op} ({op.kind}, {op.n} entries, topic {op.topic}) returned first offset "
            f"{run.acked[op.op]}, expected {expect_first}"
        )
        model.topics[op.topic].extend((op.op, i) for i in range(op.n))
        model.next_op = max(model.next_op, op.op + 1)
    flight = run.in_flight
    if flight is not None:
        model.next_op = max(model.next_op, flight.op + 1)
        if flight.kind == "b":
            model.batch_in_flight += 1
    with Walrus(
        data_dir=data_dir, backend=backend, fsync=FsyncSchedule.no_fsync(), **cw.GEOMETRY
    ) as wal:
        listed = set(wal.topics())
        for topic in cw.TOPICS:
            expected = model.topics[topic]
            try:
                actual = read_all(wal, topic)
            except CorruptionError as exc:
                where = (
                    "an acknowledged entry"
                    if exc.offset is not None and exc.offset < len(expected)
                    else "past the acknowledged entries"
                )
                pytest.fail(
                    f"topic {topic!r}: CorruptionError after recovery at offset {exc.offset}, "
                    f"{where} ({len(expected)} acknowledged; in flight: {flight}): {exc}"
                )
            extra = len(actual) - len(expected)
            flight_here = flight is not None and flight.topic == topic
            if extra == 0:
                pass
            elif flight_here and flight is not None and extra == flight.n:
                expected = expected + [(flight.op, i) for i in range(flight.n)]
            else:
                what = (
                    f"in-flight op {flight.op} ({flight.kind}, {flight.n} entries, topic "
                    f"{flight.topic})"
                    if flight is not None
                    else "no op in flight"
                )
                tail = [_describe(d) for _, d in actual[len(model.topics[topic]) :][:3]]
                pytest.fail(
                    f"topic {topic!r}: {len(actual)} entries after recovery, expected "
                    f"{len(model.topics[topic])} acknowledged ones"
                    + (f" (+{flight.n} if the in-flight batch survived)" if flight_here else "")
                    + f"; {what}; first extra entries: {tail}"
                )
            for pos, ((offset, data), (op, i)) in enumerate(zip(actual, expected, strict=True)):
                assert offset == pos, f"topic {topic!r}: entry #{pos} has offset {offset}"
                want = cw.payload(model.seed, op, i)
                if data != want:
                    pytest.fail(
                        f"topic {topic!r} offset {pos}: expected entry {i} of op {op} "
                        f"({_describe(want)}), got {_describe(data)}"
                    )
            if flight_here and flight is not None and extra:
                model.topics[topic] = expected
                model.in_flight_present += 1
            elif flight_here:
                model.in_flight_absent += 1
            assert wal.topic_entry_count(topic) == len(expected), (
                f"topic {topic!r}: topic_entry_count {wal.topic_entry_count(topic)} "
                f"!= {len(expected)} entries readable (the default consumer read nothing)"
            )
            if model.topics[topic]:
                assert topic in listed, f"topics() {sorted(listed)} misses {topic!r}"
        assert listed <= set(cw.TOPICS), f"topics() lists unknown topics: {sorted(listed)}"


def final_check(data_dir: Path, backend: str, model: Model) -> None:
    """After the last recovery: appends work, and consuming through the cursor agrees."""
    with Walrus(
        data_dir=data_dir, backend=backend, fsync=FsyncSchedule.no_fsync(), **cw.GEOMETRY
    ) as wal:
        for topic in cw.TOPICS:
            n = len(model.topics[topic])
            assert wal.append_for_topic(topic, b"final-single:" + topic.encode()) == n
            got = wal.batch_append_for_topic(topic, [b"final-batch:%d" % i for i in range(3)])
            assert got == range(n + 1, n + 4)
    with Walrus(
        data_dir=data_dir, backend=backend, fsync=FsyncSchedule.no_fsync(), **cw.GEOMETRY
    ) as wal:
        topic = cw.TOPICS[0]
        expected = [cw.payload(model.seed, op, i) for op, i in model.topics[topic]]
        expected += [b"final-single:" + topic.encode()] + [b"final-batch:%d" % i for i in range(3)]
        seen = []
        while True:
            entry = wal.read_next(topic)
            if entry is None:
                break
            assert entry.offset == len(seen), "read_next skipped or repeated an offset"
            assert entry.data == expected[len(seen)], f"wrong bytes at offset {entry.offset}"
            seen.append(entry.data)
            assert len(seen) <= len(expected), "read_next returned more entries than exist"
        assert len(seen) == len(expected)
        for topic in cw.TOPICS[1:]:
            tail = read_all(wal, topic)[-4:]
            assert [d for _, d in tail] == [b"final-single:" + topic.encode()] + [
                b"final-batch:%d" % i for i in range(3)
            ]


SCHEDULE_IDS = cw.SCHEDULES


@pytest.mark.parametrize("seed", PARENT_KILL_SEEDS)
@pytest.mark.parametrize("schedule", SCHEDULE_IDS)
def test_sigkill_from_parent_keeps_acknowledged_and_batches_atomic(
    tmp_path: Path, backend_name: str, schedule: str, seed: int
) -> None:
    """Guarantees: "an append that returned survives a kill -9 of the process" (every
    acknowledged single append and batch is present after reopen, under every FsyncSchedule);
    "after recovery a batch is either wholly present or wholly absent"; per-topic order holds,
    no entry is returned twice, no wrong bytes are returned. The parent SIGKILLs the writer at a
    random moment, most often a few milliseconds after a batch of 50-500 entries started."""
    data_dir = tmp_path / "wal"
    rng = random.Random(f"parent:{seed}:{schedule}")
    model = Model(seed=seed)
    for _ in range(PARENT_KILLS_PER_SEED):
        run = run_writer_parent_kill(data_dir, backend_name, schedule, model, rng, tmp_path)
        verify(data_dir, backend_name, model, run)
    final_check(data_dir, backend_name, model)
    print(
        f"[{schedule} seed {seed}] kills={PARENT_KILLS_PER_SEED} batch-in-flight="
        f"{model.batch_in_flight} in-flight present={model.in_flight_present} "
        f"absent={model.in_flight_absent} entries={sum(map(len, model.topics.values()))}"
    )


@pytest.mark.parametrize("seed", LAYER_KILL_SEEDS)
@pytest.mark.parametrize("schedule", SCHEDULE_IDS)
def test_sigkill_inside_a_torn_storage_write_keeps_batches_atomic(
    tmp_path: Path, backend_name: str, schedule: str, seed: int
) -> None:
    """Guarantees: a batch is wholly present or wholly absent after a crash *at any point*, and
    acknowledged appends survive kill -9. A storage layer above the backend under test tears the
    N-th data write (only a random prefix of its bytes reaches the file) and SIGKILLs its own
    process, so the crash lands exactly inside the engine's write sequence, usually mid-batch."""
    data_dir = tmp_path / "wal"
    rng = random.Random(f"layer:{seed}:{schedule}")
    model = Model(seed=seed)
    for _ in range(LAYER_KILLS_PER_SEED):
        run = run_writer_layer_kill(data_dir, backend_name, schedule, model, rng, tmp_path)
        verify(data_dir, backend_name, model, run)
    final_check(data_dir, backend_name, model)
    print(
        f"[{schedule} seed {seed}] layer kills={LAYER_KILLS_PER_SEED} batch-in-flight="
        f"{model.batch_in_flight} in-flight present={model.in_flight_present} "
        f"absent={model.in_flight_absent}"
    )
