"""Reopen after a crash: how long opening a directory takes when every topic's tail block is
unsealed (the writer was killed with SIGKILL), against reopening the same log after a clean
close, measured in the same run.

A child process appends ``--entries`` tiny entries to each of ``--topics`` topics with the
default geometry (10 MiB blocks, 100 per file) and kills itself; the parent then times:

* ``crashed``: the first open after the kill (every tail is scanned);
* ``crashed again``: an open after a second kill with nothing written in between (the first
  open recorded what it scanned, so this one should trust it);
* ``clean``: an open after a clean close (the baseline: block headers and seals only).

    python benchmarks/bench_reopen.py                 # 1000 topics, 3 entries each
    python benchmarks/bench_reopen.py --topics 50 --backend mmap --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any

_CHILD = r"""
import os, signal, sys
from walrus_core import FsyncSchedule, Walrus
root, backend, topics, entries, close = sys.argv[1:6]
wal = Walrus(data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync())
for i in range(int(entries)):
    for t in range(int(topics)):
        wal.append_for_topic(f"topic-{t:05d}", b"entry %d of %d" % (i, t))
if close == "1":
    wal.close()
else:
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(root: str, backend: str, topics: int, entries: int, close: bool) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, root, backend, str(topics), str(entries), str(int(close))],
        capture_output=True,
        text=True,
        check=False,
    )
    expected = 0 if close else -signal.SIGKILL
    if proc.returncode != expected:
        raise SystemExit(f"writer child exited {proc.returncode}: {proc.stderr}")


_OPENER = r"""
import os, signal, sys, time
from walrus_core import FsyncSchedule, Walrus
root, backend, close = sys.argv[1:4]
start = time.perf_counter()
wal = Walrus(data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync())
elapsed = time.perf_counter() - start
counts = wal.topic_entry_counts()
print(elapsed, len(counts), sum(counts.values()), flush=True)
if close == "1":
    wal.close()
else:
    os.kill(os.getpid(), signal.SIGKILL)  # leave whatever the open did, as a crash would
"""


def _timed_open(root: str, backend: str, topics: int, entries: int, *, close: bool) -> float:
    """Seconds one open takes, in a fresh process (crashing again afterwards unless close)."""
    proc = subprocess.run(
        [sys.executable, "-c", _OPENER, root, backend, str(int(close))],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        elapsed, found, total = proc.stdout.split()
    except ValueError:
        raise SystemExit(f"opener failed ({proc.returncode}): {proc.stderr}") from None
    if int(found) != topics or int(total) != topics * entries:
        raise SystemExit(f"recovered {found} topics / {total} entries, not {topics} x {entries}")
    return float(elapsed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the log, kill, reopen, and time each open."""
    base = tempfile.mkdtemp(prefix="walrus-reopen-", dir=args.dir)
    root = os.path.join(base, "wal")
    try:
        _child(root, args.backend, args.topics, args.entries, close=False)
        crashed = _timed_open(root, args.backend, args.topics, args.entries, close=False)
        again = _timed_open(root, args.backend, args.topics, args.entries, close=False)
        _timed_open(root, args.backend, args.topics, args.entries, close=True)
        clean = _timed_open(root, args.backend, args.topics, args.entries, close=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "backend": args.backend,
        "topics": args.topics,
        "entries_per_topic": args.entries,
        "crashed_s": crashed,
        "crashed_again_s": again,
        "clean_s": clean,
        "crashed_over_clean": crashed / clean if clean else None,
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=3)
    parser.add_argument("--backend", default="fd")
    parser.add_argument("--dir", default=None, help="where to build the log (default: $TMPDIR)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    res = run(args)
    print(
        f"reopen of {res['topics']} crashed topics ({res['entries_per_topic']} entries each,"
        f" default geometry, backend {res['backend']}):"
    )
    print(f"  after the crash        {res['crashed_s']:8.3f} s")
    print(f"  after a second crash   {res['crashed_again_s']:8.3f} s")
    print(f"  after a clean close    {res['clean_s']:8.3f} s   (baseline)")
    print(f"  crashed / clean        {res['crashed_over_clean']:8.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
