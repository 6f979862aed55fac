"""Instance lifetime: an instance inherited through fork() and one dropped without close().

* A forked child's copy of an open instance describes the log as it was at the fork while the
  parent keeps appending. The child must not use it (every call raises ForkedInstanceError),
  its close() must write nothing (a clean-close seal would make recovery drop what the parent
  acknowledged later) and take no lock, and the child must not keep the directory locked once
  the parent closed it.
* An instance that becomes garbage is closed (data, cursors, lock) with a ResourceWarning; the
  background flusher must not keep it alive. Pickling or copying an instance is refused.
"""

from __future__ import annotations

import copy
import gc
import json
import multiprocessing
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from walrus_core import (
    DirectoryLockedError,
    FsyncSchedule,
    ReadConsistency,
    Walrus,
    WalrusClosedError,
    WalrusError,
)
from walrus_core.background import Flusher
from walrus_core.errors import ForkedInstanceError
from walrus_core.storage import Flushable

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

OpenWal = Callable[..., Walrus]  # the open_wal fixture of conftest.py
GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}  # conftest.py's small geometry
TIMEOUT = 60.0  # a safety net for a stuck child, not a check
ADVICE = "open a new Walrus in the child after the parent closed it"


# --- helpers --------------------------------------------------------------------------------


def run_in_fork(action: Callable[[], object], timeout: float = TIMEOUT) -> str:
    """Run ``action`` in a forked child; return ``"ok <repr>"`` or ``"<ExcType> <message>"``.

    The child always leaves through os._exit, so no pytest machinery runs twice. A child stuck
    on a lock (one held by a thread that does not exist in the child) is killed and reported.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            try:
                outcome = f"ok {action()!r}"
            except BaseException as exc:
                outcome = f"{type(exc).__name__} {exc}"
            os.write(write_end, outcome.encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return "stuck"
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and mtime."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def can_open_elsewhere(wal_dir: Path, backend: str) -> str:
    """Try to open the directory in a fresh process: ``"OPENED"`` or ``"LOCKED"``."""
    code = textwrap.dedent(
        f"""
        from walrus_core import DirectoryLockedError, FsyncSchedule, Walrus
        try:
            Walrus(data_dir={str(wal_dir)!r}, backend={backend!r},
                   fsync=FsyncSchedule.no_fsync(), **{GEOMETRY!r}).close()
        except DirectoryLockedError:
            print("LOCKED")
        else:
            print("OPENED")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    return done.stdout.strip()


def open_unmanaged(wal_dir: Path, backend: str, **overrides: Any) -> Walrus:
    """Like ``open_wal`` but without the fixture's reference (which would keep it alive)."""
    kwargs: dict[str, Any] = {
        "data_dir": wal_dir,
        "backend": backend,
        "fsync": FsyncSchedule.no_fsync(),
        **GEOMETRY,
        **overrides,
    }
    return Walrus(**kwargs)


