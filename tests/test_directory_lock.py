"""One open instance per directory (issue 2: "a second Walrus on the same directory, from this
process or another, raises DirectoryLockedError until the first is closed")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from walrus_core import DirectoryLockedError, FsyncSchedule, Walrus, WalrusError
from walrus_core.names import sanitize_key

HELPERS = Path(__file__).parent / "helpers"
GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
TIMEOUT = 60.0


def open_wal(root: Path, backend: str, **kw: Any) -> Walrus:
    return Walrus(data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync(), **GEOMETRY, **kw)


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with a time limit: a lock attempt must fail fast, not wait for the holder."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(TIMEOUT)
    assert not t.is_alive(), "opening a locked directory blocked instead of raising"
    if error:
        raise error[0]
    return result[0]


def expect_locked(root: Path, backend: str, **kw: Any) -> DirectoryLockedError:
    with pytest.raises(DirectoryLockedError) as info:
        in_thread(lambda: open_wal(root, backend, **kw))
    assert isinstance(info.value, WalrusError)
    return info.value


class Holder:
    """A child process that opens the directory, appends, says READY and waits on stdin."""

    def __init__(self, root: Path, backend: str, key: str | None = None) -> None:
        doc = {
            "data_dir": str(root),
            "backend": backend,
            "key": key,
            **GEOMETRY,
            "ops": [{"topic": "held", "hex": b"from-child".hex()}],
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "walrus_child.py"), "hold"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(doc) + "\n")
        self.proc.stdin.flush()
        line = in_thread(self.proc.stdout.readline)
        if line != "READY\n":
            self.proc.kill()
            _, err = self.proc.communicate(timeout=TIMEOUT)
            pytest.fail(f"holder did not start: {line!r}\n{err}")

    def release(self, how: str) -> None:
        assert self.proc.stdin is not None
        if how == "kill":
            self.proc.send_signal(signal.SIGKILL)
            self.proc.communicate(timeout=TIMEOUT)
            assert self.proc.returncode == -signal.SIGKILL
            return
        out, err = self.proc.communicate("close\n" if how == "close" else "exit\n", timeout=TIMEOUT)
        assert self.proc.returncode == 0, err
        if how == "close":
            assert out == "CLOSED\n", (out, err)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=TIMEOUT)


def test_second_instance_in_same_process_is_refused_until_close(
    tmp_path: Path, backend_name: str
) -> None:
    """Guarantee: a second Walrus on the same directory from the same process raises
    DirectoryLockedError (fast, without blocking) while the first is open; the failed attempt
    does not disturb the first instance or its lock; after close() a new instance works and
    sees the data."""
    root = tmp_path / "wal"
    first = open_wal(root, backend_name)
    try:
        assert first.append_for_topic("t", b"one") == 0
        expect_locked(root, backend_name)
        expect_locked(root, backend_name)  # the failed attempt did not release the lock
        expect_locked(root.parent / "wal" / ".." / "wal", backend_name)  # another spelling
        assert first.append_for_topic("t", b"two") == 1
        assert [e.data for e in first.batch_read_for_topic("t", 100, start_offset=0)] == [
            b"one",
            b"two",
        ]
    finally:
        first.close()
    second = open_wal(root, backend_name)
    try:
        assert [e.data for e in second.batch_read_for_topic("t", 100, start_offset=0)] == [
            b"one",
            b"two",
        ]
        expect_locked(root, backend_name)
    finally:
        second.close()
    for _ in range(3):
        open_wal(root, backend_name).close()


def test_failed_attempt_does_not_release_the_lock_for_other_processes(
    tmp_path: Path, backend_name: str
) -> None:
    """Guarantee: the lock holds across processes even after a refused in-process attempt
    (closing a second descriptor of the LOCK file must not drop the holder's lock, the classic
    fcntl() pitfall)."""
    root = tmp_path / "wal"
    first = open_wal(root, backend_name)
    try:
        expect_locked(root, backend_name)
        doc = {"data_dir": str(root), "backend": backend_name, **GEOMETRY, "ops": []}
        code = (
            "import json, sys\n"
            f"sys.path.insert(0, {str(HELPERS)!r})\n"
            "import walrus_child\n"
            "from walrus_core import DirectoryLockedError\n"
            "try:\n"
            "    walrus_child._open(json.loads(sys.stdin.readline()))\n"
            "except DirectoryLockedError:\n"
            "    print('LOCKED')\n"
            "else:\n"
            "    print('OPENED')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(doc) + "\n",
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.stdout.strip() == "LOCKED", (proc.stdout, proc.stderr)
    finally:
        first.close()


@pytest.mark.parametrize("release", ["close", "exit", "kill"])
def test_instance_in_another_process_holds_the_directory(
    tmp_path: Path, backend_name: str, release: str
) -> None:
    """Guarantee: while another process has the directory open, Walrus raises
    DirectoryLockedError here; once that process closed it, exited without closing, or was
    killed with SIGKILL, the directory opens here and holds what the other process appended."""
    root = tmp_path / "wal"
    holder = Holder(root, backend_name)
    try:
        expect_locked(root, backend_name)
        expect_locked(root, backend_name)
        holder.release(release)
    finally:
        holder.cleanup()
    with open_wal(root, backend_name) as wal:
        got = wal.batch_read_for_topic("held", 100, start_offset=0)
        assert [e.data for e in got] == [b"from-child"]


def test_namespaced_instances_do_not_conflict(tmp_path: Path, backend_name: str) -> None:
    """Guarantee: the lock is per directory: instances with different keys on one data_dir
    (each in <data_dir>/<sanitized key>/) open side by side, in this process and another; the
    same key conflicts, and keys that once shared a sanitized directory no longer do."""
    root = tmp_path / "shared"
    a = open_wal(root, backend_name, key="tenant-a")
    b = open_wal(root, backend_name, key="prod/payments::v1")
    holder = Holder(root, backend_name, key="tenant-c")
    try:
        a.append_for_topic("t", b"a")
        b.append_for_topic("t", b"b")
        expect_locked(root, backend_name, key="tenant-a")
        expect_locked(root, backend_name, key="prod/payments::v1")
        with open_wal(root, backend_name, key="prod_payments__v1"):  # its own directory
            pass
        expect_locked(root, backend_name, key="tenant-c")  # held by the other process
        assert (root / "tenant-a").is_dir() and (root / sanitize_key("prod/payments::v1")).is_dir()
        holder.release("close")
    finally:
        a.close()
        b.close()
        holder.cleanup()
    expected = {
        "tenant-a": ("t", b"a"),
        "prod/payments::v1": ("t", b"b"),
        "tenant-c": ("held", b"from-child"),
    }
    for key, (topic, data) in expected.items():
        with open_wal(root, backend_name, key=key) as wal:
            got = wal.batch_read_for_topic(topic, 100, start_offset=0)
            assert [e.data for e in got] == [data]
            assert wal.topics() == [topic], f"namespace {key!r} sees another namespace's topics"


def test_the_refusal_names_the_holding_process(tmp_path: Path, backend_name: str) -> None:
    """Guarantee: DirectoryLockedError names the pid of the process holding the directory (in
    its message and as ``holder_pid``): another process's, or this one's when the other
    instance is in this process."""
    root = tmp_path / "wal"
    holder = Holder(root, backend_name)
    try:
        error = expect_locked(root, backend_name)
        assert error.holder_pid == holder.proc.pid
        assert f"in process {holder.proc.pid}" in str(error)
    finally:
        holder.release("close")
        holder.cleanup()
    with open_wal(root, backend_name):
        error = expect_locked(root, backend_name)
        assert error.holder_pid == os.getpid()
        assert "in this process" in str(error)


def recorded_pid(lock_file: Path) -> str:
    text = lock_file.read_text()
    return text.splitlines()[0] if text else ""


@pytest.mark.parametrize("release", ["close", "kill"])
def test_the_lock_file_keeps_no_stale_pid(tmp_path: Path, backend_name: str, release: str) -> None:
    """Guarantee: while held, LOCK holds the holder's pid; a clean close empties it. After a
    SIGKILL the dead pid may stay in the file, but a refused opener never names a dead
    process, and the next holder replaces it."""
    root = tmp_path / "wal"
    holder = Holder(root, backend_name)
    lock_file = root / "LOCK"
    try:
        assert recorded_pid(lock_file) == str(holder.proc.pid)
        holder.release(release)
    finally:
        holder.cleanup()
    if release == "close":
        assert lock_file.read_text() == ""
    else:
        assert recorded_pid(lock_file) == str(holder.proc.pid)  # the kernel dropped the lock
    with open_wal(root, backend_name):
        assert recorded_pid(lock_file) == str(os.getpid())
    assert lock_file.read_text() == ""


def test_a_refused_opener_names_only_a_live_holder_of_its_own_namespace(
    tmp_path: Path, backend_name: str
) -> None:
    """Guarantee: the pid in LOCK is named only when it is a live process of this host and
    pid namespace (a pid from another container, or a dead one, names another process); a
    LOCK file with anything else in it is no error and leaks no descriptor."""
    root = tmp_path / "wal"
    holder = Holder(root, backend_name)
    lock_file = root / "LOCK"
    try:
        own = lock_file.read_text()
        namespace = own.splitlines()[1]
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        fds = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
        for text in (
            f"{dead}\n{namespace}\n",  # a dead process
            f"{holder.proc.pid}\nanother-host pid:[1]\n",  # another namespace
            "99999999999999999999\n" + namespace + "\n",  # no pid
            "+1\n" + namespace + "\n",
            "1_0\n" + namespace + "\n",
            "\xff\xfe garbage",
            "",
        ):
            lock_file.write_text(text)
            error = expect_locked(root, backend_name)
            assert error.holder_pid is None, text
            assert "in process" not in str(error), text
        lock_file.write_text(own)
        assert expect_locked(root, backend_name).holder_pid == holder.proc.pid
        if fds is not None:
            assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        holder.release("close")
        holder.cleanup()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() exists on POSIX only")
def test_a_forked_child_keeps_no_copy_of_a_lock_taken_outside_an_instance(tmp_path: Path) -> None:
    """Guarantee: a child forked while a lock is held by something that is not (yet) an open
    instance, as when another thread is opening one, does not keep the parent's flock alive:
    once the parent lets go, another process can open the directory while the child runs."""
    from walrus_core.directory import DirectoryLock

    root = tmp_path / "wal"
    root.mkdir()
    lock = DirectoryLock(str(root))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: waits until the parent has checked, then leaves
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        lock.release()
        code = (
            "import sys\n"
            "from walrus_core.directory import DirectoryLock\n"
            "DirectoryLock(sys.argv[1]).release()\n"
            "print('OPENED')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(root)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert proc.stdout.strip() == "OPENED", (proc.stdout, proc.stderr)
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        os.waitpid(pid, 0)
