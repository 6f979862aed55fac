"""A fault-injecting storage layer for Walrus: EIO/ENOSPC on the Nth operation, short and torn
writes, and simulated power loss.

It is an ordinary backend plugin that layers over another backend (fd by default), which is
also the worked example of a third-party layer. Each :class:`FaultLayer` instance carries its
own :class:`FaultPlan`, so tests build one per WAL instead of flipping global switches::

    plan = FaultPlan()
    layer = FaultLayer(plan, over="fd")
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    wal = Walrus(path, backend="faults", registry=registry)
    plan.fail("write", nth=3, errno=errno.ENOSPC)     # the 3rd write from now fails
    ...
    plan.power_loss(seed=7)                          # drop what was not flushed; then reopen

Fault kinds of :meth:`FaultPlan.fail`: by default the operation fails *before* anything
reaches the storage below (nothing written); ``torn=True`` lands part of the bytes first;
``after_write=True`` lets the operation complete below, entirely, and then raises (the bytes
are in the file, or the flush is done, but the caller sees the error: a sync that fails after
the write, a lost acknowledgement)::

    plan.fail("write", after_write=True, errno=errno.EIO)         # lands, then EIO
    plan.fail("batch_submit", after_write=True, kind="data")      # every run lands (and syncs)
    plan.fail("flush", after_write=True)                          # durable, then EIO

Power loss: the layer remembers, per file, the old contents of every range written since the
file's last completed flush (writes through an ``O_DSYNC`` storage count as flushed at once).
``power_loss()`` puts those old bytes back (all of them, or a random subset of 512-byte
sectors with ``partial=True``) and makes every later operation of the dead instance fail.
"""

from __future__ import annotations

import errno as errno_codes
import os
import random
import threading
from collections.abc import Sequence

import attrs

from walrus_core.plugin import BackendInfo, Buffers, OpenSpec, Storage, WriteOp, hookimpl

__version__ = "0.1.0"
SECTOR = 512
OPS = ("write", "read", "flush", "batch_submit", "discard")


@attrs.define
class _Rule:
    op: str
    countdown: int
    errno: int
    kind: str | None
    torn: bool  # write part of the bytes before failing
    repeat: bool
    after_write: bool = False  # complete the operation below, then fail


