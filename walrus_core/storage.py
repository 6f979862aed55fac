"""The storage contract between the engine and backend plugins.

The engine never talks to a backend module directly. It asks the plugin chain to open a file
(:class:`OpenSpec`) and gets back a :class:`Storage`: a small object whose attributes are the
chain's resolved hook implementations, already bound to the handle they need. Resolving once,
at open time, is what keeps pluggy's dispatch off the per-entry path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs


class Buffer(Protocol):
    """Anything that supports the buffer protocol (bytes, bytearray, memoryview, mmap, array)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...


class Flushable(Protocol):
    """What the flusher needs of an open file: the engine's dirty flag and ``flush()``."""

    dirty: bool

    def flush(self) -> None: ...


#: What the engine passes to ``write``: buffers written back to back at one file offset.
Buffers = Sequence[Any]

FILE_DATA = "data"
FILE_CURSORS = "cursors"


def _always_available() -> str | None:
    return None


def _as_tuple(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class BackendInfo:
    """What a backend plugin says about itself (returned by ``walrus_backend_info``); it is
    everything backend selection knows, so the engine names no backend.

    ``version``: the plugin's version, shown by ``walrus backends``.
    ``layers_over``: the backend this one is stacked on (None for a base backend).
    ``platforms``: ``sys.platform`` prefixes where ``"auto"`` may pick it (``"*"``: any).
    ``install``: the command that installs it (shown when it is asked for and missing).
    ``probe``: returns None when the backend can run here, else the reason it cannot; it may
    raise :class:`~walrus_core.errors.BackendUnavailableError` instead of returning a reason.
    ``auto_priority``: among backends that can run, ``"auto"`` takes the highest (0: never by
    itself, only when asked for by name).
    ``family``: groups a base backend with the layers over it (``"fd"``), so that
    ``disable_fd_backend()`` can steer ``"auto"`` away from a whole family.
    ``durable``: False for a backend whose writes do not outlive the process (an in-memory
    store): the conformance suite then skips its crash tests, saying why.
    """

    version: str = attrs.field(validator=attrs.validators.instance_of(str))
    layers_over: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    platforms: tuple[str, ...] = attrs.field(
        default=("*",),
        converter=_as_tuple,
        validator=attrs.validators.deep_iterable(attrs.validators.instance_of(str)),
    )
    install: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    description: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    probe: Callable[[], str | None] = attrs.field(
        default=_always_available, validator=attrs.validators.is_callable()
    )
    auto_priority: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))
    family: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    durable: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class OpenSpec:
    """What to open and how.

    ``size`` is the size the file must have at least: a backend creates (or extends) the file to
    that size *sparsely* (ftruncate), never by writing zeros. ``create`` allows creating it.
    ``sync_each`` asks for writes that are durable when ``write`` returns (O_DSYNC or a sync
    per write). ``kind`` is ``"data"`` or ``"cursors"``; backends may tune on it.
    """

    path: str
    size: int
    create: bool = False
    sync_each: bool = False
    kind: str = FILE_DATA


@attrs.frozen
class WriteOp:
    """One contiguous run of a batch: ``buffers`` land back to back at ``offset``."""

    offset: int
    buffers: Buffers
    nbytes: int


class Storage:
    """An open file, as the engine sees it: the chain's resolved operations.

    Attributes are plain callables (already bound to the right plugin handle):

    * ``write(offset, buffers, nbytes)`` writes all ``nbytes`` of ``buffers`` at ``offset``.
    * ``read(offset, size)`` returns up to ``size`` bytes (fewer only at end of file).
    * ``flush()`` makes every completed write durable.
    * ``batch_submit(ops, sync)`` writes many runs, then flushes when ``sync`` is true.
    * ``discard(offset, size)`` gives a range back to the file system (None when no backend
      of the chain can).
    * ``close()`` releases the handle.

    ``dirty`` is set by the engine after unsynced writes; the background flusher clears it.
    """

    __slots__ = (
        "batch_submit",
        "chain",
        "close",
        "dirty",
        "discard",
        "flush",
        "handle",
        "read",
        "spec",
        "write",
    )

    def __init__(
        self,
        spec: OpenSpec,
        handle: Any,
        chain: tuple[str, ...],
        write: Callable[[int, Buffers, int], None],
        read: Callable[[int, int], bytes],
        flush: Callable[[], None],
        batch_submit: Callable[[Sequence[WriteOp], bool], None],
        close: Callable[[], None],
        discard: Callable[[int, int], None] | None = None,
    ) -> None:
        self.spec = spec
        self.handle = handle
        self.chain = chain
        self.write = write
        self.read = read
        self.flush = flush
        self.batch_submit = batch_submit
        self.close = close
        self.discard = discard
        self.dirty = False

    @property
    def path(self) -> str:
        """The file's path."""
        return self.spec.path

    def __repr__(self) -> str:
        return f"<Storage {self.spec.path!r} via {'/'.join(self.chain)}>"
