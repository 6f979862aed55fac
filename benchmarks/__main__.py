"""``python -m benchmarks``: run the suite, print the tables, optionally write JSON.

    python -m benchmarks                     # the full run (< 20 minutes on 2 cores)
    python -m benchmarks --quick             # every section, smaller (< 2 minutes)
    python -m benchmarks --only batch --sizes 1024 --json out.json

Sections, in order: append, batch-append, consume-each, consume-1000, read-next, batch-read,
threads-d2, random-read, reopen, space, rss. ``--only`` takes substrings of those names
(comma-separated); progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from benchmarks import random_read, reopen, rss, space, threads
from benchmarks.biglog import BigLogs
from benchmarks.harness import FULL_BUDGET, QUICK_BUDGET, Scratch, pick_base_dir
from benchmarks.machine import describe
from benchmarks.ours import WalrusSubject
from benchmarks.peers import PEERS
from benchmarks.raw import RawSubject
from benchmarks.report import (
    levels_text,
    machine_text,
    random_text,
    reopen_text,
    rss_text,
    space_text,
    threads_text,
    workload_text,
    write_json,
)
from benchmarks.subjects import LEVEL_MEANING, Subject, Unavailable, mapping_rows
from benchmarks.workloads import WORKLOADS, Context, not_applicable, run_workload

SECTIONS = [w.name for w in WORKLOADS] + ["threads-d2", "random-read", "reopen", "space", "rss"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Walrus against raw system calls and peer libraries, at D0/D1/D2.",
    )
    ap.add_argument("--quick", action="store_true", help="every section, smaller (< 2 min)")
    ap.add_argument("--json", metavar="FILE", help="also write every result to FILE as JSON")
    ap.add_argument(
        "--backend",
        default="fd",
        choices=["fd", "mmap", "uring"],
        help="our storage backend for the throughput sections (default fd; rss runs all)",
    )
    ap.add_argument(
        "--only",
        metavar="SUBSTRING",
        help="run only sections whose name contains one of these (comma-separated): "
        + ", ".join(SECTIONS),
    )
    ap.add_argument(
        "--dir",
        metavar="DIR",
        help="where the .walrus-bench-* scratch dir goes (default: beside the repository;"
        " never use a tmpfs)",
    )
    ap.add_argument(
        "--sizes",
        metavar="LIST",
        help="entry sizes in bytes for the sized sections (default 100,1024,65536; with"
        " --quick 100,1024: a 64 KiB batch of 1000 is 64 MB per call)",
    )
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = "100,1024" if args.quick else "100,1024,65536"
    try:
        args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not args.size_list or min(args.size_list) < 8:
        ap.error("--sizes: every size must be at least 8 bytes")
    args.selected = SECTIONS
    if args.only:
        subs = [s.strip() for s in args.only.split(",") if s.strip()]
        args.selected = [name for name in SECTIONS if any(s in name for s in subs)]
        if not args.selected:
            ap.error(f"--only {args.only!r} matches none of: {', '.join(SECTIONS)}")
    return args


def _available(classes: list[type[Subject]]) -> tuple[list[type[Subject]], dict[str, str]]:
    ok, missing = [], {}
    versions = {}
    for cls in classes:
        try:
            versions[cls.library] = cls.version()
            ok.append(cls)
        except Unavailable as exc:
            missing[cls.library] = str(exc)
    return ok, missing


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the scratch directory is removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    began = time.perf_counter()
    WalrusSubject.backend = args.backend
    budget = QUICK_BUDGET if args.quick else FULL_BUDGET
    scratch = Scratch(pick_base_dir(args.dir))
    logs = BigLogs(scratch, args.backend)
    all_classes: list[type[Subject]] = [WalrusSubject, RawSubject, *PEERS]
    subjects, missing = _available(all_classes)

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    ctx = Context(scratch, budget, args.size_list, subjects, missing, args.quick, say)
    machine = describe(scratch.root)
    mapping = mapping_rows(all_classes)
    doc: dict[str, Any] = {
        "suite": "walrus-for-python benchmarks",
        "config": {
            "quick": args.quick,
            "backend": args.backend,
            "sizes": args.size_list,
            "sections": args.selected,
            "reps": budget.reps,
            "target_rep_seconds": budget.target_s,
            "max_rep_bytes": budget.max_rep_bytes,
            "max_rep_ops": budget.max_rep_ops,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "machine": machine,
        "levels": {
            "meaning": {lv.value: text for lv, text in LEVEL_MEANING.items()},
            "mapping": mapping,
        },
        "skipped": missing,
        "sections": {},
    }
    print(
        f"Walrus for Python benchmarks ({'quick' if args.quick else 'full'} run,"
        f" backend {args.backend}, {budget.reps} reps per cell)"
    )
    print(machine_text(machine))
    print()
    print(levels_text(mapping))
    for why in missing.values():
        print(why)
    print(
        "\nRates are medians of the repetitions; ratio on our rows = ours/raw at the same level,"
        " on peer rows = peer/ours at the same level (> 1: the peer is faster)."
    )
    sections: dict[str, Any] = doc["sections"]
    timings: dict[str, float] = {}
    try:
        for name in args.selected:
            t0 = time.perf_counter()
            say(f"[{name}]")
            print(flush=True)
            w = next((w for w in WORKLOADS if w.name == name), None)
            if w is not None:
                rows = run_workload(ctx, w)
                gone = [
                    why
                    for lib, why in missing.items()
                    if any(c.library == lib and w.cap in c.caps for c in all_classes)
                ]
                print(workload_text(w, rows, not_applicable(w, subjects), gone))
                sections[name] = {
                    "title": w.title,
                    "ours": w.ours,
                    "raw": w.raw,
                    "rows": [r.as_json() for r in rows],
                }
            elif name == "threads-d2":
                trows = threads.run(ctx)
                print(threads_text(trows))
                sections[name] = {"rows": [r.as_json() for r in trows]}
            elif name == "random-read":
                rrows = random_read.run(ctx, logs)
                print(random_text(rrows, random_read.entries_for(ctx)))
                sections[name] = {
                    "entries": random_read.entries_for(ctx),
                    "rows": [r.as_json() for r in rrows],
                }
            elif name == "reopen":
                res = reopen.run(ctx, logs, args.backend)
                print(reopen_text(res))
                sections[name] = res.as_json()
            elif name == "space":
                srows = space.run(ctx)
                print(space_text(srows))
                sections[name] = {"rows": [r.as_json() for r in srows]}
            elif name == "rss":
                total, rss_rows = rss.run(ctx)
                print(rss_text(total, rss_rows))
                sections[name] = {"bytes": total, "rows": [r.as_json() for r in rss_rows]}
            timings[name] = round(time.perf_counter() - t0, 2)
            say(f"[{name}] {timings[name]} s")
            sys.stdout.flush()
    finally:
        logs.cleanup()
        scratch.cleanup()
    doc["section_seconds"] = timings
    doc["build_seconds"] = {f"{k[0]}B x {k[1]}": round(v, 2) for k, v in logs.build_seconds.items()}
    doc["wall_seconds"] = round(time.perf_counter() - began, 2)
    print(f"\nsection seconds: {', '.join(f'{k} {v}' for k, v in timings.items())}")
    print(f"total wall time {doc['wall_seconds']} s")
    if args.json:
        write_json(args.json, doc)
        print(f"JSON written to {os.path.abspath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
