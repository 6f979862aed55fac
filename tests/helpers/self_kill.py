"""Run WAL code in a child process that then kills itself with SIGKILL (no clean close), so
tests can check what survives a crash: cursors persisted or not, appends acknowledged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}

_CHILD = r"""
import json, os, signal, sys
from walrus_core import FsyncSchedule, ReadConsistency, Walrus
cfg = json.loads(sys.argv[1])
pe = cfg["persist_every"]
consistency = (ReadConsistency.strictly_at_once() if pe is None
               else ReadConsistency.at_least_once(persist_every=pe))
wal = Walrus(data_dir=cfg["data_dir"], backend=cfg["backend"], consistency=consistency,
             fsync=FsyncSchedule.no_fsync(), **cfg["geometry"])
exec(cfg["code"])
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_then_kill(wal_dir: Path, backend: str, code: str, persist_every: int | None) -> str:
    """Run ``code`` (with ``wal`` open) in a child process that then kills itself with SIGKILL."""
    cfg = {
        "data_dir": str(wal_dir),
        "backend": backend,
        "persist_every": persist_every,
        "geometry": GEOMETRY,
        "code": code,
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout
