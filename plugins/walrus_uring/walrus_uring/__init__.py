"""The io_uring layer over the FD backend: large durable batches as one ring submission.

The chain is ``("uring", "fd")``. This plugin implements ``walrus_open`` (its handle keeps the
FD storage below it), ``walrus_batch_submit`` and ``walrus_close``; single writes, reads and
flushes stay with FD, which receives its own handle (the chain rule), so they cost exactly what
they cost on FD. The background flusher only ever calls ``flush``: it never touches a ring.

A batch on the ring is one writev SQE per contiguous run, all submitted with one
``io_uring_enter``. liburing 2024.5.3's ``iovec`` takes at most ``RING_IOV_MAX`` (60) buffers,
so a run of more buffers is joined into one buffer (one copy) up to ``JOIN_MAX`` bytes, and cut
into several SQEs of at most 60 buffers above that. Under ``sync`` the writes are linked
(``IOSQE_IO_LINK``) into one chain ending with an fdatasync SQE (``IORING_FSYNC_DATASYNC``), so
the sync needs no extra round trip. Runs of at least twice ``WRITEBACK_AHEAD`` are cut into
pieces of about that size (each joined when it has more than 60 buffers), and every piece but
the last is followed in the chain by a hard-linked (a refusal cannot cancel the chain)
``sync_file_range(SYNC_FILE_RANGE_WRITE)``: the device starts writing each piece back while the
next is still being copied, and the final fdatasync has little left to wait for.

What was measured on this machine (Linux 6.18, ext4 on virtio; ``bench_uring.py``) decides which
batches use the ring at all:

* ext4 has no async buffered writes, so io_uring hands every buffered write to an io-wq worker:
  10-40 us per batch that a direct ``pwritev`` does not pay. Without a sync to overlap, the ring
  never wins (1.4x fd's time on 16 x 1 KiB, 1.1x on 4 MiB, even at 128 MiB): batches without
  sync never use it by default (``RING_MIN``).
* Durable batches from ``RING_MIN_SYNC`` (2 MiB) up use the ring: the chained writeback-ahead
  makes them 15-25% faster than fd from 4 MiB (2000 x 64 KiB: about 0.8x fd's time); at 2 MiB
  it is even. Without the writeback-ahead the ring is only as fast as fd.
* Smaller batches, durable or not, are written as fd does (pwritev per run, fdatasync), except
  that runs of more than IOV_MAX buffers are joined first (1000 x 1 KiB: about 0.6x fd's time).

Waiting never holds the GIL: the ring is submitted with ``io_uring_submit`` and completions are
awaited with ``poll`` on the ring's descriptor (``io_uring_submit_and_wait`` would keep the GIL
for the whole fdatasync). Every CQE is reaped (``io_uring_peek_cqe``) and marked seen; a
negative result raises ``OSError`` with its errno; a short or cancelled write is completed with
``pwritev`` (and synced again). Buffers reach ``iovec`` as bytes or flat byte views (a view
holds a bytearray's export, so it cannot be resized while the kernel writes from it).

liburing is pinned to 2024.5.3, built from its sdist: every later release on PyPI (2026.x) is a
wheel built with AVX-512 instructions, which dies with SIGILL on CPUs without them. The probe
reads the installed liburing's version from its metadata before importing it (another release
is refused without being loaded), then sets up a ring and runs a NOP once in a child process
(``_ring_check``): a liburing binary that kills its process kills only that child, and the
probe reports why. Only then is liburing loaded here.

Rings are per thread (``threading.local``), grown to fit the largest batch seen, rebuilt after
``fork``. liburing is imported lazily: this module imports (and :func:`probe` says why io_uring
cannot be used) where liburing is missing.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import signal
import subprocess
import sys
import threading
from bisect import bisect_left
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from itertools import accumulate
from typing import Any

from walrus_core.plugin import (
    BackendInfo,
    BackendUnavailableError,
    Buffers,
    OpenSpec,
    Storage,
    WriteOp,
    hookimpl,
)

from . import _ring_check

try:
    __version__ = version("walrus-uring")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

#: The liburing release this module is written against (its Python API changes between
#: releases); the probe refuses any other.
LIBURING_VERSION = "2024.5.3"
#: Set to 1 to make the probe refuse io_uring ("uring,fd" and "auto" then fall back to fd).
DISABLE_ENV = "WALRUS_DISABLE_IO_URING"
#: Buffers per pwritev call (the kernel's UIO_MAXIOV).
IOV_MAX = 1024
#: Buffers per writev SQE: liburing 2024.5.3's ``iovec`` refuses more than 60 (it compares with
#: the sysconf name ``_SC_IOV_MAX``, which is 60, instead of the limit that name stands for).
RING_IOV_MAX = 60
#: Submission queue entries of a new thread ring; rings grow (powers of two) up to MAX_RING.
MIN_RING = 64
#: The largest ring; a batch needing more SQEs goes in several submissions, in order.
MAX_RING = 4096
#: Runs (or writeback pieces) of more than RING_IOV_MAX buffers up to this size are joined into
#: one buffer (one copy); so are runs of more than IOV_MAX buffers written with pwritev.
JOIN_MAX = 8 << 20
#: Seconds the probe process may take to import liburing and run one NOP.
PROBE_TIMEOUT = 60.0

# Kernel ABI flags (<linux/io_uring.h>, <linux/fs.h>). liburing 2024.5.3 only exposes them when
# built with a Cython that exports enum members (the Cython 3.3 its sdist builds with here does
# not), so they are spelled out.
IOSQE_IO_LINK = 1 << 2
IOSQE_IO_HARDLINK = 1 << 3
IORING_FSYNC_DATASYNC = 1 << 0
SYNC_FILE_RANGE_WRITE = 2


def _env_bytes(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return max(0, int(value)) if value else default
    except ValueError:
        return default


#: Durable batches smaller than this many bytes are written with pwritev + fdatasync system
#: calls instead of the ring (measured: below 2 MiB the ring's worker hand-off costs more than
#: it saves; from 4 MiB the chained writeback-ahead wins 15-25%). Env: WALRUS_URING_RING_MIN_SYNC.
DEFAULT_RING_MIN_SYNC = 2 << 20
RING_MIN_SYNC = _env_bytes("WALRUS_URING_RING_MIN_SYNC", DEFAULT_RING_MIN_SYNC)
#: The same for batches without sync: never, by default (measured: with no fdatasync to
#: overlap, the ring only adds its hand-off, 10-40 us a batch, 1.1-1.4x fd's time when small).
#: Env: WALRUS_URING_RING_MIN (0 sends every batch to the ring, e.g. to test that path).
DEFAULT_RING_MIN = 1 << 62
RING_MIN = _env_bytes("WALRUS_URING_RING_MIN", DEFAULT_RING_MIN)
#: Under sync on the ring, runs of at least twice this are cut into pieces of about this size,
#: and every piece of at least half of it but the last write is followed by a sync_file_range.
WRITEBACK_AHEAD = 1 << 20

_WRITE = 0
_WRITEBACK = 1
_FSYNC = 2
_WAIT_MS = 1000
#: What io_uring_peek_cqe returns when no completion is ready (yet).
_NOTHING_YET = frozenset((-errno.EAGAIN, -errno.EINTR, -errno.ETIME))

_datasync = getattr(os, "fdatasync", os.fsync)

#: The liburing module, once the probe found io_uring usable.
_lib: Any = None


# --- probe -----------------------------------------------------------------------------------


def _disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def probe() -> str | None:
    """None when io_uring can be used here, else the reason it cannot.

    ``WALRUS_DISABLE_IO_URING`` is read on every call; the kernel probe (the installed
    liburing's version, the ``kernel.io_uring_disabled`` sysctl, then a ring setup, a NOP round
    trip and the opcodes this module needs, first in a child process, then here) runs once per
    process: :func:`clear_probe_cache` forgets its answer.
    """
    if _disabled_by_env():
        return f"disabled by {DISABLE_ENV}"
    return _probe_kernel()


def clear_probe_cache() -> None:
    """Forget the cached kernel probe (tests; after changing the sysctl)."""
    _probe_kernel.cache_clear()


def _read_sysctl() -> int | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None  # kernels before 6.6 have no such switch


def _installed_liburing() -> str | None:
    """The installed liburing's version, read from its metadata (without loading it)."""
    try:
        return version("liburing")
    except PackageNotFoundError:
        return None


