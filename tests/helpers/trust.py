"""Format-agnostic tools for the trust tests (``tests/test_trust_regressions.py``) and the
adversarial harness (``tests/test_adversarial.py``).

Nothing here knows the byte layout of entries or block headers. Entries are found in data
files by searching for their payloads (stored verbatim); block headers are only ever located
as "the ``walrus_core.format.BLOCK_HEADER_SIZE`` bytes at a multiple of ``block_size``"; and
bytes that *look like* well-formed entries are copied out of a scratch Walrus log
(:func:`well_formed_entries`), so they stay well-formed whatever the format is.

It also holds the child-process runner (:func:`run_child`, a child that runs some code on an
open instance and then kills itself with SIGKILL), a spy storage layer counting bytes read
(:class:`Spy`), a watchdog (:func:`bounded`), a small real filesystem for ENOSPC tests
(:func:`small_filesystem`) and a WARNING collector (:func:`captured_warnings`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walrus_core import (
    CorruptionError,
    FsyncSchedule,
    OffsetOutOfRangeError,
    ReadConsistency,
    Walrus,
)
from walrus_core import format as fmt
from walrus_core.plugin import BackendInfo, BackendRegistry, default_registry, hookimpl
from walrus_core.storage import Buffers, OpenSpec, Storage, WriteOp

TESTS = Path(__file__).resolve().parent.parent
SLOW = os.environ.get("WALRUS_SLOW", "") not in ("", "0")


# --- files -----------------------------------------------------------------------------------


def data_file_names(root: Path) -> list[str]:
    """The data files of a directory, in file-number order."""
    names = [n for n in os.listdir(root) if fmt.parse_data_file_name(n) is not None]
    return sorted(names, key=lambda n: fmt.parse_data_file_name(n) or 0)


def read_data_files(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in data_file_names(root)}


@dataclass(frozen=True)
class Loc:
    """Where a payload sits: data file name, file offset of its first byte, its length."""

    file: str
    pos: int
    length: int

    @property
    def end(self) -> int:
        return self.pos + self.length


def locate(files: dict[str, bytes], payload: bytes) -> list[Loc]:
    """Every occurrence of ``payload`` (non-empty) in the data files."""
    assert payload, "cannot locate an empty payload"
    out = []
    for name, raw in files.items():
        at = raw.find(payload)
        while at >= 0:
            out.append(Loc(name, at, len(payload)))
            at = raw.find(payload, at + 1)
    return out


def locate_one(files: dict[str, bytes], payload: bytes) -> Loc:
    found = locate(files, payload)
    assert len(found) == 1, (
        f"precondition: payload {payload[:40]!r} found {len(found)} times in the data files"
    )
    return found[0]


def block_start(loc: Loc, block_size: int) -> int:
    """The block header's file offset for an entry that sits in the first slot of its block
    (every entry of a one-slot block; the first entry of a multi-slot block)."""
    return loc.pos // block_size * block_size


def flip(path: Path, pos: int, mask: int = 0x01) -> None:
    """XOR one byte of a file."""
    with open(path, "r+b") as fh:
        fh.seek(pos)
        old = fh.read(1)
        assert len(old) == 1, f"flip at {pos} is past the end of {path}"
        fh.seek(pos)
        fh.write(bytes([old[0] ^ mask]))


def overwrite(path: Path, pos: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(data)


def geometry_of(root: Path) -> dict[str, int]:
    """block_size and blocks_per_file as walrus.json records them."""
    doc = json.loads((root / fmt.META_NAME).read_text(encoding="utf-8"))
    return {"block_size": int(doc["block_size"]), "blocks_per_file": int(doc["blocks_per_file"])}


def rewrite_meta(root: Path, **changes: int) -> None:
    """Rewrite walrus.json with some fields changed (the rest kept as they are)."""
    path = root / fmt.META_NAME
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc.update(changes)
    path.write_text(json.dumps(doc), encoding="utf-8")


# --- well-formed entries of another log --------------------------------------------------------

_WELL_FORMED: dict[tuple[str, str, int, str], bytes] = {}


def well_formed_entries(backend: str, topic: str, count: int, tag: str = "EMBEDDED") -> bytes:
    """Real, well-formed entries of a scratch Walrus log: topic ``topic``, offsets
    ``0..count-1``, payloads ``<tag><topic#i>`` plus filler (no payload of a real test log
    contains ``tag``). Returned: every byte from the end of the scratch block's header region
    to the end of its last entry, i.e. entries exactly as the engine writes them (headers
    included), ready to be embedded in a payload of another log."""
    key = (backend, topic, count, tag)
    if key in _WELL_FORMED:
        return _WELL_FORMED[key]
    block_size = 1 << 20
    payloads = [
        f"{tag}<{topic}#{i}>".encode() + bytes([i % 251]) * (i % 7 * 5) for i in range(count)
    ]
    assert sum(len(p) + 64 for p in payloads) + fmt.BLOCK_HEADER_SIZE < block_size
    scratch = Path(tempfile.mkdtemp(prefix="walrus-scratch-"))
    try:
        with Walrus(
            data_dir=scratch,
            backend=backend,
            fsync=FsyncSchedule.no_fsync(),
            block_size=block_size,
            blocks_per_file=2,
        ) as wal:
            # Singles and one batch: both kinds of well-formed entry.
            half = count // 2
            for p in payloads[:half]:
                wal.append_for_topic(topic, p)
            if payloads[half:]:
                wal.batch_append_for_topic(topic, payloads[half:])
        files = read_data_files(scratch)
        first = locate_one(files, payloads[0])
        last = locate_one(files, payloads[-1])
        assert first.file == last.file
        start = block_start(first, block_size)
        region = files[first.file][start + fmt.BLOCK_HEADER_SIZE : last.end]
        for p in payloads:
            assert p in region, "precondition: the scratch entries lie in one block"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _WELL_FORMED[key] = region
    return region


# --- a spy layer -----------------------------------------------------------------------------


class _SpyHandle:
    __slots__ = ("lower", "spec")

    def __init__(self, spec: OpenSpec, lower: Storage) -> None:
        self.spec = spec
        self.lower = lower


class Spy:
    """A layer plugin that delegates every operation and counts the bytes read through it.

    With ``budget`` (in a child process only), the first read that takes the count past it
    prints ``OVER <bytes> <calls>`` and kills the process with SIGKILL: a test that bounds
    what an open may read gets its verdict without waiting for an open that reads gigabytes.
    """

    def __init__(self, base: str, budget: int | None = None) -> None:
        self.base = default_registry().select(base)  # "uring,fd" -> what runs here
        self._lock = threading.Lock()
        self.read_bytes = 0
        self.read_calls = 0
        self.budget = budget

    def registry(self) -> BackendRegistry:
        return BackendRegistry.from_entry_points().with_plugins({"spy": self})

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(version="1", layers_over=self.base)

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> _SpyHandle:
        assert lower is not None
        return _SpyHandle(spec, lower)

    @hookimpl
    def walrus_read(self, handle: _SpyHandle, offset: int, size: int) -> bytes:
        data = handle.lower.read(offset, size)
        with self._lock:
            self.read_calls += 1
            self.read_bytes += len(data)
            over = self.budget is not None and self.read_bytes > self.budget
        if over:
            sys.stdout.write(f"OVER {self.read_bytes} {self.read_calls}\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return data

    @hookimpl
    def walrus_write(self, handle: _SpyHandle, offset: int, buffers: Buffers, nbytes: int) -> None:
        handle.lower.write(offset, buffers, nbytes)

    @hookimpl
    def walrus_flush(self, handle: _SpyHandle) -> None:
        handle.lower.flush()

    @hookimpl
    def walrus_batch_submit(self, handle: _SpyHandle, ops: Sequence[WriteOp], sync: bool) -> None:
        handle.lower.batch_submit(ops, sync)

    @hookimpl
    def walrus_close(self, handle: _SpyHandle) -> None:
        handle.lower.close()


# --- child processes -------------------------------------------------------------------------

_CHILD = r"""
import json, os, signal, sys
with open(sys.argv[1], encoding="utf-8") as fh:
    cfg = json.load(fh)
