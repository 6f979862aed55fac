"""Hook specifications of the ``walrus`` plugin project: the contract of a storage backend.

A storage backend is a module (or any object) with ``@hookimpl`` functions, published under the
entry-point group ``walrus.backends``; the entry point's name is the backend's name. Everything
an author imports comes from :mod:`walrus_core.plugin`.

**Resolution.** The engine builds, for each open log, a *chain* of backends: a base backend at
the bottom, layers stacked over it (``BackendInfo.layers_over``). Every storage operation is
resolved once, when a file is opened, and then called directly, not through ``pm.hook``
(pluggy's dispatch would cost more than the operation on the hot path):

* each operation goes to the first plugin of the chain, from the top, that implements it;
* that implementation receives the handle returned by the nearest ``walrus_open`` at or below it
  in the chain (a layer that only implements ``walrus_batch_submit`` gets the lower backend's
  handle; a layer that implements ``walrus_open`` gets its own handle everywhere it answers).

Because calls are direct and positional, registration enforces what they rely on (see
:mod:`walrus_core.contract`): every ``walrus_*`` function must name a hook below, with the
parameters in the order given here; pluggy's ``wrapper``, ``hookwrapper``, ``tryfirst`` and
``trylast`` options are refused (the chain is the only ordering, and a wrapper would return a
generator instead of doing the work); so are generator functions. A refused plugin is reported
by ``walrus_core.available_backends()`` and ``walrus backends`` with the rule it broke; the
other backends stay usable.

**Offsets and buffers.** Offsets are byte positions in one file, from 0. ``buffers`` is a
sequence of bytes-like objects (bytes, bytearray, memoryview) to be written back to back. They
are only valid during the call (for ``walrus_batch_submit``: until it returns): copy what must
outlive it. A write is all or nothing from the caller's view: continue a short write, raise if
the rest cannot be written.

**Threads.** One handle is used from several threads at once: reads (``walrus_read``) run
alongside writes and flushes of the same handle, and writes of different topics (or cursors)
that share a file run concurrently too, on byte ranges that never overlap; the background
flusher calls ``walrus_flush`` from its own thread while the application appends. No call of a
handle runs alongside or after its ``walrus_close``. One file may have two handles open for a
moment (the engine reopens a file with a larger size before closing the old handle), so state
shared by a file's handles must be guarded per file, not per handle.

**Handle lifetime.** ``walrus_open`` returns a handle; the engine passes it to the same plugin's
other hooks until ``walrus_close``, called exactly once, after a ``walrus_flush`` when the fsync
schedule needs one. A log may open and close one file many times (it keeps a bounded number of
data files open). A layer whose ``walrus_open`` receives ``lower`` owns it: it closes ``lower``
from its ``walrus_close``. When ``walrus_open`` raises, the engine closes ``lower`` itself.

**Errors.** I/O failures raise ``OSError`` with the right ``errno`` (``ENOSPC``, ``EIO``, ...);
the engine turns them into :class:`walrus_core.errors.StorageError` and keeps the log
consistent. :class:`walrus_core.errors.BackendUnavailableError` may come only from
``walrus_open`` and from ``BackendInfo.probe``: it means "this backend cannot run here", and the
engine reports it with the reason instead of retrying. Any other exception is a bug in the
backend and reaches the application unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from walrus_core.info import Stats
    from walrus_core.storage import BackendInfo, Buffers, OpenSpec, Storage, WriteOp

__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "walrus_backend_info",
    "walrus_batch_submit",
    "walrus_close",
    "walrus_discard",
    "walrus_flush",
    "walrus_open",
    "walrus_read",
    "walrus_stats_report",
    "walrus_write",
]

PROJECT = "walrus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def walrus_backend_info() -> BackendInfo:
    """Describe the backend this plugin provides.

    Called once per plugin, when backends are discovered; the answer is kept for the life of
    the process.

    :return: a :class:`walrus_core.plugin.BackendInfo`: version, the backend it layers over,
        the platforms and priority ``"auto"`` uses, the install line, whether writes are
        durable, and a ``probe`` that says whether it can run here.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_open(spec: OpenSpec, lower: Storage | None) -> Any:
    """Open (and, with ``spec.create``, create) the file ``spec.path``; return a handle.

    The engine lists data files in the directory and takes their size from the file system,
    so the file must exist at ``spec.path`` and be at least ``spec.size`` bytes long, extended
    sparsely (ftruncate): never write zeros to size it. Tools that read a directory without a
    backend (``WalrusReader``, ``walrus verify``) read the file's own bytes; a backend that keeps
    them elsewhere says so in ``BackendInfo.description`` (``walrus backends --json`` shows
    it). With ``spec.sync_each`` every later ``walrus_write`` must be durable when it returns.

    :param spec: what to open: path, minimum size, create, sync_each, kind (data or cursors).
    :param lower: the storage the chain below this plugin opened (None for a base backend): a
        layer wraps it, delegates to it, or ignores it, and closes it from ``walrus_close``.
    :return: an opaque handle, passed back to this plugin's other hooks.
    :raises OSError: the file cannot be opened or created (``ENOENT``, ``EACCES``, ...).
    :raises BackendUnavailableError: this backend cannot serve this file here.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_write(handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Write ``buffers`` back to back at byte ``offset``: all ``nbytes`` of them, or raise.

    Use one vectored call where possible (pwritev). A short write must be continued where it
    stopped. A write that returned must survive a kill -9 of the process (the page cache is
    enough) and be seen by every later ``walrus_read`` of the same file.

    :param handle: what ``walrus_open`` returned.
    :param offset: the byte position of the first buffer.
    :param buffers: bytes-like objects, valid only during the call.
    :param nbytes: their total length.
    :raises OSError: with ``errno`` (``ENOSPC``, ``EIO``); part of the bytes may have landed.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_read(handle: Any, offset: int, size: int) -> bytes:
    """Return ``size`` bytes from byte ``offset``; fewer only at end of file.

    Runs alongside writes and flushes of the same handle, from any thread. Bytes never written
    read as zeros.

    :param handle: what ``walrus_open`` returned.
    :param offset: the byte position to read from.
    :param size: how many bytes to return.
    :return: the bytes (``bytes``, or another bytes-like object the caller may keep).
    :raises OSError: with ``errno`` (``EIO``).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_flush(handle: Any) -> None:
    """Make every write that completed so far durable (fdatasync, msync of the dirty range).

    Called from any thread, alongside reads and writes of the same handle: the background
    flusher, ``Walrus.flush()`` and ``close()``, when a data file is retired or evicted from the
    open files, and around recovery and reclamation. (``sync_each`` writes and synced batches do
    not call it: they are durable by ``spec.sync_each`` and ``walrus_batch_submit(sync=True)``.)

    :param handle: what ``walrus_open`` returned.
    :raises OSError: with ``errno`` (``EIO``); the engine then treats the unsynced writes as
        possibly lost.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_batch_submit(handle: Any, ops: Sequence[WriteOp], sync: bool) -> None:
    """Write every run of a batch, then, when ``sync`` is true, make them durable.

    Each :class:`walrus_core.plugin.WriteOp` is one contiguous run (offset, buffers, nbytes).
    Submit them with as few system calls as the backend can (one vectored call per run, or one
    ring submission for all). Return only when every run is written (and synced, if asked).

    :param handle: what ``walrus_open`` returned.
    :param ops: the runs, in no particular order; their buffers are valid until this returns.
    :param sync: make the runs durable before returning (as ``walrus_flush`` would).
    :raises OSError: if any run failed; any of the runs may have landed.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_discard(handle: Any, offset: int, size: int) -> None:
    """Give ``size`` bytes at ``offset`` back to the file system; they read as zeros afterwards
    and the file keeps its size (``walrus_core.plugin.punch_hole`` does it on Linux).

    Optional: a chain that does not implement it keeps the space of consumed blocks until their
    whole file can be deleted. The engine never writes to, and no reader relies on, a range
    after discarding it.

    :param handle: what ``walrus_open`` returned.
    :param offset: the first byte to give back.
    :param size: how many bytes.
    :raises OSError: ``errno.EOPNOTSUPP`` where the file system refuses; the engine then stops
        asking for that directory and logs why once.
    """
    raise NotImplementedError


@hookspec
def walrus_stats_report(data_dir: str, stats: Stats) -> None:
    """Receive the counters of an open log (``Walrus.stats()``), to export them elsewhere.

    The one hook called through pluggy, on every plugin that implements it (backends, and
    plugins published under the entry-point group ``walrus.observers``): from the log's
    background thread about every ten seconds, and once from ``close()``. It must return
    quickly and must not call back into the log; an exception is logged and ignored.

    :param data_dir: the log's directory.
    :param stats: a :class:`walrus_core.Stats` snapshot.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_close(handle: Any) -> None:
    """Release the handle (close descriptors, unmap), and ``lower`` if ``walrus_open`` got one.

    Called exactly once per handle, after ``walrus_flush`` when the fsync schedule needed it;
    no other call of the handle runs alongside it or after it.

    :param handle: what ``walrus_open`` returned.
    :raises OSError: closing failed; the engine reports it and forgets the handle anyway.
    """
    raise NotImplementedError
