"""What survives: a writer killed with SIGKILL mid-write, a simulated power loss, a full disk.

The kill tests run the writer in a child process (:mod:`walrus_core.testing.crash_child`) and
need a backend whose writes outlive the process (``BackendInfo.durable``); the power-loss and
disk-error tests stack the fault layer of walrus-faults over the backend under test.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from walrus_core import CorruptionError, Entry, FsyncSchedule, StorageError, Walrus
from walrus_core.testing.crash_child import payload
from walrus_core.testing.guarantee import broken
from walrus_core.testing.plugin import SMALL_GEOMETRY, OpenWalrus

FaultyWalrus = Callable[..., tuple[Walrus, Any]]


def _read_all(wal: Walrus, topic: str) -> list[Entry]:
    out: list[Entry] = []
    while True:
        try:
            got = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=len(out))
        except CorruptionError as exc:
            pytest.fail(broken("a crash never leaves bytes that read as corrupt", str(exc)))
        if not got:
            return out
        out.extend(got)


def _kill_writer_after(
    walrus_dir: Path,
    walrus_backend: str,
    pytestconfig: pytest.Config,
    acks_wanted: int,
    sync_each: bool,
) -> int:
    """Run the writer until it acknowledged ``acks_wanted`` appends, SIGKILL it while it is
    writing the next ones; return the end offset of the last acknowledged append."""
    cfg = {
        "data_dir": str(walrus_dir),
        "backend": walrus_backend,
        "plugins": pytestconfig.getoption("--walrus-plugin"),
        "sync_each": sync_each,
        **SMALL_GEOMETRY,
    }
    # The child imports what this run imports (a backend under development on pytest's
    # pythonpath, a --walrus-plugin module): it gets this process's sys.path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "walrus_core.testing.crash_child", json.dumps(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    end = 0
    acks = 0
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            first, count = map(int, line.split())
            assert first == end, broken("offsets are dense", f"ack at {first}, expected {end}")
            end = first + count
            acks += 1
            if acks >= acks_wanted:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert acks >= acks_wanted, f"the writer stopped after {acks} acknowledgements: {err}"
    return end


@pytest.mark.parametrize("sync_each", [False, True], ids=["no_fsync", "sync_each"])
@pytest.mark.parametrize("acks", [7, 150])
def test_acknowledged_appends_survive_sigkill(
    walrus_dir: Path,
    walrus_backend: str,
    walrus_durable: bool,
    pytestconfig: pytest.Config,
    open_walrus: OpenWalrus,
    acks: int,
    sync_each: bool,
) -> None:
    """Every append and batch acknowledged before a SIGKILL is there after reopening, with its
    exact bytes at its offset; a batch cut by the kill is there entirely or not at all."""
    if not walrus_durable:
        pytest.skip(f"backend {walrus_backend!r} declares durable=False: nothing outlives it")
    acked_end = _kill_writer_after(walrus_dir, walrus_backend, pytestconfig, acks, sync_each)
    wal = open_walrus()
    entries = _read_all(wal, "t")
    assert len(entries) >= acked_end, broken(
        "an append that returned is never lost to a crash",
        f"{len(entries)} entries after the kill, {acked_end} were acknowledged",
    )
    for expected_offset, entry in enumerate(entries):
        assert entry.offset == expected_offset, broken("offsets are dense after a crash")
        assert entry.data == payload(entry.offset), broken(
            "a read returns exactly the bytes appended at that offset",
            f"offset {entry.offset} holds {entry.data[:40]!r}",
        )
    # The log goes on where the crash left it.
    assert wal.append_for_topic("t", b"after") == len(entries)


def test_synced_appends_survive_a_simulated_power_loss(
    faulty_walrus: FaultyWalrus,
    open_walrus: OpenWalrus,
    walrus_backend: str,
    walrus_durable: bool,
) -> None:
    """Under sync_each every acknowledged append survives a power loss, as the fault layer
    simulates it over the backend: it undoes every write that no completed flush (nor a
    sync_each write, nor a synced batch) covered, then the log is reopened without the layer.
    This checks that the engine asks the backend for durability at the right moments; whether
    the backend's flush reaches the device is beyond what a test in one process can see."""
    if not walrus_durable:
        pytest.skip(f"backend {walrus_backend!r} declares durable=False: nothing to lose")
    wal, plan = faulty_walrus(fsync=FsyncSchedule.sync_each())
    expected = []
    for i in range(60):
        data = payload(i)
        if i % 4 == 0:
            wal.batch_append_for_topic("t", [data])
        else:
            wal.append_for_topic("t", data)
        expected.append(data)
    plan.power_loss(seed=11, partial=True)
    try:
        wal.close()
    except StorageError:
        pass  # the machine is gone: the dead instance's last writes fail
    reopened = open_walrus()
    got = [e.data for e in _read_all(reopened, "t")]
    assert got[: len(expected)] == expected, broken(
        "a synced append is never lost to a power loss",
        f"{len(got)} entries after the power loss, {len(expected)} were acknowledged",
    )


@pytest.mark.parametrize("op", ["write", "batch_submit"])
def test_disk_errors_surface_as_storage_error_and_lose_nothing(
    faulty_walrus: FaultyWalrus, op: str
) -> None:
    """ENOSPC from the backend reaches the caller as StorageError; what was appended before
    stays readable and the log takes appends again afterwards."""
    wal, plan = faulty_walrus()
    before = [payload(i) for i in range(20)]
    for data in before:
        wal.append_for_topic("t", data)
    plan.fail(op, nth=1, errno=errno.ENOSPC)
    with pytest.raises(StorageError) as raised:
        if op == "write":
            wal.append_for_topic("t", payload(20))
        else:
            wal.batch_append_for_topic("t", [payload(20 + i) for i in range(30)])
    assert isinstance(raised.value.__cause__, OSError), broken(
        "a disk error is StorageError caused by the backend's OSError", repr(raised.value)
    )
    got = [e.data for e in _read_all(wal, "t")]
    assert got[:20] == before, broken("a failed write loses nothing appended before it")
    offset = wal.append_for_topic("t", b"after the error")  # the fault fired once
    assert wal.batch_read_for_topic("t", 1 << 20, checkpoint=False, start_offset=offset)[0] == (
        Entry(b"after the error", offset)
    ), broken("the log stays usable after a disk error")