def _child_command(sysctl: int | None) -> list[str]:
    """The probe process: this interpreter, isolated, running ``_ring_check`` with our
    ``sys.path`` (so that it loads the very liburing this process would)."""
    script = _ring_check.__file__
    return [
        sys.executable,
        "-I",
        script,
        json.dumps(sys.path),
        "" if sysctl is None else str(sysctl),
    ]


def _probe_in_child(liburing_version: str, sysctl: int | None) -> str | None:
    """Run the ring check in a child process: None if it passed, else why not (including the
    signal that killed the child, e.g. SIGILL from a binary built for other CPUs)."""
    if not sys.executable:
        return None  # an embedded interpreter cannot start itself: check in-process only
    try:
        done = subprocess.run(
            _child_command(sysctl),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"the io_uring probe process did not answer within {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return f"the io_uring probe process could not start: {exc}"
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        hint = ""
        if done.returncode == -signal.SIGILL:
            hint = (
                " (illegal instruction: the liburing binary uses CPU instructions this CPU"
                " lacks, e.g. AVX-512; build it on this machine with: pip install"
                " --force-reinstall --no-cache-dir --no-binary liburing"
                f" liburing=={LIBURING_VERSION})"
            )
        return f"liburing {liburing_version} killed the io_uring probe process with {name}{hint}"
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if done.returncode != 0 or not isinstance(answer, dict):
        errors = done.stderr.strip().splitlines()
        detail = errors[-1] if errors else "no answer"
        return f"the io_uring probe process failed (exit {done.returncode}): {detail}"
    reason = answer.get("reason")
    return None if reason is None else str(reason)


@functools.cache
def _probe_kernel() -> str | None:
    global _lib
    if not sys.platform.startswith("linux"):
        return f"io_uring exists only on Linux (this is {sys.platform})"
    installed = _installed_liburing()
    if installed is None:
        return (
            f"liburing is not installed; install it with: pip install liburing=={LIBURING_VERSION}"
        )
    if installed != LIBURING_VERSION:
        # Not even imported: its API differs, and the 2026.x wheels die with SIGILL on CPUs
        # without AVX-512 as soon as a ring is made.
        return (
            f"liburing {installed} is installed; walrus-uring needs liburing=={LIBURING_VERSION}"
            " (its Python API differs between releases)"
        )
    sysctl = _read_sysctl()
    if sysctl is not None and sysctl >= 2:
        return f"io_uring is disabled by the sysctl kernel.io_uring_disabled={sysctl}"
    reason = _probe_in_child(installed, sysctl)
    if reason is not None:
        return reason
    # The same binary just ran in a child on this CPU: loading it here cannot kill us.
    try:
        import liburing  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except Exception as exc:
        return f"liburing cannot be imported ({type(exc).__name__}: {exc})"
    reason = _ring_check.check_ring(liburing, sysctl)
    if reason is not None:
        return reason
    _lib = liburing
    return None


def _library() -> Any:
    if _lib is None:
        reason = _probe_kernel()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'uring' cannot run here: {reason}")
    return _lib


# --- per-thread rings ------------------------------------------------------------------------

_local = threading.local()
_generation = 0


def _after_fork() -> None:
    # A child must not share its parent's rings: every thread ring is rebuilt on first use.
    global _generation
    _generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _Ring:
    """One thread's ring, its completion slot and a poll object on its descriptor."""

    __slots__ = ("cqe", "entries", "generation", "inflight", "lib", "poller", "ring")

    def __init__(self, lib: Any, entries: int) -> None:
        ring = _ring_check.new_ring(lib, entries)
        self.lib = lib
        self.ring: Any = ring
        self.entries = entries
        self.generation = _generation
        #: Submitted entries whose completion was not reaped yet.
        self.inflight = 0
        self.cqe = lib.io_uring_cqe()
        self.poller = select.poll()
        self.poller.register(ring.ring_fd, select.POLLIN)

    def close(self) -> None:
        ring, self.ring = self.ring, None
        if ring is not None:
            try:
                self.lib.io_uring_queue_exit(ring)
            except Exception:  # interpreter shutdown, or already gone
                pass

    def __del__(self) -> None:
        self.close()


def _thread_ring(lib: Any, needed: int) -> _Ring:
    """This thread's ring, grown (powers of two, at most MAX_RING) to hold ``needed`` SQEs."""
    ring: _Ring | None = getattr(_local, "ring", None)
    if (
        ring is not None
        and ring.ring is not None
        and ring.generation == _generation
        and ring.entries >= min(needed, MAX_RING)
    ):
        return ring
    size = MIN_RING
    while size < needed and size < MAX_RING:
        size *= 2
    if ring is not None:
        if ring.generation == _generation:
            size = max(size, ring.entries)
        ring.close()
        _local.ring = None
    ring = _Ring(lib, size)
    _local.ring = ring
    return ring


def _next_completion(lib: Any, ring: _Ring) -> tuple[int, int] | None:
    """The next ready completion as (user_data, result), marked seen; None when none is ready.
    Raises OSError if the ring itself fails."""
    uring = ring.ring
    cqe = ring.cqe
    got = lib.io_uring_peek_cqe(uring, cqe)
    if got != 0:
        if got in _NOTHING_YET:
            return None
        raise OSError(-got, f"io_uring_peek_cqe: {os.strerror(-got)}")
    try:
        return cqe.user_data, cqe.res
    finally:
        lib.io_uring_cqe_seen(uring, cqe)
        ring.inflight -= 1


def _discard_ring(ring: _Ring) -> None:
    """After an unexpected failure mid-batch: wait (a while) for what the kernel still owns
    (its buffers are alive until we return), then drop the ring, queued entries included, so
    that no stale completion can ever reach a later batch."""
    if _local.__dict__.get("ring") is ring:
        _local.ring = None
    lib = ring.lib
    for _ in range(30):
        if ring.inflight <= 0 or ring.ring is None:
            break
        try:
            while ring.inflight > 0 and _next_completion(lib, ring) is not None:
                pass
            if ring.inflight > 0:
                ring.poller.poll(_WAIT_MS)
        except BaseException:
            continue
    ring.close()


# --- the handle ------------------------------------------------------------------------------


class UringHandle:
    """The uring layer's view of one open file: the FD storage below it and its descriptor."""

    __slots__ = ("closed", "fd", "lower", "path", "writeback")

    def __init__(self, path: str, lower: Storage, fd: int) -> None:
        self.path = path
        self.lower = lower
        self.fd = fd
        #: False once sync_file_range failed on this file (some file systems refuse it).
        self.writeback = True
        self.closed = False

    def fileno(self) -> int:
        """The plain read/write descriptor (FD's)."""
        return self.fd


# --- batches ---------------------------------------------------------------------------------


def _plain(buf: Any) -> Any:
    """A buffer os.pwritev and liburing's ``iovec`` take as is: bytes, or a flat contiguous
    byte view (``iovec`` reads ``len()`` bytes from the first item's address)."""
    if type(buf) is bytes:
        return buf
    view = memoryview(buf)
    if not view.c_contiguous:
        return view.tobytes()
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


# One SQE of a batch: (kind, op index, offset, expected bytes, iovec or None, what to keep alive)
_Sqe = tuple[int, int, int, int, Any, Any]


def _pieces(items: list[Any], limit: int, max_buffers: int) -> list[tuple[int, list[Any]]]:
    """Cut ``items`` (bytes and flat byte views: ``len`` is exact) at buffer boundaries into
    pieces of at least ``limit`` bytes (the last may be smaller) and at most ``max_buffers``
    buffers, each with its size."""
    cum = list(accumulate(map(len, items)))
    out: list[tuple[int, list[Any]]] = []
    start = 0
    done = 0
    count = len(items)
    while start < count:
        end = min(bisect_left(cum, done + limit, start) + 1, count, start + max_buffers)
        out.append((cum[end - 1] - done, items[start:end]))
        done = cum[end - 1]
        start = end
    return out


def _ring_writes(size: int, items: list[Any]) -> list[tuple[int, list[Any]]]:
    """One piece of a run as the writev SQEs it needs: itself if it has at most RING_IOV_MAX
    buffers, else joined into one buffer (up to JOIN_MAX bytes), else cut every RING_IOV_MAX
    buffers."""
    if len(items) <= RING_IOV_MAX:
        return [(size, items)]
    if size <= JOIN_MAX:
        return [(size, [b"".join(items)])]
    return _pieces(items, size, RING_IOV_MAX)


def _plan(
    lib: Any, ops: Sequence[WriteOp], sync: bool, writeback: bool
) -> tuple[list[_Sqe], list[int]]:
    """Every SQE of the batch with its iovec built (all that can fail before a ring is used),
    and the indexes of the ops to write with pwritev instead (buffers that are not buffers).

    Under ``sync`` (with ``writeback``), runs of at least 2 x WRITEBACK_AHEAD are cut into
    pieces of about WRITEBACK_AHEAD bytes, each followed by a sync_file_range SQE."""
    plan: list[_Sqe] = []
    direct: list[int] = []
    make_iovec = lib.iovec
    ahead = WRITEBACK_AHEAD if sync and writeback else 0
    for index, op in enumerate(ops):
        if not op.buffers or op.nbytes == 0:
            continue
        try:
            # liburing's iovec refuses empty buffers; they write nothing anyway.
            items = [buf for buf in map(_plain, op.buffers) if len(buf)]
        except (TypeError, ValueError, BufferError):
            direct.append(index)  # pwritev raises the right error, or copes
            continue
        if not items:
            continue
        nbytes = sum(map(len, items))
        if 0 < ahead <= nbytes // 2:
            pieces = _pieces(items, ahead, len(items))
        else:
            pieces = [(nbytes, items)]
        offset = op.offset
        for piece_size, piece in pieces:
            for size, chunk in _ring_writes(piece_size, piece):
                plan.append((_WRITE, index, offset, size, make_iovec(chunk), chunk))
                offset += size
    if sync:
        if ahead and len(plan) > 1:
            # Start writing big pieces back while the chain copies the next ones; not after
            # the last write, which the fdatasync follows at once.
            with_wb: list[_Sqe] = []
            last = len(plan) - 1
            least = ahead // 2
            for i, sqe in enumerate(plan):
                with_wb.append(sqe)
                if i != last and sqe[3] >= least:
                    with_wb.append((_WRITEBACK, sqe[1], sqe[2], sqe[3], None, None))
            plan = with_wb
        plan.append((_FSYNC, -1, 0, 0, None, None))
    return plan, direct


def _prep(lib: Any, ring: Any, fd: int, part: list[_Sqe], base: int, link: bool) -> None:
    """Put ``part`` in the submission queue (user_data = 1 + index in the batch: liburing
    2024.5.3 refuses a user_data of 0)."""
    get_sqe = lib.io_uring_get_sqe
    set_flags = lib.io_uring_sqe_set_flags
    last = len(part) - 1
    for i, (kind, _index, offset, nbytes, iov, _keep) in enumerate(part):
        sqe = get_sqe(ring)
        if not sqe:  # cannot happen: the ring is sized for the part and was empty
            raise OSError(errno.EBUSY, "io_uring submission queue is full")
        if kind == _WRITE:
            lib.io_uring_prep_writev(sqe, fd, iov, len(iov), offset)
            flag = IOSQE_IO_LINK
        elif kind == _WRITEBACK:
            lib.io_uring_prep_sync_file_range(sqe, fd, nbytes, offset, SYNC_FILE_RANGE_WRITE)
            flag = IOSQE_IO_HARDLINK  # its failure must not cancel the rest of the chain
        else:
            lib.io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC)
            flag = 0
        sqe.user_data = base + i + 1
        if link and i != last:
            set_flags(sqe, flag)