class FaultPlan:
    """What to break, and the bookkeeping for power loss. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.counts: dict[str, int] = dict.fromkeys(OPS, 0)
        self.injected: list[tuple[str, int, str]] = []
        self.dead = False
        self._undo: dict[str, list[tuple[int, bytes]]] = {}
        self.power_losses = 0

    # -- configuring ------------------------------------------------------------------------
    def fail(
        self,
        op: str,
        *,
        nth: int = 1,
        errno: int = errno_codes.EIO,
        kind: str | None = None,
        torn: bool = False,
        repeat: bool = False,
        after_write: bool = False,
    ) -> None:
        """Make the ``nth`` next ``op`` (write, read, flush, batch_submit) on files of ``kind``
        (``"data"``, ``"cursors"`` or any) raise ``OSError(errno)``; with ``torn`` a write
        first lands part of its bytes; with ``repeat`` every later one fails too.

        With ``after_write`` (write, batch_submit and flush only; not with ``torn``) the
        operation is carried out completely by the storage below before the error is raised:
        a write's bytes all land, a batch lands every run (and syncs when asked), a flush makes
        the file durable. For power loss the bytes count as unflushed unless the operation
        itself made them durable (a synced batch, a flush, an ``O_DSYNC`` storage).
        """
        if op not in OPS:
            raise ValueError(f"op must be one of {OPS}")
        if after_write and op == "read":
            raise ValueError("after_write applies to write, batch_submit and flush")
        if after_write and torn:
            raise ValueError("after_write and torn exclude each other")
        with self._lock:
            self._rules.append(_Rule(op, nth, errno, kind, torn, repeat, after_write))

    def heal(self) -> None:
        """Remove every pending fault (space came back)."""
        with self._lock:
            self._rules.clear()

    def _check(self, op: str, kind: str) -> _Rule | None:
        with self._lock:
            if self.dead:
                raise OSError(errno_codes.EIO, "the simulated machine lost power")
            self.counts[op] += 1
            for rule in self._rules:
                if rule.op != op or (rule.kind is not None and rule.kind != kind):
                    continue
                rule.countdown -= 1
                if rule.countdown <= 0:
                    if not rule.repeat:
                        self._rules.remove(rule)
                    self.injected.append((op, rule.errno, kind))
                    return rule
            return None

    # -- power loss -------------------------------------------------------------------------
    def _remember(self, path: str, offset: int, old: bytes) -> None:
        with self._lock:
            self._undo.setdefault(path, []).append((offset, old))

    def _flushed(self, path: str) -> None:
        """A flush (or a synced batch) of ``path`` completed below. If the power went while
        it ran, it did not complete as far as the caller can tell: its writes were undone, so
        the call must fail too instead of reporting them durable."""
        with self._lock:
            if self.dead:
                raise OSError(errno_codes.EIO, "the simulated machine lost power")
            self._undo.pop(path, None)

    def power_loss(self, seed: int | None = None, *, partial: bool = False) -> int:
        """Undo every write not covered by a completed flush; returns the bytes reverted.

        With ``partial`` each 512-byte sector of those writes is kept or reverted at random
        (a disk that persisted some sectors of an unflushed write). The layer is dead after
        this: every later operation raises EIO, so the instance must be closed and reopened.
        """
        rng = random.Random(seed)
        reverted = 0
        with self._lock:
            self.dead = True
            self.power_losses += 1
            undo, self._undo = self._undo, {}
        for path, writes in undo.items():
            fd = os.open(path, os.O_RDWR)
            try:
                for offset, old in reversed(writes):
                    if not partial:
                        os.pwrite(fd, old, offset)
                        reverted += len(old)
                        continue
                    for start in range(0, len(old), SECTOR):
                        if rng.random() < 0.5:
                            chunk = old[start : start + SECTOR]
                            os.pwrite(fd, chunk, offset + start)
                            reverted += len(chunk)
            finally:
                os.close(fd)
        return reverted


class _Handle:
    __slots__ = ("durable", "kind", "lower", "path", "plan")

    def __init__(self, plan: FaultPlan, lower: Storage, spec: OpenSpec) -> None:
        self.plan = plan
        self.lower = lower
        self.path = spec.path
        self.kind = spec.kind
        self.durable = spec.sync_each


def _injected(rule: _Rule) -> OSError:
    return OSError(rule.errno, os.strerror(rule.errno) + " (injected)")


def _flat(buffers: Buffers) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in buffers)


class FaultLayer:
    """The plugin object: register one instance per WAL under a backend name of your choice."""

    def __init__(self, plan: FaultPlan | None = None, *, over: str = "fd") -> None:
        self.plan = plan if plan is not None else FaultPlan()
        self.over = over

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        """A layer over ``self.over``; never picked by ``"auto"``."""
        return BackendInfo(
            version=__version__,
            layers_over=self.over,
            install="pip install walrus-faults",
            description="injects I/O faults and simulates power loss (testing)",
        )

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> _Handle:
        """Wrap the lower storage."""
        if lower is None:
            raise OSError(errno_codes.EINVAL, "the faults layer needs a backend below it")
        if self.plan.dead:  # the engine closes lower when walrus_open raises
            raise OSError(errno_codes.EIO, "the simulated machine lost power")
        return _Handle(self.plan, lower, spec)

    def _save(self, handle: _Handle, offset: int, nbytes: int, durable: bool) -> None:
        if not durable and nbytes:
            handle.plan._remember(handle.path, offset, handle.lower.read(offset, nbytes))

    @hookimpl
    def walrus_write(self, handle: _Handle, offset: int, buffers: Buffers, nbytes: int) -> None:
        """Maybe fail (torn: part of the bytes land first; after_write: all of them land), else
        record and delegate."""
        rule = handle.plan._check("write", handle.kind)
        self._save(handle, offset, nbytes, handle.durable)
        if rule is not None and rule.after_write:
            handle.lower.write(offset, buffers, nbytes)
            raise _injected(rule)
        if rule is not None:
            if rule.torn and nbytes > 1:
                data = _flat(buffers)[: max(1, nbytes // 2)]
                handle.lower.write(offset, (data,), len(data))
            raise OSError(rule.errno, os.strerror(rule.errno) + " (injected)")
        handle.lower.write(offset, buffers, nbytes)

    @hookimpl
    def walrus_read(self, handle: _Handle, offset: int, size: int) -> bytes:
        """Maybe fail, else delegate."""
        rule = handle.plan._check("read", handle.kind)
        if rule is not None:
            raise OSError(rule.errno, os.strerror(rule.errno) + " (injected)")
        return handle.lower.read(offset, size)

    @hookimpl
    def walrus_flush(self, handle: _Handle) -> None:
        """Maybe fail (nothing becomes durable; after_write: the flush completes first), else
        delegate and forget the undo log."""
        rule = handle.plan._check("flush", handle.kind)
        if rule is not None and rule.after_write:
            handle.lower.flush()
            handle.plan._flushed(handle.path)
            raise _injected(rule)
        if rule is not None:
            raise OSError(rule.errno, os.strerror(rule.errno) + " (injected)")
        handle.lower.flush()
        handle.plan._flushed(handle.path)

    @hookimpl
    def walrus_batch_submit(self, handle: _Handle, ops: Sequence[WriteOp], sync: bool) -> None:
        """Maybe fail part-way (earlier runs landed, torn: half of the failing one; after_write:
        the whole batch landed, synced if asked), else delegate; a synced batch is durable, so
        its file's undo log is dropped."""
        rule = handle.plan._check("batch_submit", handle.kind)
        # Only ``sync`` makes a batch durable, also on an O_DSYNC storage (backends may write
        # batches through a plain descriptor and sync once).
        for op in ops:
            self._save(handle, op.offset, op.nbytes, False)
        if rule is not None and rule.after_write:
            handle.lower.batch_submit(ops, sync)
            if sync:
                handle.plan._flushed(handle.path)
            raise _injected(rule)
        if rule is not None:
            landed = ops[: len(ops) // 2]
            if landed:
                handle.lower.batch_submit(landed, False)
            if rule.torn:
                failing = ops[len(landed)]
                data = _flat(failing.buffers)[: max(1, failing.nbytes // 2)]
                handle.lower.write(failing.offset, (data,), len(data))
            raise OSError(rule.errno, os.strerror(rule.errno) + " (injected)")
        handle.lower.batch_submit(ops, sync)
        if sync:
            handle.plan._flushed(handle.path)

    @hookimpl
    def walrus_discard(self, handle: _Handle, offset: int, size: int) -> None:
        """Maybe fail (nothing released), else delegate; a chain below without the operation
        is reported as EOPNOTSUPP, as a file system that refuses would be."""
        rule = handle.plan._check("discard", handle.kind)
        if rule is not None:
            raise _injected(rule)
        discard = handle.lower.discard
        if discard is None:
            raise OSError(errno_codes.EOPNOTSUPP, "the backend below cannot discard")
        discard(offset, size)

    @hookimpl
    def walrus_close(self, handle: _Handle) -> None:
        """Close the lower storage (even after a power loss, to release descriptors)."""
        handle.lower.close()


#: The instance the entry point registers (no faults planned until a test adds some).
default_layer = FaultLayer()
