"""Backends that break the plugin contract, one rule each, and backends that register fine but
break a behaviour guarantee (for the conformance suite to catch).

Every class here derives from :class:`WorkingFd`, a small correct base backend on the os
module's positional I/O (self-contained, so these fixtures run in every tox env whatever
backend is installed), and differs from it in exactly one way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

from walrus_core.plugin import BackendInfo, Buffers, OpenSpec, Storage, WriteOp, hookimpl


def _open(spec: OpenSpec) -> int:
    fd = os.open(spec.path, os.O_RDWR | (os.O_CREAT if spec.create else 0), 0o644)
    if os.fstat(fd).st_size < spec.size:
        os.ftruncate(fd, spec.size)
    return fd


def _write(fd: int, offset: int, buffers: Buffers, nbytes: int) -> None:
    data = b"".join(bytes(b) for b in buffers)
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _read(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)


class WorkingFd:
    """A correct base backend: os.pread/os.pwrite on one descriptor."""

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(version="1", description="positional I/O, as a test backend")

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> Any:
        return _open(spec)

    @hookimpl
    def walrus_write(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        _write(handle, offset, buffers, nbytes)

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return _read(handle, offset, size)

    @hookimpl
    def walrus_flush(self, handle: Any) -> None:
        os.fsync(handle)

    @hookimpl
    def walrus_batch_submit(self, handle: Any, ops: Sequence[WriteOp], sync: bool) -> None:
        for op in ops:
            _write(handle, op.offset, op.buffers, op.nbytes)
        if sync:
            os.fsync(handle)

    @hookimpl
    def walrus_close(self, handle: Any) -> None:
        os.close(handle)


# --- one broken registration rule each ------------------------------------------------------


class SwappedReadParameters(WorkingFd):
    """Right names, wrong order: would be called with size and offset swapped."""

    @hookimpl
    def walrus_read(self, handle: Any, size: int, offset: int) -> bytes:  # type: ignore[override]
        return _read(handle, offset, size)


class MisspelledHook(WorkingFd):
    """A typo: pluggy would register it as a hook nobody calls."""

    @hookimpl
    def walrus_wirte(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        _write(handle, offset, buffers, nbytes)


class UnmarkedHook(WorkingFd):
    """A hook-named function that forgot @hookimpl (the inherited one is marked: shadowed)."""

    def walrus_flush(self, handle: Any) -> None:
        os.fsync(handle)


class WrapperWrite(WorkingFd):
    """pluggy's wrapping idiom: with direct calls, write would return a generator and write
    nothing."""

    @hookimpl(wrapper=True)
    def walrus_write(  # type: ignore[override]
        self, handle: Any, offset: int, buffers: Buffers, nbytes: int
    ) -> Iterator[None]:
        yield


class HookwrapperFlush(WorkingFd):
    """The old-style wrapper option."""

    @hookimpl(hookwrapper=True)
    def walrus_flush(self, handle: Any) -> None:
        os.fsync(handle)


class TryfirstRead(WorkingFd):
    """Ordering options: the chain is the only order."""

    @hookimpl(tryfirst=True)
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return _read(handle, offset, size)


class TrylastClose(WorkingFd):
    @hookimpl(trylast=True)
    def walrus_close(self, handle: Any) -> None:
        os.close(handle)


class GeneratorRead(WorkingFd):
    """A generator where a value is expected."""

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> Iterator[bytes]:  # type: ignore[override]
        yield _read(handle, offset, size)


class AsyncFlush(WorkingFd):
    """An async function returns a coroutine instead of flushing."""

    @hookimpl
    async def walrus_flush(self, handle: Any) -> None:  # type: ignore[override]
        os.fsync(handle)


class NoBackendInfo:
    """Storage hooks but no walrus_backend_info."""

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> Any:
        return _open(spec)


class WrongBackendInfo(WorkingFd):
    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return {"version": "1"}  # type: ignore[return-value]


#: Rule identifier -> a plugin object breaking only that rule.
BROKEN_RULES: dict[str, list[Any]] = {
    "parameter-order": [SwappedReadParameters()],
    "unknown-hook": [MisspelledHook()],
    "unmarked-hook": [UnmarkedHook()],
    "unsupported-option": [WrapperWrite(), HookwrapperFlush(), TryfirstRead(), TrylastClose()],
    "generator-function": [GeneratorRead()],
    "async-function": [AsyncFlush()],
    "backend-info": [NoBackendInfo(), WrongBackendInfo()],
}


# --- registers fine, breaks a behaviour ----------------------------------------------------


class LosesLateWrites(WorkingFd):
    """Drops writes that land past the first 8 KiB of a file: they are never stored."""

    @hookimpl
    def walrus_write(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        if offset < 8192:
            _write(handle, offset, buffers, nbytes)


class ReadsOneByteLate(WorkingFd):
    """Reads from the wrong offset (one byte later)."""

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return _read(handle, offset + 1, size)


lossy = LosesLateWrites()
off_by_one = ReadsOneByteLate()
working = WorkingFd()
swapped = SwappedReadParameters()


class MisspelledUnmarked(WorkingFd):
    """A typo without the marker: neither pluggy nor the engine would ever call it."""

    def walrus_wrtie(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        _write(handle, offset, buffers, nbytes)


class RenamedWithSpecname(WorkingFd):
    """``specname`` binds a differently named method to a hook: still checked."""

    @hookimpl(specname="walrus_read")
    def read_bytes(self, handle: Any, size: int, offset: int) -> bytes:
        return _read(handle, offset, size)


BROKEN_RULES["unknown-hook"].append(MisspelledUnmarked())
BROKEN_RULES["parameter-order"].append(RenamedWithSpecname())


class PartialWrite(WorkingFd):
    """A marked functools.partial: pluggy registers only functions and methods."""

    def __init__(self) -> None:
        self.walrus_flush = hookimpl(functools.partial(os.fsync))


class TwoWrites(WorkingFd):
    """Two methods for one hook (specname): which one the chain called would be luck."""

    @hookimpl(specname="walrus_write")
    def zz_write(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        _write(handle, offset, buffers, nbytes)


class StaticHooks:
    """Accepted: @hookimpl above or below @staticmethod, as pluggy allows."""

    @hookimpl
    @staticmethod
    def walrus_backend_info() -> BackendInfo:
        return BackendInfo(version="1")

    @staticmethod
    @hookimpl
    def walrus_open(spec: OpenSpec, lower: Storage | None) -> Any:
        return _open(spec)


class HostileProperty(WorkingFd):
    """A property that raises when read: inspection must not run it."""

    @property
    def walrus_state(self) -> Any:
        raise RuntimeError("lazy state not ready")


BROKEN_RULES["not-a-function"] = [PartialWrite()]
BROKEN_RULES["duplicate-hook"] = [TwoWrites()]
BROKEN_RULES["backend-info"].append(
    type(
        "BadInfoField",
        (WorkingFd,),
        {"walrus_backend_info": hookimpl(lambda self: BackendInfo(version="1", layers_over=["x"]))},  # type: ignore[arg-type]
    )()
)