def _wait(lib: Any, ring: _Ring) -> None:
    """Block until a completion is ready, with the GIL released (poll on the ring's fd)."""
    if not ring.poller.poll(_WAIT_MS):
        lib.io_uring_get_events(ring.ring)  # nothing after a while: flush deferred work


def _reap(lib: Any, ring: _Ring, results: list[int]) -> None:
    """Collect every in-flight completion into ``results`` (by user_data); every CQE is marked
    seen as soon as it is read."""
    while ring.inflight > 0:
        completion = _next_completion(lib, ring)
        if completion is None:
            _wait(lib, ring)
            continue
        user_data, res = completion
        results[user_data - 1] = res


def _submit_all(lib: Any, ring: _Ring, count: int) -> None:
    """Submit ``count`` queued SQEs (io_uring_enter may take fewer at a time)."""
    submit = lib.io_uring_submit
    done = 0
    while done < count:
        n = submit(ring.ring)
        if not n:
            raise OSError(errno.EAGAIN, "io_uring_submit accepted no entry")
        done += n
        ring.inflight += n


def _pwritev_from(fd: int, buffers: Buffers, offset: int, nbytes: int, done: int) -> None:
    """Write bytes ``done..nbytes`` of ``buffers`` at ``offset + done`` with pwritev (continued
    after short writes, IOV_MAX buffers at a time)."""
    if done == 0 and len(buffers) <= IOV_MAX:
        try:
            done = os.pwritev(fd, buffers, offset)
        except (TypeError, ValueError, BufferError):  # e.g. a non-contiguous view
            done = 0
        if done == nbytes:
            return
    views = [memoryview(_plain(b)) for b in buffers]
    i = 0
    skip = done
    while i < len(views) and skip >= views[i].nbytes:
        skip -= views[i].nbytes
        i += 1
    if skip:
        views[i] = views[i][skip:]
    while done < nbytes:
        chunk = views[i : i + IOV_MAX]
        if not chunk:
            raise OSError(errno.EIO, f"the buffers hold fewer than the {nbytes} bytes declared")
        n = os.pwritev(fd, chunk, offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"pwritev made no progress at offset {offset + done}")
        done += n
        while i < len(views) and n >= views[i].nbytes:
            n -= views[i].nbytes
            i += 1
        if n:
            views[i] = views[i][n:]


