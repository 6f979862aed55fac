"""The printed tables and the JSON document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from benchmarks.random_read import SIZES as RANDOM_SIZES
from benchmarks.reopen import ReopenResult
from benchmarks.rss import RssRow
from benchmarks.space import SpaceRow
from benchmarks.subjects import LEVEL_MEANING
from benchmarks.threads import ThreadsRow
from benchmarks.workloads import Row, Workload


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; columns in ``right`` are right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def ratio(row: Row) -> str:
    if row.ratio is None:
        return ""
    x = row.ratio
    text = f"{x:.3f}" if 0.01 <= x < 1000 else f"{x:.3g}"
    return text + (" ours/raw" if row.kind == "ours" else " peer/ours")


def machine_text(m: dict[str, Any]) -> str:
    lines = [
        f"machine:    {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable),"
        f" {m['memory_gib']} GiB RAM, {m['kernel']} {m['machine']}",
        f"scratch:    {m['scratch_dir']} ({m['filesystem']} on {m['device']},"
        f" mounted at {m['mount_point']})",
        f"python:     {m['python']}",
        "versions:   " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
    ]
    missing = [k for k, v in m["versions"].items() if not v]
    if missing:
        lines.append("not installed: " + ", ".join(missing))
    eng = m.get("engine") or {}
    if eng:
        head = (eng.get("checkout_head") or "?")[:12]
        changes = len(eng.get("checkout_engine_changes") or [])
        lines.append(
            f"engine:     walrus_core from {eng['imported_from']['walrus_core']}"
            f" ({eng['measured']}; checkout HEAD {head},"
            f" {changes} uncommitted engine file(s) in the checkout)"
        )
    la = m.get("load_average_at_start")
    if la:
        lines.append(f"load avg:   {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} at start (shared machine)")
    return "\n".join(lines)


def levels_text(mapping: list[dict[str, str]]) -> str:
    out = ["Durability levels (a library appears only at the levels it really offers):"]
    out += [f"  {lv.value}: {text}" for lv, text in LEVEL_MEANING.items()]
    out.append("")
    width = max(len(r["library"]) for r in mapping)
    for r in mapping:
        lines = [f"{lv} {r[lv]}" for lv in ("D0", "D1", "D2") if r[lv] != "-"]
        if r["note"]:
            lines.append(f"   {r['note']}")
        for i, text in enumerate(lines):
            out.append(f"  {(r['library'] if i == 0 else ''):<{width}}  {text}")
    return "\n".join(out)


def workload_text(w: Workload, rows: list[Row], notes: list[str], missing: list[str]) -> str:
    out = [f"== {w.name}: {w.title}", f"   ours: {w.ours}", f"   raw:  {w.raw}"]
    sizes = sorted({r.size for r in rows}, key=[r.size for r in rows].index)
    for size in sizes:
        cells = []
        for r in (r for r in rows if r.size == size):
            if r.m is None:
                cells.append([r.level, r.subject, r.note, "", "", "", ""])
                continue
            cells.append(
                [
                    r.level,
                    r.subject,
                    rate(r.m.median),
                    rate(r.m.low),
                    rate(r.m.high),
                    f"{r.m.ops:,}",
                    ratio(r),
                ]
            )
        out.append(f"\n   {size} B entries, entries/s (median of {_reps(rows)} reps):")
        out.append(
            _indent(
                table(
                    ["level", "subject", "median", "min", "max", "n/rep", "ratio"],
                    cells,
                    {2, 3, 4, 5},
                )
            )
        )
    for note in notes:
        out.append(f"   not here: {note}")
    for why in missing:
        out.append(f"   {why}")
    return "\n".join(out)


def _reps(rows: list[Row]) -> int:
    return next((len(r.m.seconds) for r in rows if r.m is not None), 0)


def _indent(text: str, by: str = "   ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def threads_text(rows: list[ThreadsRow]) -> str:
    cells = []
    for r in rows:
        one, four = r.by_threads[1], r.by_threads[4]
        pf = r.per_flush.get(4)
        pf1 = r.per_flush.get(1)
        cells.append(
            [
                r.subject,
                rate(one.median),
                f"{rate(one.low)}-{rate(one.high)}",
                rate(four.median),
                f"{rate(four.low)}-{rate(four.high)}",
                f"{r.scaling:.2f}",
                "n/a" if pf is None else f"{pf1 if pf1 is not None else 'n/a'} / {pf}",
            ]
        )
    return (
        "== threads-d2: D2 appends from 1 and 4 threads on one topic, 1 KiB, entries/s\n"
        + _indent(
            table(
                [
                    "subject",
                    "1 thread",
                    "min-max",
                    "4 threads",
                    "min-max",
                    "4/1",
                    "appends/flush (1 / 4 thr)",
                ],
                cells,
                {1, 2, 3, 4, 5},
            )
        )
        + "\n   appends/flush: Stats.appends / Stats.sync_groups over the cell (ours only; n/a"
        " while the engine does not report sync_groups)"
    )


def random_text(rows: list[Row], entries: int) -> str:
    out = [
        f"== random-read: one entry at a random offset among {entries:,}, us/read"
        " (ratio: rates, same as elsewhere)"
    ]
    for size in RANDOM_SIZES:
        cells = []
        for r in (r for r in rows if r.size == size):
            assert r.m is not None
            cells.append(
                [
                    r.subject,
                    f"{1e6 / r.m.median:.2f}",
                    f"{1e6 / r.m.high:.2f}",
                    f"{1e6 / r.m.low:.2f}",
                    f"{r.m.ops:,}",
                    ratio(r),
                ]
            )
        out.append(f"\n   {size} B entries:")
        out.append(
            _indent(
                table(
                    ["subject", "median us", "min us", "max us", "n/rep", "ratio"],
                    cells,
                    {1, 2, 3, 4},
                )
            )
        )
    out.append("   peer/ours is against ours batch_read(start_offset) (both stateless reads)")
    return "\n".join(out)


def reopen_text(r: ReopenResult) -> str:
    j = r.as_json()
    return (
        f"== reopen: {r.entries:,} entries of 1 KiB ({r.gib:.2f} GiB), seconds to open"
        f" (child process, median of {len(r.clean)})\n"
        + _indent(
            table(
                ["after", "median s", "min s", "max s"],
                [
                    [
                        "clean close",
                        f"{j['clean_median_s']:.4f}",
                        f"{min(r.clean):.4f}",
                        f"{max(r.clean):.4f}",
                    ],
                    [
                        "SIGKILL",
                        f"{j['crash_median_s']:.4f}",
                        f"{min(r.crash):.4f}",
                        f"{max(r.crash):.4f}",
                    ],
                ],
                {1, 2, 3},
            )
        )
        + f"\n   SIGKILL / clean: {j['crash_over_clean']:.2f}"
    )


def space_text(rows: list[SpaceRow]) -> str:
    cells = [
        [
            r.subject,
            r.level,
            f"{r.entries:,}",
            f"{r.payload / (1 << 20):.1f}",
            f"{r.allocated / (1 << 20):.1f}",
            f"{r.per_payload_byte:.3f}",
        ]
        for r in rows
    ]
    return (
        "== space: allocated disk bytes per payload byte, 100 B entries, after a clean close\n"
        + _indent(
            table(
                [
                    "subject",
                    "level",
                    "entries",
                    "payload MiB",
                    "allocated MiB",
                    "bytes/payload byte",
                ],
                cells,
                {2, 3, 4, 5},
            )
        )
    )


def rss_text(total: int, rows: list[RssRow]) -> str:
    cells = []
    for r in rows:
        rep = r.report
        gib = rep["entries"] * 1024 / (1 << 30)
        cells.append(
            [
                r.subject,
                f"{r.peak_mib:.1f}",
                f"{rep['open']['VmRSS'] / 1024:.1f}",
                f"{rep['written']['RssAnon'] / 1024:.1f}/{rep['written']['RssFile'] / 1024:.1f}",
                f"{rep['read']['RssAnon'] / 1024:.1f}/{rep['read']['RssFile'] / 1024:.1f}",
                f"{gib / rep['write_s']:.2f}",
                f"{gib / rep['read_s']:.2f}",
            ]
        )
    return (
        f"== rss: peak resident memory writing then reading {total / (1 << 30):.2f} GiB"
        " (1 KiB entries), child per backend, MiB\n"
        + _indent(
            table(
                [
                    "subject",
                    "peak (VmHWM)",
                    "after open",
                    "anon/file written",
                    "anon/file read",
                    "write GiB/s",
                    "read GiB/s",
                ],
                cells,
                {1, 2, 3, 4, 5, 6},
            )
        )
    )


def write_json(path: str, doc: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
