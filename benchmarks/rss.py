"""Peak memory: writing then reading 2 GiB (256 MiB with ``--quick``) of 1 KiB entries, per
backend (fd, mmap, uring when installed), each in its own child process.

The child opens a fresh log with the defaults (D1), appends the bytes in batches of 1000,
consumes them all with ``batch_read_for_topic`` (1000 per call, checkpointing; the last entry is
compared with what was written), and prints its ``/proc/self/status`` lines: ``VmHWM`` (the
peak resident set, which is what is reported), and ``VmRSS``, ``RssAnon``, ``RssFile`` after
opening, after writing and after reading. Resident pages of a mapped file count (``RssFile``):
that is the mmap backend's cost. The raw row is a child doing the same with ``os.pwritev`` and
``os.preadv`` into one buffer: the interpreter's own floor.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import VerificationError, child_argv
from benchmarks.workloads import Context
from walrus_core import available_backends

_STATUS = r"""
def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])  # KiB
    return out
"""

_WALRUS = (
    _STATUS
    + r"""
import time
from walrus_core import Walrus
from benchmarks.data import check_entry, items
root, backend, total = sys.argv[2], sys.argv[3], int(sys.argv[4])
size, batch = 1024, 1000
n = total // size // batch * batch
report = {}
wal = Walrus(data_dir=root, backend=backend)
report["open"] = status()
t0 = time.perf_counter()
for start in range(0, n, batch):
    wal.batch_append_for_topic("t", items(size, start, batch))
report["write_s"] = time.perf_counter() - t0
report["written"] = status()
t0 = time.perf_counter()
got, last = 0, None
while True:
    es = wal.batch_read_for_topic("t", size * batch, True)
    if not es:
        break
    got += len(es)
    last = es[-1]
report["read_s"] = time.perf_counter() - t0
report["read"] = status()
if got != n or last is None or last.offset != n - 1:
    sys.exit(f"read {got} entries, {n} were written")
check_entry(size, n - 1, last.data, backend)
wal.close()
report["entries"] = n
report["chain"] = list(wal.backend_chain)
print(json.dumps(report))
"""
)

_RAW = (
    _STATUS
    + r"""
import os, time
from benchmarks.data import check_entry, records
root, total = sys.argv[2], int(sys.argv[4])
size, batch, rec = 1024, 1000, 1040
n = total // size // batch * batch
report = {}
fd = os.open(os.path.join(root, "raw.dat"), os.O_RDWR | os.O_CREAT, 0o644)
report["open"] = status()
t0 = time.perf_counter()
for start in range(0, n, batch):
    os.pwritev(fd, records(size, start, batch), start * rec)
report["write_s"] = time.perf_counter() - t0
report["written"] = status()
buf = bytearray(batch * rec)
views = [memoryview(buf)[j + 16 : j + rec] for j in range(0, len(buf), rec)]
t0 = time.perf_counter()
out = []
for start in range(0, n, batch):
    os.preadv(fd, [buf], start * rec)
    out = list(map(bytes, views))
report["read_s"] = time.perf_counter() - t0
report["read"] = status()
check_entry(size, n - 1, out[-1], "raw")
os.close(fd)
report["entries"] = n
report["chain"] = ["raw"]
print(json.dumps(report))
"""
)


@dataclass
class RssRow:
    """One child's memory report."""

    subject: str
    report: dict[str, Any]

    @property
    def peak_mib(self) -> float:
        return float(self.report["read"]["VmHWM"]) / 1024

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "peak_rss_mib": round(self.peak_mib, 1), **self.report}


def run(ctx: Context) -> tuple[int, list[RssRow]]:
    """Every installed backend, then raw; returns (bytes written per child, rows)."""
    total = (256 << 20) if ctx.quick else (2 << 30)
    installed = [b.name for b in available_backends() if b.available]
    rows = []
    for name in [b for b in ("fd", "mmap", "uring") if b in installed] + ["raw"]:
        ctx.say(f"  rss {name}: {total >> 20} MiB ...")
        path = ctx.scratch.fresh(f"rss-{name}")
        try:
            script = _RAW if name == "raw" else _WALRUS
            proc = subprocess.run(
                child_argv(script, path, name, str(total)),
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise VerificationError(f"rss child for {name} failed: {proc.stderr.strip()}")
            report = json.loads(proc.stdout)
            label = "raw" if name == "raw" else f"walrus ({'/'.join(report['chain'])})"
            rows.append(RssRow(label, report))
        finally:
            ctx.scratch.remove(path)
    return total, rows
