"""Opening a 1 GiB log (1M entries of 1 KiB, one topic; 200k with ``--quick``), in a fresh
child process each time, after a clean close and after the writer was killed with SIGKILL.

* clean: the log as a clean ``close()`` left it (tail block records its state: no scan);
* crash: a writer child opens the log, appends a batch of 1000 and 10 single entries (the tail
  block is then unsealed) and kills itself with SIGKILL; the next child times its open (which
  must recover and scan the tail) and kills itself too, leaving what the open did.

Seconds are measured inside the child around ``Walrus(...)`` only (interpreter start-up and
imports are not counted). Every open is verified: the topic's end offset must be the number of
entries written, and the last entry's payload must be the one written at that offset. The files
are in the page cache (nothing drops it): this is the CPU cost of opening, not disk reads.
(``bench_reopen.py`` beside the package covers the other shape: 1000 small crashed topics.)
"""

from __future__ import annotations

import json
import statistics
import subprocess
from dataclasses import dataclass
from typing import Any

from benchmarks.biglog import BigLogs
from benchmarks.harness import VerificationError, child_argv
from benchmarks.workloads import Context

SIZE = 1024

_OPENER = r"""
import os, signal, time
from walrus_core import Walrus
from benchmarks.data import check_entry
root, backend, size, close = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
t0 = time.perf_counter()
wal = Walrus(data_dir=root, backend=backend)
elapsed = time.perf_counter() - t0
end = wal.topic_info("bench").end_offset
last = wal.batch_read_for_topic("bench", size, False, end - 1)
check_entry(size, end - 1, last[0].data if last else None, "reopen")
print(json.dumps({"seconds": elapsed, "end": end}), flush=True)
if close:
    wal.close()
else:
    os.kill(os.getpid(), signal.SIGKILL)
"""

_CRASHER = r"""
import os, signal
from walrus_core import Walrus
from benchmarks.data import expected, items
root, backend, size = sys.argv[2], sys.argv[3], int(sys.argv[4])
wal = Walrus(data_dir=root, backend=backend)
end = wal.topic_info("bench").end_offset
wal.batch_append_for_topic("bench", items(size, end, 1000))
for i in range(10):
    wal.append_for_topic("bench", expected(size, end + 1000 + i))
print(end + 1010, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(script: str, *args: str, killed: bool) -> str:
    proc = subprocess.run(
        child_argv(script, *args),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != (-9 if killed else 0):
        raise VerificationError(f"reopen child exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _open(root: str, backend: str, want_end: int, close: bool) -> float:
    out = json.loads(
        _child(_OPENER, root, backend, str(SIZE), "1" if close else "0", killed=not close)
    )
    if out["end"] != want_end:
        raise VerificationError(f"reopen found {out['end']} entries, {want_end} were written")
    return float(out["seconds"])


@dataclass
class ReopenResult:
    """Seconds per open, both ways."""

    entries: int
    gib: float
    clean: list[float]
    crash: list[float]

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "entry_bytes": SIZE,
            "gib": round(self.gib, 3),
            "clean_seconds": [round(s, 6) for s in self.clean],
            "crash_seconds": [round(s, 6) for s in self.crash],
            "clean_median_s": round(statistics.median(self.clean), 6),
            "crash_median_s": round(statistics.median(self.crash), 6),
            "crash_over_clean": round(
                statistics.median(self.crash) / statistics.median(self.clean), 3
            ),
        }


def run(ctx: Context, logs: BigLogs, backend: str) -> ReopenResult:
    """Warm-up, then ``budget.reps`` opens each way."""
    n = 200_000 if ctx.quick else 1_000_000
    ctx.say(f"  reopen: log of {n:,} entries ...")
    root = logs.get(SIZE, n)
    end = n
    _open(root, backend, end, close=True)  # warm-up
    clean = [_open(root, backend, end, close=True) for _ in range(ctx.budget.reps)]
    crash: list[float] = []
    for i in range(ctx.budget.reps + 1):  # the first cycle is the warm-up
        end = int(_child(_CRASHER, root, backend, str(SIZE), killed=True))
        seconds = _open(root, backend, end, close=False)
        if i:
            crash.append(seconds)
    logs.drop(SIZE, n)
    return ReopenResult(n, n * (SIZE + 16) / (1 << 30), clean, crash)