def flusher_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "walrus-flusher")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def no_resource_warnings() -> Iterator[None]:
    """Fail if a ResourceWarning is emitted (all of them are recorded, none filtered)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, [str(w.message) for w in leaked]


# --- fork: the inherited instance -----------------------------------------------------------

CALLS: dict[str, Callable[[Walrus], object]] = {
    "append_for_topic": lambda wal: wal.append_for_topic("t", b"from the child"),
    "append_for_new_topic": lambda wal: wal.append_for_topic("new", b"from the child"),
    "batch_append_for_topic": lambda wal: wal.batch_append_for_topic("t", [b"c1", b"c2"]),
    "batch_append_empty": lambda wal: wal.batch_append_for_topic("t", []),
    "read_next": lambda wal: wal.read_next("t"),
    "read_next_peek": lambda wal: wal.read_next("t", checkpoint=False),
    "read_next_consumer": lambda wal: wal.read_next("t", consumer="c"),
    "batch_read_for_topic": lambda wal: wal.batch_read_for_topic("t", 1 << 20),
    "batch_read_start_offset": lambda wal: wal.batch_read_for_topic("t", 1 << 20, start_offset=0),
    "topic_entry_count": lambda wal: wal.topic_entry_count("t"),
    "topic_entry_counts": lambda wal: wal.topic_entry_counts(),
    "topics": lambda wal: wal.topics(),
    "seek": lambda wal: wal.seek("t", 0),
    "flush": lambda wal: wal.flush(),
    "enter": lambda wal: wal.__enter__(),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("fsync", ["no_fsync", "milliseconds"])
def test_inherited_instance_refuses_every_call(open_wal: OpenWal, call: str, fsync: str) -> None:
    schedule = FsyncSchedule.no_fsync() if fsync == "no_fsync" else FsyncSchedule.milliseconds(5)
    wal = open_wal(fsync=schedule)
    for i in range(5):
        wal.append_for_topic("t", b"entry %d" % i)
    wal.read_next("t", consumer="c")

    outcome = run_in_fork(lambda: CALLS[call](wal))

    assert outcome.startswith("ForkedInstanceError "), outcome
    assert ADVICE in outcome
    # The parent is unaffected: its instance goes on where it was.
    assert wal.append_for_topic("t", b"parent") == 5
    entry = wal.read_next("t", consumer="c")
    assert entry is not None and (entry.data, entry.offset) == (b"entry 1", 1)
    assert [e.data for e in wal.batch_read_for_topic("t", 1 << 20, start_offset=4)] == [
        b"entry 4",
        b"parent",
    ]


def test_forked_instance_error_is_a_closed_error() -> None:
    assert issubclass(ForkedInstanceError, WalrusClosedError)
    assert issubclass(ForkedInstanceError, WalrusError)


def test_inherited_instance_reads_as_closed_in_the_child(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert run_in_fork(lambda: (wal.closed, "fork" in repr(wal))) == "ok (True, True)"
    assert not wal.closed


def test_child_leaving_with_block_writes_nothing(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(5))
    for i in range(3):  # heads left unsealed: a clean close would seal them
        wal.append_for_topic("t", b"entry %d" % i)
        wal.append_for_topic("u", b"entry %d" % i)
    wal.read_next("t")  # cursors left unpersisted: a clean close would persist them
    wal.read_next("u", consumer="c")
    wal.flush()
    before = snapshot(wal_dir)

    def leave_with_block() -> str:
        wal.__exit__(None, None, None)
        wal.close()
        return "done"

    assert run_in_fork(leave_with_block) == "ok 'done'"
    time.sleep(0.05)  # a flush by a child's leftover thread would show in the mtimes by now
    assert snapshot(wal_dir) == before
    assert not wal.closed
    assert wal.append_for_topic("t", b"parent") == 3


def test_child_close_takes_no_engine_lock(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    # A thread of the parent holds the engine's locks at the fork: in the child nobody ever
    # releases them.
    holding = threading.Event()
    release = threading.Event()

    def hold_locks() -> None:
        with wal._in_flight_done, wal._topics["t"].lock:
            holding.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold_locks, daemon=True)
    holder.start()
    assert holding.wait(TIMEOUT)
    try:
        outcome = run_in_fork(lambda: wal.__exit__(None, None, None) or wal.close(), timeout=10)
    finally:
        release.set()
        holder.join(TIMEOUT)
    assert outcome == "ok None"
    assert wal.append_for_topic("t", b"y") == 1


def test_child_keeps_no_directory_lock(open_wal: OpenWal, wal_dir: Path, backend_name: str) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child lives on, holding every descriptor it did not close
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        # The child let go of its copy only: the parent still holds the directory.
        assert can_open_elsewhere(wal_dir, backend_name) == "LOCKED"
        with pytest.raises(DirectoryLockedError):
            open_unmanaged(wal_dir, backend_name)
        wal.close()
        assert can_open_elsewhere(wal_dir, backend_name) == "OPENED"
    finally:
        os.close(write_end)
        os.waitpid(pid, 0)


FORKING_WRITER = textwrap.dedent(
    """
    import json, os, sys
    from walrus_core import FsyncSchedule, Walrus

    data_dir, backend, fsync, child_report = sys.argv[1:5]
    schedule = {"no_fsync": FsyncSchedule.no_fsync(),
                "milliseconds": FsyncSchedule.milliseconds(5),
                "sync_each": FsyncSchedule.sync_each()}[fsync]

    def say(**doc):
        sys.stdout.write(json.dumps(doc) + "\\n")
        sys.stdout.flush()

    def ack(topic, offset, data):
        say(kind="ack", topic=topic, offset=offset, hex=data.hex())

    wal = Walrus(data_dir=data_dir, backend=backend, fsync=schedule,
                 block_size=4096, blocks_per_file=4)
    with wal:
        for i in range(5):
            data = b"before fork %d" % i
            ack("t", wal.append_for_topic("t", data), data)
        batch = [b"batch before fork %d" % i for i in range(3)]
        for offset, data in zip(wal.batch_append_for_topic("b", batch), batch):
            ack("b", offset, data)
        pid = os.fork()
        if pid == 0:
            # The child tries to append (it would be handed the parent's next offset), then
            # leaves the with block, which runs close().
            try:
                got = wal.append_for_topic("t", b"child entry")
            except Exception as exc:
                got = type(exc).__name__
            with open(child_report, "w") as fh:
                json.dump({"append": got}, fh)
        else:
            os.waitpid(pid, 0)
            # The parent goes on after the child closed its copy: same topics, same heads.
            for i in range(20):
                data = b"after fork %d" % i
                ack("t", wal.append_for_topic("t", data), data)
            batch = [b"batch after fork %d" % i for i in range(4)]
            for offset, data in zip(wal.batch_append_for_topic("b", batch), batch):
                ack("b", offset, data)
            say(kind="done")
            sys.stdin.readline()  # killed here, inside the with block
    os._exit(0)
    """
)


@pytest.mark.parametrize("fsync", ["no_fsync", "milliseconds", "sync_each"])
def test_parent_entries_survive_child_close_and_kill9(
    tmp_path: Path, backend_name: str, fsync: str
) -> None:
    script = tmp_path / "forking_writer.py"
    script.write_text(FORKING_WRITER)
    wal_dir = tmp_path / "wal"
    child_report = tmp_path / "child.json"
    acked = run_forking_writer([str(script), str(wal_dir), backend_name, fsync, str(child_report)])

    with Walrus(data_dir=wal_dir, backend=backend_name, fsync=FsyncSchedule.no_fsync()) as wal:
        assert sorted(wal.topics()) == sorted(acked)
        for topic, entries in acked.items():
            offsets = [offset for offset, _data in entries]
            assert offsets == list(range(len(offsets))), f"{topic}: offsets handed out twice"
            got = wal.batch_read_for_topic(topic, 1 << 30, start_offset=0)
            assert [(e.offset, e.data) for e in got] == entries, topic
            assert wal.topic_entry_count(topic) == len(entries)
    assert json.loads(child_report.read_text()) == {"append": "ForkedInstanceError"}


def run_forking_writer(args: list[str]) -> dict[str, list[tuple[int, bytes]]]:
    """Run the writer until it printed ``done``, SIGKILL it, return what it acknowledged."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None and proc.stdin is not None
        stdout = proc.stdout

        # A thread reads, so that waiting for the next line can time out (select() on a
        # buffered pipe misses lines that are already in the buffer).
        def read_lines() -> None:
            for line in stdout:
                lines.put(line)
            lines.put("")  # end of output

        reader = threading.Thread(target=read_lines, daemon=True)
        reader.start()
        acked: dict[str, list[tuple[int, bytes]]] = {}
        try:
            while True:
                try:
                    line = lines.get(timeout=TIMEOUT)
                except queue.Empty:
                    count = sum(map(len, acked.values()))
                    raise AssertionError(f"the writer got stuck after {count} acks") from None
                if not line:
                    proc.wait(TIMEOUT)
                    stderr.seek(0)
                    raise AssertionError(f"the writer died ({proc.returncode}): {stderr.read()}")
                doc = json.loads(line)
                if doc["kind"] == "done":
                    break
                acked.setdefault(doc["topic"], []).append(
                    (doc["offset"], bytes.fromhex(doc["hex"]))
                )
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(TIMEOUT)
            reader.join(TIMEOUT)
            proc.stdout.close()
            proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    return acked


# --- fork: multiprocessing ------------------------------------------------------------------


def _worker(wal: Walrus, wal_dir: str, backend: str, events: dict[str, Any], report: Any) -> None:
    """A fork-started worker: its inherited instance refuses work; a new one, opened after the
    parent closed its own, works."""
    try:
        wal.append_for_topic("t", b"worker")
    except ForkedInstanceError as exc:
        report.put(("inherited", type(exc).__name__))
    else:
        report.put(("inherited", "appended"))
    # Stay alive, holding every descriptor we inherited, while the test opens the directory
    # from another process; then open it ourselves.
    events["checked"].wait(TIMEOUT)
    try:
        with open_unmanaged(Path(wal_dir), backend) as own:
            report.put(("own", [e.data for e in own.batch_read_for_topic("t", 1 << 20)]))
    except WalrusError as exc:
        report.put(("own", type(exc).__name__))


def test_fork_started_worker_does_not_hold_the_directory(
    open_wal: OpenWal, wal_dir: Path, backend_name: str
) -> None:
    ctx = multiprocessing.get_context("fork")
    wal = open_wal()
    wal.append_for_topic("t", b"parent")
    events = {"checked": ctx.Event()}
    report = ctx.Queue()
    worker = ctx.Process(target=_worker, args=(wal, str(wal_dir), backend_name, events, report))
    worker.start()
    try:
        assert report.get(timeout=TIMEOUT) == ("inherited", "ForkedInstanceError")
        wal.close()
        assert worker.is_alive()
        assert can_open_elsewhere(wal_dir, backend_name) == "OPENED"
        events["checked"].set()
        assert report.get(timeout=TIMEOUT) == ("own", [b"parent"])
    finally:
        events["checked"].set()
        worker.join(TIMEOUT)
        if worker.is_alive():
            worker.kill()
    assert worker.exitcode == 0


