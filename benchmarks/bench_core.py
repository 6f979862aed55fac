#!/usr/bin/env python3
"""Core throughput benchmark of Walrus for Python, against raw system calls in the same run.

For 1 KiB entries it measures, through the public API:

* single appends/s          vs ``os.pwritev([16-byte header, payload])`` per entry
* batch appends (1000/batch) vs ``os.pwritev`` of a whole batch's buffers (chunked to IOV_MAX)
* batch reads entries/s      vs ``os.preadv`` of the same bytes into a preallocated buffer
* read_next/s                vs ``os.pread`` of one entry
* sync_each single appends   vs ``os.pwritev`` + ``os.fdatasync`` per entry

and the plugin-layer overhead required by the core issue: a single 1 KiB write through the
storage that ``BackendChain.open`` resolves (the engine's per-entry path) against calling the
backend module's ``walrus_write`` directly, with identical header and payload buffers.

Ratios are "Walrus rate / raw rate" measured in the same process, on the same disk, seconds
apart; they are the point of the benchmark. There are no pass/fail thresholds here.

Usage::

    python benchmarks/bench_core.py [--quick] [--json out.json] [--backend fd] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

try:
    import walrus_core
    from walrus_core import FsyncSchedule, ReadConsistency, Walrus
    from walrus_core.config import Geometry, Limits
    from walrus_core.format import ENTRY_HEADER_SIZE, pack_entry_header
    from walrus_core.plugins import BackendRegistry
    from walrus_core.storage import OpenSpec
except ImportError as exc:  # pragma: no cover - a hint for people running it from a bare checkout
    sys.exit(
        f"cannot import walrus_core ({exc}); install it first:\n"
        "    pip install -e . -e plugins/walrus_fd"
    )

REPO = Path(__file__).resolve().parent.parent
ENTRY_BYTES = 1024
BATCH = 1000
TOPIC = "bench"
PAYLOAD = bytes((i * 31 + 7) & 0xFF for i in range(ENTRY_BYTES))
# A real entry header for offset 0: the raw baselines write exactly the bytes Walrus writes.
HEADER = pack_entry_header(PAYLOAD, 0, 0, 1024, 0, 0)  # a real entry header (raw baseline)
RECORD = ENTRY_HEADER_SIZE + ENTRY_BYTES
IOV_MAX = 1024
if hasattr(os, "sysconf"):
    with contextlib.suppress(ValueError, OSError):
        IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
_datasync = getattr(os, "fdatasync", os.fsync)


@dataclass
class Sizes:
    """How much work one repeat does."""

    entries: int
    warmup: int
    sync_ops: int
    plugin_ops: int
    repeats: int


QUICK = Sizes(entries=50_000, warmup=2_000, sync_ops=200, plugin_ops=30_000, repeats=3)
FULL = Sizes(entries=200_000, warmup=5_000, sync_ops=500, plugin_ops=100_000, repeats=5)


@dataclass
class Row:
    """One line of the table: best-of-N seconds for ``ops`` operations, Walrus and raw."""

    name: str
    ops: int
    walrus_s: float
    raw_s: float
    baseline: str
    unit: str = "entries/s"

    @property
    def walrus_rate(self) -> float:
        return self.ops / self.walrus_s

    @property
    def raw_rate(self) -> float:
        return self.ops / self.raw_s

    @property
    def ratio(self) -> float:
        return self.walrus_rate / self.raw_rate

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ops": self.ops,
            "walrus_per_s": round(self.walrus_rate, 1),
            "raw_per_s": round(self.raw_rate, 1),
            "ratio": round(self.ratio, 4),
            "walrus_best_s": self.walrus_s,
            "raw_best_s": self.raw_s,
            "baseline": self.baseline,
        }


@dataclass
class PluginCheck:
    """Per-write cost of the resolved chain vs the backend function called directly."""

    ops: int
    rounds: int
    chain_s: float
    direct_s: float
    pluggy_s: float | None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.chain_s / self.direct_s


@dataclass
class Results:
    config: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    plugin: PluginCheck | None = None


# --- helpers ---------------------------------------------------------------------------------


class Workspace:
    """A scratch directory on a real disk; every measurement gets a fresh subdirectory."""

    def __init__(self, base: str) -> None:
        self.root = tempfile.mkdtemp(prefix=".walrus-bench-", dir=base)
        self._n = 0

    def fresh(self) -> str:
        self._n += 1
        path = os.path.join(self.root, f"run{self._n:03d}")
        os.mkdir(path)
        return path

    def remove(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def fs_type(path: str) -> str:
    """The file system type of the mount holding ``path`` (Linux /proc/mounts), or '?'."""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return "?"
    real = os.path.realpath(path)
    best, kind = "", "?"
    for parts in mounts:
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) > len(best):
            best, kind = mnt, parts[2]
    return kind


def pick_base_dir(requested: str | None) -> str:
    """Where the scratch directory goes: ``--dir``, else beside the repository (same disk as
    the repo, never a tmpfs /tmp), else inside it."""
    if requested:
        os.makedirs(requested, exist_ok=True)
        return requested
    for cand in (REPO.parent, REPO):
        if os.access(cand, os.W_OK) and fs_type(str(cand)) != "tmpfs":
            return str(cand)
    return str(REPO)


def open_raw(path: str, size: int) -> int:
    """A sparse file of ``size`` bytes, as the backends create data files."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    os.ftruncate(fd, size)
    return fd