os.remove(sys.argv[1])
sys.path.insert(0, cfg["tests"])
from helpers.trust import child_main
child_main(cfg)
"""


def open_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """Walrus() keyword arguments from a child configuration (see :func:`run_child`)."""
    fsync = {
        "no_fsync": FsyncSchedule.no_fsync,
        "sync_each": FsyncSchedule.sync_each,
        "ms5": lambda: FsyncSchedule.milliseconds(5),
    }[cfg.get("fsync", "no_fsync")]()
    pe = cfg.get("persist_every")
    consistency = (
        ReadConsistency.strictly_at_once()
        if pe is None
        else ReadConsistency.at_least_once(persist_every=pe)
    )
    return {
        "data_dir": cfg["data_dir"],
        "backend": cfg["backend"],
        "fsync": fsync,
        "consistency": consistency,
        **cfg.get("geometry", {}),
    }


def child_main(cfg: dict[str, Any]) -> None:
    """Body of the child: open (through a spy or fault layer if asked), run ``code`` with
    ``wal``, ``spy``/``plan`` and ``say`` in scope, then SIGKILL itself (or close and exit 0
    with ``"kill": false``)."""
    kwargs = open_kwargs(cfg)
    scope: dict[str, Any] = {"cfg": cfg}

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    scope["say"] = say
    layer = cfg.get("layer")
    if layer == "spy":
        spy = Spy(cfg["backend"], cfg.get("spy_budget"))
        scope["spy"] = spy
        kwargs.update(backend="spy", registry=spy.registry())
    elif layer == "faults":
        from walrus_faults import FaultLayer, FaultPlan

        plan = FaultPlan()
        scope["plan"] = plan
        fault_layer = FaultLayer(plan, over=default_registry().select(cfg["backend"]))
        registry = BackendRegistry.from_entry_points().with_plugins({"faults": fault_layer})
        kwargs.update(backend="faults", registry=registry)
    if cfg.get("open", True):
        scope["wal"] = Walrus(**kwargs)
    scope["kwargs"] = kwargs
    exec(cfg.get("code", ""), scope)
    sys.stdout.flush()
    if cfg.get("kill", True):
        os.kill(os.getpid(), signal.SIGKILL)
    if "wal" in scope:
        scope["wal"].close()
    sys.exit(0)


def child_argv(cfg: dict[str, Any]) -> list[str]:
    """The command line of a child running ``cfg`` (handed over in a temporary file, which the
    child removes: configurations can be larger than the argument limit)."""
    fd, path = tempfile.mkstemp(prefix="walrus-child-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"tests": str(TESTS), **cfg}, fh)
    return [sys.executable, "-c", _CHILD, path]


def run_child(code: str, *, data_dir: Path, backend: str, timeout: float = 180, **cfg: Any) -> str:
    """Run ``code`` in a child process with ``wal`` open on ``data_dir``, then SIGKILL it
    (``kill=False``: close cleanly). Other keys: ``geometry`` (dict), ``fsync`` (no_fsync,
    sync_each, ms5), ``persist_every`` (None: strictly_at_once), ``layer`` (spy, faults),
    ``open`` (False: no instance). Returns the child's stdout."""
    doc = {"data_dir": str(data_dir), "backend": backend, "code": code, **cfg}
    proc = subprocess.run(
        child_argv(doc), capture_output=True, text=True, timeout=timeout, check=False
    )
    want = -signal.SIGKILL if doc.get("kill", True) else 0
    assert proc.returncode == want, (
        f"child exited with {proc.returncode} (wanted {want}): {proc.stderr[-3000:]}"
    )
    return proc.stdout


