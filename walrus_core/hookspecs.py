"""Hook specifications of the ``walrus`` plugin project.

A storage backend is a module (or any object) with ``@hookimpl`` functions, published under the
entry-point group ``walrus.backends``; the entry point's name is the backend's name. The engine
builds, for each open instance, a *chain* of backends (a layer on top, the backend it layers over
below it) and resolves every storage operation once, when a file is opened:

* each operation goes to the first plugin of the chain, from the top, that implements it;
* that implementation receives the handle returned by the nearest ``walrus_open`` at or below it
  in the chain (so a layer that only implements ``walrus_batch_submit`` gets the lower backend's
  handle, and a layer that implements ``walrus_open`` gets its own handle everywhere it answers).

Implementations are called with positional arguments in the order given here, and directly (not
through pluggy) on the hot path, so keep the parameter names and order of these specs.

Errors: raise ``OSError`` (with the right ``errno``) for I/O failures. The engine turns them into
:class:`walrus_core.errors.StorageError` and keeps the log consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from walrus_core.info import Stats
    from walrus_core.plugins import BackendInfo
    from walrus_core.storage import Buffers, OpenSpec, Storage, WriteOp

PROJECT = "walrus"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def walrus_backend_info() -> BackendInfo:
    """Describe the backend this plugin provides.

    Return a :class:`walrus_core.plugins.BackendInfo`: its version, the backend it layers over
    (``layers_over``, None for a base backend), the platforms it serves, the ``pip install``
    line that provides it, and a ``probe`` callable that says whether it can run here.
    Called once per plugin when backends are discovered.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_open(spec: OpenSpec, lower: Storage | None) -> Any:
    """Open (and, with ``spec.create``, create) the file ``spec.path``; return a handle.

    The file must end up at least ``spec.size`` bytes long, extended sparsely (ftruncate): never
    write zeros to size it. With ``spec.sync_each`` every later ``walrus_write`` must be durable
    when it returns. ``lower`` is the storage opened by the chain below this plugin (None for a
    base backend): a layer wraps it, delegates to it, or ignores it. The handle is opaque to
    the engine and is passed back to this plugin's other hooks.

    One file may be opened and closed many times while a log is open: the engine keeps a
    bounded number of data files open and reopens them on demand, after flushing a dirty one.
    Recovery may also look at a data file's holes (``SEEK_DATA``) through a descriptor of its
    own, so the bytes written must be the bytes of the file at ``spec.path``.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_write(handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
    """Write ``buffers`` back to back at byte ``offset``: all ``nbytes`` of them, or raise.

    Buffers are bytes-like (bytes, bytearray, memoryview). Use one vectored call where possible
    (pwritev). A short write must be continued; an error must raise ``OSError``. A write that
    returned must survive a kill -9 of the process (the page cache is enough).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_read(handle: Any, offset: int, size: int) -> bytes:
    """Return ``size`` bytes from byte ``offset`` (fewer only at end of file)."""
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_flush(handle: Any) -> None:
    """Make every write that completed so far durable (fdatasync, msync of the dirty range)."""
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_batch_submit(handle: Any, ops: Sequence[WriteOp], sync: bool) -> None:
    """Write every run of a batch, then, when ``sync`` is true, make them durable.

    Each :class:`walrus_core.storage.WriteOp` is one contiguous run (offset, buffers, nbytes).
    Submit them with as few system calls as the backend can (one vectored call per run, or one
    ring submission for all). Return only when every run is written (and synced, if asked);
    raise ``OSError`` if any run failed. Buffers must be kept alive until their I/O completed.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_discard(handle: Any, offset: int, size: int) -> None:
    """Give ``size`` bytes at ``offset`` back to the file system; they read as zeros afterwards
    and the file keeps its size (``walrus_core.holes.punch_hole`` does it on Linux).

    Optional: a chain that does not implement it keeps the space of consumed blocks until
    their whole file can be deleted. Raise ``OSError`` with ``errno.EOPNOTSUPP`` where the
    file system refuses; the engine then stops asking for that directory and logs why once.
    The engine never writes to, and no reader relies on, a range after discarding it.
    """
    raise NotImplementedError


@hookspec
def walrus_stats_report(data_dir: str, stats: Stats) -> None:
    """Receive the counters of an open log (``Walrus.stats()``), to export them elsewhere.

    Called through pluggy on every plugin that implements it (backends, and plugins published
    under the entry-point group ``walrus.observers``): from the log's background thread about
    every ten seconds, and once from ``close()``. It must return quickly and must not call
    back into the log; an exception is logged and ignored.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def walrus_close(handle: Any) -> None:
    """Release the handle (close descriptors, unmap). Called once; flush was called before if
    the schedule needed it."""
    raise NotImplementedError
