"""Permission problems are storage errors: a directory this process may not create or write
raises StorageError with errno EACCES, whichever directory on the path is at fault, and
nothing is left half-made. Root bypasses permission checks, so under root each case runs in a
forked child that first drops to the unprivileged user ``nobody``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from walrus_core import FsyncSchedule, StorageError, Walrus

UNPRIVILEGED = 65534  # nobody
GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}


def run_unprivileged(fn: Callable[[], dict[str, object]]) -> dict[str, object]:
    """``fn()`` as a user that permissions apply to: here when not root, else in a forked child
    that dropped to ``nobody`` (the modules it needs are imported before the fork)."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest, whatever happens
        code = 1
        try:
            try:
                os.close(read_end)
                os.setgroups([])
                os.setgid(UNPRIVILEGED)
                os.setuid(UNPRIVILEGED)
                out = json.dumps(fn()).encode()
                code = 0
            except BaseException as exc:
                out = json.dumps({"child_error": f"{type(exc).__name__}: {exc}"}).encode()
            os.write(write_end, out)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    result: dict[str, object] = json.loads(data)
    assert "child_error" not in result, result
    assert os.waitstatus_to_exitcode(status) == 0
    return result


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can reach and write (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="walrus-permissions-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        for sub in path.rglob("*"):
            if sub.is_dir():
                sub.chmod(stat.S_IRWXU)
        shutil.rmtree(path)


def attempt(backend: str, data_dir: Path, key: str | None = None) -> dict[str, object]:
    """Open and close a log; what it raised, if anything."""
    try:
        Walrus(
            data_dir=data_dir,
            key=key,
            backend=backend,
            fsync=FsyncSchedule.no_fsync(),
            **GEOMETRY,
        ).close()
    except StorageError as exc:
        return {"raised": "StorageError", "errno": exc.errno, "message": str(exc)}
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}
    return {"raised": None}


@pytest.mark.parametrize("fault", ["existing-dir", "parent", "key-dir"])
def test_permission_problems_raise_storage_error_with_eacces(
    shared_dir: Path, backend_name: str, fault: str
) -> None:
    Walrus(data_dir=shared_dir / "warm-up", backend=backend_name, **GEOMETRY).close()

    def case() -> dict[str, object]:
        locked = shared_dir / "locked"
        locked.mkdir()
        if fault == "existing-dir":
            target, key = locked, None
        elif fault == "parent":
            target, key = locked / "wal", None
        else:
            (locked / "tenant").mkdir()
            target, key = locked, "tenant"
        locked.chmod(0o555)
        if fault == "key-dir":
            (locked / "tenant").chmod(0o555)
        refused = attempt(backend_name, target, key)
        left = sorted(p.name for p in locked.rglob("*"))
        for d in (locked, locked / "tenant"):
            if d.is_dir():
                d.chmod(0o755)
        return {"refused": refused, "left": left, "after": attempt(backend_name, target, key)}

    result = run_unprivileged(case)
    refused = result["refused"]
    assert isinstance(refused, dict)
    assert refused["raised"] == "StorageError", refused
    assert refused["errno"] == errno.EACCES, refused
    assert "not writable" in str(refused["message"]) or "Permission denied" in str(
        refused["message"]
    )
    assert result["left"] == ([] if fault != "key-dir" else ["tenant"])
    assert result["after"] == {"raised": None}  # permissions fixed, the same path opens


def test_an_unreadable_meta_file_is_a_storage_error_not_damage(
    shared_dir: Path, backend_name: str
) -> None:
    """walrus.json that this process may not read is intact, not damaged: opening raises
    StorageError (EACCES) and leaves it alone, instead of setting it aside as damaged and
    writing a new one."""
    log_dir = shared_dir / "log"
    Walrus(data_dir=log_dir, backend=backend_name, **GEOMETRY).close()
    log_dir.chmod(0o777)
    for child in log_dir.iterdir():
        child.chmod(0o666)
    meta = log_dir / "walrus.json"
    meta.chmod(0o600 if os.geteuid() == 0 else 0o000)  # root's own file, or unreadable

    def case() -> dict[str, object]:
        return {
            "refused": attempt(backend_name, log_dir),
            "left": sorted(p.name for p in log_dir.iterdir()),
        }

    result = run_unprivileged(case)
    refused = result["refused"]
    assert isinstance(refused, dict)
    assert refused["raised"] == "StorageError", refused
    assert refused["errno"] == errno.EACCES, refused
    assert "walrus.json.damaged" not in result["left"], result
    meta.chmod(0o644)
    assert attempt(backend_name, log_dir) == {"raised": None}