# --- watchdog, warnings, small filesystems ---------------------------------------------------


class Hang(AssertionError):
    """The watched call did not finish in time."""


def bounded(fn: Callable[[], Any], timeout: float, what: str = "open/read") -> Any:
    """Run ``fn`` in a thread; raise :class:`Hang` if it does not finish within ``timeout``."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise Hang(f"never_hangs: {what} did not finish within {timeout}s")
    if errors:
        raise errors[0]
    return result[0] if result else None


@contextmanager
def captured_warnings() -> Iterator[list[logging.LogRecord]]:
    """WARNING records of logger ``walrus_core`` while the block runs."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("walrus_core")
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class MountRefused(Exception):
    """No small filesystem can be mounted here (the message says why, verbatim)."""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def small_filesystem(where: Path, size_kib: int) -> Iterator[Path]:
    """A real filesystem of ``size_kib`` KiB mounted at ``where/mnt``: tmpfs, else an ext4
    loop image. Raises :class:`MountRefused` with the exact errors when neither works."""
    mnt = where / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    errors = []
    mounted = False
    if shutil.which("mount") is None:
        raise MountRefused("no mount(8) on this machine")
    proc = _run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mnt)])
    if proc.returncode == 0:
        mounted = True
    else:
        errors.append(f"mount -t tmpfs: rc={proc.returncode} {proc.stderr.strip()}")
        image = where / "fs.img"
        with open(image, "wb") as fh:
            fh.truncate(max(size_kib, 256) * 1024)
        mkfs = _run(["mkfs.ext4", "-q", "-F", str(image)])
        if mkfs.returncode != 0:
            errors.append(f"mkfs.ext4: rc={mkfs.returncode} {mkfs.stderr.strip()}")
        else:
            proc = _run(["mount", "-o", "loop", str(image), str(mnt)])
            if proc.returncode == 0:
                mounted = True
            else:
                errors.append(f"mount -o loop: rc={proc.returncode} {proc.stderr.strip()}")
    if not mounted:
        raise MountRefused("; ".join(errors))
    try:
        yield mnt
    finally:
        if _run(["umount", str(mnt)]).returncode != 0:
            _run(["umount", "-l", str(mnt)])