# --- garbage collection ---------------------------------------------------------------------

SCHEDULES = {
    "no_fsync": FsyncSchedule.no_fsync,
    "milliseconds": lambda: FsyncSchedule.milliseconds(5),
    "sync_each": FsyncSchedule.sync_each,
}


@pytest.mark.parametrize("fsync", sorted(SCHEDULES))
def test_dropped_instance_is_closed_with_resource_warning(
    wal_dir: Path, backend_name: str, fsync: str
) -> None:
    flushers_before = flusher_threads()
    wal = open_unmanaged(
        wal_dir,
        backend_name,
        fsync=SCHEDULES[fsync](),
        consistency=ReadConsistency.at_least_once(persist_every=1000),
    )
    payloads = [b"entry %d" % i for i in range(40)]
    for data in payloads[:30]:
        wal.append_for_topic("t", data)
    wal.batch_append_for_topic("t", payloads[30:])
    for _ in range(7):  # consumed, not persisted yet (persist_every=1000): close persists
        wal.read_next("t")
    alive = weakref.ref(wal)

    with pytest.warns(ResourceWarning, match="unclosed <Walrus"):
        del wal
        gc.collect()

    assert alive() is None
    assert wait_until(lambda: flusher_threads() == flushers_before), "the flusher outlived it"
    with open_unmanaged(wal_dir, backend_name) as again:  # the directory lock was released
        assert again.topic_entry_count("t") == 33
        assert [e.data for e in again.batch_read_for_topic("t", 1 << 20, start_offset=0)] == (
            payloads
        )


def test_flusher_does_not_keep_its_owner_alive() -> None:
    flushed = threading.Event()

    class Owner:
        def storages(self) -> list[Flushable]:
            flushed.set()
            return []

        def failed(self, exc: OSError) -> None:
            raise AssertionError(exc)

    owner = Owner()
    flusher = Flusher(1, owner.storages, owner.failed)
    flusher.start()
    assert flushed.wait(TIMEOUT)
    alive = weakref.ref(owner)
    del owner
    gc.collect()
    assert alive() is None
    assert wait_until(lambda: not flusher._thread.is_alive()), "the thread outlived its owner"


def test_flusher_needs_bound_methods() -> None:
    with pytest.raises(TypeError, match="bound methods"):
        Flusher(1, list, lambda exc: None)


def test_closed_instances_emit_no_resource_warning(
    wal_dir: Path, backend_name: str, no_resource_warnings: None
) -> None:
    wal = open_unmanaged(wal_dir, backend_name, fsync=FsyncSchedule.milliseconds(5))
    wal.append_for_topic("t", b"x")
    with pytest.raises(DirectoryLockedError):
        open_unmanaged(wal_dir, backend_name)  # a failed open is not an unclosed instance
    wal.close()
    with open_unmanaged(wal_dir, backend_name) as again:
        again.read_next("t")
    with pytest.raises(TypeError):
        open_unmanaged(wal_dir, backend_name, fsync="sometimes")
    del wal, again
    gc.collect()


def test_unclosed_instance_at_interpreter_exit_is_closed(tmp_path: Path, backend_name: str) -> None:
    wal_dir = tmp_path / "wal"
    code = textwrap.dedent(
        f"""
        from walrus_core import FsyncSchedule, ReadConsistency, Walrus
        wal = Walrus(data_dir={str(wal_dir)!r}, backend={backend_name!r},
                     fsync=FsyncSchedule.milliseconds(1),
                     consistency=ReadConsistency.at_least_once(persist_every=1000),
                     **{GEOMETRY!r})
        for i in range(10):
            wal.append_for_topic("t", b"entry %d" % i)
        wal.read_next("t")
        wal.read_next("t")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: unclosed <Walrus" in done.stderr
    with open_unmanaged(wal_dir, backend_name) as again:
        assert again.topic_entry_count("t") == 8


# --- copies ---------------------------------------------------------------------------------

COPIES: dict[str, Callable[[Walrus], object]] = {
    **{
        f"pickle_protocol_{p}": (lambda wal, p=p: pickle.dumps(wal, protocol=p))
        for p in range(pickle.HIGHEST_PROTOCOL + 1)
    },
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "deepcopy_inside": lambda wal: copy.deepcopy({"wal": [wal]}),
}


@pytest.mark.parametrize("how", sorted(COPIES))
def test_instances_cannot_be_pickled_or_copied(open_wal: OpenWal, how: str) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    with pytest.raises(TypeError, match="directory lock and file handles"):
        COPIES[how](wal)
    entry = wal.read_next("t")
    assert entry is not None and (entry.data, entry.offset) == (b"x", 0)
    assert wal.append_for_topic("t", b"y") == 1