def _write_direct(fd: int, ops: Sequence[WriteOp], sync: bool) -> None:
    """A batch too small for the ring to pay: pwritev per run, then fdatasync if asked."""
    for op in ops:
        bufs = op.buffers
        if len(bufs) > IOV_MAX and op.nbytes <= JOIN_MAX:
            try:
                data = b"".join(bufs)
            except (TypeError, BufferError):
                pass
            else:
                _pwritev_from(fd, (data,), op.offset, len(data), 0)
                continue
        _pwritev_from(fd, bufs, op.offset, op.nbytes, 0)
    if sync:
        _datasync(fd)


@hookimpl
def walrus_backend_info() -> BackendInfo:
    """uring layers over fd on Linux; "auto" prefers it there when the probe passes."""
    return BackendInfo(
        version=__version__,
        layers_over="fd",
        platforms=("linux",),
        install="pip install walrus-uring",
        description=(
            "large durable batches as one io_uring submission (writeback-ahead, linked"
            " fdatasync); everything else as fd"
        ),
        probe=probe,
        auto_priority=20,
        family="fd",
    )


@hookimpl
def walrus_open(spec: OpenSpec, lower: Storage | None) -> UringHandle:
    """Wrap the FD storage opened below (uring keeps no per-file kernel state)."""
    if lower is None:
        raise BackendUnavailableError("backend 'uring' layers over fd: it needs a lower storage")
    fileno = getattr(lower.handle, "fileno", None)
    if fileno is None:
        raise BackendUnavailableError(
            f"backend 'uring' needs file descriptors from the backend below it ({lower!r})"
        )
    _library()
    return UringHandle(spec.path, lower, fileno())