def fill_up(mnt: Path) -> Path:
    """Write a filler file until the filesystem is full; returns it (delete it to free space)."""
    filler = mnt / "filler"
    chunk = b"\xa5" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError:
            pass
    # Whatever is left (less than a page) goes too.
    with open(filler, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\xa5")
        except OSError:
            pass
    return filler


# --- operations shipped to a child as JSON ---------------------------------------------------


def single(topic: str, payload: bytes) -> dict[str, Any]:
    return {"topic": topic, "single": payload.hex()}


def batch(topic: str, payloads: Sequence[bytes]) -> dict[str, Any]:
    return {"topic": topic, "batch": [p.hex() for p in payloads]}


def read(topic: str, n: int, consumer: str | None = None) -> dict[str, Any]:
    return {"topic": topic, "read": n, "consumer": consumer}


def apply_ops(wal: Walrus, ops: Sequence[dict[str, Any]]) -> None:
    """Run operations built by :func:`single`, :func:`batch` and :func:`read`, checking that
    every append lands at the next offset of its topic (as the caller's model expects)."""
    for op in ops:
        topic = op["topic"]
        if "single" in op:
            wal.append_for_topic(topic, bytes.fromhex(op["single"]))
        elif "batch" in op:
            got = wal.batch_append_for_topic(topic, [bytes.fromhex(h) for h in op["batch"]])
            assert len(got) == len(op["batch"])
        else:
            for _ in range(op["read"]):
                assert wal.read_next(topic, consumer=op["consumer"]) is not None


OPS_CODE = "from helpers.trust import apply_ops\napply_ops(wal, cfg['ops'])\n"


# --- reading back ----------------------------------------------------------------------------


@dataclass
class Probe:
    """What offset-by-offset reads of one topic found (see :func:`probe_offsets`)."""

    ok: list[int]  # exact bytes
    corrupt: list[int]  # CorruptionError naming the offset
    missing: list[int]  # offsets below len(expected) that no read returns nor reports
    wrong: list[str]  # descriptions of wrong bytes (the invariant's violations)
    end: int  # the topic's end as start_offset reads see it


def summary(items: Sequence[str], n: int = 4) -> str:
    """The first ``n`` items, and how many more there are."""
    head = "; ".join(items[:n])
    return head + (f"; ... and {len(items) - n} more" if len(items) > n else "")


def describe(data: bytes, known: dict[bytes, str] | None = None) -> str:
    """A short description of returned bytes: whose entry they are, if anyone's."""
    if known and data in known:
        return f"the bytes of {known[data]}"
    if b"EMBEDDED" in data:
        return f"bytes embedded in a payload ({data[:48]!r}...)"
    return f"{len(data)} unknown bytes {data[:48]!r}"


def probe_offsets(
    wal: Walrus, topic: str, expected: Sequence[bytes], known: dict[bytes, str] | None = None
) -> Probe:
    """Read every offset of ``topic`` alone (``start_offset``, checkpoint=False): each must
    give exactly ``expected[offset]`` or raise CorruptionError naming it; then check that no
    entry (and no damaged one either) follows the ``len(expected)`` appended."""
    p = Probe([], [], [], [], 0)
    for off in range(len(expected)):
        try:
            got = wal.batch_read_for_topic(topic, 1, checkpoint=False, start_offset=off)
        except CorruptionError as exc:
            if exc.offset != off:
                p.wrong.append(f"offset {off}: CorruptionError names offset {exc.offset}")
            p.corrupt.append(off)
            continue
        except OffsetOutOfRangeError:
            p.missing.append(off)
            continue
        if not got or got[0].offset != off:
            p.missing.append(off)  # past the end, or the topic now starts later
            continue
        if got[0].data == expected[off]:
            p.ok.append(off)
        else:
            p.wrong.append(
                f"offset {off}: returned {describe(got[0].data, known)} instead of its own "
                f"{len(expected[off])} bytes"
            )
    n = len(expected)
    try:
        more = wal.batch_read_for_topic(topic, 1 << 20, checkpoint=False, start_offset=n)
    except OffsetOutOfRangeError:
        more = []
        p.end = max([*p.ok, *p.corrupt, -1]) + 1
    except CorruptionError as exc:
        p.wrong.append(f"offset {exc.offset}: a (damaged) entry past the {n} appended")
        more = []
        p.end = n + 1
    else:
        p.end = n + len(more)
    for e in more:
        p.wrong.append(
            f"offset {e.offset}: an entry past the {n} appended: {describe(e.data, known)}"
        )
    return p


@contextmanager
def ram_dir(fallback: Path, min_free: int = 1 << 30) -> Iterator[Path]:
    """A scratch directory in RAM (``/dev/shm``) when there is one with ``min_free`` bytes
    free (tests writing hundreds of MiB then run at memory speed), else ``fallback``."""
    shm = Path("/dev/shm")
    try:
        usable = shm.is_dir() and shutil.disk_usage(shm).free >= min_free
    except OSError:
        usable = False
    if not usable:
        fallback.mkdir(parents=True, exist_ok=True)
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix="walrus-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