def raw_file_size(n: int, geometry: Geometry) -> int:
    return max(geometry.file_size, (n + 1) * RECORD)


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(
    repeats: int, walrus: Callable[[], float], raw: Callable[[], float]
) -> tuple[float, float]:
    """Interleave the two measurements ``repeats`` times; keep the best time of each."""
    bw = br = float("inf")
    for _ in range(repeats):
        bw = min(bw, walrus())
        br = min(br, raw())
    return bw, br


def batch_chunks() -> list[list[bytes]]:
    """One batch's buffers (header, payload per entry), cut to IOV_MAX buffers per call."""
    bufs: list[bytes] = []
    for _ in range(BATCH):
        bufs.append(HEADER)
        bufs.append(PAYLOAD)
    return [bufs[i : i + IOV_MAX] for i in range(0, len(bufs), IOV_MAX)]


def pwritev_all(fd: int, chunks: list[list[bytes]], off: int) -> int:
    for chunk in chunks:
        off += os.pwritev(fd, chunk, off)
    return off


# --- the Walrus side ---------------------------------------------------------------------------


class Bench:
    def __init__(self, ws: Workspace, sizes: Sizes, backend: str) -> None:
        self.ws = ws
        self.sizes = sizes
        self.backend = backend
        self.geometry = Geometry()
        self.max_bytes = 1 << 30  # "large": the entry-count cap of a batch read applies first
        self.read_batch = Limits().max_batch_entries

    def wal(self, path: str, **kw: Any) -> Walrus:
        kw.setdefault("fsync", FsyncSchedule.no_fsync())
        return Walrus(data_dir=path, backend=self.backend, **kw)

    # appends ------------------------------------------------------------------------------

    def walrus_single(self, n: int, warm: int, fsync: FsyncSchedule) -> float:
        path = self.ws.fresh()
        try:
            with self.wal(path, fsync=fsync) as wal:
                append = wal.append_for_topic
                for _ in range(warm):
                    append(TOPIC, PAYLOAD)

                def run() -> None:
                    for _ in range(n):
                        append(TOPIC, PAYLOAD)

                elapsed = timed(run)
                assert wal.append_for_topic(TOPIC, PAYLOAD) == warm + n
            return elapsed
        finally:
            self.ws.remove(path)

    def raw_single(self, n: int, warm: int, sync: bool) -> float:
        path = self.ws.fresh()
        fd = open_raw(os.path.join(path, "raw.dat"), raw_file_size(n + warm, self.geometry))
        try:
            off = 0
            for _ in range(warm):
                os.pwritev(fd, [HEADER, PAYLOAD], off)
                off += RECORD
            start = off

            def run() -> None:
                off = start
                if sync:
                    for _ in range(n):
                        os.pwritev(fd, [HEADER, PAYLOAD], off)
                        _datasync(fd)
                        off += RECORD
                else:
                    for _ in range(n):
                        os.pwritev(fd, [HEADER, PAYLOAD], off)
                        off += RECORD

            return timed(run)
        finally:
            os.close(fd)
            self.ws.remove(path)

    def walrus_batch(self, n: int, warm: int) -> float:
        path = self.ws.fresh()
        batch = [PAYLOAD] * BATCH
        batches = n // BATCH
        try:
            with self.wal(path) as wal:
                bappend = wal.batch_append_for_topic
                for _ in range(max(1, warm // BATCH)):
                    bappend(TOPIC, batch)

                def run() -> None:
                    for _ in range(batches):
                        bappend(TOPIC, batch)

                elapsed = timed(run)
                got = bappend(TOPIC, batch)
                assert len(got) == BATCH, got
            return elapsed
        finally:
            self.ws.remove(path)

    def raw_batch(self, n: int, warm: int) -> float:
        path = self.ws.fresh()
        fd = open_raw(os.path.join(path, "raw.dat"), raw_file_size(n + warm + BATCH, self.geometry))
        chunks = batch_chunks()
        batches = n // BATCH
        try:
            off = 0
            for _ in range(max(1, warm // BATCH)):
                off = pwritev_all(fd, chunks, off)
            start = off

            def run() -> None:
                off = start
                for _ in range(batches):
                    off = pwritev_all(fd, chunks, off)

            return timed(run)
        finally:
            os.close(fd)
            self.ws.remove(path)

    # reads --------------------------------------------------------------------------------

    def fill_walrus(self, path: str, total: int) -> None:
        batch = [PAYLOAD] * BATCH
        with self.wal(path) as wal:
            for _ in range(-(-total // BATCH)):
                wal.batch_append_for_topic(TOPIC, batch)

    def walrus_reads(self, path: str, n: int, warm: int, consistency: ReadConsistency) -> Any:
        """Returns (batch_read_run, read_next_run, close): each run resets the default cursor
        with seek(), reads ``warm`` entries untimed, then times ``n`` entries."""
        wal = self.wal(path, consistency=consistency)
        max_bytes = self.max_bytes

        def batch_read() -> float:
            wal.seek(TOPIC, 0)
            br = wal.batch_read_for_topic
            got = 0
            while got < warm:
                got += len(br(TOPIC, max_bytes, True))
            start = got
            last: list[Any] = []

            def run() -> None:
                nonlocal got, last
                while got < start + n:
                    last = br(TOPIC, max_bytes, True)
                    if not last:
                        break
                    got += len(last)

            elapsed = timed(run)
            if got < start + n or not last or len(last[-1].data) != ENTRY_BYTES:
                raise AssertionError(f"batch read returned {got - start} entries, wanted {n}")
            return elapsed * n / (got - start)  # the last call may return a few more than n

        def read_next() -> float:
            wal.seek(TOPIC, 0)
            rn = wal.read_next
            for _ in range(warm):
                rn(TOPIC)
            last: list[Any] = [None]

            def run() -> None:
                e = None
                for _ in range(n):
                    e = rn(TOPIC)
                last[0] = e

            elapsed = timed(run)
            entry = last[0]
            if entry is None or entry.offset != warm + n - 1 or len(entry.data) != ENTRY_BYTES:
                raise AssertionError(f"read_next ended on {entry!r}, wanted offset {warm + n - 1}")
            return elapsed

        return batch_read, read_next, wal.close

    def fill_raw(self, fd: int, total: int) -> None:
        chunks = batch_chunks()
        off = 0
        for _ in range(-(-total // BATCH)):
            off = pwritev_all(fd, chunks, off)

    def raw_preadv(self, fd: int, n: int, warm: int) -> float:
        chunk = self.read_batch * RECORD  # the bytes one Walrus batch read covers
        buf = bytearray(chunk)
        view = memoryview(buf)
        start = warm * RECORD
        end = start + n * RECORD

        def run() -> None:
            off = start
            while off < end:
                want = min(chunk, end - off)
                got = os.preadv(fd, [view[:want]] if want < chunk else [buf], off)
                if got <= 0:
                    raise AssertionError("short raw read")
                off += got

        return timed(run)

    def raw_pread(self, fd: int, n: int, warm: int) -> float:
        start = warm * RECORD

        def run() -> None:
            off = start
            for _ in range(n):
                os.pread(fd, RECORD, off)
                off += RECORD

        return timed(run)

    # plugin layer -------------------------------------------------------------------------

    def plugin_check(self, n: int, rounds: int) -> PluginCheck | None:
        registry = BackendRegistry.from_entry_points()
        name = registry.select(self.backend)
        module = None
        for ep in importlib.metadata.entry_points(group="walrus.backends"):
            if ep.name == name:
                module = ep.load()
                break
        info_fn = getattr(module, "walrus_backend_info", None)
        if module is None or info_fn is None or info_fn().layers_over is not None:
            return None  # the direct comparison is defined for a base backend's module only
        chain = registry.chain(self.backend)
        size = n * RECORD + self.geometry.block_size
        bufs = [HEADER, PAYLOAD]
        path = self.ws.fresh()
        storage = chain.open(OpenSpec(os.path.join(path, "chain.dat"), size, create=True))
        handle = module.walrus_open(OpenSpec(os.path.join(path, "direct.dat"), size, True), None)
        chain_write = storage.write
        direct_write = module.walrus_write

        def through_chain() -> float:
            def run() -> None:
                off = 0
                for _ in range(n):
                    chain_write(off, bufs, RECORD)
                    off += RECORD

            return timed(run)

        def direct() -> float:
            def run() -> None:
                off = 0
                for _ in range(n):
                    direct_write(handle, off, bufs, RECORD)
                    off += RECORD

            return timed(run)

        def via_pluggy() -> float:
            # What every write would cost if it were dispatched through pluggy (the chain
            # resolves implementations once at open time precisely to avoid this).
            import pluggy

            from walrus_core import hookspecs

            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            pm.register(module, name=name)
            hook = pm.hook.walrus_write
            count = max(1, n // 4)

            def run() -> None:
                off = 0
                for _ in range(count):
                    hook(handle=handle, offset=off, buffers=bufs, nbytes=RECORD)
                    off += RECORD

            return timed(run) * (n / count)

        try:
            # The first pass allocates the pages of both files; the timed rounds then rewrite
            # the same page-cached region, alternating which side goes first, so that what
            # differs between the two is the call path and not the file system's allocation.
            through_chain()
            direct()
            best_chain = best_direct = float("inf")
            for i in range(rounds):
                order = (through_chain, direct) if i % 2 == 0 else (direct, through_chain)
                for fn in order:
                    t = fn()
                    if fn is through_chain:
                        best_chain = min(best_chain, t)
                    else:
                        best_direct = min(best_direct, t)
            try:
                pluggy_s: float | None = min(via_pluggy() for _ in range(3))
            except Exception:
                pluggy_s = None
        finally:
            storage.close()
            module.walrus_close(handle)
            self.ws.remove(path)
        return PluginCheck(
            ops=n,
            rounds=rounds,
            chain_s=best_chain,
            direct_s=best_direct,
            pluggy_s=pluggy_s,
            note=(
                "storage.write from BackendChain.open vs "
                f"{module.__name__}.walrus_write(handle, ...)"
            ),
        )


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Results:
    sizes = replace(QUICK if args.quick else FULL)
    if args.entries:
        sizes.entries = args.entries
    if args.repeats:
        sizes.repeats = max(1, args.repeats)
    sizes.entries = max(BATCH, sizes.entries // BATCH * BATCH)
    n, warm, reps = sizes.entries, sizes.warmup, sizes.repeats
    base = pick_base_dir(args.dir)
    ws = Workspace(base)
    bench = Bench(ws, sizes, args.backend)
    say = print if not args.quiet else (lambda *a, **k: None)
    try:
        probe = ws.fresh()
        with bench.wal(probe) as wal:
            chain = tuple(wal.backend_chain)
        ws.remove(probe)
        results = Results(
            config={
                "entry_bytes": ENTRY_BYTES,
                "entry_header_bytes": ENTRY_HEADER_SIZE,
                "batch": BATCH,
                "entries_per_repeat": n,
                "warmup_entries": warm,
                "repeats": reps,
                "sync_each_ops": sizes.sync_ops,
                "backend": args.backend,
                "backend_chain": list(chain),
                "block_size": bench.geometry.block_size,
                "blocks_per_file": bench.geometry.blocks_per_file,
                "read_max_bytes": bench.max_bytes,
                "scratch_dir": ws.root,
                "filesystem": fs_type(ws.root),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "walrus_core": getattr(walrus_core, "__version__", "?"),
                "quick": bool(args.quick),
            }
        )
        say(
            f"Walrus core benchmark: {ENTRY_BYTES} B entries, backend {'/'.join(chain)}, "
            f"{n:,} entries per repeat, best of {reps}"
        )
        say(
            f"scratch dir {ws.root} ({results.config['filesystem']}), "
            f"python {platform.python_version()}"
        )
        say("")
        nof = FsyncSchedule.no_fsync()

        say("  single appends ...", flush=True)
        w, r = best_of(
            reps,
            lambda: bench.walrus_single(n, warm, nof),
            lambda: bench.raw_single(n, warm, False),
        )
        results.rows.append(Row("single append", n, w, r, "os.pwritev(header, payload) per entry"))

        say("  batch appends ...", flush=True)
        w, r = best_of(reps, lambda: bench.walrus_batch(n, warm), lambda: bench.raw_batch(n, warm))
        results.rows.append(
            Row(f"batch append ({BATCH}/batch)", n, w, r, f"os.pwritev of {BATCH} entries' buffers")
        )

        say("  reads ...", flush=True)
        wpath = ws.fresh()
        bench.fill_walrus(wpath, warm + n + bench.read_batch)  # batch reads may overshoot
        rpath = ws.fresh()
        fd = open_raw(
            os.path.join(rpath, "raw.dat"),
            raw_file_size(warm + n + bench.read_batch + BATCH, bench.geometry),
        )
        try:
            bench.fill_raw(fd, warm + n)
            consistencies = [
                ("at_least_once(1000)", ReadConsistency.at_least_once(persist_every=1000)),
                ("strict", ReadConsistency.strictly_at_once()),
            ]
            for label, consistency in consistencies:
                batch_read, read_next, close = bench.walrus_reads(wpath, n, warm, consistency)
                try:
                    w, r = best_of(reps, batch_read, lambda: bench.raw_preadv(fd, n, warm))
                    results.rows.append(
                        Row(
                            f"batch read, {label}",
                            n,
                            w,
                            r,
                            f"os.preadv of {bench.read_batch} entries' bytes per call",
                        )
                    )
                    w, r = best_of(reps, read_next, lambda: bench.raw_pread(fd, n, warm))
                    results.rows.append(
                        Row(f"read_next, {label}", n, w, r, "os.pread of one entry")
                    )
                finally:
                    close()
        finally:
            os.close(fd)
            ws.remove(rpath)
            ws.remove(wpath)

        say("  sync_each appends ...", flush=True)
        m = sizes.sync_ops
        w, r = best_of(
            reps,
            lambda: bench.walrus_single(m, 10, FsyncSchedule.sync_each()),
            lambda: bench.raw_single(m, 10, True),
        )
        results.rows.append(
            Row("single append, sync_each", m, w, r, "os.pwritev + os.fdatasync per entry")
        )

        say("  plugin layer ...", flush=True)
        results.plugin = bench.plugin_check(sizes.plugin_ops, max(5, 3 * reps))
        return results
    finally:
        ws.cleanup()


def print_table(res: Results) -> None:
    header = ("operation", "walrus", "raw", "ratio", "raw baseline (same bytes, same run)")
    lines = [
        (
            row.name,
            f"{row.walrus_rate:,.0f}/s",
            f"{row.raw_rate:,.0f}/s",
            f"{row.ratio:.3f}",
            row.baseline,
        )
        for row in res.rows
    ]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(4)]
    w0, w1, w2, w3 = widths
    fmt = f"{{:<{w0}}}  {{:>{w1}}}  {{:>{w2}}}  {{:>{w3}}}  {{}}"
    print()
    print(fmt.format(*header))
    print(fmt.format(*("-" * w for w in widths), "-" * len(header[4])))
    for line in lines:
        print(fmt.format(*line))
    print()
    print("ratio = Walrus rate / raw rate (1.000 = as fast as the bare system calls).")
    print(
        "Rates count entries; read rows use fsync=no_fsync, the cursor persisted every 1000 "
        "entries (at_least_once) or on every read (strict)."
    )
    pc = res.plugin
    print()
    if pc is None:
        print("plugin layer: skipped (the direct comparison needs a base backend's module)")
        return
    us = 1e6 / pc.ops
    print(
        f"plugin layer, single {RECORD}-byte write, {pc.ops:,} writes per round, "
        f"best of {pc.rounds} alternating rounds:"
    )
    print(f"  through the chain (storage.write)      {pc.chain_s * us:7.3f} us/write")
    print(f"  backend function called directly       {pc.direct_s * us:7.3f} us/write")
    print(f"  chain / direct                         {pc.ratio:7.3f}   (issue target: <= 1.10)")
    single = next((r for r in res.rows if r.name == "single append"), None)
    if single is not None:
        extra_us = (pc.chain_s - pc.direct_s) * us
        append_us = 1e6 / single.walrus_rate
        print(
            f"  extra per single append                {extra_us:7.3f} us"
            f" = {extra_us / append_us:.1%} of a Walrus single append ({append_us:.3f} us)"
        )
    if pc.pluggy_s is not None:
        print(
            f"  for scale: via pluggy's hook caller    {pc.pluggy_s * us:7.3f} us/write"
            "   (not used on the per-entry path)"
        )


def to_json(res: Results) -> dict[str, Any]:
    out: dict[str, Any] = {"config": res.config, "rows": [r.as_json() for r in res.rows]}
    pc = res.plugin
    if pc is not None:
        out["plugin_layer"] = {
            **asdict(pc),
            "chain_us_per_write": pc.chain_s * 1e6 / pc.ops,
            "direct_us_per_write": pc.direct_s * 1e6 / pc.ops,
            "pluggy_us_per_write": None if pc.pluggy_s is None else pc.pluggy_s * 1e6 / pc.ops,
            "ratio_chain_over_direct": round(pc.ratio, 4),
        }
        single = next((r for r in res.rows if r.name == "single append"), None)
        if single is not None:
            extra = (pc.chain_s - pc.direct_s) / pc.ops
            out["plugin_layer"]["extra_share_of_single_append"] = round(
                extra * single.walrus_rate, 4
            )
    return out


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # so that the scratch directory is removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (well under 30 s)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    ap.add_argument(
        "--backend",
        default=os.environ.get("WALRUS_BACKEND", "fd"),
        help="backend to benchmark (default: $WALRUS_BACKEND, else fd)",
    )
    ap.add_argument(
        "--dir",
        help="where to create the scratch directory (default: beside the repository, "
        "on the same disk; avoid tmpfs)",
    )
    ap.add_argument("--entries", type=int, help="entries per repeat (rounded to whole batches)")
    ap.add_argument("--repeats", type=int, help="repeats per measurement (best one is kept)")
    ap.add_argument("--quiet", action="store_true", help="print only the table")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    t0 = time.perf_counter()
    res = run(args)
    res.config["wall_seconds"] = round(time.perf_counter() - t0, 2)
    print_table(res)
    print(f"\n(total {res.config['wall_seconds']} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(to_json(res), fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