@hookimpl
def walrus_batch_submit(handle: UringHandle, ops: Sequence[WriteOp], sync: bool) -> None:
    """Write every run, then sync if asked: on the ring (one submission: writev SQEs, under
    ``sync`` chained with writeback-ahead and a linked fdatasync) from RING_MIN_SYNC /
    RING_MIN bytes, else with pwritev and fdatasync system calls.

    Returns when every completion is reaped. A failed SQE raises OSError with its errno; a
    short or cancelled write is completed with pwritev (and synced again under ``sync``).
    """
    fd = handle.fd
    total = 0
    for op in ops:
        total += op.nbytes
    if total < (RING_MIN_SYNC if sync else RING_MIN):
        _write_direct(fd, ops, sync)
        return
    lib = _lib if _lib is not None else _library()
    plan, direct = _plan(lib, ops, sync, handle.writeback)
    for index in direct:
        op = ops[index]
        _pwritev_from(fd, op.buffers, op.offset, op.nbytes, 0)
    if not plan or plan[0][0] == _FSYNC:  # nothing (left) to write
        if sync:
            _datasync(fd)
        return
    total = len(plan)
    ring = _thread_ring(lib, total)
    results = [0] * total
    step = ring.entries
    for base in range(0, total, step):
        part = plan[base : base + step]
        try:
            _prep(lib, ring.ring, fd, part, base, sync)
            _submit_all(lib, ring, len(part))
            _reap(lib, ring, results)
        except BaseException:
            # The ring may hold queued or in-flight entries: never reuse it.
            _discard_ring(ring)
            raise
    _finish(handle, ops, plan, results, sync)


