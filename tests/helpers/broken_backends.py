"""Backends that break the plugin contract, one rule each, and backends that register fine but
break a behaviour guarantee (for the conformance suite to catch).

Every class here wraps the FD backend's real implementations, so that each one differs from a
working backend in exactly one way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import walrus_fd

from walrus_core.plugin import BackendInfo, Buffers, OpenSpec, Storage, WriteOp, hookimpl


class WorkingFd:
    """A correct base backend: the FD backend's functions under another name."""

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(version="1", description="fd, as a test backend")

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> Any:
        return walrus_fd.walrus_open(spec, lower)

    @hookimpl
    def walrus_write(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        walrus_fd.walrus_write(handle, offset, buffers, nbytes)

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return walrus_fd.walrus_read(handle, offset, size)

    @hookimpl
    def walrus_flush(self, handle: Any) -> None:
        walrus_fd.walrus_flush(handle)

    @hookimpl
    def walrus_batch_submit(self, handle: Any, ops: Sequence[WriteOp], sync: bool) -> None:
        walrus_fd.walrus_batch_submit(handle, ops, sync)

    @hookimpl
    def walrus_close(self, handle: Any) -> None:
        walrus_fd.walrus_close(handle)


# --- one broken registration rule each ------------------------------------------------------


class SwappedReadParameters(WorkingFd):
    """Right names, wrong order: would be called with size and offset swapped."""

    @hookimpl
    def walrus_read(self, handle: Any, size: int, offset: int) -> bytes:  # type: ignore[override]
        return walrus_fd.walrus_read(handle, offset, size)


class MisspelledHook(WorkingFd):
    """A typo: pluggy would register it as a hook nobody calls."""

    @hookimpl
    def walrus_wirte(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        walrus_fd.walrus_write(handle, offset, buffers, nbytes)


class UnmarkedHook(WorkingFd):
    """A hook-named function that forgot @hookimpl (the inherited one is marked: shadowed)."""

    def walrus_flush(self, handle: Any) -> None:
        walrus_fd.walrus_flush(handle)


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
        walrus_fd.walrus_flush(handle)


class TryfirstRead(WorkingFd):
    """Ordering options: the chain is the only order."""

    @hookimpl(tryfirst=True)
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return walrus_fd.walrus_read(handle, offset, size)


class TrylastClose(WorkingFd):
    @hookimpl(trylast=True)
    def walrus_close(self, handle: Any) -> None:
        walrus_fd.walrus_close(handle)


class GeneratorRead(WorkingFd):
    """A generator where a value is expected."""

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> Iterator[bytes]:  # type: ignore[override]
        yield walrus_fd.walrus_read(handle, offset, size)


class AsyncFlush(WorkingFd):
    """An async function returns a coroutine instead of flushing."""

    @hookimpl
    async def walrus_flush(self, handle: Any) -> None:  # type: ignore[override]
        walrus_fd.walrus_flush(handle)


class NoBackendInfo:
    """Storage hooks but no walrus_backend_info."""

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> Any:
        return walrus_fd.walrus_open(spec, lower)


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
            walrus_fd.walrus_write(handle, offset, buffers, nbytes)


class ReadsOneByteLate(WorkingFd):
    """Reads from the wrong offset (one byte later)."""

    @hookimpl
    def walrus_read(self, handle: Any, offset: int, size: int) -> bytes:
        return walrus_fd.walrus_read(handle, offset + 1, size)


lossy = LosesLateWrites()
off_by_one = ReadsOneByteLate()
working = WorkingFd()
swapped = SwappedReadParameters()


class MisspelledUnmarked(WorkingFd):
    """A typo without the marker: neither pluggy nor the engine would ever call it."""

    def walrus_wrtie(self, handle: Any, offset: int, buffers: Buffers, nbytes: int) -> None:
        walrus_fd.walrus_write(handle, offset, buffers, nbytes)


class RenamedWithSpecname(WorkingFd):
    """``specname`` binds a differently named method to a hook: still checked."""

    @hookimpl(specname="walrus_read")
    def read_bytes(self, handle: Any, size: int, offset: int) -> bytes:
        return walrus_fd.walrus_read(handle, offset, size)


BROKEN_RULES["unknown-hook"].append(MisspelledUnmarked())
BROKEN_RULES["parameter-order"].append(RenamedWithSpecname())