def _finish(
    handle: UringHandle, ops: Sequence[WriteOp], plan: list[_Sqe], results: list[int], sync: bool
) -> None:
    """Check every completion: raise the first error, complete what was short or cancelled."""
    redo: dict[int, int] = {}  # op index -> bytes known written from its start
    pieces: dict[int, int] = {}
    failed: tuple[int, _Sqe] | None = None
    synced = False
    for sqe, res in zip(plan, results, strict=True):
        kind = sqe[0]
        if kind == _WRITE:
            index = sqe[1]
            pieces[index] = pieces.get(index, 0) + 1
            if res == sqe[3]:
                continue
            if res < 0 and res != -errno.ECANCELED:
                if failed is None:
                    failed = (-res, sqe)
                continue
            redo[index] = res if 0 < res < sqe[3] and sqe[2] == ops[index].offset else 0
        elif kind == _WRITEBACK:
            if res < 0 and res != -errno.ECANCELED:
                handle.writeback = False  # the file system refuses it: stop asking
        elif res == 0:
            synced = True
        elif res != -errno.ECANCELED and failed is None:
            failed = (-res, sqe)
    if failed is not None:
        err, sqe = failed
        what = "fdatasync" if sqe[0] == _FSYNC else f"writev of {sqe[3]} bytes at {sqe[2]}"
        raise OSError(err, f"{os.strerror(err)} (io_uring {what})", handle.path)
    for index, done in redo.items():
        op = ops[index]
        if pieces[index] != 1:
            done = 0  # a run split over several SQEs: rewrite it whole (idempotent)
        _pwritev_from(handle.fd, op.buffers, op.offset, op.nbytes, done)
    if sync and (redo or not synced):
        _datasync(handle.fd)  # small batch, or the chain was cut: sync with a system call


@hookimpl
def walrus_close(handle: UringHandle) -> None:
    """Nothing of uring's is per file (rings are per thread): close the FD storage below."""
    if handle.closed:
        return
    handle.closed = True
    handle.lower.close()
